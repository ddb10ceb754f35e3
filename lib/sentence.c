// sentence.c — pooling, n-gram CNN, BiLSTM and the SBERT + CNN-BiLSTM sentence model
// (semantics and layouts in sentence.h), written once against the backend's op table; the
// loops are the ops' (lib/cpu/sentence.c, kernels/sentence.cu).
#include "sentence.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "memplan.h"
#include "rng.h"

static int seq_len(const int32_t *offsets, int b) { return offsets[b + 1] - offsets[b]; }

// ---- the batch's time steps ------------------------------------------------------------------

// The step lists' backend buffer from s (sizing only when s->be is NULL), host arrays with it.
static void seq_steps_take(mt_mem_sizer *s, mt_seq_steps *p, int max_N, int max_B) {
    memset(p, 0, sizeof *p);
    p->max_N = max_N, p->max_B = max_B;
    size_t n = (size_t)max_B + 1 + 2 * (size_t)max_N;
    p->dev = mt_mem_take(s, n * sizeof *p->dev);
    if (!s->be) return;
    p->start = mt_malloc(((size_t)max_N + 1) * sizeof *p->start);
    p->host = mt_malloc(n * sizeof *p->host);
}

void mt_seq_steps_alloc(const mt_backend *be, mt_seq_steps *p, int max_N, int max_B) {
    seq_steps_take(&(mt_mem_sizer){be, 0}, p, max_N, max_B);
}

void mt_seq_steps_free(const mt_backend *be, mt_seq_steps *p) {
    free(p->start), free(p->host);
    if (p->dev) be->free(p->dev);
    memset(p, 0, sizeof *p);
}

// Sets p for the batch: its offsets always, the LSTM's step lists (list, next, start) only
// with lists, so pooling alone neither builds nor uploads them.
static void seq_steps_set(const mt_backend *be, mt_seq_steps *p, const int32_t *offsets, int B, int lists) {
    if (B < 0 || B > p->max_B) mt_die("sentence model: batch of %d sequences (room for %d)", B, p->max_B);
    int N = offsets[B];
    if (N > p->max_N)
        mt_die("sentence model: batch of %d tokens / %d sequences (room for %d / %d)", N, B, p->max_N, p->max_B);
    int T = 0;
    for (int b = 0; b < B; b++) {
        if (seq_len(offsets, b) < 1) mt_die("sentence model: sequence %d is empty", b);
        T = seq_len(offsets, b) > T ? seq_len(offsets, b) : T;
    }
    int32_t *off = p->host, *list = off + B + 1, *next = list + N;
    memcpy(off, offsets, ((size_t)B + 1) * sizeof *off);
    p->B = B, p->N = N, p->T = T;
    p->offsets = p->dev, p->list = p->next = NULL;
    if (!lists) {
        be->copy_to_device(p->dev, p->host, ((size_t)B + 1) * sizeof *p->dev);
        return;
    }
    p->list = p->dev + B + 1, p->next = p->list + N;
    int e = 0;
    for (int s = 0; s < T; s++) {
        p->start[s] = e;
        int j_next = 0;  // entries of step s+1 so far: sequences before b that outlive s+1
        for (int b = 0; b < B; b++) {
            if (s >= seq_len(offsets, b)) continue;
            list[e] = b;
            next[e++] = s + 1 < seq_len(offsets, b) ? j_next++ : -1;
        }
    }
    p->start[T] = e;  // = N
    size_t used = (size_t)B + 1 + 2 * (size_t)N;
    be->copy_to_device(p->dev, p->host, used * sizeof *p->dev);
}

void mt_seq_steps_set(const mt_backend *be, mt_seq_steps *p, const int32_t *offsets, int B) {
    seq_steps_set(be, p, offsets, B, 1);
}

// ---- 'same' convolution ----------------------------------------------------------------------

void mt_conv_same_forward(const mt_backend *be, float *out, int ldo, float *col, const float *inp,
                          const float *weight, const float *bias, const int32_t *offsets, int B, int N,
                          int C, int F, int w) {
    be->im2col_same(col, inp, offsets, B, N, C, w);
    be->gemm(0, 1, N, F, C * w, 1.0f, col, C * w, weight, C * w, 0.0f, out, ldo);
    be->add_bias_forward(out, ldo, bias, NULL, N, F);
}

void mt_conv_same_backward(const mt_backend *be, float *dinp, float *dweight, float *dbias, float *col,
                           const float *dout, int ldo, const float *inp, const float *weight,
                           const int32_t *offsets, int B, int N, int C, int F, int w) {
    be->im2col_same(col, inp, offsets, B, N, C, w);
    be->gemm(1, 0, F, C * w, N, 1.0f, dout, ldo, col, C * w, 1.0f, dweight, C * w);
    be->add_bias_backward(dbias, NULL, dout, ldo, N, F);
    if (!dinp) return;
    be->gemm(0, 0, N, C * w, F, 1.0f, dout, ldo, weight, C * w, 0.0f, col, C * w);  // col = dcol
    be->col2im_same(dinp, col, offsets, B, N, C, w);
}

// ---- LSTM ------------------------------------------------------------------------------------

static void lstm_acts_take(mt_mem_sizer *s, mt_lstm_acts *a, int max_N, int max_B, int H) {
    size_t N = (size_t)max_N, B = (size_t)max_B, h = (size_t)H * sizeof(float);
    a->gates = mt_mem_take(s, N * 4 * h);
    a->cell = mt_mem_take(s, N * h);
    a->hidden = mt_mem_take(s, N * h);
    a->dgates = mt_mem_take(s, N * 4 * h);
    a->hprev = mt_mem_take(s, N * h);
    a->step_g = mt_mem_take(s, B * 4 * h);
    a->step_h = mt_mem_take(s, B * h);
    a->dc = mt_mem_take(s, B * h);
}

void mt_lstm_acts_alloc(const mt_backend *be, mt_lstm_acts *a, int max_N, int max_B, int H) {
    lstm_acts_take(&(mt_mem_sizer){be, 0}, a, max_N, max_B, H);
}

void mt_lstm_acts_free(const mt_backend *be, mt_lstm_acts *a) {
    float *p[] = {a->gates, a->cell, a->hidden, a->dgates, a->hprev, a->step_g, a->step_h, a->dc};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++)
        if (p[i]) be->free(p[i]);
    memset(a, 0, sizeof *a);
}

void mt_lstm_forward(const mt_backend *be, float *hfinal, mt_lstm_acts *a, const mt_seq_steps *st,
                     const float *x, const float *w_ih, const float *w_hh, const float *b_ih,
                     const float *b_hh, int In, int H, int reverse) {
    int N = st->N, G = 4 * H;
    // Input projections of every token at once: gates = x W_ih^T + (b_ih + b_hh).
    be->gemm(0, 1, N, G, In, 1.0f, x, In, w_ih, In, 0.0f, a->gates, G);
    be->add_bias_forward(a->gates, G, b_ih, b_hh, N, G);
    for (int s = 0; s < st->T; s++) {
        int e = st->start[s], nact = st->start[s + 1] - e;
        if (s == 0) be->zero(a->step_g, (size_t)nact * G * sizeof(float));  // h0 = 0
        else be->gemm(0, 1, nact, G, H, 1.0f, a->step_h, H, w_hh, H, 0.0f, a->step_g, G);
        be->lstm_cell_forward(a->gates, a->cell, a->hidden, a->step_h, hfinal, a->step_g, st->list + e,
                              st->next + e, st->offsets, nact, s, H, reverse);
    }
}

void mt_lstm_backward(const mt_backend *be, float *dx, float *dw_ih, float *dw_hh, float *db_ih,
                      float *db_hh, const float *dhfinal, mt_lstm_acts *a, const mt_seq_steps *st,
                      const float *x, const float *w_ih, const float *w_hh, int In, int H, int reverse) {
    int N = st->N, G = 4 * H;
    be->zero(a->dc, (size_t)st->B * H * sizeof(float));
    for (int s = st->T - 1; s >= 0; s--) {
        int e = st->start[s], nact = st->start[s + 1] - e;
        be->lstm_cell_backward(a->dgates, a->hprev, a->step_g, a->dc, a->step_h, dhfinal, a->gates, a->cell,
                               a->hidden, st->list + e, st->next + e, st->offsets, nact, s, H, reverse);
        if (s > 0) be->gemm(0, 0, nact, H, G, 1.0f, a->step_g, G, w_hh, H, 0.0f, a->step_h, H);  // dh_{t-1}
    }
    // Weight gradients over all steps at once, in a fixed order.
    be->gemm(1, 0, G, H, N, 1.0f, a->dgates, G, a->hprev, H, 1.0f, dw_hh, H);
    be->gemm(1, 0, G, In, N, 1.0f, a->dgates, G, x, In, 1.0f, dw_ih, In);
    be->add_bias_backward(db_ih, db_hh, a->dgates, G, N, G);
    if (dx) be->gemm(0, 0, N, In, G, 1.0f, a->dgates, G, w_ih, In, 1.0f, dx, In);
}

// ---- the sentence model: configuration and parameters --------------------------------------

static const char *const kind_names[] = {"cls", "mean", "sbert-cnn-bilstm"};

int mt_sentence_kind_parse(const char *name) {
    for (int k = 0; k < 3; k++)
        if (strcmp(name, kind_names[k]) == 0) return k;
    return -1;
}

const char *mt_sentence_kind_name(mt_sentence_kind kind) { return kind_names[kind]; }

mt_sentence_config mt_sentence_default_config(mt_sentence_kind kind, int C, int filters,
                                              int lstm_hidden) {
    mt_sentence_config cfg = {.kind = kind, .C = C, .n_widths = 4, .lstm_hidden = lstm_hidden,
                              .cnn_dropout = 0.1f};
    for (int i = 0; i < 4; i++) cfg.width[i] = i + 1, cfg.filters[i] = filters;
    return cfg;
}

static void add_tensor(mt_sentence_layout *L, const char *name, int d0, int d1, int d2,
                       int decay, float bound) {
    mt_sentence_tensor *t = &L->tensors[L->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = d2 ? 3 : d1 ? 2 : 1;
    t->shape[0] = d0, t->shape[1] = d1, t->shape[2] = d2;
    t->size = (size_t)d0 * (d1 ? d1 : 1) * (d2 ? d2 : 1);
    t->offset = L->n_params;
    t->decay = decay;
    t->init_bound = bound;
    L->n_params += t->size;
}

static void validate(const mt_sentence_config *cfg) {
    if (cfg->kind < MT_SENT_CLS || cfg->kind > MT_SENT_SBERT_CNN_BILSTM) mt_die("sentence model: bad kind %d", cfg->kind);
    if (cfg->C < 1) mt_die("sentence model: hidden size %d", cfg->C);
    if (cfg->kind != MT_SENT_SBERT_CNN_BILSTM) return;
    if (cfg->n_widths < 1 || cfg->n_widths > MT_SENT_MAX_WIDTHS)
        mt_die("sentence model: %d CNN widths (1..%d)", cfg->n_widths, MT_SENT_MAX_WIDTHS);
    for (int i = 0; i < cfg->n_widths; i++)
        if (cfg->width[i] < 1 || cfg->width[i] > 16 || cfg->filters[i] < 1)
            mt_die("sentence model: CNN width %d with %d filters", cfg->width[i], cfg->filters[i]);
    if (cfg->lstm_hidden < 1) mt_die("sentence model: LSTM hidden size %d", cfg->lstm_hidden);
    if (!(cfg->cnn_dropout >= 0.0f && cfg->cnn_dropout < 1.0f)) mt_die("sentence model: CNN dropout %g", cfg->cnn_dropout);
}

void mt_sentence_layout_init(mt_sentence_layout *L, const mt_sentence_config *cfg) {
    validate(cfg);
    memset(L, 0, sizeof *L);
    L->cfg = *cfg;
    L->D = cfg->C;
    if (cfg->kind != MT_SENT_SBERT_CNN_BILSTM) return;
    char name[40];
    for (int i = 0; i < cfg->n_widths; i++) {
        float bound = 1.0f / sqrtf((float)(cfg->C * cfg->width[i]));
        snprintf(name, sizeof name, "cnn.convs.%d.weight", i);
        add_tensor(L, name, cfg->filters[i], cfg->C, cfg->width[i], 1, bound);
        snprintf(name, sizeof name, "cnn.convs.%d.bias", i);
        add_tensor(L, name, cfg->filters[i], 0, 0, 0, bound);
        L->F += cfg->filters[i];
    }
    int H = cfg->lstm_hidden;
    L->lstm_in = cfg->lstm_over_cnn ? L->F : cfg->C;
    float bound = 1.0f / sqrtf((float)H);
    for (int dir = 0; dir < 2; dir++) {
        const char *sfx = dir ? "_reverse" : "";
        snprintf(name, sizeof name, "lstm.weight_ih_l0%s", sfx), add_tensor(L, name, 4 * H, L->lstm_in, 0, 1, bound);
        snprintf(name, sizeof name, "lstm.weight_hh_l0%s", sfx), add_tensor(L, name, 4 * H, H, 0, 1, bound);
        snprintf(name, sizeof name, "lstm.bias_ih_l0%s", sfx), add_tensor(L, name, 4 * H, 0, 0, 0, bound);
        snprintf(name, sizeof name, "lstm.bias_hh_l0%s", sfx), add_tensor(L, name, 4 * H, 0, 0, 0, bound);
    }
    L->D = cfg->C + L->F + 2 * H;
}

int mt_sentence_tensor_find(const mt_sentence_layout *L, const char *name) {
    for (int i = 0; i < L->n_tensors; i++)
        if (strcmp(L->tensors[i].name, name) == 0) return i;
    return -1;
}

// The table's order: per width weight, bias; then per direction w_ih, w_hh, b_ih, b_hh.
void mt_sentence_weights_point(mt_sentence_weights *w, const mt_sentence_layout *L, float *base) {
    memset(w, 0, sizeof *w);
    if (L->cfg.kind != MT_SENT_SBERT_CNN_BILSTM) return;
    const mt_sentence_tensor *t = L->tensors;
    for (int i = 0; i < L->cfg.n_widths; i++) {
        w->conv_w[i] = base + (t++)->offset;
        w->conv_b[i] = base + (t++)->offset;
    }
    for (int dir = 0; dir < 2; dir++) {
        w->w_ih[dir] = base + (t++)->offset;
        w->w_hh[dir] = base + (t++)->offset;
        w->b_ih[dir] = base + (t++)->offset;
        w->b_hh[dir] = base + (t++)->offset;
    }
}

void mt_sentence_init_params(const mt_sentence_layout *L, float *base, uint64_t seed) {
    for (int i = 0; i < L->n_tensors; i++) {
        const mt_sentence_tensor *t = &L->tensors[i];
        mt_rng r;
        mt_rng_init(&r, seed, MT_SENT_INIT_STREAM + (uint32_t)i, MT_SITE_INIT);
        for (size_t j = 0; j < t->size; j++)
            base[t->offset + j] = (2.0f * mt_rng_uniform(&r) - 1.0f) * t->init_bound;
    }
}

// ---- the sentence model: forward and backward --------------------------------------------------

static int max_width(const mt_sentence_config *cfg) {
    int m = 1;
    for (int i = 0; i < cfg->n_widths; i++) m = cfg->width[i] > m ? cfg->width[i] : m;
    return m;
}

#define MAX3(a, b, c) ((a) > (b) ? ((a) > (c) ? (a) : (c)) : ((b) > (c) ? (b) : (c)))

// Every operand of the gemm calls above and in mt_conv_same_* / mt_lstm_*, bounded by its rows
// times its leading dimension (each span is at most that).
size_t mt_sentence_operand_floats(const mt_sentence_layout *L, int max_N, int max_B) {
    const mt_sentence_config *cfg = &L->cfg;
    if (cfg->kind != MT_SENT_SBERT_CNN_BILSTM) return 0;
    size_t N = (size_t)max_N, B = (size_t)max_B, C = (size_t)cfg->C, G = 4 * (size_t)cfg->lstm_hidden;
    size_t In = (size_t)L->lstm_in, H = (size_t)cfg->lstm_hidden, n = N * (size_t)L->F;  // dout [N, ldo = F]
    for (int i = 0; i < cfg->n_widths; i++) {  // col [N, C*w], weight [F_w, C*w]
        size_t cw = C * (size_t)cfg->width[i];
        n = MAX3(n, N * cw, (size_t)cfg->filters[i] * cw);
    }
    n = MAX3(n, N * In, G * In);  // x, w_ih
    n = MAX3(n, N * G, G * H);    // gates / dgates, w_hh
    return MAX3(n, B * G, N * H); // step_g, hprev (step_h [B, H] is smaller)
}

// Every buffer of the activations from s: allocated, or (s->be NULL) only sized.
static void sentence_acts_take(mt_mem_sizer *s, mt_sentence_acts *a, const mt_sentence_layout *L, int max_N,
                               int max_B) {
    memset(a, 0, sizeof *a);
    a->max_N = max_N, a->max_B = max_B;
    const mt_sentence_config *cfg = &L->cfg;
    size_t N = (size_t)max_N, B = (size_t)max_B, F = (size_t)L->F, H = (size_t)cfg->lstm_hidden;
    size_t wide = (size_t)cfg->C;
    seq_steps_take(s, &a->steps, max_N, max_B);
    if (cfg->kind == MT_SENT_SBERT_CNN_BILSTM) {
        a->fmap = mt_mem_take(s, N * F * sizeof(float));
        a->dfmap = mt_mem_take(s, N * F * sizeof(float));
        a->col = mt_mem_take(s, N * (size_t)cfg->C * (size_t)max_width(cfg) * sizeof(float));
        a->pool = mt_mem_take(s, B * F * sizeof(float));
        a->argmax = mt_mem_take(s, B * F * sizeof(int32_t));
        a->hfin = mt_mem_take(s, 2 * B * H * sizeof(float));
        for (int dir = 0; dir < 2; dir++) lstm_acts_take(s, &a->lstm[dir], max_N, max_B, (int)H);
        wide = F > wide ? F : wide;
        wide = 2 * H > wide ? 2 * H : wide;
    }
    a->dbuf = mt_mem_take(s, B * wide * sizeof(float));
}

void mt_sentence_acts_alloc(const mt_backend *be, mt_sentence_acts *a, const mt_sentence_layout *L,
                            int max_N, int max_B) {
    sentence_acts_take(&(mt_mem_sizer){be, 0}, a, L, max_N, max_B);
    // A shape with no encoder: only the 16-bit operand workspaces can grow (a backend's reserve
    // never shrinks one), and only at --precision bf16 / fp16.
    size_t operands = mt_sentence_operand_floats(L, max_N, max_B);
    if (operands) be->reserve(&(mt_workspace_shape){.max_tokens = max_N, .max_batch = max_B, .operand_floats = operands});
}

size_t mt_sentence_acts_bytes(const mt_sentence_layout *L, int max_N, int max_B) {
    mt_sentence_acts a;
    mt_mem_sizer s = {NULL, 0};
    sentence_acts_take(&s, &a, L, max_N, max_B);
    return s.bytes;
}

void mt_sentence_acts_free(const mt_backend *be, mt_sentence_acts *a) {
    void *p[] = {a->fmap, a->dfmap, a->col, a->pool, a->argmax, a->hfin, a->dbuf};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++)
        if (p[i]) be->free(p[i]);
    if (a->lstm[0].gates)
        for (int dir = 0; dir < 2; dir++) mt_lstm_acts_free(be, &a->lstm[dir]);
    mt_seq_steps_free(be, &a->steps);
    memset(a, 0, sizeof *a);
}

static void cnn_forward(const mt_backend *be, mt_sentence_acts *a, const mt_sentence_layout *L,
                        const mt_sentence_weights *w, const float *inp) {
    const mt_sentence_config *cfg = &L->cfg;
    const mt_seq_steps *st = &a->steps;
    for (int i = 0, f0 = 0; i < cfg->n_widths; f0 += cfg->filters[i], i++)
        mt_conv_same_forward(be, a->fmap + f0, L->F, a->col, inp, w->conv_w[i], w->conv_b[i], st->offsets,
                             st->B, st->N, cfg->C, cfg->filters[i], cfg->width[i]);
    be->relu_dropout_forward(a->fmap, st->N, L->F, &a->drop);
    be->max_pool_forward(a->pool, a->argmax, a->fmap, st->offsets, st->B, L->F);
}

void mt_sentence_forward(const mt_backend *be, float *out, mt_sentence_acts *a, const mt_sentence_layout *L,
                         const mt_sentence_weights *w, const float *inp, const int32_t *offsets,
                         int B, int N, const mt_dropout *drop) {
    const mt_sentence_config *cfg = &L->cfg;
    if (N > a->max_N || B > a->max_B || offsets[B] != N)
        mt_die("sentence model: batch of %d tokens / %d sequences (room for %d / %d)", N, B, a->max_N, a->max_B);
    seq_steps_set(be, &a->steps, offsets, B, cfg->kind == MT_SENT_SBERT_CNN_BILSTM);
    const int32_t *off = a->steps.offsets;
    if (cfg->kind != MT_SENT_SBERT_CNN_BILSTM) {
        be->pool_forward(out, inp, off, B, cfg->C, cfg->kind == MT_SENT_CLS ? MT_POOL_CLS : MT_POOL_MEAN);
        return;
    }
    a->drop = drop ? *drop : (mt_dropout){0};
    a->drop.p = drop ? cfg->cnn_dropout : 0.0f;
    int C = cfg->C, F = L->F, H = cfg->lstm_hidden, D = L->D;

    be->pool_forward(a->dbuf, inp, off, B, C, MT_POOL_MEAN);
    be->copy_2d(out, D, a->dbuf, C, B, C);
    cnn_forward(be, a, L, w, inp);
    be->copy_2d(out + C, D, a->pool, F, B, F);
    const float *x = cfg->lstm_over_cnn ? a->fmap : inp;
    for (int dir = 0; dir < 2; dir++) {
        float *hf = a->hfin + (size_t)dir * B * H;
        mt_lstm_forward(be, hf, &a->lstm[dir], &a->steps, x, w->w_ih[dir], w->w_hh[dir], w->b_ih[dir],
                        w->b_hh[dir], L->lstm_in, H, dir);
        be->copy_2d(out + C + F + dir * H, D, hf, H, B, H);
    }
}

void mt_sentence_backward(const mt_backend *be, float *dinp, const mt_sentence_weights *dw, const float *dout,
                          mt_sentence_acts *a, const mt_sentence_layout *L, const mt_sentence_weights *w,
                          const float *inp) {
    const mt_sentence_config *cfg = &L->cfg;
    const mt_seq_steps *st = &a->steps;
    int B = st->B, N = st->N;
    if (cfg->kind != MT_SENT_SBERT_CNN_BILSTM) {
        be->pool_backward(dinp, dout, st->offsets, B, cfg->C, cfg->kind == MT_SENT_CLS ? MT_POOL_CLS : MT_POOL_MEAN);
        return;
    }
    int C = cfg->C, F = L->F, H = cfg->lstm_hidden, D = L->D;

    be->copy_2d(a->dbuf, C, dout, D, B, C);
    be->pool_backward(dinp, a->dbuf, st->offsets, B, C, MT_POOL_MEAN);
    // The feature map's gradient: from the max-pool, plus from the BiLSTM when it reads the map.
    be->zero(a->dfmap, (size_t)N * F * sizeof(float));
    be->copy_2d(a->dbuf, F, dout + C, D, B, F);
    be->max_pool_backward(a->dfmap, a->dbuf, a->argmax, B, F);
    const float *x = cfg->lstm_over_cnn ? a->fmap : inp;
    float *dx = cfg->lstm_over_cnn ? a->dfmap : dinp;
    for (int dir = 0; dir < 2; dir++) {
        be->copy_2d(a->dbuf, H, dout + C + F + dir * H, D, B, H);
        mt_lstm_backward(be, dx, dw->w_ih[dir], dw->w_hh[dir], dw->b_ih[dir], dw->b_hh[dir], a->dbuf,
                         &a->lstm[dir], st, x, w->w_ih[dir], w->w_hh[dir], L->lstm_in, H, dir);
    }
    be->relu_dropout_backward(a->dfmap, a->dfmap, a->fmap, N, F, &a->drop);
    for (int i = 0, f0 = 0; i < cfg->n_widths; f0 += cfg->filters[i], i++)
        mt_conv_same_backward(be, dinp, dw->conv_w[i], dw->conv_b[i], a->col, a->dfmap + f0, F, inp,
                              w->conv_w[i], st->offsets, B, N, C, cfg->filters[i], cfg->width[i]);
}
