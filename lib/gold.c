// gold.c — see gold.h.
#include "gold.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define SHOW_MISSING 5  // ids named in a join error, per side

static size_t id_hash(const char *id) { return (size_t)mt_fnv1a64(MT_FNV_INIT, id, strlen(id)); }

static void build_index(mt_gold *g) {
    g->n_slots = 16;
    while (g->n_slots < 2 * (size_t)g->n) g->n_slots *= 2;
    g->slot = mt_malloc(g->n_slots * sizeof *g->slot);
    for (size_t s = 0; s < g->n_slots; s++) g->slot[s] = -1;
    for (int i = 0; i < g->n; i++) {
        size_t s = id_hash(g->ids[i]) & (g->n_slots - 1);
        while (g->slot[s] >= 0) s = (s + 1) & (g->n_slots - 1);
        g->slot[s] = i;
    }
}

int mt_gold_find(const mt_gold *g, const char *id) {
    if (!g->slot) return -1;
    for (size_t s = id_hash(id) & (g->n_slots - 1); g->slot[s] >= 0; s = (s + 1) & (g->n_slots - 1))
        if (strcmp(g->ids[g->slot[s]], id) == 0) return g->slot[s];
    return -1;
}

// Builds the index; returns the position of the first repeated id, or -1.
static int index_or_duplicate(mt_gold *g) {
    build_index(g);
    for (int i = 0; i < g->n; i++)
        if (mt_gold_find(g, g->ids[i]) != i) return i;
    return -1;
}

// Splits line (modified in place) at tabs into at most max fields; returns the count.
static int split_tabs(char *line, char **f, int max) {
    int n = 0;
    for (char *p = line;; p++) {
        if (n < max) f[n] = p;
        n++;
        p = strchr(p, '\t');
        if (!p) break;
        *p = 0;
    }
    return n;
}

static int fail(char *err, size_t cap, FILE *fp, char *line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail(char *err, size_t cap, FILE *fp, char *line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    if (fp) fclose(fp);
    free(line);
    return -1;
}

static void chomp(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = 0;
}

// Column positions of `id` (-1 if none) and `col` in the header line.
static int header_columns(char *line, const char *col, int *id_col, int *val_col) {
    char *f[256];
    int n = split_tabs(line, f, 256);
    *id_col = *val_col = -1;
    for (int i = 0; i < n && i < 256; i++) {
        if (strcmp(f[i], "id") == 0) *id_col = i;
        if (strcmp(f[i], col) == 0) *val_col = i;
    }
    return n;
}

int mt_gold_read_tsv(const char *path, const char *col, mt_gold *g, char *err, size_t cap) {
    memset(g, 0, sizeof *g);
    FILE *fp = fopen(path, "r");
    if (!fp) return fail(err, cap, NULL, NULL, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t lcap = 0;
    if (getline(&line, &lcap, fp) < 0) return fail(err, cap, fp, line, "%s: empty file (no header)", path);
    chomp(line);
    int id_col, val_col, n_cols = header_columns(line, col, &id_col, &val_col);
    if (val_col < 0) return fail(err, cap, fp, line, "%s: no column '%s' in the header", path, col);
    int cap_rows = 0;
    for (long lineno = 2; getline(&line, &lcap, fp) >= 0; lineno++) {
        chomp(line);
        if (!line[0]) continue;
        char *f[256], *end;
        if (split_tabs(line, f, 256) != n_cols) {
            mt_gold_free(g);
            return fail(err, cap, fp, line, "%s:%ld: expected %d tab-separated fields", path, lineno, n_cols);
        }
        double v = strtod(f[val_col], &end);
        if (end == f[val_col] || *end || !isfinite(v)) {
            mt_gold_free(g);
            return fail(err, cap, fp, line, "%s:%ld: %s '%s' is not a number", path, lineno, col, f[val_col]);
        }
        if (g->n == cap_rows) {
            cap_rows = cap_rows ? 2 * cap_rows : 1024;
            g->ids = mt_realloc(g->ids, (size_t)cap_rows * sizeof *g->ids);
            g->value = mt_realloc(g->value, (size_t)cap_rows * sizeof *g->value);
        }
        char num[32];
        snprintf(num, sizeof num, "%d", g->n + 1);  // no id column: the data line number
        g->ids[g->n] = mt_strdup(id_col >= 0 ? f[id_col] : num);
        g->value[g->n++] = v;
    }
    fclose(fp);
    free(line);
    int dup = index_or_duplicate(g);
    if (dup >= 0) {
        snprintf(err, cap, "%s: id '%s' occurs more than once", path, g->ids[dup]);
        mt_gold_free(g);
        return -1;
    }
    return 0;
}

int mt_gold_init(mt_gold *g, char *const *ids, const double *values, int n) {
    memset(g, 0, sizeof *g);
    g->n = n;
    g->ids = mt_malloc(((size_t)n + 1) * sizeof *g->ids);
    g->value = mt_malloc(((size_t)n + 1) * sizeof *g->value);
    for (int i = 0; i < n; i++) g->ids[i] = mt_strdup(ids[i]), g->value[i] = values ? values[i] : i;
    return index_or_duplicate(g);
}

// Appends up to SHOW_MISSING ids to a message.
static void list_ids(char *msg, size_t cap, const char *what, char *const *ids, const int *which, int n) {
    size_t len = strlen(msg);
    snprintf(msg + len, cap - len, "%s%d %s (", len ? "; " : "", n, what);
    for (int i = 0; i < n && i < SHOW_MISSING; i++) {
        len = strlen(msg);
        snprintf(msg + len, cap - len, "%s%s", i ? ", " : "", ids[which[i]]);
    }
    len = strlen(msg);
    snprintf(msg + len, cap - len, "%s)", n > SHOW_MISSING ? ", ..." : "");
}

int mt_gold_join(const mt_gold *g, char *const *ids, int n, double *out, char *err, size_t cap) {
    int *missing = mt_malloc(((size_t)n + 1) * sizeof *missing), n_missing = 0;
    char *used = mt_calloc((size_t)g->n + 1, 1);
    for (int i = 0; i < n; i++) {
        int j = mt_gold_find(g, ids[i]);
        if (j < 0) missing[n_missing++] = i;
        else out[i] = g->value[j], used[j] = 1;
    }
    int *unused = mt_malloc(((size_t)g->n + 1) * sizeof *unused), n_unused = 0;
    for (int j = 0; j < g->n; j++)
        if (!used[j]) unused[n_unused++] = j;
    err[0] = 0;
    if (n_missing) list_ids(err, cap, "predicted ids have no gold label", ids, missing, n_missing);
    if (n_unused) list_ids(err, cap, "gold ids have no prediction", g->ids, unused, n_unused);
    free(missing), free(used), free(unused);
    return n_missing || n_unused ? -1 : 0;
}

void mt_gold_free(mt_gold *g) {
    for (int i = 0; i < g->n; i++) free(g->ids[i]);
    free(g->ids);
    free(g->value);
    free(g->slot);
    memset(g, 0, sizeof *g);
}
