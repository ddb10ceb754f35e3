// json.c — see json.h.
#include "json.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

void mt_json_write_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20) fprintf(f, "\\u%04x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

void mt_json_write_number(FILE *f, const char *fmt, double x) {
    if (isfinite(x)) fprintf(f, fmt, x);
    else fputs("null", f);
}

// ---- parser ------------------------------------------------------------------------

typedef struct {
    const unsigned char *s;
    size_t len, pos;
    char *err;
    size_t errlen;
    int failed;
} parser;

static int fail(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(parser *p, const char *fmt, ...) {
    if (p->failed) return -1;  // keep the first (innermost) error
    p->failed = 1;
    int n = snprintf(p->err, p->errlen, "offset %zu: ", p->pos);
    if (n < 0 || (size_t)n >= p->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errlen - n, fmt, ap);
    va_end(ap);
    return -1;
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int literal(parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return fail(p, "invalid literal (expected '%s')", word);
    p->pos += n;
    return 0;
}

static int hex4(parser *p, unsigned *out) {
    if (p->len - p->pos < 4) return fail(p, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p->s[p->pos + i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return fail(p, "bad hex digit in \\u escape");
        v = v * 16 + (unsigned)d;
    }
    p->pos += 4;
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 63));
        o[2] = (char)(0x80 | (cp & 63)); return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 63));
    o[2] = (char)(0x80 | (cp >> 6 & 63)); o[3] = (char)(0x80 | (cp & 63)); return 4;
}

// Length of the valid UTF-8 sequence at s (n bytes available), or 0 if invalid.
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t k; unsigned cp;
    if (c < 0x80) return 1;
    else if ((c & 0xE0) == 0xC0) { k = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { k = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { k = 4; cp = c & 0x07; }
    else return 0;
    if (n < k) return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    static const unsigned min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return k;
}

// Parses one escape after the backslash, appending UTF-8 to o; returns bytes written or -1.
static int escape(parser *p, char *o) {
    if (p->pos >= p->len) return fail(p, "truncated escape");
    unsigned char c = p->s[p->pos++];
    switch (c) {
    case '"': *o = '"'; return 1;
    case '\\': *o = '\\'; return 1;
    case '/': *o = '/'; return 1;
    case 'b': *o = '\b'; return 1;
    case 'f': *o = '\f'; return 1;
    case 'n': *o = '\n'; return 1;
    case 'r': *o = '\r'; return 1;
    case 't': *o = '\t'; return 1;
    case 'u': break;
    default: p->pos--; return fail(p, "invalid escape '\\%c'", c >= 0x20 && c < 0x7f ? c : '?');
    }
    unsigned cp, lo;
    if (hex4(p, &cp)) return -1;
    if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(p, "unpaired low surrogate in \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {  // a high surrogate needs its low half next
        if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
            return fail(p, "unpaired high surrogate in \\u escape");
        p->pos += 2;
        if (hex4(p, &lo)) return -1;
        if (lo < 0xDC00 || lo > 0xDFFF) return fail(p, "invalid low surrogate in \\u escape");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    return (int)put_utf8(o, cp);
}

static int parse_string(parser *p, char **out, size_t *out_len) {
    p->pos++;  // opening quote
    size_t start = p->pos, end = start;
    while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->len) return fail(p, "unterminated string");
    char *buf = mt_malloc(end - start + 1);  // decoded text is never longer than its source
    size_t n = 0;
    while (p->pos < end) {
        unsigned char c = p->s[p->pos];
        if (c < 0x20) { free(buf); return fail(p, "control character in string"); }
        if (c == '\\') {
            p->pos++;
            int k = escape(p, buf + n);
            if (k < 0) { free(buf); return -1; }
            n += (size_t)k;
        } else {
            size_t k = utf8_len(p->s + p->pos, end - p->pos);
            if (!k) { free(buf); return fail(p, "invalid UTF-8 in string"); }
            memcpy(buf + n, p->s + p->pos, k);
            n += k;
            p->pos += k;
        }
    }
    p->pos = end + 1;
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    return 0;
}

static int parse_number(parser *p, mt_json *v) {
    size_t start = p->pos;
    int integral = 1;
    if (p->pos < p->len && p->s[p->pos] == '-') p->pos++;
    if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9') return fail(p, "invalid number");
    if (p->s[p->pos] == '0') p->pos++;
    else while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    if (p->pos < p->len && p->s[p->pos] == '.') {
        integral = 0;
        p->pos++;
        if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9') return fail(p, "digit expected after '.'");
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        integral = 0;
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9') return fail(p, "digit expected in exponent");
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    }
    char tmp[64];
    size_t n = p->pos - start;
    if (n >= sizeof tmp) { p->pos = start; return fail(p, "number too long"); }
    memcpy(tmp, p->s + start, n);
    tmp[n] = 0;
    v->type = MT_JSON_NUMBER;
    v->number = strtod(tmp, NULL);
    if (integral) {
        errno = 0;
        long long i = strtoll(tmp, NULL, 10);
        if (errno == 0) { v->is_integer = 1; v->integer = i; }
    }
    return 0;
}

static int parse_value(parser *p, mt_json *v, int depth);

static int compare_keys(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// Sorting a copy of the keys finds duplicates in O(n log n): a hostile header with a
// million keys must not cost n² comparisons.
static int check_duplicate_keys(parser *p, const mt_json *obj) {
    if (obj->len < 2) return 0;
    char **sorted = mt_malloc(obj->len * sizeof *sorted);
    memcpy(sorted, obj->keys, obj->len * sizeof *sorted);
    qsort(sorted, obj->len, sizeof *sorted, compare_keys);
    int rc = 0;
    for (size_t i = 1; i < obj->len && !rc; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            p->pos = obj->offset;
            rc = fail(p, "object has duplicate key \"%.64s\"", sorted[i]);
        }
    free(sorted);
    return rc;
}

static int parse_container(parser *p, mt_json *v, int depth, int is_object) {
    char close = is_object ? '}' : ']';
    size_t cap = 0;
    v->type = is_object ? MT_JSON_OBJECT : MT_JSON_ARRAY;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; return 0; }
    for (;;) {
        if (v->len == cap) {
            cap = cap ? cap * 2 : 4;
            v->items = mt_realloc(v->items, cap * sizeof *v->items);
            if (is_object) v->keys = mt_realloc(v->keys, cap * sizeof *v->keys);
        }
        mt_json *item = &v->items[v->len];
        memset(item, 0, sizeof *item);
        if (is_object) {
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != '"') return fail(p, "object key (string) expected");
            size_t key_pos = p->pos, key_len;
            char *key;
            if (parse_string(p, &key, &key_len)) return -1;
            v->keys[v->len] = key;
            v->len++;  // counted now so that mt_json_free releases the key on error
            if (strlen(key) != key_len) { p->pos = key_pos; return fail(p, "NUL character in object key"); }
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') return fail(p, "':' expected after object key");
            p->pos++;
        } else {
            v->len++;
        }
        if (parse_value(p, item, depth + 1)) return -1;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; skip_ws(p); continue; }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            return is_object ? check_duplicate_keys(p, v) : 0;
        }
        return fail(p, "',' or '%c' expected", close);
    }
}

static int parse_value(parser *p, mt_json *v, int depth) {
    if (depth > MT_JSON_MAX_DEPTH) return fail(p, "nesting deeper than %d", MT_JSON_MAX_DEPTH);
    skip_ws(p);
    v->offset = p->pos;
    if (p->pos >= p->len) return fail(p, "unexpected end of input");
    switch (p->s[p->pos]) {
    case '{': return parse_container(p, v, depth, 1);
    case '[': return parse_container(p, v, depth, 0);
    case '"': v->type = MT_JSON_STRING; return parse_string(p, &v->string, &v->len);
    case 't': v->type = MT_JSON_BOOL; v->boolean = 1; return literal(p, "true");
    case 'f': v->type = MT_JSON_BOOL; return literal(p, "false");
    case 'n': v->type = MT_JSON_NULL; return literal(p, "null");
    default: return parse_number(p, v);
    }
}

static void free_value(mt_json *v) {
    free(v->string);
    for (size_t i = 0; i < v->len && (v->type == MT_JSON_ARRAY || v->type == MT_JSON_OBJECT); i++) {
        free_value(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
}

void mt_json_free(mt_json *root) {
    if (!root) return;
    free_value(root);
    free(root);
}

mt_json *mt_json_parse(const char *text, size_t len, char *err, size_t errlen) {
    parser p = {(const unsigned char *)text, len, 0, err, errlen, 0};
    if (errlen) err[0] = 0;
    mt_json *root = mt_calloc(1, sizeof *root);
    if (len > MT_JSON_MAX_SIZE) {
        fail(&p, "document of %zu bytes exceeds the %zu-byte limit", len, MT_JSON_MAX_SIZE);
    } else if (parse_value(&p, root, 0) == 0) {
        skip_ws(&p);
        if (p.pos == p.len) return root;
        fail(&p, "unexpected text after the JSON value");
    }
    mt_json_free(root);
    return NULL;
}

const mt_json *mt_json_get(const mt_json *obj, const char *key) {
    if (!obj || obj->type != MT_JSON_OBJECT) return NULL;
    for (size_t i = 0; i < obj->len; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

const char *mt_json_type_name(mt_json_type t) {
    static const char *names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)t < 6 ? names[t] : "?";
}
