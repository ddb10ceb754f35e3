// tsv.c — see tsv.h.
#include "tsv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "common.h"

size_t mt_utf8_valid_prefix(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;       // overlong
            if (c == 0xED) hi = 0x9F;       // surrogates
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;       // overlong
            if (c == 0xF4) hi = 0x8F;       // above U+10FFFF
        } else return i;
        if (i + len > n || s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += len;
    }
    return n;
}

static const char *display_name(const char *path) { return strcmp(path, "-") ? path : "stdin"; }

static void set_err(mt_tsv *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(mt_tsv *t, const char *fmt, ...) {
    int k = snprintf(t->err, sizeof t->err, "%s:%ld: ", display_name(t->path), t->line_no);
    if (k < 0 || (size_t)k >= sizeof t->err) return;  // a path that long fills the buffer alone
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->err + k, sizeof t->err - (size_t)k, fmt, ap);
    va_end(ap);
}

// Reads one line into t->line without its '\n'. Returns its length, or -1 at end of file.
static ssize_t read_line(mt_tsv *t) {
    ssize_t n = getline(&t->line, &t->line_cap, t->fp);
    if (n < 0) {
        if (ferror(t->fp)) mt_die("%s: read error: %s", display_name(t->path), strerror(errno));
        return -1;
    }
    t->line_no++;
    if (n > 0 && t->line[n - 1] == '\n') t->line[--n] = '\0';
    return n;
}

// Checks line ending and encoding, then splits t->line in place at tabs.
// Returns 0 and sets t->err on a bad line.
static int split_line(mt_tsv *t, ssize_t n, int *cap_fields) {
    if (n > 0 && t->line[n - 1] == '\r') {
        set_err(t, "line ends with CR (Windows CRLF line ends?); convert with dos2unix");
        return 0;
    }
    size_t ok = mt_utf8_valid_prefix(t->line, (size_t)n);
    if (ok != (size_t)n) {
        set_err(t, "invalid UTF-8 at byte %zu of the line", ok + 1);
        return 0;
    }
    t->n_fields = 0;
    char *p = t->line, *end = t->line + n;
    for (;;) {
        char *tab = memchr(p, '\t', (size_t)(end - p));
        char *stop = tab ? tab : end;
        if (t->n_fields == *cap_fields) {
            *cap_fields = *cap_fields ? 2 * *cap_fields : 8;
            t->field = mt_realloc(t->field, (size_t)*cap_fields * sizeof *t->field);
            t->field_len = mt_realloc(t->field_len, (size_t)*cap_fields * sizeof *t->field_len);
        }
        *stop = '\0';
        t->field[t->n_fields] = p;
        t->field_len[t->n_fields++] = (size_t)(stop - p);
        if (!tab) break;
        p = tab + 1;
    }
    return 1;
}

mt_tsv *mt_tsv_open(const char *path) {
    mt_tsv *t = mt_calloc(1, sizeof *t);
    t->path = path;
    t->fp = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!t->fp) mt_die("%s: %s", path, strerror(errno));
    ssize_t n = read_line(t);
    if (n < 0) {
        t->line_no = 1;
        mt_die("%s:1: empty file: expected a header line naming the columns", display_name(path));
    }
    if (!split_line(t, n, &t->field_cap)) mt_die("%s (header)", t->err);
    t->n_cols = t->n_fields;
    t->col_name = mt_malloc((size_t)t->n_cols * sizeof *t->col_name);
    for (int i = 0; i < t->n_cols; i++) {
        t->col_name[i] = mt_strdup(t->field[i]);
        for (int j = 0; j < i; j++)
            if (!strcmp(t->col_name[i], t->col_name[j]))
                mt_die("%s:1: column name '%s' appears twice in the header", display_name(path),
                       t->col_name[i]);
    }
    return t;
}

void mt_tsv_close(mt_tsv *t) {
    if (!t) return;
    if (t->fp && t->fp != stdin) fclose(t->fp);
    for (int i = 0; i < t->n_cols; i++) free(t->col_name[i]);
    free(t->col_name);
    free(t->field);
    free(t->field_len);
    free(t->line);
    free(t);
}

int mt_tsv_col(const mt_tsv *t, const char *name) {
    for (int i = 0; i < t->n_cols; i++)
        if (!strcmp(t->col_name[i], name)) return i;
    return -1;
}

int mt_tsv_require_col(const mt_tsv *t, const char *name) {
    int c = mt_tsv_col(t, name);
    if (c >= 0) return c;
    char have[256] = "";
    size_t k = 0;
    for (int i = 0; i < t->n_cols && k < sizeof have - 8; i++)
        k += (size_t)snprintf(have + k, sizeof have - k, "%s%s", i ? ", " : "", t->col_name[i]);
    mt_die("%s:1: no column '%s' in the header (columns: %s)", display_name(t->path), name, have);
}

int mt_tsv_next(mt_tsv *t) {
    ssize_t n = read_line(t);
    if (n < 0) return 0;
    if (!split_line(t, n, &t->field_cap)) return -1;
    if (t->n_fields != t->n_cols) {
        set_err(t, "row has %d field%s, header has %d", t->n_fields, t->n_fields == 1 ? "" : "s",
                t->n_cols);
        return -1;
    }
    return 1;
}

const char *mt_tsv_error(const mt_tsv *t) { return t->err; }

const char *mt_tsv_row_id(const mt_tsv *t, int id_col, char buf[32]) {
    if (id_col >= 0) return t->field[id_col];
    snprintf(buf, 32, "%ld", t->line_no - 1);
    return buf;
}
