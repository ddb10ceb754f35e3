// sentence.c — pooling, n-gram CNN, BiLSTM and the SBERT + CNN-BiLSTM sentence model
// (semantics and layouts in sentence.h).
//
// Determinism: every loop writes disjoint outputs or reduces in a fixed order (sums over
// rows run sequentially inside one thread), so results do not depend on the thread count.
#include "sentence.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rng.h"

#ifdef MT_HAVE_OPENBLAS
#include <cblas.h>
#endif

// C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C, row-major. The one place this file
// multiplies matrices, so it can be swapped for the shared backend's gemm (lib/backend.h),
// which has this signature.
static void gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
#ifdef MT_HAVE_OPENBLAS
    if (K > 0) {
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#endif
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) {
                float a = trans_a ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = trans_b ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                acc += a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            *c = alpha * acc + (beta == 0.0f ? 0.0f : beta * *c);
        }
}

// Loops run once per LSTM time step are parallel only above this many elements: a thread
// team per step costs more than small steps (and much more on a busy machine).
#define PAR_MIN_STEP_WORK 65536

static int seq_len(const int32_t *offsets, int b) { return offsets[b + 1] - offsets[b]; }

// ---- pooling -------------------------------------------------------------------------------

void mt_cls_pool_forward(float *out, const float *inp, const int32_t *offsets, int B, int C) {
    for (int b = 0; b < B; b++)
        memcpy(out + (size_t)b * C, inp + (size_t)offsets[b] * C, (size_t)C * sizeof *out);
}

void mt_cls_pool_backward(float *dinp, const float *dout, const int32_t *offsets, int B, int C) {
    for (int b = 0; b < B; b++) {
        float *d = dinp + (size_t)offsets[b] * C;
        for (int c = 0; c < C; c++) d[c] += dout[(size_t)b * C + c];
    }
}

void mt_mean_pool_forward(float *out, const float *inp, const int32_t *offsets, int B, int C) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        float *o = out + (size_t)b * C;
        for (int c = 0; c < C; c++) o[c] = 0.0f;
        for (int n = offsets[b]; n < offsets[b + 1]; n++)
            for (int c = 0; c < C; c++) o[c] += inp[(size_t)n * C + c];
        float inv = 1.0f / (float)seq_len(offsets, b);
        for (int c = 0; c < C; c++) o[c] *= inv;
    }
}

void mt_mean_pool_backward(float *dinp, const float *dout, const int32_t *offsets, int B, int C) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        float inv = 1.0f / (float)seq_len(offsets, b);
        for (int n = offsets[b]; n < offsets[b + 1]; n++)
            for (int c = 0; c < C; c++) dinp[(size_t)n * C + c] += dout[(size_t)b * C + c] * inv;
    }
}

// ---- convolution ---------------------------------------------------------------------------

// col[n, c*w + k] = x[t - left + k, c] within n's sequence, 0 outside: the k-th tap of
// channel c, in the order of torch's weight[f, c, k], so conv = col @ weight^T.
static void im2col_same(float *col, const float *inp, const int32_t *offsets, int B, int C, int w) {
    int left = (w - 1) / 2;
#pragma omp parallel for schedule(dynamic)
    for (int b = 0; b < B; b++) {
        int L = seq_len(offsets, b);
        for (int t = 0; t < L; t++) {
            float *row = col + (size_t)(offsets[b] + t) * C * w;
            for (int k = 0; k < w; k++) {
                int s = t - left + k;
                if (s < 0 || s >= L) {
                    for (int c = 0; c < C; c++) row[c * w + k] = 0.0f;
                    continue;
                }
                const float *x = inp + (size_t)(offsets[b] + s) * C;
                for (int c = 0; c < C; c++) row[c * w + k] = x[c];
            }
        }
    }
}

// The transpose of im2col_same: dinp[t - left + k, c] += dcol[n, c*w + k]. Sequences are
// disjoint, so one thread per sequence, each summing in a fixed order.
static void col2im_same(float *dinp, const float *dcol, const int32_t *offsets, int B, int C, int w) {
    int left = (w - 1) / 2;
#pragma omp parallel for schedule(dynamic)
    for (int b = 0; b < B; b++) {
        int L = seq_len(offsets, b);
        for (int t = 0; t < L; t++) {
            const float *row = dcol + (size_t)(offsets[b] + t) * C * w;
            for (int k = 0; k < w; k++) {
                int s = t - left + k;
                if (s < 0 || s >= L) continue;
                float *d = dinp + (size_t)(offsets[b] + s) * C;
                for (int c = 0; c < C; c++) d[c] += row[c * w + k];
            }
        }
    }
}

void mt_conv_same_forward(float *out, int ldo, float *col, const float *inp, const float *weight,
                          const float *bias, const int32_t *offsets, int B, int N, int C, int F, int w) {
    im2col_same(col, inp, offsets, B, C, w);
    gemm(0, 1, N, F, C * w, 1.0f, col, C * w, weight, C * w, 0.0f, out, ldo);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int f = 0; f < F; f++) out[(size_t)n * ldo + f] += bias[f];
}

void mt_conv_same_backward(float *dinp, float *dweight, float *dbias, float *col, const float *dout,
                           int ldo, const float *inp, const float *weight, const int32_t *offsets,
                           int B, int N, int C, int F, int w) {
    im2col_same(col, inp, offsets, B, C, w);
    gemm(1, 0, F, C * w, N, 1.0f, dout, ldo, col, C * w, 1.0f, dweight, C * w);
#pragma omp parallel for schedule(static)
    for (int f = 0; f < F; f++) {
        float s = 0.0f;
        for (int n = 0; n < N; n++) s += dout[(size_t)n * ldo + f];
        dbias[f] += s;
    }
    if (!dinp) return;
    gemm(0, 0, N, C * w, F, 1.0f, dout, ldo, weight, C * w, 0.0f, col, C * w);  // col = dcol
    col2im_same(dinp, col, offsets, B, C, w);
}

// ---- ReLU + dropout, max-pool ----------------------------------------------------------------

static int dropout_on(const mt_dropout *drop) { return drop && drop->p > 0.0f; }

void mt_relu_dropout_forward(float *x, int N, int D, const mt_dropout *drop) {
    int on = dropout_on(drop);
    uint32_t thr = on ? mt_dropout_threshold(drop->p) : 0;
    float scale = on ? 1.0f / (1.0f - drop->p) : 1.0f;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *row = x + (size_t)n * D;
        uint8_t keep[256];
        for (int d0 = 0; d0 < D; d0 += 256) {
            int m = D - d0 < 256 ? D - d0 : 256;
            if (on) mt_dropout_mask(keep, (size_t)m, (uint64_t)n * D + d0, drop->seed, drop->step, drop->site, thr);
            for (int j = 0; j < m; j++) {
                float v = row[d0 + j] > 0.0f ? row[d0 + j] : 0.0f;
                row[d0 + j] = on ? (keep[j] ? v * scale : 0.0f) : v;
            }
        }
    }
}

void mt_relu_dropout_backward(float *dx, const float *dy, const float *y, int N, int D,
                              const mt_dropout *drop) {
    float scale = dropout_on(drop) ? 1.0f / (1.0f - drop->p) : 1.0f;
    size_t n = (size_t)N * D;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) dx[i] = y[i] > 0.0f ? dy[i] * scale : 0.0f;
}

void mt_max_pool_forward(float *out, int32_t *argmax, const float *inp, const int32_t *offsets,
                         int B, int D) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++)
        for (int d = 0; d < D; d++) {
            int best = offsets[b];
            for (int n = offsets[b] + 1; n < offsets[b + 1]; n++)
                if (inp[(size_t)n * D + d] > inp[(size_t)best * D + d]) best = n;
            out[(size_t)b * D + d] = inp[(size_t)best * D + d];
            argmax[(size_t)b * D + d] = best;
        }
}

void mt_max_pool_backward(float *dinp, const float *dout, const int32_t *argmax, int B, int D) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++)  // argmax rows of sequence b lie in its own rows: disjoint
        for (int d = 0; d < D; d++)
            dinp[(size_t)argmax[(size_t)b * D + d] * D + d] += dout[(size_t)b * D + d];
}

// ---- LSTM ------------------------------------------------------------------------------------

void mt_lstm_acts_alloc(mt_lstm_acts *a, int max_N, int max_B, int H) {
    a->gates = mt_malloc((size_t)max_N * 4 * H * sizeof(float));
    a->cell = mt_malloc((size_t)max_N * H * sizeof(float));
    a->hidden = mt_malloc((size_t)max_N * H * sizeof(float));
    a->dgates = mt_malloc((size_t)max_N * 4 * H * sizeof(float));
    a->hprev = mt_malloc((size_t)max_N * H * sizeof(float));
    a->step_g = mt_malloc((size_t)max_B * 4 * H * sizeof(float));
    a->step_h = mt_malloc((size_t)max_B * H * sizeof(float));
    a->dh = mt_malloc((size_t)max_B * H * sizeof(float));
    a->dc = mt_malloc((size_t)max_B * H * sizeof(float));
    a->rows = mt_malloc((size_t)max_B * sizeof(int32_t));
}

void mt_lstm_acts_free(mt_lstm_acts *a) {
    free(a->gates), free(a->cell), free(a->hidden), free(a->dgates), free(a->hprev);
    free(a->step_g), free(a->step_h), free(a->dh), free(a->dc), free(a->rows);
    memset(a, 0, sizeof *a);
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static int max_len(const int32_t *offsets, int B) {
    int m = 0;
    for (int b = 0; b < B; b++) m = seq_len(offsets, b) > m ? seq_len(offsets, b) : m;
    return m;
}

// The row read at step s of sequence b (s < its length), in reading order.
static int step_row(const int32_t *offsets, int b, int s, int reverse) {
    return reverse ? offsets[b + 1] - 1 - s : offsets[b] + s;
}

// Sequences still running at step s: their indices into rows[] (ascending b); returns how many.
static int active_at(int32_t *rows, const int32_t *offsets, int B, int s) {
    int n = 0;
    for (int b = 0; b < B; b++)
        if (s < seq_len(offsets, b)) rows[n++] = b;
    return n;
}

// One step for the active sequences: step_g holds W_hh h_{t-1}; gates[row] holds
// x W_ih^T + b_ih + b_hh. Writes the activated gates, c and h of each row.
static void lstm_cell_step(mt_lstm_acts *a, const int32_t *offsets, int nact, int s, int H, int reverse) {
#pragma omp parallel for schedule(static) if ((long)nact * H > PAR_MIN_STEP_WORK)
    for (int j = 0; j < nact; j++) {
        int b = a->rows[j], row = step_row(offsets, b, s, reverse);
        int prev = reverse ? row + 1 : row - 1;
        float *g = a->gates + (size_t)row * 4 * H;
        const float *hh = a->step_g + (size_t)j * 4 * H;
        float *c = a->cell + (size_t)row * H, *h = a->hidden + (size_t)row * H;
        for (int k = 0; k < H; k++) {
            float ig = sigmoidf(g[k] + hh[k]), fg = sigmoidf(g[H + k] + hh[H + k]);
            float gg = tanhf(g[2 * H + k] + hh[2 * H + k]), og = sigmoidf(g[3 * H + k] + hh[3 * H + k]);
            float cprev = s > 0 ? a->cell[(size_t)prev * H + k] : 0.0f;
            c[k] = fg * cprev + ig * gg;
            h[k] = og * tanhf(c[k]);
            g[k] = ig, g[H + k] = fg, g[2 * H + k] = gg, g[3 * H + k] = og;
        }
    }
}

void mt_lstm_forward(float *hfinal, mt_lstm_acts *a, const float *x, const float *w_ih,
                     const float *w_hh, const float *b_ih, const float *b_hh,
                     const int32_t *offsets, int B, int In, int H, int reverse) {
    int N = offsets[B], G = 4 * H;
    // Input projections of every token at once: gates = x W_ih^T + (b_ih + b_hh).
    gemm(0, 1, N, G, In, 1.0f, x, In, w_ih, In, 0.0f, a->gates, G);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int k = 0; k < G; k++) a->gates[(size_t)n * G + k] += b_ih[k] + b_hh[k];
    int T = max_len(offsets, B);
    for (int s = 0; s < T; s++) {
        int nact = active_at(a->rows, offsets, B, s);
        if (s == 0) {
            memset(a->step_g, 0, (size_t)nact * G * sizeof(float));  // h0 = 0
        } else {
            for (int j = 0; j < nact; j++) {
                int prev = step_row(offsets, a->rows[j], s - 1, reverse);
                memcpy(a->step_h + (size_t)j * H, a->hidden + (size_t)prev * H, (size_t)H * sizeof(float));
            }
            gemm(0, 1, nact, G, H, 1.0f, a->step_h, H, w_hh, H, 0.0f, a->step_g, G);
        }
        lstm_cell_step(a, offsets, nact, s, H, reverse);
    }
    for (int b = 0; b < B; b++) {
        int last = step_row(offsets, b, seq_len(offsets, b) - 1, reverse);
        memcpy(hfinal + (size_t)b * H, a->hidden + (size_t)last * H, (size_t)H * sizeof(float));
    }
}

// Gradients of one step for the active sequences: from dh, dc (carried, in a->dh/dc by b),
// the pre-activation gate gradients into step_g[j] and dgates[row]; dc becomes dc_{t-1}.
static void lstm_cell_step_backward(mt_lstm_acts *a, const int32_t *offsets, int nact, int s,
                                    int H, int reverse) {
#pragma omp parallel for schedule(static) if ((long)nact * H > PAR_MIN_STEP_WORK)
    for (int j = 0; j < nact; j++) {
        int b = a->rows[j], row = step_row(offsets, b, s, reverse);
        int prev = reverse ? row + 1 : row - 1;
        const float *g = a->gates + (size_t)row * 4 * H, *c = a->cell + (size_t)row * H;
        float *dh = a->dh + (size_t)b * H, *dc = a->dc + (size_t)b * H;
        float *dg = a->step_g + (size_t)j * 4 * H;
        for (int k = 0; k < H; k++) {
            float ig = g[k], fg = g[H + k], gg = g[2 * H + k], og = g[3 * H + k];
            float tc = tanhf(c[k]);
            float cprev = s > 0 ? a->cell[(size_t)prev * H + k] : 0.0f;
            float dct = dc[k] + dh[k] * og * (1.0f - tc * tc);
            dg[k] = dct * gg * ig * (1.0f - ig);
            dg[H + k] = dct * cprev * fg * (1.0f - fg);
            dg[2 * H + k] = dct * ig * (1.0f - gg * gg);
            dg[3 * H + k] = dh[k] * tc * og * (1.0f - og);
            dc[k] = dct * fg;
        }
        memcpy(a->dgates + (size_t)row * 4 * H, dg, (size_t)4 * H * sizeof(float));
        float *hp = a->hprev + (size_t)row * H;
        if (s > 0) memcpy(hp, a->hidden + (size_t)prev * H, (size_t)H * sizeof(float));
        else memset(hp, 0, (size_t)H * sizeof(float));
    }
}

void mt_lstm_backward(float *dx, float *dw_ih, float *dw_hh, float *db_ih, float *db_hh,
                      const float *dhfinal, mt_lstm_acts *a, const float *x, const float *w_ih,
                      const float *w_hh, const int32_t *offsets, int B, int In, int H, int reverse) {
    int N = offsets[B], G = 4 * H;
    memset(a->dh, 0, (size_t)B * H * sizeof(float));
    memset(a->dc, 0, (size_t)B * H * sizeof(float));
    for (int s = max_len(offsets, B) - 1; s >= 0; s--) {
        int nact = active_at(a->rows, offsets, B, s);
        for (int j = 0; j < nact; j++) {  // the final state is read at the last step
            int b = a->rows[j];
            if (s == seq_len(offsets, b) - 1)
                memcpy(a->dh + (size_t)b * H, dhfinal + (size_t)b * H, (size_t)H * sizeof(float));
        }
        lstm_cell_step_backward(a, offsets, nact, s, H, reverse);
        if (s == 0) break;
        gemm(0, 0, nact, H, G, 1.0f, a->step_g, G, w_hh, H, 0.0f, a->step_h, H);  // dh_{t-1}
        for (int j = 0; j < nact; j++)
            memcpy(a->dh + (size_t)a->rows[j] * H, a->step_h + (size_t)j * H, (size_t)H * sizeof(float));
    }
    // Weight gradients over all steps at once, in a fixed order.
    gemm(1, 0, G, H, N, 1.0f, a->dgates, G, a->hprev, H, 1.0f, dw_hh, H);
    gemm(1, 0, G, In, N, 1.0f, a->dgates, G, x, In, 1.0f, dw_ih, In);
#pragma omp parallel for schedule(static)
    for (int k = 0; k < G; k++) {
        float s = 0.0f;
        for (int n = 0; n < N; n++) s += a->dgates[(size_t)n * G + k];
        db_ih[k] += s;
        db_hh[k] += s;
    }
    if (dx) gemm(0, 0, N, In, G, 1.0f, a->dgates, G, w_ih, In, 1.0f, dx, In);
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

void mt_sentence_acts_alloc(mt_sentence_acts *a, const mt_sentence_layout *L, int max_N, int max_B) {
    memset(a, 0, sizeof *a);
    a->max_N = max_N, a->max_B = max_B;
    const mt_sentence_config *cfg = &L->cfg;
    int H = cfg->lstm_hidden, wide = cfg->C;
    if (cfg->kind == MT_SENT_SBERT_CNN_BILSTM) {
        a->fmap = mt_malloc((size_t)max_N * L->F * sizeof(float));
        a->dfmap = mt_malloc((size_t)max_N * L->F * sizeof(float));
        a->col = mt_malloc((size_t)max_N * cfg->C * max_width(cfg) * sizeof(float));
        a->pool = mt_malloc((size_t)max_B * L->F * sizeof(float));
        a->argmax = mt_malloc((size_t)max_B * L->F * sizeof(int32_t));
        a->hfin = mt_malloc((size_t)2 * max_B * H * sizeof(float));
        for (int dir = 0; dir < 2; dir++) mt_lstm_acts_alloc(&a->lstm[dir], max_N, max_B, H);
        wide = L->F > wide ? L->F : wide;
        wide = 2 * H > wide ? 2 * H : wide;
    }
    a->dbuf = mt_malloc((size_t)max_B * wide * sizeof(float));
}

void mt_sentence_acts_free(mt_sentence_acts *a) {
    free(a->fmap), free(a->dfmap), free(a->col), free(a->pool), free(a->argmax), free(a->hfin);
    free(a->dbuf);
    if (a->lstm[0].gates)
        for (int dir = 0; dir < 2; dir++) mt_lstm_acts_free(&a->lstm[dir]);
    memset(a, 0, sizeof *a);
}

// dst[B, w] = columns [c0, c0 + w) of src[B, ld] (and back)
static void copy_cols(float *dst, int ldd, const float *src, int lds, int B, int w) {
    for (int b = 0; b < B; b++) memcpy(dst + (size_t)b * ldd, src + (size_t)b * lds, (size_t)w * sizeof(float));
}

static void cnn_forward(mt_sentence_acts *a, const mt_sentence_layout *L, const mt_sentence_weights *w,
                        const float *inp, const int32_t *offsets, int B, int N) {
    const mt_sentence_config *cfg = &L->cfg;
    for (int i = 0, f0 = 0; i < cfg->n_widths; f0 += cfg->filters[i], i++)
        mt_conv_same_forward(a->fmap + f0, L->F, a->col, inp, w->conv_w[i], w->conv_b[i], offsets, B,
                             N, cfg->C, cfg->filters[i], cfg->width[i]);
    mt_relu_dropout_forward(a->fmap, N, L->F, &a->drop);
    mt_max_pool_forward(a->pool, a->argmax, a->fmap, offsets, B, L->F);
}

void mt_sentence_forward(float *out, mt_sentence_acts *a, const mt_sentence_layout *L,
                         const mt_sentence_weights *w, const float *inp, const int32_t *offsets,
                         int B, int N, const mt_dropout *drop) {
    const mt_sentence_config *cfg = &L->cfg;
    if (N > a->max_N || B > a->max_B || offsets[B] != N)
        mt_die("sentence model: batch of %d tokens / %d sequences (room for %d / %d)", N, B, a->max_N, a->max_B);
    if (cfg->kind == MT_SENT_CLS) {
        mt_cls_pool_forward(out, inp, offsets, B, cfg->C);
        return;
    }
    if (cfg->kind == MT_SENT_MEAN) {
        mt_mean_pool_forward(out, inp, offsets, B, cfg->C);
        return;
    }
    a->drop = drop ? *drop : (mt_dropout){0};
    a->drop.p = drop ? cfg->cnn_dropout : 0.0f;
    int C = cfg->C, F = L->F, H = cfg->lstm_hidden, D = L->D;

    mt_mean_pool_forward(a->dbuf, inp, offsets, B, C);
    copy_cols(out, D, a->dbuf, C, B, C);
    cnn_forward(a, L, w, inp, offsets, B, N);
    copy_cols(out + C, D, a->pool, F, B, F);
    const float *x = cfg->lstm_over_cnn ? a->fmap : inp;
    for (int dir = 0; dir < 2; dir++) {
        float *hf = a->hfin + (size_t)dir * B * H;
        mt_lstm_forward(hf, &a->lstm[dir], x, w->w_ih[dir], w->w_hh[dir], w->b_ih[dir], w->b_hh[dir],
                        offsets, B, L->lstm_in, H, dir);
        copy_cols(out + C + F + dir * H, D, hf, H, B, H);
    }
}

void mt_sentence_backward(float *dinp, const mt_sentence_weights *dw, const float *dout,
                          mt_sentence_acts *a, const mt_sentence_layout *L,
                          const mt_sentence_weights *w, const float *inp, const int32_t *offsets,
                          int B, int N) {
    const mt_sentence_config *cfg = &L->cfg;
    if (cfg->kind == MT_SENT_CLS) {
        mt_cls_pool_backward(dinp, dout, offsets, B, cfg->C);
        return;
    }
    if (cfg->kind == MT_SENT_MEAN) {
        mt_mean_pool_backward(dinp, dout, offsets, B, cfg->C);
        return;
    }
    int C = cfg->C, F = L->F, H = cfg->lstm_hidden, D = L->D;

    copy_cols(a->dbuf, C, dout, D, B, C);
    mt_mean_pool_backward(dinp, a->dbuf, offsets, B, C);
    // The feature map's gradient: from the max-pool, plus from the BiLSTM when it reads the map.
    memset(a->dfmap, 0, (size_t)N * F * sizeof(float));
    copy_cols(a->dbuf, F, dout + C, D, B, F);
    mt_max_pool_backward(a->dfmap, a->dbuf, a->argmax, B, F);
    const float *x = cfg->lstm_over_cnn ? a->fmap : inp;
    float *dx = cfg->lstm_over_cnn ? a->dfmap : dinp;
    for (int dir = 0; dir < 2; dir++) {
        copy_cols(a->dbuf, H, dout + C + F + dir * H, D, B, H);
        mt_lstm_backward(dx, dw->w_ih[dir], dw->w_hh[dir], dw->b_ih[dir], dw->b_hh[dir], a->dbuf,
                         &a->lstm[dir], x, w->w_ih[dir], w->w_hh[dir], offsets, B, L->lstm_in, H, dir);
    }
    mt_relu_dropout_backward(a->dfmap, a->dfmap, a->fmap, N, F, &a->drop);
    for (int i = 0, f0 = 0; i < cfg->n_widths; f0 += cfg->filters[i], i++)
        mt_conv_same_backward(dinp, dw->conv_w[i], dw->conv_b[i], a->col, a->dfmap + f0, F, inp,
                              w->conv_w[i], offsets, B, N, C, cfg->filters[i], cfg->width[i]);
}
