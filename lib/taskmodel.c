// taskmodel.c — see taskmodel.h.
#include "taskmodel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "memplan.h"
#include "rng.h"
#include "safetensors.h"

static const char *const PAIR_NAMES[3] = {"bi", "cross", "ensemble"};
static const char *const HEAD_NAMES[MT_TM_N_HEAD_TENSORS] = {
    "sst.weight", "sst.bias", "qqp_bi.weight", "qqp_bi.bias",
    "qqp_cross.weight", "qqp_cross.bias", "sts_cross.weight", "sts_cross.bias"};

// Dropout inputs of the heads (the `kind` of their dropout site).
enum { IN_SST = 1, IN_QQP_BI = 2, IN_QQP_CROSS = 3, IN_STS_CROSS = 4 };

const char *mt_pair_model_name(int pair) { return (unsigned)pair < 3 ? PAIR_NAMES[pair] : "?"; }

int mt_pair_model_parse(const char *name) {
    for (int p = 0; p < 3; p++)
        if (!strcmp(name, PAIR_NAMES[p])) return p;
    return -1;
}

static int uses_bi(const mt_taskmodel *tm, int task) { return task == MT_TASK_SST || tm->pair != MT_PAIR_CROSS; }
static int uses_cross(const mt_taskmodel *tm, int task) { return task != MT_TASK_SST && tm->pair != MT_PAIR_BI; }
// Weights of the bi and cross outputs in the combined pair output.
static float bi_weight(const mt_taskmodel *tm) { return tm->pair == MT_PAIR_BI ? 1.0f : tm->pair == MT_PAIR_CROSS ? 0.0f : 0.5f; }
static float cross_weight(const mt_taskmodel *tm) { return 1.0f - bi_weight(tm); }

int mt_taskmodel_sequences(const mt_taskmodel *tm, int task, int B, int *bi_first, int *cross_first) {
    int n = 0, bf = -1, cf = -1;
    if (uses_bi(tm, task)) bf = 0, n += mt_task_is_pair(task) ? 2 * B : B;
    if (uses_cross(tm, task)) cf = n, n += B;
    if (bi_first) *bi_first = bf;
    if (cross_first) *cross_first = cf;
    return n;
}

// ---- parameters ------------------------------------------------------------------------------

static void add_tensor(mt_taskmodel *tm, const char *name, int ndim, int d0, int d1, int d2,
                       size_t offset, int decay) {
    mt_tm_tensor *t = &tm->tensors[tm->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim, t->shape[0] = d0, t->shape[1] = d1, t->shape[2] = d2;
    t->size = (size_t)d0 * (ndim > 1 ? d1 : 1) * (ndim > 2 ? d2 : 1);
    t->offset = offset;
    t->decay = decay;
}

static void build_table(mt_taskmodel *tm) {
    for (int i = 0; i < tm->sent.n_tensors; i++) {
        const mt_sentence_tensor *s = &tm->sent.tensors[i];
        char name[48];
        snprintf(name, sizeof name, "sentence.%s", s->name);
        add_tensor(tm, name, s->ndim, s->shape[0], s->shape[1], s->shape[2], s->offset, s->decay);
    }
    tm->n_sent = tm->sent.n_params;
    const int out[MT_TM_N_HEAD_TENSORS] = {MT_SST_CLASSES, MT_SST_CLASSES, 1, 1, 1, 1, 1, 1};
    const int in[MT_TM_N_HEAD_TENSORS] = {tm->D, 0, 3 * tm->D, 0, tm->C, 0, tm->C, 0};
    size_t off = tm->n_sent;
    for (int i = 0; i < MT_TM_N_HEAD_TENSORS; i++) {
        add_tensor(tm, HEAD_NAMES[i], in[i] ? 2 : 1, out[i], in[i], 0, off, in[i] != 0);
        off += tm->tensors[tm->n_tensors - 1].size;
    }
    tm->n_params = off;
    tm->n_heads = off - tm->n_sent;
}

void mt_taskmodel_point(const mt_taskmodel *tm, float *base, mt_tm_views *v) {
    mt_sentence_weights_point(&v->sent, &tm->sent, base);
    for (int i = 0; i < MT_TM_N_HEAD_TENSORS; i++)
        v->head[i] = base + tm->tensors[tm->sent.n_tensors + i].offset;
}

int mt_taskmodel_find(const mt_taskmodel *tm, const char *name) {
    for (int i = 0; i < tm->n_tensors; i++)
        if (!strcmp(tm->tensors[i].name, name)) return i;
    return -1;
}

// nn.Linear's default: weight and bias uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).
static void init_heads(mt_taskmodel *tm, uint64_t seed) {
    for (int i = 0; i < MT_TM_N_HEAD_TENSORS; i++) {
        const mt_tm_tensor *t = &tm->tensors[tm->sent.n_tensors + i];
        int fan_in = tm->tensors[tm->sent.n_tensors + (i & ~1)].shape[1];
        float bound = 1.0f / sqrtf((float)fan_in);
        mt_rng r;
        mt_rng_init(&r, seed, MT_TM_INIT_STREAM + (uint32_t)i, MT_SITE_INIT);
        for (size_t j = 0; j < t->size; j++) tm->params[t->offset + j] = (2.0f * mt_rng_uniform(&r) - 1.0f) * bound;
    }
}

void mt_taskmodel_init(mt_taskmodel *tm, const mt_sentence_config *sc, mt_pair_model pair, uint64_t seed) {
    memset(tm, 0, sizeof *tm);
    mt_sentence_layout_init(&tm->sent, sc);
    tm->C = sc->C, tm->D = tm->sent.D, tm->pair = pair;
    build_table(tm);
    tm->params = mt_calloc(tm->n_params, sizeof(float));
    tm->sent_params = tm->params;
    mt_taskmodel_point(tm, tm->params, &tm->w);
    mt_sentence_init_params(&tm->sent, tm->params, seed);
    init_heads(tm, seed);
}

void mt_taskmodel_free(mt_taskmodel *tm) {
    if (tm->sent_params != tm->params) tm->be->free(tm->sent_params);
    free(tm->params);
    memset(tm, 0, sizeof *tm);
}

const mt_backend *mt_taskmodel_backend(const mt_taskmodel *tm) { return tm->be ? tm->be : mt_backend_cpu(); }

void mt_taskmodel_to_backend(mt_taskmodel *tm, const mt_backend *be) {
    if (tm->be) mt_die("task model: already on a backend");
    tm->be = be;
    if (be->host_memory) return;
    tm->sent_params = be->alloc((tm->n_sent ? tm->n_sent : 1) * sizeof(float));
    be->copy_to_device(tm->sent_params, tm->params, tm->n_sent * sizeof(float));
    mt_sentence_weights_point(&tm->w.sent, &tm->sent, tm->sent_params);
}

void mt_taskmodel_sync_host(mt_taskmodel *tm) {
    if (tm->sent_params != tm->params) tm->be->copy_to_host(tm->params, tm->sent_params, tm->n_sent * sizeof(float));
}

// ---- heads.safetensors -------------------------------------------------------------------------

static void join_ints(char *out, size_t n, const int *v, int k) {
    size_t used = 0;
    out[0] = 0;
    for (int i = 0; i < k && used < n; i++) used += (size_t)snprintf(out + used, n - used, "%s%d", i ? "," : "", v[i]);
}

int mt_taskmodel_save(const mt_taskmodel *tm, const char *path, char *err, size_t errlen) {
    mt_st_write_tensor t[MT_SENT_MAX_TENSORS + MT_TM_N_HEAD_TENSORS];
    for (int i = 0; i < tm->n_tensors; i++) {
        const mt_tm_tensor *s = &tm->tensors[i];
        t[i] = (mt_st_write_tensor){.name = s->name, .ndim = s->ndim, .data = tm->params + s->offset};
        for (int d = 0; d < s->ndim; d++) t[i].shape[d] = s->shape[d];
    }
    const mt_sentence_config *c = &tm->sent.cfg;
    char hidden[16], widths[64], filters[64], lstm[16], over[4], drop[32];
    snprintf(hidden, sizeof hidden, "%d", tm->C);
    join_ints(widths, sizeof widths, c->width, c->n_widths);
    join_ints(filters, sizeof filters, c->filters, c->n_widths);
    snprintf(lstm, sizeof lstm, "%d", c->lstm_hidden);
    snprintf(over, sizeof over, "%d", c->lstm_over_cnn);
    snprintf(drop, sizeof drop, "%.9g", c->cnn_dropout);
    const char *meta[] = {"sentence_model", mt_sentence_kind_name(c->kind), "pair_model", mt_pair_model_name(tm->pair),
                          "hidden", hidden, "model_fp", tm->model_fp, "cnn_widths", widths, "cnn_filters", filters,
                          "lstm_hidden", lstm, "lstm_over_cnn", over, "cnn_dropout", drop, NULL};
    return mt_safetensors_write_meta(path, t, tm->n_tensors, meta, err, errlen);
}

static int parse_ints(const char *s, int *out, int max) {
    int k = 0;
    char *end;
    while (*s && k < max) {
        out[k++] = (int)strtol(s, &end, 10);
        if (end == s) return -1;
        s = *end == ',' ? end + 1 : end;
    }
    return k;
}

// The architecture from the metadata: 0, or -1 with a message.
static int config_from_meta(const mt_safetensors *st, mt_sentence_config *sc, int *pair, char *err, size_t errlen) {
    char kind[32], pm[32], hidden[16], buf[64];
    if (!mt_safetensors_meta(st, "sentence_model", kind, sizeof kind) || !mt_safetensors_meta(st, "pair_model", pm, sizeof pm) ||
        !mt_safetensors_meta(st, "hidden", hidden, sizeof hidden)) {
        snprintf(err, errlen, "%s: not a heads file (metadata sentence_model, pair_model, hidden missing)", st->path);
        return -1;
    }
    int k = mt_sentence_kind_parse(kind), C = atoi(hidden);
    *pair = mt_pair_model_parse(pm);
    if (k < 0 || *pair < 0 || C < 1) {
        snprintf(err, errlen, "%s: bad metadata (sentence_model '%s', pair_model '%s', hidden '%s')", st->path, kind, pm, hidden);
        return -1;
    }
    *sc = mt_sentence_default_config((mt_sentence_kind)k, C, 1, 1);
    int filters[MT_SENT_MAX_WIDTHS];
    if (mt_safetensors_meta(st, "cnn_widths", buf, sizeof buf)) sc->n_widths = parse_ints(buf, sc->width, MT_SENT_MAX_WIDTHS);
    if (mt_safetensors_meta(st, "cnn_filters", buf, sizeof buf) && parse_ints(buf, filters, MT_SENT_MAX_WIDTHS) == sc->n_widths)
        memcpy(sc->filters, filters, sizeof filters);
    if (mt_safetensors_meta(st, "lstm_hidden", buf, sizeof buf)) sc->lstm_hidden = atoi(buf);
    if (mt_safetensors_meta(st, "lstm_over_cnn", buf, sizeof buf)) sc->lstm_over_cnn = atoi(buf);
    if (mt_safetensors_meta(st, "cnn_dropout", buf, sizeof buf)) sc->cnn_dropout = strtof(buf, NULL);
    if (sc->n_widths < 1 || sc->lstm_hidden < 1) {
        snprintf(err, errlen, "%s: bad sentence-model metadata", st->path);
        return -1;
    }
    return 0;
}

static int copy_tensors(mt_taskmodel *tm, const mt_safetensors *st, char *err, size_t errlen) {
    for (int i = 0; i < tm->n_tensors; i++) {
        const mt_tm_tensor *t = &tm->tensors[i];
        const mt_st_tensor *s = mt_safetensors_find(st, t->name);
        int ok = s && s->ndim == t->ndim && (size_t)s->numel == t->size;
        for (int d = 0; ok && d < t->ndim; d++) ok = s->shape[d] == t->shape[d];
        if (!ok) {
            snprintf(err, errlen, "%s: tensor '%s' %s", st->path, t->name, s ? "has the wrong shape" : "is missing");
            return -1;
        }
        mt_st_to_f32(s, tm->params + t->offset);
    }
    if (st->n != tm->n_tensors) {
        snprintf(err, errlen, "%s: %d tensors where the heads have %d", st->path, st->n, tm->n_tensors);
        return -1;
    }
    return 0;
}

int mt_taskmodel_load(mt_taskmodel *tm, const char *path, char *err, size_t errlen) {
    memset(tm, 0, sizeof *tm);
    mt_safetensors st;
    if (mt_safetensors_open(&st, path, err, errlen)) return -1;
    mt_sentence_config sc;
    int pair, rc = config_from_meta(&st, &sc, &pair, err, errlen);
    if (!rc) {
        mt_taskmodel_init(tm, &sc, (mt_pair_model)pair, 0);
        rc = copy_tensors(tm, &st, err, errlen);
        char fp[17] = "";
        if (mt_safetensors_meta(&st, "model_fp", fp, sizeof fp)) memcpy(tm->model_fp, fp, sizeof fp);
        if (rc) mt_taskmodel_free(tm);
    }
    mt_safetensors_close(&st);
    return rc;
}

// ---- small dense pieces ----------------------------------------------------------------------

static float dotf(const float *a, const float *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return (float)s;
}

// y[B,O] = x[B,K] @ W[O,K]^T + bias[O]
static void linear_forward(float *y, const float *x, const float *W, const float *bias, int B, int K, int O) {
    for (int b = 0; b < B; b++)
        for (int o = 0; o < O; o++) y[b * O + o] = dotf(x + (size_t)b * K, W + (size_t)o * K, K) + bias[o];
}

// dx[B,K] = dy @ W (overwritten); dW[O,K] += dy^T x; dbias[O] += sum_b dy.
static void linear_backward(float *dx, float *dW, float *dbias, const float *dy, const float *x, const float *W,
                            int B, int K, int O) {
    for (int b = 0; b < B; b++) {
        float *d = dx + (size_t)b * K;
        for (int k = 0; k < K; k++) d[k] = 0.0f;
        for (int o = 0; o < O; o++) {
            float g = dy[b * O + o];
            dbias[o] += g;
            for (int k = 0; k < K; k++) d[k] += g * W[(size_t)o * K + k], dW[(size_t)o * K + k] += g * x[(size_t)b * K + k];
        }
    }
}

// xd[B,K] = inverted dropout of x (a copy when drop is off); mask from the head input's site.
static void dropout_forward(float *xd, uint8_t *keep, const float *x, size_t n, const mt_tm_dropout *drop, int input) {
    if (!drop || drop->p <= 0.0f) { memmove(xd, x, n * sizeof *x); return; }
    uint32_t site = mt_dropout_site(drop->pass, MT_HEAD_DROPOUT_LAYER, (uint32_t)input);
    mt_dropout_mask(keep, n, 0, drop->seed, drop->step, site, mt_dropout_threshold(drop->p));
    float scale = 1.0f / (1.0f - drop->p);
    for (size_t i = 0; i < n; i++) xd[i] = keep[i] ? x[i] * scale : 0.0f;
}

// In place on d[n]: the dropout's backward (the mask is recomputed from its key).
static void dropout_backward(float *d, uint8_t *keep, size_t n, const mt_tm_dropout *drop, int input) {
    if (drop->p <= 0.0f) return;
    uint32_t site = mt_dropout_site(drop->pass, MT_HEAD_DROPOUT_LAYER, (uint32_t)input);
    mt_dropout_mask(keep, n, 0, drop->seed, drop->step, site, mt_dropout_threshold(drop->p));
    float scale = 1.0f / (1.0f - drop->p);
    for (size_t i = 0; i < n; i++) d[i] = keep[i] ? d[i] * scale : 0.0f;
}

static float sigmoid(float z) { return z >= 0 ? 1.0f / (1.0f + expf(-z)) : expf(z) / (1.0f + expf(z)); }

// cos(u, v) as torch's cosine_similarity (norms clamped at 1e-8); the clamped norms in nu, nv.
static float cosine(const float *u, const float *v, int D, float *nu, float *nv) {
    *nu = fmaxf(sqrtf(dotf(u, u, D)), 1e-8f);
    *nv = fmaxf(sqrtf(dotf(v, v, D)), 1e-8f);
    return dotf(u, v, D) / (*nu * *nv);
}

static void softmax5(float *p, const float *z) {
    float m = z[0], s = 0;
    for (int k = 1; k < MT_SST_CLASSES; k++) m = fmaxf(m, z[k]);
    for (int k = 0; k < MT_SST_CLASSES; k++) s += p[k] = expf(z[k] - m);
    for (int k = 0; k < MT_SST_CLASSES; k++) p[k] /= s;
}

// [u; v; |u - v|]
static void pair_features(float *x, const float *u, const float *v, int D) {
    for (int d = 0; d < D; d++) x[d] = u[d], x[D + d] = v[d], x[2 * D + d] = fabsf(u[d] - v[d]);
}

// ---- activations -------------------------------------------------------------------------------

void mt_tm_acts_free(mt_tm_acts *a) {
    if (!a->be) return;  // never allocated
    mt_sentence_acts_free(a->be, &a->sacts);
    if (!a->be->host_memory) {
        void *d[] = {a->d_emb, a->d_demb, a->d_cls, a->d_dcls, a->d_offsets};
        for (size_t i = 0; i < sizeof d / sizeof *d; i++) a->be->free(d[i]);
    }
    free(a->emb), free(a->demb), free(a->cls), free(a->dcls), free(a->x_bi), free(a->xd_bi);
    free(a->xd_e), free(a->xd_cls), free(a->keep), free(a->dx), free(a->z_bi), free(a->z_cross);
    free(a->cos), free(a->nu), free(a->nv), free(a->out), free(a->dz);
    memset(a, 0, sizeof *a);
}

// The embeddings, [CLS] states, their gradients and the offsets in backend memory (not on a
// host-memory backend, where the host buffers serve), for max_B examples; sizing only without s->be.
static void dev_acts_take(mt_mem_sizer *s, const mt_taskmodel *tm, mt_tm_acts *a, int max_B) {
    size_t D = (size_t)tm->D, C = (size_t)tm->C, Bz = (size_t)max_B;
    a->d_emb = mt_mem_take(s, 2 * Bz * D * sizeof(float)), a->d_demb = mt_mem_take(s, 2 * Bz * D * sizeof(float));
    a->d_cls = mt_mem_take(s, Bz * C * sizeof(float)), a->d_dcls = mt_mem_take(s, Bz * C * sizeof(float));
    a->d_offsets = mt_mem_take(s, (3 * Bz + 1) * sizeof(int32_t));
}

static void ensure_acts(const mt_taskmodel *tm, mt_tm_acts *a, int B, int N) {
    if (B <= a->cap_B && N <= a->cap_N) return;
    int cap_B = B > a->cap_B ? B : a->cap_B, cap_N = N > a->cap_N ? N : a->cap_N;
    mt_tm_acts_free(a);
    a->cap_B = cap_B, a->cap_N = cap_N;
    size_t D = (size_t)tm->D, C = (size_t)tm->C, Bz = (size_t)cap_B, wide = 3 * D > C ? 3 * D : C;
    const mt_backend *be = a->be = mt_taskmodel_backend(tm);
    mt_sentence_acts_alloc(be, &a->sacts, &tm->sent, cap_N, 2 * cap_B);
    a->emb = mt_malloc(2 * Bz * D * sizeof(float)), a->demb = mt_malloc(2 * Bz * D * sizeof(float));
    a->cls = mt_malloc(Bz * C * sizeof(float)), a->dcls = mt_malloc(Bz * C * sizeof(float));
    a->x_bi = mt_malloc(Bz * 3 * D * sizeof(float)), a->xd_bi = mt_malloc(Bz * 3 * D * sizeof(float));
    a->xd_e = mt_malloc(Bz * D * sizeof(float)), a->xd_cls = mt_malloc(Bz * C * sizeof(float));
    a->keep = mt_malloc(Bz * wide), a->dx = mt_malloc(Bz * wide * sizeof(float));
    a->z_bi = mt_malloc(Bz * sizeof(float)), a->z_cross = mt_malloc(Bz * sizeof(float));
    a->cos = mt_malloc(Bz * sizeof(float)), a->nu = mt_malloc(Bz * sizeof(float)), a->nv = mt_malloc(Bz * sizeof(float));
    a->out = mt_malloc(Bz * MT_SST_CLASSES * sizeof(float)), a->dz = mt_malloc(Bz * MT_SST_CLASSES * sizeof(float));
    a->d_emb = a->emb, a->d_demb = a->demb, a->d_cls = a->cls, a->d_dcls = a->dcls, a->d_offsets = NULL;
    if (!be->host_memory) dev_acts_take(&(mt_mem_sizer){be, 0}, tm, a, cap_B);
}

size_t mt_tm_acts_backend_bytes(const mt_taskmodel *tm, const mt_backend *be, int max_B, int max_N) {
    mt_tm_acts a;
    mt_mem_sizer s = {NULL, 0};
    if (!be->host_memory) dev_acts_take(&s, tm, &a, max_B);
    return s.bytes + mt_sentence_acts_bytes(&tm->sent, max_N, 2 * max_B);
}

void mt_tm_acts_reserve(const mt_taskmodel *tm, mt_tm_acts *a, int max_B, int max_N) {
    ensure_acts(tm, a, max_B, max_N);
}

// The pass's offsets in backend memory (the cross part's uploaded by the forward).
static const int32_t *dev_offsets(const mt_tm_acts *a) { return a->d_offsets ? a->d_offsets : a->offsets; }

// ---- forward -----------------------------------------------------------------------------------

// The bi-encoder output z_bi[B] of a pair task from u = emb[0..B), v = emb[B..2B).
static void pair_bi_forward(mt_taskmodel *tm, mt_tm_acts *a, int task, int B) {
    int D = tm->D;
    const float *u = a->emb, *v = a->emb + (size_t)B * D;
    if (task == MT_TASK_QQP) {
        for (int b = 0; b < B; b++) pair_features(a->x_bi + (size_t)b * 3 * D, u + (size_t)b * D, v + (size_t)b * D, D);
        dropout_forward(a->xd_bi, a->keep, a->x_bi, (size_t)B * 3 * D, &a->drop, IN_QQP_BI);
        linear_forward(a->z_bi, a->xd_bi, tm->w.head[MT_TM_QQP_BI_W], tm->w.head[MT_TM_QQP_BI_B], B, 3 * D, 1);
        return;
    }
    for (int b = 0; b < B; b++) {
        a->cos[b] = cosine(u + (size_t)b * D, v + (size_t)b * D, D, &a->nu[b], &a->nv[b]);
        a->z_bi[b] = 2.5f * (1.0f + a->cos[b]);
    }
}

static void pair_cross_forward(mt_taskmodel *tm, mt_tm_acts *a, int task, int B) {
    int C = tm->C, w = task == MT_TASK_QQP ? MT_TM_QQP_CROSS_W : MT_TM_STS_CROSS_W;
    a->be->pool_forward(a->d_cls, a->hidden, dev_offsets(a) + a->cross_first, B, C, MT_POOL_CLS);
    if (a->d_cls != a->cls) a->be->copy_to_host(a->cls, a->d_cls, (size_t)B * C * sizeof(float));
    dropout_forward(a->xd_cls, a->keep, a->cls, (size_t)B * C, &a->drop, task == MT_TASK_QQP ? IN_QQP_CROSS : IN_STS_CROSS);
    linear_forward(a->z_cross, a->xd_cls, tm->w.head[w], tm->w.head[w + 1], B, C, 1);
}

// Loss of each task from its outputs; fills a->out and a->dz (d loss / d output, unscaled).
static double sst_loss(mt_taskmodel *tm, mt_tm_acts *a, int B, const float *labels) {
    dropout_forward(a->xd_e, a->keep, a->emb, (size_t)B * tm->D, &a->drop, IN_SST);
    float *z = a->dz;  // logits first, then overwritten by their gradient
    linear_forward(z, a->xd_e, tm->w.head[MT_TM_SST_W], tm->w.head[MT_TM_SST_B], B, tm->D, MT_SST_CLASSES);
    double loss = 0;
    for (int b = 0; b < B; b++) {
        float *p = a->out + b * MT_SST_CLASSES, *g = z + b * MT_SST_CLASSES;
        softmax5(p, g);
        if (!labels) continue;
        int y = (int)labels[b];
        loss -= log(fmax((double)p[y], 1e-38));
        for (int k = 0; k < MT_SST_CLASSES; k++) g[k] = (p[k] - (k == y)) / (float)B;
    }
    return loss / B;
}

static double pair_loss(mt_taskmodel *tm, mt_tm_acts *a, int task, int B, const float *labels) {
    double loss = 0;
    float wb = bi_weight(tm), wc = cross_weight(tm);
    for (int b = 0; b < B; b++) {
        float z = (wb > 0 ? wb * a->z_bi[b] : 0.0f) + (wc > 0 ? wc * a->z_cross[b] : 0.0f);
        a->out[b] = task == MT_TASK_QQP ? sigmoid(z) : z;
        if (!labels) continue;
        float y = labels[b];
        if (task == MT_TASK_QQP) {  // softplus(z) - y z, stably
            loss += fmax(z, 0.0) - (double)z * y + log1p(exp(-fabs((double)z)));
            a->dz[b] = (a->out[b] - y) / (float)B;
        } else {
            loss += ((double)z - y) * ((double)z - y);
            a->dz[b] = 2.0f * (z - y) / (float)B;
        }
    }
    return loss / B;
}

double mt_taskmodel_forward(mt_taskmodel *tm, mt_tm_acts *a, int task, const float *hidden,
                            const int32_t *offsets, int B, const float *labels, const mt_tm_dropout *drop) {
    int bi_first, cross_first, nseq = mt_taskmodel_sequences(tm, task, B, &bi_first, &cross_first);
    int N = offsets[nseq];
    ensure_acts(tm, a, B, N);
    a->task = task, a->B = B, a->N = N, a->nseq = nseq, a->bi_first = bi_first, a->cross_first = cross_first;
    a->hidden = hidden, a->offsets = offsets;
    a->drop = drop && drop->p > 0 ? *drop : (mt_tm_dropout){0};
    // Only the cross part reads offsets on the backend (the sentence model uploads its own), so
    // only its B + 1 go up, and none for sst or bi-only pairs.
    if (a->d_offsets && cross_first >= 0)
        a->be->copy_to_device(a->d_offsets + cross_first, offsets + cross_first, ((size_t)B + 1) * sizeof(int32_t));
    if (bi_first >= 0) {
        int ns = mt_task_is_pair(task) ? 2 * B : B;
        mt_dropout sd = {a->drop.p, a->drop.seed, a->drop.step, mt_dropout_site(a->drop.pass, MT_SENT_DROPOUT_LAYER, 0)};
        mt_sentence_forward(a->be, a->d_emb, &a->sacts, &tm->sent, &tm->w.sent, hidden, offsets, ns, offsets[ns],
                            a->drop.p > 0 ? &sd : NULL);
        if (a->d_emb != a->emb) a->be->copy_to_host(a->emb, a->d_emb, (size_t)ns * tm->D * sizeof(float));
    }
    if (task == MT_TASK_SST) return a->loss = sst_loss(tm, a, B, labels);
    if (bi_first >= 0) pair_bi_forward(tm, a, task, B);
    if (cross_first >= 0) pair_cross_forward(tm, a, task, B);
    return a->loss = pair_loss(tm, a, task, B, labels);
}

// ---- backward ----------------------------------------------------------------------------------

static float *head_grad(const mt_taskmodel *tm, float *dheads, int i) {
    return dheads + (tm->tensors[tm->sent.n_tensors + i].offset - tm->n_sent);
}

// demb (u rows, then v rows) from d loss / d z_bi (in a->dz times wb).
static void pair_bi_backward(mt_taskmodel *tm, mt_tm_acts *a, float *dheads, float scale) {
    int B = a->B, D = tm->D;
    const float *u = a->emb, *v = a->emb + (size_t)B * D;
    float *du = a->demb, *dv = a->demb + (size_t)B * D, *dy = a->z_bi;  // z_bi no longer needed: reuse as dy
    for (int b = 0; b < B; b++) dy[b] = a->dz[b] * scale;
    if (a->task == MT_TASK_QQP) {
        linear_backward(a->dx, head_grad(tm, dheads, MT_TM_QQP_BI_W), head_grad(tm, dheads, MT_TM_QQP_BI_B), dy, a->xd_bi,
                        tm->w.head[MT_TM_QQP_BI_W], B, 3 * D, 1);
        dropout_backward(a->dx, a->keep, (size_t)B * 3 * D, &a->drop, IN_QQP_BI);
        for (int b = 0; b < B; b++) {
            const float *g = a->dx + (size_t)b * 3 * D, *ub = u + (size_t)b * D, *vb = v + (size_t)b * D;
            for (int d = 0; d < D; d++) {
                float s = ub[d] > vb[d] ? 1.0f : ub[d] < vb[d] ? -1.0f : 0.0f;  // d|x|/dx, 0 at 0 as torch
                du[(size_t)b * D + d] = g[d] + s * g[2 * D + d];
                dv[(size_t)b * D + d] = g[D + d] - s * g[2 * D + d];
            }
        }
        return;
    }
    for (int b = 0; b < B; b++) {  // s = 2.5 (1 + cos): d cos/du = v/(|u||v|) - cos u/|u|^2
        const float *ub = u + (size_t)b * D, *vb = v + (size_t)b * D;
        float g = 2.5f * dy[b], inv = 1.0f / (a->nu[b] * a->nv[b]);
        float cu = a->cos[b] / (a->nu[b] * a->nu[b]), cv = a->cos[b] / (a->nv[b] * a->nv[b]);
        for (int d = 0; d < D; d++) {
            du[(size_t)b * D + d] = g * (vb[d] * inv - cu * ub[d]);
            dv[(size_t)b * D + d] = g * (ub[d] * inv - cv * vb[d]);
        }
    }
}

static void pair_cross_backward(mt_taskmodel *tm, mt_tm_acts *a, float *dhidden, float *dheads, float scale) {
    int B = a->B, C = tm->C, w = a->task == MT_TASK_QQP ? MT_TM_QQP_CROSS_W : MT_TM_STS_CROSS_W;
    float *dy = a->z_cross;
    for (int b = 0; b < B; b++) dy[b] = a->dz[b] * scale;
    linear_backward(a->dcls, head_grad(tm, dheads, w), head_grad(tm, dheads, w + 1), dy, a->xd_cls, tm->w.head[w], B, C, 1);
    dropout_backward(a->dcls, a->keep, (size_t)B * C, &a->drop, a->task == MT_TASK_QQP ? IN_QQP_CROSS : IN_STS_CROSS);
    if (a->d_dcls != a->dcls) a->be->copy_to_device(a->d_dcls, a->dcls, (size_t)B * C * sizeof(float));
    a->be->pool_backward(dhidden, a->d_dcls, dev_offsets(a) + a->cross_first, B, C, MT_POOL_CLS);
}

static void sst_backward(mt_taskmodel *tm, mt_tm_acts *a, float *dheads, float dloss) {
    int B = a->B, D = tm->D;
    for (int i = 0; i < B * MT_SST_CLASSES; i++) a->dz[i] *= dloss;
    linear_backward(a->demb, head_grad(tm, dheads, MT_TM_SST_W), head_grad(tm, dheads, MT_TM_SST_B), a->dz, a->xd_e,
                    tm->w.head[MT_TM_SST_W], B, D, MT_SST_CLASSES);
    dropout_backward(a->demb, a->keep, (size_t)B * D, &a->drop, IN_SST);
}

void mt_taskmodel_backward(mt_taskmodel *tm, mt_tm_acts *a, float *dhidden, float *dsent, float *dheads, float dloss) {
    a->be->zero(dhidden, (size_t)a->N * tm->C * sizeof(float));
    if (a->task == MT_TASK_SST) sst_backward(tm, a, dheads, dloss);
    else {
        if (a->cross_first >= 0) pair_cross_backward(tm, a, dhidden, dheads, dloss * cross_weight(tm));
        if (a->bi_first >= 0) pair_bi_backward(tm, a, dheads, dloss * bi_weight(tm));
    }
    if (a->bi_first < 0) return;
    int ns = mt_task_is_pair(a->task) ? 2 * a->B : a->B;
    if (a->d_demb != a->demb) a->be->copy_to_device(a->d_demb, a->demb, (size_t)ns * tm->D * sizeof(float));
    mt_sentence_weights dw;
    mt_sentence_weights_point(&dw, &tm->sent, dsent);
    mt_sentence_backward(a->be, dhidden, &dw, a->d_demb, &a->sacts, &tm->sent, &tm->w.sent, a->hidden);
}

// ---- inference on pooled vectors -------------------------------------------------------------

void mt_tm_predictor_init(mt_tm_predictor *p, const mt_taskmodel *tm, const mt_backend *be) {
    *p = (mt_tm_predictor){be, 0, NULL, NULL, NULL};
    if (be->host_memory) return;
    p->heads = be->alloc(tm->n_heads * sizeof(float));
    be->copy_to_device(p->heads, tm->params + tm->n_sent, tm->n_heads * sizeof(float));
}

// p's rows and outputs for n records (a backend with its own memory).
static void predictor_fit(const mt_taskmodel *tm, mt_tm_predictor *p, int n) {
    if (n <= p->cap) return;
    size_t width = (size_t)(3 * tm->D > tm->C ? 3 * tm->D : tm->C);
    p->be->free(p->x), p->be->free(p->y);
    p->x = p->be->alloc((size_t)n * width * sizeof(float));
    p->y = p->be->alloc((size_t)n * MT_SST_CLASSES * sizeof(float));
    p->cap = n;
}

void mt_tm_predictor_free(mt_tm_predictor *p) {
    if (p->be && !p->be->host_memory) p->be->free(p->heads), p->be->free(p->x), p->be->free(p->y);
    *p = (mt_tm_predictor){0};
}

// y[n, O] (host) = x[n, K] (host) @ W^T + bias, head tensors wi ([O, K]) and wi + 1 ([O]), as
// one product on p->be; a backend with its own memory gets x in p's rows and uses p's copy of
// the weights.
static void linear_on(const mt_taskmodel *tm, mt_tm_predictor *p, float *y, const float *x, int wi, int n, int K,
                      int O) {
    const mt_backend *be = p->be;
    const float *W = tm->w.head[wi], *bias = tm->w.head[wi + 1];
    if (be->host_memory) {
        be->matmul_forward(y, x, W, bias, NULL, n, K, O);
        return;
    }
    const float *h0 = tm->params + tm->n_sent;
    predictor_fit(tm, p, n);
    be->copy_to_device(p->x, x, (size_t)n * K * sizeof(float));
    be->matmul_forward(p->y, p->x, p->heads + (W - h0), p->heads + (bias - h0), NULL, n, K, O);
    be->copy_to_host(y, p->y, (size_t)n * O * sizeof(float));
}

void mt_taskmodel_predict(const mt_taskmodel *tm, mt_tm_predictor *p, int task, int n, const float *emb_a,
                          const float *emb_b, const float *cls_ab, float *out) {
    int D = tm->D, C = tm->C;
    if (task == MT_TASK_SST) {
        linear_on(tm, p, out, emb_a, MT_TM_SST_W, n, D, MT_SST_CLASSES);
        for (int i = 0; i < n; i++) softmax5(out + (size_t)i * MT_SST_CLASSES, out + (size_t)i * MT_SST_CLASSES);
        return;
    }
    float *zb = mt_calloc((size_t)n, sizeof *zb), *zc = mt_calloc((size_t)n, sizeof *zc);
    float wb = bi_weight(tm), wc = cross_weight(tm);
    if (wb > 0 && task == MT_TASK_QQP) {
        float *x = mt_malloc((size_t)n * 3 * D * sizeof *x);
        for (int i = 0; i < n; i++)
            pair_features(x + (size_t)i * 3 * D, emb_a + (size_t)i * D, emb_b + (size_t)i * D, D);
        linear_on(tm, p, zb, x, MT_TM_QQP_BI_W, n, 3 * D, 1);
        free(x);
    } else if (wb > 0) {  // sts: the cosine, O(D) per pair and no product
        for (int i = 0; i < n; i++) {
            float nu, nv;
            zb[i] = 2.5f * (1.0f + cosine(emb_a + (size_t)i * D, emb_b + (size_t)i * D, D, &nu, &nv));
        }
    }
    int w = task == MT_TASK_QQP ? MT_TM_QQP_CROSS_W : MT_TM_STS_CROSS_W;
    if (wc > 0) linear_on(tm, p, zc, cls_ab, w, n, C, 1);
    for (int i = 0; i < n; i++) {
        float z = wb * zb[i] + wc * zc[i];
        out[i] = task == MT_TASK_QQP ? sigmoid(z) : z;
    }
    free(zb), free(zc);
}
