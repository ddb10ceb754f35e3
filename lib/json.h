// json.h — the JSON that mtbert needs: writing escaped strings (dump, evaluate), and a
// small validating parser for safetensors headers and config.json (json.c).
#ifndef MT_JSON_H
#define MT_JSON_H
#include <stdio.h>

// Writes s as a JSON string literal (quotes included), escaping as RFC 8259 requires.
void mt_json_write_string(FILE *f, const char *s);

#endif
