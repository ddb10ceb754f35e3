// heads.c — see heads.h.
#include "heads.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rng.h"
#include "safetensors.h"

// ---- tasks -------------------------------------------------------------------------

static const char *TASK_NAMES[MT_N_TASKS] = {"sst", "qqp", "sts"};
static const char *TASK_LABELS[MT_N_TASKS] = {"label", "is_duplicate", "similarity"};

const char *mt_task_name(mt_task t) { return TASK_NAMES[t]; }
const char *mt_task_label(mt_task t) { return TASK_LABELS[t]; }
int mt_task_outputs(mt_task t) { return t == MT_TASK_SST ? MT_SST_CLASSES : 1; }
int mt_task_is_pair(mt_task t) { return t != MT_TASK_SST; }

int mt_task_parse(const char *s, mt_task *out) {
    for (int i = 0; i < MT_N_TASKS; i++)
        if (strcmp(s, TASK_NAMES[i]) == 0) {
            *out = (mt_task)i;
            return 0;
        }
    return -1;
}

// ---- features ------------------------------------------------------------------------

static const struct { const char *name; unsigned bit; } FEATURE_PARTS[] = {
    {"emb", MT_FEAT_EMB}, {"pair", MT_FEAT_PAIR}, {"cos", MT_FEAT_COS}, {"cls", MT_FEAT_CLS}};
#define N_PARTS 4

int mt_features_parse(const char *spec, unsigned *mask) {
    *mask = 0;
    const char *p = spec;
    while (*p) {
        size_t n = strcspn(p, ",");
        unsigned bit = 0;
        for (int i = 0; i < N_PARTS; i++)
            if (strlen(FEATURE_PARTS[i].name) == n && strncmp(p, FEATURE_PARTS[i].name, n) == 0)
                bit = FEATURE_PARTS[i].bit;
        if (!bit) return -1;
        *mask |= bit;
        p += n;
        if (*p == ',') p++;
    }
    return *mask ? 0 : -1;
}

void mt_features_format(unsigned mask, char *out, int cap) {
    int n = 0;
    out[0] = 0;
    for (int i = 0; i < N_PARTS; i++)
        if (mask & FEATURE_PARTS[i].bit)
            n += snprintf(out + n, n < cap ? cap - n : 0, "%s%s", n ? "," : "", FEATURE_PARTS[i].name);
}

unsigned mt_features_default(mt_task t) {
    switch (t) {
    case MT_TASK_SST: return MT_FEAT_EMB;
    case MT_TASK_QQP: return MT_FEAT_PAIR;
    case MT_TASK_STS: return MT_FEAT_PAIR | MT_FEAT_COS;
    }
    return MT_FEAT_EMB;
}

int mt_features_dim(unsigned mask, int h) {
    return (mask & MT_FEAT_EMB ? h : 0) + (mask & MT_FEAT_PAIR ? 4 * h : 0) +
           (mask & MT_FEAT_COS ? 1 : 0) + (mask & MT_FEAT_CLS ? h : 0);
}

void mt_pair_features(const float *u, const float *v, int h, float *out) {
    for (int i = 0; i < h; i++) {
        out[i] = u[i];
        out[h + i] = v[i];
        out[2 * h + i] = fabsf(u[i] - v[i]);
        out[3 * h + i] = u[i] * v[i];
    }
}

float mt_cosine(const float *u, const float *v, int n) {
    double uv = 0, uu = 0, vv = 0;
    for (int i = 0; i < n; i++) {
        uv += (double)u[i] * v[i];
        uu += (double)u[i] * u[i];
        vv += (double)v[i] * v[i];
    }
    if (uu == 0 || vv == 0) return 0;
    return (float)(uv / sqrt(uu * vv));
}

float mt_zero_shot_score(float cos) {
    float c = cos < 0 ? 0 : cos > 1 ? 1 : cos;
    return 5 * c;
}

// The f32 [H] tensor `name` of r, or NULL with *err set.
static const float *embedding(const mt_record *r, const char *name, int h, const char **err) {
    static char msg[160];
    const mt_tensor *t = mt_record_get(r, name);
    if (!t) {
        snprintf(msg, sizeof msg, "record has no tensor '%s'", name);
    } else if (t->dtype != MT_F32 || t->ndim != 1 || t->dims[0] != h) {
        snprintf(msg, sizeof msg, "tensor '%s' is %s [%d%s], expected f32 [%d]", name,
                 mt_dtype_name(t->dtype), t->dims[0], t->ndim > 1 ? ",..." : "", h);
    } else {
        return t->data;
    }
    *err = msg;
    return NULL;
}

int mt_features_from_record(unsigned mask, int h, const mt_record *r, float *out, const char **err) {
    const float *u = NULL, *v = NULL, *cls = NULL;
    if (!(u = embedding(r, "emb_a", h, err))) return -1;
    if ((mask & (MT_FEAT_PAIR | MT_FEAT_COS)) && !(v = embedding(r, "emb_b", h, err))) return -1;
    if ((mask & MT_FEAT_CLS) && !(cls = embedding(r, "cls_ab", h, err))) return -1;
    if (mask & MT_FEAT_EMB) {
        memcpy(out, u, (size_t)h * sizeof *out);
        out += h;
    }
    if (mask & MT_FEAT_PAIR) {
        mt_pair_features(u, v, h, out);
        out += 4 * h;
    }
    if (mask & MT_FEAT_COS) *out++ = mt_cosine(u, v, h);
    if (mask & MT_FEAT_CLS) memcpy(out, cls, (size_t)h * sizeof *out);
    return 0;
}

// ---- the head ----------------------------------------------------------------------

mt_head *mt_head_new(mt_task task, unsigned features, int hidden) {
    mt_head *h = mt_calloc(1, sizeof *h);
    h->task = task;
    h->features = features;
    h->hidden = hidden;
    h->dim = mt_features_dim(features, hidden);
    h->k = mt_task_outputs(task);
    h->mean = mt_calloc((size_t)h->dim, sizeof(float));
    h->scale = mt_malloc((size_t)h->dim * sizeof(float));
    for (int j = 0; j < h->dim; j++) h->scale[j] = 1;
    h->w = mt_calloc((size_t)h->k * h->dim, sizeof(float));
    h->b = mt_calloc((size_t)h->k, sizeof(float));
    return h;
}

void mt_head_free(mt_head *h) {
    if (!h) return;
    free(h->mean);
    free(h->scale);
    free(h->w);
    free(h->b);
    free(h);
}

void mt_head_standardise(const mt_head *h, float *x, int n) {
    for (int i = 0; i < n; i++) {
        float *row = x + (size_t)i * h->dim;
        for (int j = 0; j < h->dim; j++) row[j] = (row[j] - h->mean[j]) * h->scale[j];
    }
}

static void softmax(float *z, int k) {
    float m = z[0], s = 0;
    for (int i = 1; i < k; i++) m = z[i] > m ? z[i] : m;
    for (int i = 0; i < k; i++) s += (z[i] = expf(z[i] - m));
    for (int i = 0; i < k; i++) z[i] /= s;
}

static float sigmoid(float z) { return z >= 0 ? 1 / (1 + expf(-z)) : expf(z) / (1 + expf(z)); }

static int argmax(const float *p, int k) {
    int best = 0;
    for (int i = 1; i < k; i++)
        if (p[i] > p[best]) best = i;
    return best;
}

float mt_task_pred(mt_task task, const float *outputs) {
    switch (task) {
    case MT_TASK_SST: return (float)argmax(outputs, MT_SST_CLASSES);
    case MT_TASK_QQP: return outputs[0] >= 0.5f ? 1.0f : 0.0f;
    case MT_TASK_STS: return outputs[0];
    }
    return 0;
}

// Task outputs from logits z (in place): probabilities, probability, or clamped score.
static float outputs_from_logits(mt_task task, float *z) {
    switch (task) {
    case MT_TASK_SST: softmax(z, MT_SST_CLASSES); break;
    case MT_TASK_QQP: z[0] = sigmoid(z[0]); break;
    case MT_TASK_STS: z[0] = z[0] < 0 ? 0 : z[0] > 5 ? 5 : z[0]; break;
    }
    return mt_task_pred(task, z);
}

// Loss of one row from its logits z (overwritten with dLoss/dz).
static double row_loss(mt_task task, float *z, float y) {
    switch (task) {
    case MT_TASK_SST: {
        int c = (int)y;
        softmax(z, MT_SST_CLASSES);
        double l = -log(fmax(z[c], 1e-30));
        z[c] -= 1;
        return l;
    }
    case MT_TASK_QQP: {
        // log(1 + e^z) − y·z, computed without overflow.
        double l = fmax(z[0], 0) + log1p(exp(-fabs(z[0]))) - y * z[0];
        z[0] = sigmoid(z[0]) - y;
        return l;
    }
    case MT_TASK_STS: {
        double d = z[0] - y;
        z[0] = (float)d;
        return 0.5 * d * d;
    }
    }
    return 0;
}

// ---- the head on a backend ----------------------------------------------------------------

void mt_head_dev_init(mt_head_dev *d, const mt_head *h, const mt_backend *be, int cap) {
    memset(d, 0, sizeof *d);
    d->be = be, d->k = h->k, d->dim = h->dim, d->cap = cap > 0 ? cap : 1;
    d->w = be->alloc((size_t)h->k * h->dim * sizeof(float));
    d->dw = be->alloc((size_t)h->k * h->dim * sizeof(float));
    d->b = be->alloc((size_t)h->k * sizeof(float));
    d->z = be->alloc((size_t)d->cap * h->k * sizeof(float));
    d->zh = mt_malloc((size_t)d->cap * h->k * sizeof(float));
}

void mt_head_dev_free(mt_head_dev *d) {
    const mt_backend *be = d->be;
    be->free(d->w), be->free(d->dw), be->free(d->b), be->free(d->z);
    if (d->x) be->free(d->x);
    free(d->zh);
    memset(d, 0, sizeof *d);
}

static void put_weights(const mt_head *h, mt_head_dev *d) {
    d->be->copy_to_device(d->w, h->w, (size_t)h->k * h->dim * sizeof(float));
    d->be->copy_to_device(d->b, h->b, (size_t)h->k * sizeof(float));
}

// d->zh[m, K] = logits of rows xs[m, D] (backend), m <= cap, with the weights already put.
static void logits_chunk(mt_head_dev *d, const float *xs, int m) {
    d->be->matmul_forward(d->z, xs, d->w, d->b, NULL, m, d->dim, d->k);
    d->be->copy_to_host(d->zh, d->z, (size_t)m * d->k * sizeof(float));
}

void mt_head_logits(const mt_head *h, mt_head_dev *d, const float *xs, int n, float *z) {
    put_weights(h, d);
    for (int s = 0; s < n; s += d->cap) {
        int m = n - s < d->cap ? n - s : d->cap;
        logits_chunk(d, xs + (size_t)s * h->dim, m);
        memcpy(z + (size_t)s * h->k, d->zh, (size_t)m * h->k * sizeof *z);
    }
}

void mt_head_predict(const mt_head *h, mt_head_dev *d, float *x, int n, float *out, float *pred) {
    if (n > d->cap) mt_die("mt_head_predict: %d rows, more than the %d it was set up for", n, d->cap);
    mt_head_standardise(h, x, n);
    const float *xs = x;
    if (!d->be->host_memory) {
        if (!d->x) d->x = d->be->alloc((size_t)d->cap * h->dim * sizeof(float));
        d->be->copy_to_device(d->x, x, (size_t)n * h->dim * sizeof(float));
        xs = d->x;
    }
    mt_head_logits(h, d, xs, n, out);
    for (int i = 0; i < n; i++) pred[i] = outputs_from_logits(h->task, out + (size_t)i * h->k);
}

// Adds dW = dZ^T xs of one chunk (dZ = d->zh[m, K], host) into d->dw (first chunk: overwrites).
static void grad_chunk(mt_head_dev *d, const float *xs, int m, int first) {
    d->be->copy_to_device(d->z, d->zh, (size_t)m * d->k * sizeof(float));
    d->be->gemm(1, 0, d->k, d->dim, m, 1.0f, d->z, d->k, xs, d->dim, first ? 0.0f : 1.0f, d->dw, d->dim);
}

double mt_head_loss(const mt_head *h, mt_head_dev *d, const float *xs, const float *y, int n, double l2,
                    float *gw, float *gb) {
    int K = h->k, D = h->dim;
    if (gw) memset(gw, 0, (size_t)K * D * sizeof *gw);
    if (gb) memset(gb, 0, (size_t)K * sizeof *gb);
    put_weights(h, d);
    double loss = 0;
    for (int s = 0; s < n; s += d->cap) {
        int m = n - s < d->cap ? n - s : d->cap;
        logits_chunk(d, xs + (size_t)s * D, m);
        for (int i = 0; i < m; i++) {
            float *z = d->zh + (size_t)i * K;
            loss += row_loss(h->task, z, y[s + i]);  // z becomes dLoss/dz of the row
            for (int k = 0; gw && k < K; k++) gb[k] += (z[k] /= n);
        }
        if (gw) grad_chunk(d, xs + (size_t)s * D, m, s == 0);
    }
    if (gw && n) d->be->copy_to_host(gw, d->dw, (size_t)K * D * sizeof *gw);
    double reg = 0;
    for (size_t j = 0; j < (size_t)K * D; j++) {
        reg += (double)h->w[j] * h->w[j];
        if (gw) gw[j] += (float)(l2 * h->w[j]);
    }
    return (n ? loss / n : 0) + 0.5 * l2 * reg;
}

static double pearson_f(const float *a, const float *b, int n) {
    double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
    for (int i = 0; i < n; i++) ma += a[i], mb += b[i];
    ma /= n, mb /= n;
    for (int i = 0; i < n; i++) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    return saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : NAN;
}

double mt_head_metric(const mt_head *h, mt_head_dev *d, const float *xs, const float *y, int n) {
    if (n == 0) return NAN;
    float *z = mt_malloc((size_t)n * h->k * sizeof *z);
    float *score = h->task == MT_TASK_STS ? mt_malloc((size_t)n * sizeof *score) : NULL;
    mt_head_logits(h, d, xs, n, z);
    long correct = 0;
    for (int i = 0; i < n; i++) {
        float pred = outputs_from_logits(h->task, z + (size_t)i * h->k);
        if (score) score[i] = pred;
        else correct += pred == y[i];
    }
    double m = score ? pearson_f(score, y, n) : (double)correct / n;
    free(score), free(z);
    return m;
}

// ---- fitting -----------------------------------------------------------------------

void mt_fit_opts_default(mt_fit_opts *o) {
    o->holdout = 0.1;
    o->l2 = 0.1;  // best or equal on all three tasks with frozen MiniLM embeddings (validation split)
    o->lr = 1e-3;
    o->epochs = 100;
    o->patience = 5;
    o->batch = 64;
    o->seed = 1;
    o->verbose = 0;
}

static void shuffle(int32_t *a, int n, uint64_t *rng) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(mt_splitmix64(rng) % (uint64_t)(i + 1));
        int32_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

// Mean and 1/std of each feature over the first n_train rows of x.
static void fit_standardisation(mt_head *h, const float *x, int n_train) {
    int D = h->dim;
    double *s = mt_calloc((size_t)D, sizeof *s), *ss = mt_calloc((size_t)D, sizeof *ss);
    for (int i = 0; i < n_train; i++) {
        const float *row = x + (size_t)i * D;
        for (int j = 0; j < D; j++) s[j] += row[j], ss[j] += (double)row[j] * row[j];
    }
    for (int j = 0; j < D; j++) {
        double m = n_train ? s[j] / n_train : 0;
        double var = n_train ? ss[j] / n_train - m * m : 0;
        h->mean[j] = (float)m;
        h->scale[j] = var > 1e-12 ? (float)(1 / sqrt(var)) : 1;  // constant feature: leave as is
    }
    free(s);
    free(ss);
}

typedef struct {
    float *m, *v;  // Adam moments, [K*D + K]
    long t;
} adam_state;

static void adam_step(mt_head *h, adam_state *a, const float *gw, const float *gb, double lr) {
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    size_t nw = (size_t)h->k * h->dim, n = nw + h->k;
    a->t++;
    double c1 = 1 - pow(b1, (double)a->t), c2 = 1 - pow(b2, (double)a->t);
    for (size_t j = 0; j < n; j++) {
        float g = j < nw ? gw[j] : gb[j - nw];
        float *p = j < nw ? &h->w[j] : &h->b[j - nw];
        a->m[j] = (float)(b1 * a->m[j] + (1 - b1) * g);
        a->v[j] = (float)(b2 * a->v[j] + (1 - b2) * (double)g * g);
        *p -= (float)(lr * (a->m[j] / c1) / (sqrt(a->v[j] / c2) + eps));
    }
}

// The fit's backend memory: the standardised rows (x itself on a host-memory backend, else
// copied once), the epoch's order of the training rows, and one minibatch gathered from them.
// The gather is embeddings_forward with all-zero position and type tables: row i of xb is
// (x[order[i]] + 0) + 0, the row itself (only a -0 turns +0, which changes no product).
typedef struct {
    mt_head_dev dev;
    const float *x;  // [n, D]
    float *x_copy;   // x when the backend has its own memory, else NULL
    float *xb;       // [min(batch, nt), D]
    int32_t *order;  // [nt]
    int32_t *zeros;  // [min(batch, nt)] type and position ids of the gather
    float *zrow;     // [D] the zero type and position table
} fit_buffers;

static void fit_buffers_init(fit_buffers *f, const mt_head *h, const mt_backend *be, const float *x, int n,
                             int nt, int batch) {
    size_t D = (size_t)h->dim, bs = (size_t)(batch < nt ? batch : nt);
    mt_head_dev_init(&f->dev, h, be, n);  // n rows: each evaluation is one product
    f->x_copy = NULL;
    f->x = x;
    if (!be->host_memory) {
        f->x = f->x_copy = be->alloc((size_t)n * D * sizeof(float));
        be->copy_to_device(f->x_copy, x, (size_t)n * D * sizeof(float));
    }
    f->xb = be->alloc(bs * D * sizeof(float));
    f->order = be->alloc((size_t)nt * sizeof(int32_t));
    f->zeros = be->alloc(bs * sizeof(int32_t));
    f->zrow = be->alloc(D * sizeof(float));
}

static void fit_buffers_free(fit_buffers *f) {
    const mt_backend *be = f->dev.be;
    if (f->x_copy) be->free(f->x_copy);
    be->free(f->xb), be->free(f->order), be->free(f->zeros), be->free(f->zrow);
    mt_head_dev_free(&f->dev);
}

// One pass over the nt training rows (the first of f->x) in a fresh seeded order.
static void train_epoch(mt_head *h, fit_buffers *f, const float *yt, int nt, const mt_fit_opts *o,
                        uint64_t *rng, adam_state *a, int32_t *order, float *yb, float *gw, float *gb) {
    const mt_backend *be = f->dev.be;
    for (int i = 0; i < nt; i++) order[i] = i;
    shuffle(order, nt, rng);
    be->copy_to_device(f->order, order, (size_t)nt * sizeof *order);
    for (int s = 0; s < nt; s += o->batch) {
        int m = nt - s < o->batch ? nt - s : o->batch;
        be->embeddings_forward(f->xb, f->order + s, f->zeros, f->zeros, f->x, f->zrow, f->zrow, m, h->dim);
        for (int i = 0; i < m; i++) yb[i] = yt[order[s + i]];
        mt_head_loss(h, &f->dev, f->xb, yb, m, o->l2, gw, gb);
        adam_step(h, a, gw, gb, o->lr);
    }
}

typedef struct {
    float *w, *b;
} weights_copy;

static void save_weights(const mt_head *h, weights_copy *c) {
    memcpy(c->w, h->w, (size_t)h->k * h->dim * sizeof *c->w);
    memcpy(c->b, h->b, (size_t)h->k * sizeof *c->b);
}

static void restore_weights(mt_head *h, const weights_copy *c) {
    memcpy(h->w, c->w, (size_t)h->k * h->dim * sizeof *c->w);
    memcpy(h->b, c->b, (size_t)h->k * sizeof *c->b);
}

// Adam epochs until the held-out loss (without the L2 term) has not improved for
// `patience` epochs; the best epoch's weights are kept. Without held-out rows, all epochs.
// Rows: f->x[0, nt) train (targets yt), f->x[nt, nt + nh) held out (targets yh).
static void fit_loop(mt_head *h, fit_buffers *f, const float *yt, int nt, const float *yh, int nh,
                     const mt_fit_opts *o, mt_fit_report *rep) {
    size_t nw = (size_t)h->k * h->dim;
    const float *xh = f->x + (size_t)nt * h->dim;
    adam_state a = {mt_calloc(nw + h->k, sizeof(float)), mt_calloc(nw + h->k, sizeof(float)), 0};
    float *gw = mt_malloc(nw * sizeof *gw), *gb = mt_malloc((size_t)h->k * sizeof *gb);
    float *yb = mt_malloc((size_t)(o->batch < nt ? o->batch : nt) * sizeof *yb);
    int32_t *order = mt_malloc((size_t)nt * sizeof *order);
    weights_copy best = {mt_malloc(nw * sizeof(float)), mt_malloc((size_t)h->k * sizeof(float))};
    uint64_t rng = o->seed ^ 0x5eedf00dULL;
    double best_loss = INFINITY;
    int since_best = 0;
    rep->best_epoch = 0;
    for (int e = 1; e <= o->epochs; e++) {
        train_epoch(h, f, yt, nt, o, &rng, &a, order, yb, gw, gb);
        rep->epochs_run = e;
        double held = nh ? mt_head_loss(h, &f->dev, xh, yh, nh, 0, NULL, NULL) : -e;
        if (o->verbose)
            mt_log("epoch %d: train loss %.4f, held-out loss %.4f", e,
                   mt_head_loss(h, &f->dev, f->x, yt, nt, 0, NULL, NULL), nh ? held : NAN);
        if (held < best_loss) {
            best_loss = held;
            rep->best_epoch = e;
            since_best = 0;
            save_weights(h, &best);
        } else if (++since_best >= o->patience) {
            break;
        }
    }
    restore_weights(h, &best);
    free(a.m), free(a.v), free(gw), free(gb), free(yb), free(order), free(best.w), free(best.b);
}

// Reorders the rows of x[n, D] in place so that new row i is old row order[i] (cycle by
// cycle, one spare row), so a fit needs no second copy of the data.
static void permute_rows(float *x, const int32_t *order, int n, int D) {
    char *done = mt_calloc((size_t)n, 1);
    float *tmp = mt_malloc((size_t)D * sizeof *tmp);
    size_t row = (size_t)D * sizeof *tmp;
    for (int start = 0; start < n; start++) {
        if (done[start]) continue;
        memcpy(tmp, x + (size_t)start * D, row);
        int i = start;
        while (order[i] != start) {
            memcpy(x + (size_t)i * D, x + (size_t)order[i] * D, row);
            done[i] = 1;
            i = order[i];
        }
        memcpy(x + (size_t)i * D, tmp, row);
        done[i] = 1;
    }
    free(done);
    free(tmp);
}

void mt_head_fit(mt_head *h, const mt_backend *be, float *x, const float *y, int n, const mt_fit_opts *o,
                 mt_fit_report *rep) {
    memset(rep, 0, sizeof *rep);
    int D = h->dim;
    int32_t *order = mt_malloc((size_t)n * sizeof *order);
    for (int i = 0; i < n; i++) order[i] = i;
    uint64_t rng = o->seed;
    shuffle(order, n, &rng);
    int nh = (int)(o->holdout * n + 0.5);
    if (nh >= n) nh = n - 1;
    int nt = n - nh;  // after the permutation: rows [0, nt) train, [nt, n) held out
    float *ys = mt_malloc((size_t)n * sizeof *ys);
    for (int i = 0; i < n; i++) ys[i] = y[order[i]];
    permute_rows(x, order, n, D);
    fit_standardisation(h, x, nt);
    mt_head_standardise(h, x, n);
    fit_buffers f;
    fit_buffers_init(&f, h, be, x, n, nt, o->batch);
    const float *xh = f.x + (size_t)nt * D, *yh = ys + nt;
    fit_loop(h, &f, ys, nt, yh, nh, o, rep);
    rep->n_train = nt;
    rep->n_held = nh;
    rep->train_loss = mt_head_loss(h, &f.dev, f.x, ys, nt, 0, NULL, NULL);
    rep->train_metric = mt_head_metric(h, &f.dev, f.x, ys, nt);
    rep->held_loss = nh ? mt_head_loss(h, &f.dev, xh, yh, nh, 0, NULL, NULL) : NAN;
    rep->held_metric = nh ? mt_head_metric(h, &f.dev, xh, yh, nh) : NAN;
    fit_buffers_free(&f);
    free(order), free(ys);
}

// ---- head files ------------------------------------------------------------------------

void mt_head_save(const char *path, const mt_head *h) {
    mt_st_write_tensor t[4] = {
        {"W", 2, {h->k, h->dim}, h->w},
        {"b", 1, {h->k}, h->b},
        {"mean", 1, {h->dim}, h->mean},
        {"scale", 1, {h->dim}, h->scale},
    };
    char feat[64], hid[32], err[512];
    mt_features_format(h->features, feat, sizeof feat);
    snprintf(hid, sizeof hid, "%d", h->hidden);
    const char *meta[] = {"kind", "mtbert-head", "version", "1", "task", mt_task_name(h->task),
                          "features", feat, "hidden", hid, "model_fp", h->model_fp, "pool", h->pool, NULL};
    if (mt_safetensors_write_meta(path, t, 4, meta, err, sizeof err)) mt_die("%s", err);
}

// Copies tensor `name` of st into dst after checking its shape; dies naming the file.
static void load_tensor(const mt_safetensors *st, const char *name, int d0, int d1, float *dst) {
    const mt_st_tensor *t = mt_safetensors_find(st, name);
    if (!t) mt_die("%s: head file has no tensor '%s'", st->path, name);
    int ndim = d1 ? 2 : 1;
    if (t->ndim != ndim || t->shape[0] != d0 || (d1 && t->shape[1] != d1))
        mt_die("%s: tensor '%s' does not have the shape its metadata implies (%d x %d)", st->path,
               name, d0, d1 ? d1 : 1);
    mt_st_to_f32(t, dst);
}

// The value of metadata key, copied into buf; dies when absent.
static const char *need_meta(const mt_safetensors *st, const char *key, char *buf, size_t n) {
    if (!mt_safetensors_meta(st, key, buf, n)) mt_die("%s: head file metadata has no '%s'", st->path, key);
    return buf;
}

mt_head *mt_head_load(const char *path) {
    mt_safetensors st;
    char err[512], kind[32], task_s[32], feat_s[64], hid_s[32];
    if (mt_safetensors_open(&st, path, err, sizeof err)) mt_die("%s", err);
    if (!mt_safetensors_meta(&st, "kind", kind, sizeof kind) || strcmp(kind, "mtbert-head") != 0)
        mt_die("%s: not an mtbert head file (metadata kind is not 'mtbert-head')", path);
    mt_task task;
    unsigned feat;
    if (mt_task_parse(need_meta(&st, "task", task_s, sizeof task_s), &task))
        mt_die("%s: unknown task '%s'", path, task_s);
    if (mt_features_parse(need_meta(&st, "features", feat_s, sizeof feat_s), &feat))
        mt_die("%s: unknown features '%s'", path, feat_s);
    long hidden = strtol(need_meta(&st, "hidden", hid_s, sizeof hid_s), NULL, 10);
    if (hidden <= 0 || hidden > (1 << 16)) mt_die("%s: bad hidden size", path);
    mt_head *h = mt_head_new(task, feat, (int)hidden);
    load_tensor(&st, "W", h->k, h->dim, h->w);
    load_tensor(&st, "b", h->k, 0, h->b);
    load_tensor(&st, "mean", h->dim, 0, h->mean);
    load_tensor(&st, "scale", h->dim, 0, h->scale);
    need_meta(&st, "model_fp", h->model_fp, sizeof h->model_fp);
    need_meta(&st, "pool", h->pool, sizeof h->pool);
    mt_safetensors_close(&st);
    return h;
}
