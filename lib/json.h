// json.h — the JSON that mtbert needs: writing escaped strings (dump, evaluate), and a
// small validating parser for safetensors headers and config.json (json.c).
#ifndef MT_JSON_H
#define MT_JSON_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// Writes s as a JSON string literal (quotes included), escaping as RFC 8259 requires.
void mt_json_write_string(FILE *f, const char *s);
// Writes x with printf format fmt (e.g. "%.6f"), or null when x is not finite (JSON has no
// NaN or infinity: a skipped step's loss).
void mt_json_write_number(FILE *f, const char *fmt, double x);

// ---- parser ------------------------------------------------------------------------
// A document is parsed whole into a tree of mt_json nodes (RFC 8259, strict: no trailing
// commas, no comments, no NaN, no duplicate object keys, valid UTF-8 in strings, nothing
// after the top-level value). Limits keep hostile input cheap: nesting depth and input size.
#define MT_JSON_MAX_DEPTH 64
#define MT_JSON_MAX_SIZE ((size_t)256 << 20)

typedef enum {
    MT_JSON_NULL, MT_JSON_BOOL, MT_JSON_NUMBER, MT_JSON_STRING, MT_JSON_ARRAY, MT_JSON_OBJECT
} mt_json_type;

typedef struct mt_json mt_json;
struct mt_json {
    mt_json_type type;
    size_t offset;      // byte offset of the value in the input (for error messages)
    int boolean;        // BOOL
    double number;      // NUMBER
    int is_integer;     // NUMBER written without fraction or exponent and fits int64
    int64_t integer;    // NUMBER when is_integer
    char *string;       // STRING (NUL-terminated; len excludes the NUL, may hold \u0000)
    size_t len;         // STRING: bytes; ARRAY/OBJECT: number of items
    mt_json *items;     // ARRAY/OBJECT: the values
    char **keys;        // OBJECT: the keys, parallel to items
};

// Parses text[0..len). Returns the root, or NULL with "offset N: what was wrong" in err.
mt_json *mt_json_parse(const char *text, size_t len, char *err, size_t errlen);
void mt_json_free(mt_json *root);

// Member of an object by key, or NULL (also NULL when obj is not an object).
const mt_json *mt_json_get(const mt_json *obj, const char *key);
const char *mt_json_type_name(mt_json_type t);

#endif
