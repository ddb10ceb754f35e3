// config.c — see config.h.
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "json.h"

// An integer field in [lo, hi]; a missing field takes def when def_ok.
static int get_int(const mt_json *root, const char *key, int lo, int hi, int def, int def_ok, int *out,
                   const char *what, char *err, size_t errlen) {
    const mt_json *v = mt_json_get(root, key);
    if (!v || v->type == MT_JSON_NULL) {
        if (!def_ok) return mt_fail(err, errlen, "%s: missing \"%s\"", what, key);
        *out = def;
        return 0;
    }
    if (v->type != MT_JSON_NUMBER || !v->is_integer || v->integer < lo || v->integer > hi)
        return mt_fail(err, errlen, "%s: \"%s\" must be an integer in [%d, %d]", what, key, lo, hi);
    *out = (int)v->integer;
    return 0;
}

static int check_strings(const mt_json *root, const char *what, char *err, size_t errlen) {
    const mt_json *act = mt_json_get(root, "hidden_act");
    if (act && (act->type != MT_JSON_STRING || strcmp(act->string, "gelu") != 0))
        return mt_fail(err, errlen, "%s: \"hidden_act\" must be \"gelu\" (the erf form); got %s%.32s%s", what,
                         act->type == MT_JSON_STRING ? "\"" : "a ", act->type == MT_JSON_STRING ? act->string
                         : mt_json_type_name(act->type), act->type == MT_JSON_STRING ? "\"" : "");
    const mt_json *pos = mt_json_get(root, "position_embedding_type");
    if (pos && (pos->type != MT_JSON_STRING || strcmp(pos->string, "absolute") != 0))
        return mt_fail(err, errlen, "%s: \"position_embedding_type\" must be \"absolute\"", what);
    return 0;
}

int mt_config_parse(mt_bert_config *c, const char *text, size_t len, const char *what, char *err, size_t errlen) {
    char jerr[200];
    memset(c, 0, sizeof *c);
    mt_json *root = mt_json_parse(text, len, jerr, sizeof jerr);
    if (!root) return mt_fail(err, errlen, "%s: not valid JSON: %s", what, jerr);
    int rc = root->type == MT_JSON_OBJECT ? 0 : mt_fail(err, errlen, "%s: not a JSON object", what);
    const int big = 1 << 24;
    if (!rc) rc = get_int(root, "vocab_size", 1, big, 0, 0, &c->vocab_size, what, err, errlen);
    if (!rc) rc = get_int(root, "hidden_size", 1, 1 << 16, 0, 0, &c->hidden_size, what, err, errlen);
    if (!rc) rc = get_int(root, "num_hidden_layers", 1, 1024, 0, 0, &c->num_hidden_layers, what, err, errlen);
    if (!rc) rc = get_int(root, "num_attention_heads", 1, 1024, 0, 0, &c->num_attention_heads, what, err, errlen);
    if (!rc) rc = get_int(root, "intermediate_size", 1, 1 << 18, 0, 0, &c->intermediate_size, what, err, errlen);
    if (!rc) rc = get_int(root, "max_position_embeddings", 1, 1 << 16, 512, 1, &c->max_position_embeddings, what, err, errlen);
    if (!rc) rc = get_int(root, "type_vocab_size", 1, 1024, 2, 1, &c->type_vocab_size, what, err, errlen);
    if (!rc) rc = get_int(root, "pad_token_id", 0, big, 0, 1, &c->pad_token_id, what, err, errlen);
    if (!rc) {
        const mt_json *eps = mt_json_get(root, "layer_norm_eps");
        if (!eps) c->layer_norm_eps = 1e-12f;
        else if (eps->type != MT_JSON_NUMBER || !(eps->number > 0 && eps->number < 1))
            rc = mt_fail(err, errlen, "%s: \"layer_norm_eps\" must be a number in (0, 1)", what);
        else c->layer_norm_eps = (float)eps->number;
    }
    if (!rc) rc = check_strings(root, what, err, errlen);
    if (!rc && c->hidden_size % c->num_attention_heads)
        rc = mt_fail(err, errlen, "%s: num_attention_heads (%d) does not divide hidden_size (%d)", what,
                       c->num_attention_heads, c->hidden_size);
    if (!rc && c->pad_token_id >= c->vocab_size)
        rc = mt_fail(err, errlen, "%s: pad_token_id (%d) is not below vocab_size (%d)", what, c->pad_token_id,
                       c->vocab_size);
    mt_json_free(root);
    return rc;
}

int mt_config_load(mt_bert_config *c, const char *path, char *err, size_t errlen) {
    size_t len;
    char *buf = mt_read_file(path, MT_CONFIG_MAX_BYTES, &len, err, errlen);
    if (!buf) return -1;
    int rc = mt_config_parse(c, buf, len, path, err, errlen);
    free(buf);
    return rc;
}
