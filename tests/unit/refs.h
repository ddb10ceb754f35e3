// refs.h — reads the reference files written by tests/reflib.py: gzip text, per tensor a
// line "name d0 d1 ..." and a line of its values (row-major, "%.17g").
//
//   ref_file f; if (ref_load(&f, "sentence/cnn.txt.gz")) { const ref_tensor *x = ref_get(&f, "x"); }
//
// Paths are relative to $MTBERT_ROOT/tests/ref (MTBERT_ROOT defaults to "."). A missing
// file or tensor is a failed CHECK, never a silent pass.
#ifndef MT_TEST_REFS_H
#define MT_TEST_REFS_H
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "check.h"

typedef struct {
    char name[96];
    int ndim, shape[4];
    size_t n;
    double *v;
} ref_tensor;

typedef struct {
    int n;
    ref_tensor t[128];
} ref_file;

static char *ref_slurp(const char *rel) {
    const char *root = getenv("MTBERT_ROOT");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/ref/%s", root ? root : ".", rel);
    gzFile g = gzopen(path, "rb");
    if (!g) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    int got;
    while ((got = gzread(g, buf + len, (unsigned)(cap - len - 1))) > 0) {
        len += (size_t)got;
        if (cap - len < 2) buf = realloc(buf, cap *= 2);
    }
    gzclose(g);
    buf[len] = 0;
    return buf;
}

// Returns 1 when the whole file parsed; fails a CHECK otherwise.
static int ref_load(ref_file *f, const char *rel) {
    memset(f, 0, sizeof *f);
    char *buf = ref_slurp(rel), *p = buf;
    if (!buf) printf("# cannot read tests/ref/%s\n", rel);
    CHECK(buf != NULL);
    if (!buf) return 0;
    int ok = 1;
    while (*p && ok && f->n < 128) {
        ref_tensor *t = &f->t[f->n];
        char *eol = strchr(p, '\n');
        int used = 0;
        ok = eol && sscanf(p, "%95s%n", t->name, &used) == 1;
        p += used, t->n = 1;
        while (ok && p < eol && t->ndim < 4) {
            char *end;
            long d = strtol(p, &end, 10);
            if (end == p) break;
            t->shape[t->ndim++] = (int)d, t->n *= (size_t)d, p = end;
        }
        t->v = malloc((t->n ? t->n : 1) * sizeof(double));
        p = eol ? eol + 1 : p;
        for (size_t i = 0; ok && i < t->n; i++) {
            char *end;
            t->v[i] = strtod(p, &end);
            ok = end != p, p = end;
        }
        while (*p == ' ' || *p == '\n') p++;
        f->n++;
    }
    free(buf);
    if (!ok) printf("# tests/ref/%s: parse error in tensor %d\n", rel, f->n);
    CHECK(ok);
    return ok;
}

static const ref_tensor *ref_get(const ref_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    printf("# reference tensor %s missing\n", name);
    CHECK(0);
    return NULL;
}

static void ref_free(ref_file *f) {
    for (int i = 0; i < f->n; i++) free(f->t[i].v);
    f->n = 0;
}

// float copy of a reference tensor (caller frees), NULL (and a failed CHECK) if absent or of
// another size than want (want 0: any).
static float *ref_floats(const ref_file *f, const char *name, size_t want) {
    const ref_tensor *t = ref_get(f, name);
    if (!t) return NULL;
    if (want && t->n != want) {
        printf("# reference tensor %s has %zu values, expected %zu\n", name, t->n, want);
        CHECK(0);
        return NULL;
    }
    float *x = malloc((t->n ? t->n : 1) * sizeof(float));
    for (size_t i = 0; i < t->n; i++) x[i] = (float)t->v[i];
    return x;
}

// max |a - ref| over n values
static double ref_max_diff(const float *a, const ref_tensor *r, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(a[i] - r->v[i]) > m ? fabs(a[i] - r->v[i]) : m;
    return m;
}
#endif
