// taskdata.c — see taskdata.h.
#include "taskdata.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rng.h"
#include "stream.h"

static const char *const SEQ_NAMES[MT_N_SEQ] = {"ids_a", "ids_b", "ids_ab"};

static void check_label(const mt_taskdata *d, const mt_record *r, long rec, float *out) {
    const char *name = mt_task_label(d->task);
    float y;
    if (!mt_record_label(r, name, &y))
        mt_die("%s: record %ld (id %s) has no '%s' label: is this a %s shard (tokenize --label %s)?", d->path, rec,
               r->id, name, mt_task_name(d->task), name);
    int ok = d->task == MT_TASK_SST ? y >= 0 && y <= 4 && y == floorf(y)
           : d->task == MT_TASK_QQP ? y == 0 || y == 1
                                    : y >= 0 && y <= 5;
    if (!ok)
        mt_die("%s: record %ld (id %s): %s %g is not a valid %s label (%s)", d->path, rec, r->id, name, y,
               mt_task_name(d->task), d->task == MT_TASK_SST ? "0..4" : d->task == MT_TASK_QQP ? "0 or 1" : "0..5");
    *out = y;
}

static void grow_tokens(mt_taskdata *d, int64_t need, int64_t *cap) {
    if (need <= *cap) return;
    while (*cap < need) *cap = *cap ? 2 * *cap : 1 << 16;
    d->tokens = mt_realloc(d->tokens, (size_t)*cap * sizeof(int32_t));
    d->types = mt_realloc(d->types, (size_t)*cap * sizeof(int32_t));
}

// Appends the record's sequences; types from types_ab for ids_ab, else 0.
static void add_sequences(mt_taskdata *d, const mt_record *r, long rec, int i, int64_t *cap) {
    int pair = mt_task_is_pair(d->task);
    for (int s = 0; s < MT_N_SEQ; s++) {
        d->start[(size_t)i * MT_N_SEQ + s] = -1, d->len[(size_t)i * MT_N_SEQ + s] = 0;
        if (s > MT_SEQ_A && !pair) continue;
        const mt_tensor *t = mt_record_get(r, SEQ_NAMES[s]);
        if (!t || t->dtype != MT_I32 || t->ndim != 1 || t->dims[0] < 1)
            mt_die("%s: record %ld (id %s) lacks a non-empty i32 '%s'%s", d->path, rec, r->id, SEQ_NAMES[s],
                   pair ? " (pair shards come from tokenize --pair A,B)" : "");
        int n = t->dims[0];
        const mt_tensor *ty = s == MT_SEQ_AB ? mt_record_get(r, "types_ab") : NULL;
        if (s == MT_SEQ_AB && (!ty || ty->dtype != MT_I32 || ty->ndim != 1 || ty->dims[0] != n))
            mt_die("%s: record %ld (id %s): types_ab missing or not as long as ids_ab", d->path, rec, r->id);
        grow_tokens(d, d->n_tokens + n, cap);
        memcpy(d->tokens + d->n_tokens, t->data, (size_t)n * sizeof(int32_t));
        if (ty) memcpy(d->types + d->n_tokens, ty->data, (size_t)n * sizeof(int32_t));
        else memset(d->types + d->n_tokens, 0, (size_t)n * sizeof(int32_t));
        d->start[(size_t)i * MT_N_SEQ + s] = d->n_tokens, d->len[(size_t)i * MT_N_SEQ + s] = n;
        d->n_tokens += n;
        d->max_len = n > d->max_len ? n : d->max_len;
    }
}

void mt_taskdata_load(mt_taskdata *d, int task, const char *path, const char *vocab_fp, long limit) {
    memset(d, 0, sizeof *d);
    d->task = task;
    d->path = mt_strdup(path);
    mt_reader *rd = mt_reader_open(path, 1);
    const char *kind = mt_meta_get(mt_reader_meta(rd), "kind");
    if (!kind || strcmp(kind, "tokens"))
        mt_die("%s: not a token stream (kind=%s); make shards with bin/tokenize", path, kind ? kind : "none");
    if (vocab_fp) mt_reader_expect(rd, "vocab_fp", vocab_fp, "vocabulary (shard tokenized for another model?)");
    mt_record r = {0};
    int cap = 0;
    int64_t tok_cap = 0;
    long rec = 0;
    while ((limit <= 0 || rec < limit) && mt_reader_next(rd, &r) == 1) {
        rec++;
        if (d->n == cap) {
            cap = cap ? 2 * cap : 1024;
            d->label = mt_realloc(d->label, (size_t)cap * sizeof(float));
            d->start = mt_realloc(d->start, (size_t)cap * MT_N_SEQ * sizeof(int64_t));
            d->len = mt_realloc(d->len, (size_t)cap * MT_N_SEQ * sizeof(int32_t));
        }
        check_label(d, &r, rec, &d->label[d->n]);
        add_sequences(d, &r, rec, d->n, &tok_cap);
        d->n++;
    }
    mt_record_free(&r);
    mt_reader_close(rd);
    if (d->n == 0) mt_die("%s: no records", path);
    d->cost = mt_calloc((size_t)d->n, sizeof(int32_t));
}

void mt_taskdata_free(mt_taskdata *d) {
    free(d->path), free(d->label), free(d->start), free(d->len), free(d->tokens), free(d->types), free(d->cost);
    memset(d, 0, sizeof *d);
}

void mt_taskdata_set_cost(mt_taskdata *d, const mt_taskmodel *tm) {
    int bi, cross;
    mt_taskmodel_sequences(tm, d->task, 1, &bi, &cross);
    for (int i = 0; i < d->n; i++) {
        const int32_t *len = d->len + (size_t)i * MT_N_SEQ;
        d->cost[i] = d->task == MT_TASK_SST ? len[MT_SEQ_A] : (bi >= 0 ? len[MT_SEQ_A] + len[MT_SEQ_B] : 0) + (cross >= 0 ? len[MT_SEQ_AB] : 0);
    }
}

// ---- batches ---------------------------------------------------------------------------------

static const int32_t *sort_cost;  // qsort has no context argument; batching is single-threaded
static int by_cost(const void *x, const void *y) {
    const int32_t *a = x, *b = y;  // pairs (example, position): stable by position
    int ca = sort_cost[a[0]], cb = sort_cost[b[0]];
    return ca != cb ? (ca > cb) - (ca < cb) : (a[1] > b[1]) - (a[1] < b[1]);
}

static void sort_window(int32_t *order, int n, const int32_t *cost, int32_t *pairs) {
    for (int i = 0; i < n; i++) pairs[2 * i] = order[i], pairs[2 * i + 1] = i;
    sort_cost = cost;
    qsort(pairs, (size_t)n, 2 * sizeof(int32_t), by_cost);
    for (int i = 0; i < n; i++) order[i] = pairs[2 * i];
}

static void shuffle_batches(mt_batches *bt, mt_rng *rng) {
    uint32_t *perm = mt_malloc((size_t)bt->n_batches * sizeof(uint32_t));
    mt_rng_permutation(rng, perm, (size_t)bt->n_batches);
    int32_t *order = mt_malloc((size_t)bt->n * sizeof(int32_t)), *first = mt_malloc(((size_t)bt->n_batches + 1) * sizeof(int32_t));
    int k = 0;
    for (int b = 0; b < bt->n_batches; b++) {
        int src = (int)perm[b];
        first[b] = k;
        for (int i = bt->first[src]; i < bt->first[src + 1]; i++) order[k++] = bt->order[i];
    }
    first[bt->n_batches] = k;
    free(bt->order), free(bt->first), free(perm);
    bt->order = order, bt->first = first;
}

void mt_batches_make(mt_batches *bt, const mt_taskdata *d, uint64_t seed, uint32_t pass, int batch_size,
                     int batch_tokens, int window) {
    memset(bt, 0, sizeof *bt);
    bt->n = d->n;
    bt->order = mt_malloc((size_t)d->n * sizeof(int32_t));
    bt->first = mt_malloc(((size_t)d->n + 1) * sizeof(int32_t));
    mt_rng rng;
    mt_rng_init(&rng, seed, pass << 4 | (uint32_t)d->task, MT_SITE_SHUFFLE);
    mt_rng_permutation(&rng, (uint32_t *)bt->order, (size_t)d->n);
    int32_t *pairs = mt_malloc((size_t)2 * (window < d->n ? window : d->n) * sizeof(int32_t));
    for (int w0 = 0; w0 < d->n; w0 += window) {
        int wn = d->n - w0 < window ? d->n - w0 : window;
        sort_window(bt->order + w0, wn, d->cost, pairs);
        for (int i = w0, tokens = 0, count = 0; i < w0 + wn; i++) {  // cut the window into batches
            int c = d->cost[bt->order[i]];
            if (count == 0 || count == batch_size || tokens + c > batch_tokens) {
                bt->first[bt->n_batches++] = i;
                tokens = 0, count = 0;
            }
            tokens += c, count++;
        }
    }
    bt->first[bt->n_batches] = d->n;
    free(pairs);
    shuffle_batches(bt, &rng);
}

void mt_batches_free(mt_batches *bt) {
    free(bt->order), free(bt->first);
    memset(bt, 0, sizeof *bt);
}

// ---- packing ---------------------------------------------------------------------------------

static void put_seq(mt_packed *p, const mt_taskdata *d, int ex, int s, int *seq) {
    int64_t st = d->start[(size_t)ex * MT_N_SEQ + s];
    int n = d->len[(size_t)ex * MT_N_SEQ + s];
    memcpy(p->ids + p->N, d->tokens + st, (size_t)n * sizeof(int32_t));
    memcpy(p->types + p->N, d->types + st, (size_t)n * sizeof(int32_t));
    p->N += n;
    p->offsets[++*seq] = p->N;
    p->max_len = n > p->max_len ? n : p->max_len;
}

void mt_pack(mt_packed *p, const mt_taskdata *d, const mt_taskmodel *tm, const int32_t *examples, int B) {
    int bi, cross, nseq = mt_taskmodel_sequences(tm, d->task, B, &bi, &cross), N = 0;
    for (int b = 0; b < B; b++) N += d->cost[examples[b]];
    if (N > p->cap_N) {
        p->cap_N = N;
        p->ids = mt_realloc(p->ids, (size_t)N * sizeof(int32_t)), p->types = mt_realloc(p->types, (size_t)N * sizeof(int32_t));
    }
    if (nseq > p->cap_seq || B > p->cap_seq) {
        p->cap_seq = nseq > B ? nseq : B;
        p->offsets = mt_realloc(p->offsets, ((size_t)p->cap_seq + 1) * sizeof(int32_t));
        p->labels = mt_realloc(p->labels, (size_t)p->cap_seq * sizeof(float));
    }
    p->B = B, p->nseq = nseq, p->N = 0, p->max_len = 0, p->offsets[0] = 0;
    int seq = 0;
    if (bi >= 0) {
        for (int b = 0; b < B; b++) put_seq(p, d, examples[b], MT_SEQ_A, &seq);
        if (mt_task_is_pair(d->task))
            for (int b = 0; b < B; b++) put_seq(p, d, examples[b], MT_SEQ_B, &seq);
    }
    if (cross >= 0)
        for (int b = 0; b < B; b++) put_seq(p, d, examples[b], MT_SEQ_AB, &seq);
    for (int b = 0; b < B; b++) p->labels[b] = d->label[examples[b]];
}

void mt_packed_free(mt_packed *p) {
    free(p->ids), free(p->types), free(p->offsets), free(p->labels);
    memset(p, 0, sizeof *p);
}
