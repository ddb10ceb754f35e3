// sentence.c — the CPU twins of the sentence model's ops (lib/backend.h; the model itself is
// lib/sentence.c). The loops that lived in lib/sentence.c, unchanged in their arithmetic.
//
// Determinism: every loop writes disjoint outputs or reduces in a fixed order (sums over
// rows run sequentially inside one thread), so results do not depend on the thread count.
#include <math.h>
#include <string.h>

#include "cpu.h"
#include "rng.h"

// Loops run once per LSTM time step are parallel only above this many elements: a thread
// team per step costs more than small steps (and much more on a busy machine).
#define PAR_MIN_STEP_WORK 65536

static int seq_len(const int32_t *offsets, int b) { return offsets[b + 1] - offsets[b]; }

// ---- pooling, copies, bias -------------------------------------------------------------------

void mt_cpu_pool_backward(float *dinp, const float *dout, const int32_t *offsets, int B, int C, int mode) {
    if (mode == MT_POOL_CLS) {
        for (int b = 0; b < B; b++) {
            float *d = dinp + (size_t)offsets[b] * C;
            for (int c = 0; c < C; c++) d[c] += dout[(size_t)b * C + c];
        }
        return;
    }
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        float inv = 1.0f / (float)seq_len(offsets, b);
        for (int n = offsets[b]; n < offsets[b + 1]; n++)
            for (int c = 0; c < C; c++) dinp[(size_t)n * C + c] += dout[(size_t)b * C + c] * inv;
    }
}

void mt_cpu_copy_2d(float *dst, int ldd, const float *src, int lds, int rows, int cols) {
    for (int r = 0; r < rows; r++) memcpy(dst + (size_t)r * ldd, src + (size_t)r * lds, (size_t)cols * sizeof(float));
}

void mt_cpu_add_bias_forward(float *out, int ldo, const float *b1, const float *b2, int N, int F) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int f = 0; f < F; f++) out[(size_t)n * ldo + f] += b2 ? b1[f] + b2[f] : b1[f];
}

void mt_cpu_add_bias_backward(float *db1, float *db2, const float *dout, int ldo, int N, int F) {
#pragma omp parallel for schedule(static)
    for (int f = 0; f < F; f++) {
        float s = 0.0f;
        for (int n = 0; n < N; n++) s += dout[(size_t)n * ldo + f];
        db1[f] += s;
        if (db2) db2[f] += s;
    }
}

// ---- 'same' convolution: im2col and its transpose ---------------------------------------------

void mt_cpu_im2col_same(float *col, const float *inp, const int32_t *offsets, int B, int N, int C, int w) {
    (void)N;  // the offsets say it
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

// Sequences are disjoint, so one thread per sequence, each summing in a fixed order.
void mt_cpu_col2im_same(float *dinp, const float *dcol, const int32_t *offsets, int B, int N, int C, int w) {
    (void)N;  // the offsets say it
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

// ---- ReLU + dropout, max-pool ----------------------------------------------------------------

void mt_cpu_relu_dropout_forward(float *x, int N, int D, const mt_dropout_key *drop) {
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

void mt_cpu_relu_dropout_backward(float *dx, const float *dy, const float *y, int N, int D,
                                  const mt_dropout_key *drop) {
    float scale = dropout_on(drop) ? 1.0f / (1.0f - drop->p) : 1.0f;
    size_t n = (size_t)N * D;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) dx[i] = y[i] > 0.0f ? dy[i] * scale : 0.0f;
}

void mt_cpu_max_pool_forward(float *out, int32_t *argmax, const float *inp, const int32_t *offsets, int B, int D) {
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

void mt_cpu_max_pool_backward(float *dinp, const float *dout, const int32_t *argmax, int B, int D) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++)  // argmax rows of sequence b lie in its own rows: disjoint
        for (int d = 0; d < D; d++)
            dinp[(size_t)argmax[(size_t)b * D + d] * D + d] += dout[(size_t)b * D + d];
}

// ---- LSTM cell -------------------------------------------------------------------------------

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// The row read at step s of sequence b (s < its length), in reading order.
static int step_row(const int32_t *offsets, int b, int s, int reverse) {
    return reverse ? offsets[b + 1] - 1 - s : offsets[b] + s;
}

void mt_cpu_lstm_cell_forward(float *gates, float *cell, float *hidden, float *step_h, float *hfinal,
                              const float *step_g, const int32_t *list, const int32_t *next,
                              const int32_t *offsets, int nact, int s, int H, int reverse) {
#pragma omp parallel for schedule(static) if ((long)nact * H > PAR_MIN_STEP_WORK)
    for (int j = 0; j < nact; j++) {
        int b = list[j], row = step_row(offsets, b, s, reverse);
        int prev = reverse ? row + 1 : row - 1;
        float *g = gates + (size_t)row * 4 * H;
        const float *hh = step_g + (size_t)j * 4 * H;
        float *c = cell + (size_t)row * H, *h = hidden + (size_t)row * H;
        for (int k = 0; k < H; k++) {
            float ig = sigmoidf(g[k] + hh[k]), fg = sigmoidf(g[H + k] + hh[H + k]);
            float gg = tanhf(g[2 * H + k] + hh[2 * H + k]), og = sigmoidf(g[3 * H + k] + hh[3 * H + k]);
            float cprev = s > 0 ? cell[(size_t)prev * H + k] : 0.0f;
            c[k] = fg * cprev + ig * gg;
            h[k] = og * tanhf(c[k]);
            g[k] = ig, g[H + k] = fg, g[2 * H + k] = gg, g[3 * H + k] = og;
        }
        float *dst = next[j] >= 0 ? step_h + (size_t)next[j] * H : hfinal + (size_t)b * H;
        memcpy(dst, h, (size_t)H * sizeof(float));
    }
}

void mt_cpu_lstm_cell_backward(float *dgates, float *hprev, float *step_g, float *dc, const float *step_h,
                               const float *dhfinal, const float *gates, const float *cell, const float *hidden,
                               const int32_t *list, const int32_t *next, const int32_t *offsets, int nact,
                               int s, int H, int reverse) {
#pragma omp parallel for schedule(static) if ((long)nact * H > PAR_MIN_STEP_WORK)
    for (int j = 0; j < nact; j++) {
        int b = list[j], row = step_row(offsets, b, s, reverse);
        int prev = reverse ? row + 1 : row - 1;
        const float *g = gates + (size_t)row * 4 * H, *c = cell + (size_t)row * H;
        const float *dh = next[j] >= 0 ? step_h + (size_t)next[j] * H : dhfinal + (size_t)b * H;
        float *dcb = dc + (size_t)b * H, *dg = step_g + (size_t)j * 4 * H;
        for (int k = 0; k < H; k++) {
            float ig = g[k], fg = g[H + k], gg = g[2 * H + k], og = g[3 * H + k];
            float tc = tanhf(c[k]);
            float cprev = s > 0 ? cell[(size_t)prev * H + k] : 0.0f;
            float dct = dcb[k] + dh[k] * og * (1.0f - tc * tc);
            dg[k] = dct * gg * ig * (1.0f - ig);
            dg[H + k] = dct * cprev * fg * (1.0f - fg);
            dg[2 * H + k] = dct * ig * (1.0f - gg * gg);
            dg[3 * H + k] = dh[k] * tc * og * (1.0f - og);
            dcb[k] = dct * fg;
        }
        memcpy(dgates + (size_t)row * 4 * H, dg, (size_t)4 * H * sizeof(float));
        float *hp = hprev + (size_t)row * H;
        if (s > 0) memcpy(hp, hidden + (size_t)prev * H, (size_t)H * sizeof(float));
        else memset(hp, 0, (size_t)H * sizeof(float));
    }
}
