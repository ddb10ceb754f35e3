// backward.c — the CPU backend's training ops: dropout and the backward of every encoder op
// (shapes in backend.h). Gradients accumulate with +=. Every reduction has a fixed order that
// does not depend on the thread count: sums over rows (bias, LayerNorm and embedding
// gradients) are split over blocks of columns, each block summing its rows in order.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cpu.h"
#include "mathv.h"
#include "rng.h"

#define DROP_BLOCK 1024  // elements per dropout mask block (a multiple of 4: whole Philox blocks)
#define COL_BLOCK 32     // columns per task in row reductions

// ---- dropout -------------------------------------------------------------------------------

void mt_cpu_dropout_forward(float *out, const float *inp, const float *residual, int64_t n,
                            const mt_dropout_key *drop) {
    int on = dropout_on(drop);
    uint32_t threshold = on ? mt_dropout_threshold(drop->p) : 0;
    float scale = on ? 1.0f / (1.0f - drop->p) : 1.0f;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i0 = 0; i0 < n; i0 += DROP_BLOCK) {
        int m = n - i0 < DROP_BLOCK ? (int)(n - i0) : DROP_BLOCK;
        uint8_t keep[DROP_BLOCK];
        if (on) mt_dropout_mask(keep, (size_t)m, (uint64_t)i0, drop->seed, drop->step, drop->site, threshold);
        for (int j = 0; j < m; j++) {
            float v = on ? (keep[j] ? inp[i0 + j] * scale : 0.0f) : inp[i0 + j];
            out[i0 + j] = residual ? v + residual[i0 + j] : v;
        }
    }
}

// dinp += dropout(dout): the forward with dinp as its residual (same mask, same float adds).
void mt_cpu_dropout_backward(float *dinp, const float *dout, int64_t n, const mt_dropout_key *drop) {
    mt_cpu_dropout_forward(dinp, dout, dinp, n, drop);
}

// ---- linear ----------------------------------------------------------------------------------

// dbias[OC] += column sums of dout[N,OC], in row order (double accumulators).
static void bias_backward(float *dbias, const float *dout, int N, int OC) {
#pragma omp parallel for schedule(static) if ((int64_t)N * OC >= PAR_MIN)
    for (int c0 = 0; c0 < OC; c0 += COL_BLOCK) {
        int w = OC - c0 < COL_BLOCK ? OC - c0 : COL_BLOCK;
        double acc[COL_BLOCK] = {0};
        for (int n = 0; n < N; n++) {
            const float *row = dout + (size_t)n * OC + c0;
            for (int j = 0; j < w; j++) acc[j] += row[j];
        }
        for (int j = 0; j < w; j++) dbias[c0 + j] += (float)acc[j];
    }
}

void mt_cpu_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, int N, int IC, int OC) {
    if (dinp) mt_cpu_gemm(0, 0, N, IC, OC, 1.0f, dout, OC, weight, IC, 1.0f, dinp, IC);
    if (dweight) mt_cpu_gemm(1, 0, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC);
    if (dbias) bias_backward(dbias, dout, N, OC);
}

// ---- LayerNorm -------------------------------------------------------------------------------

// With norm = (x - mean) * rstd and g = dout * weight:
// dx = rstd * (g - mean(g) - norm * mean(g * norm)).
static void layernorm_dinp(float *dinp, const float *dout, const float *inp, const float *weight,
                           const float *mean, const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static) if ((int64_t)N * C >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C, m = mean[n], s = rstd[n];
        double sum_g = 0.0, sum_gn = 0.0;
        for (int c = 0; c < C; c++) {
            double g = (double)dy[c] * weight[c];
            sum_g += g;
            sum_gn += g * ((x[c] - m) * s);
        }
        float mean_g = (float)(sum_g / C), mean_gn = (float)(sum_gn / C);
        for (int c = 0; c < C; c++) {
            float norm = (x[c] - m) * s;
            dx[c] += s * (dy[c] * weight[c] - mean_g - norm * mean_gn);
        }
    }
}

// dweight[C] += sum_n norm * dout, dbias[C] += sum_n dout.
static void layernorm_dparams(float *dweight, float *dbias, const float *dout, const float *inp, const float *mean,
                              const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static) if ((int64_t)N * C >= PAR_MIN)
    for (int c0 = 0; c0 < C; c0 += COL_BLOCK) {
        int w = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
        double dw[COL_BLOCK] = {0}, db[COL_BLOCK] = {0};
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C + c0, *dy = dout + (size_t)n * C + c0;
            for (int j = 0; j < w; j++) {
                dw[j] += (double)((x[j] - mean[n]) * rstd[n]) * dy[j];
                db[j] += dy[j];
            }
        }
        for (int j = 0; j < w; j++) {
            if (dweight) dweight[c0 + j] += (float)dw[j];
            if (dbias) dbias[c0 + j] += (float)db[j];
        }
    }
}

void mt_cpu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                               const float *weight, const float *mean, const float *rstd, int N, int C) {
    if (dinp) layernorm_dinp(dinp, dout, inp, weight, mean, rstd, N, C);
    if (dweight || dbias) layernorm_dparams(dweight, dbias, dout, inp, mean, rstd, N, C);
}

// ---- attention -------------------------------------------------------------------------------

// One head of one sequence. With P the saved probabilities, D the dropout factors (0 or
// 1/(1-p); 1 without dropout) and P' = P ⊙ D, as small register-blocked products:
//   dV += P'^T dO;  dP = D ⊙ (dO V^T);  dS_ij = scale P_ij (dP_ij - sum_k P_ik dP_ik);
//   dQ += dS K;  dK += dS^T Q.
// att: this head's [L, L] block, whose first element has mask index first. V is transposed
// into vt[hs][Lp] (Lp = L rounded up to 8, zero columns). work: hs Lp + 3 L Lp floats.
static void attention_head_backward(float *dq0, const float *dout0, const float *q0, const float *att, int L, int hs,
                                    size_t stride, int C, float scale, const mt_dropout_key *drop,
                                    uint32_t threshold, uint64_t first, float *work) {
    const float *k0 = q0 + C, *v0 = q0 + 2 * C;
    float *dk0 = dq0 + C, *dv0 = dq0 + 2 * C;
    size_t Lp = (size_t)(L + 7) / 8 * 8;
    float *vt = work, *Pd = vt + (size_t)hs * Lp, *D = Pd + L * Lp, *dS = D + L * Lp;
    for (int d = 0; d < hs; d++)
        for (size_t j = 0; j < Lp; j++) vt[d * Lp + j] = (int)j < L ? v0[j * stride + d] : 0.0f;
    for (int i = 0; i < L; i++) {
        float *f = D + i * Lp, *pd = Pd + i * Lp;
        const float *p = att + (size_t)i * L;
        if (drop) {
            mt_cpu_attention_dropout_row(f, drop, threshold, first + (uint64_t)i * L, L);
        } else {
            for (int j = 0; j < L; j++) f[j] = 1.0f;
        }
        for (int j = 0; j < L; j++) pd[j] = p[j] * f[j];
    }
    mt_cpu_small_gemm(L, hs, L, Pd, 1, Lp, dout0, (size_t)C, dv0, stride, 1);  // dV += P'^T dO
    mt_cpu_small_gemm(L, (int)Lp, hs, dout0, (size_t)C, 1, vt, Lp, dS, Lp, 0);  // dO V^T
    for (int i = 0; i < L; i++) {
        float *ds = dS + i * Lp;
        const float *p = att + (size_t)i * L, *f = D + i * Lp;
        double dot_pdp = 0.0;
        for (int j = 0; j < L; j++) {
            ds[j] *= f[j];
            dot_pdp += (double)p[j] * ds[j];
        }
        for (int j = 0; j < L; j++) ds[j] = p[j] * (ds[j] - (float)dot_pdp) * scale;
    }
    mt_cpu_small_gemm(L, hs, L, dS, Lp, 1, k0, stride, dq0, stride, 1);  // dQ += dS K
    mt_cpu_small_gemm(L, hs, L, dS, 1, Lp, q0, stride, dk0, stride, 1);  // dK += dS^T Q
}

// Each (sequence, head) task writes only its own rows and head columns of dqkv: no races,
// and each task's sums run in a fixed order.
void mt_cpu_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                               const int32_t *offsets, const int64_t *att_offsets, int B, int max_len, int C,
                               int NH, const mt_dropout_key *drop) {
    int hs = C / NH, maxL = mt_cpu_longest(offsets, B, max_len, "attention_backward");
    const mt_dropout_key *d = dropout_on(drop) ? drop : NULL;
    uint32_t threshold = d ? mt_dropout_threshold(d->p) : 0;
    float scale = 1.0f / sqrtf((float)hs);
    size_t stride = (size_t)3 * C;
    size_t work = (size_t)(hs + 3 * maxL) * (maxL + 8);
#pragma omp parallel if ((int64_t)offsets[B] * C >= PAR_MIN / 4)
    {
        float *buf = malloc(sizeof(float) * work);  // per thread, once per call
        if (!buf) mt_die("out of memory in attention backward");
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                int L = offsets[b + 1] - offsets[b];
                size_t row0 = (size_t)offsets[b], head = (size_t)att_offsets[b] + (size_t)h * L * L;
                attention_head_backward(dqkv + row0 * stride + (size_t)h * hs, dout + row0 * C + (size_t)h * hs,
                                        qkv + row0 * stride + (size_t)h * hs, att + head, L, hs, stride, C, scale,
                                        d, threshold, head, buf);
            }
        free(buf);
    }
}

// ---- GELU, embeddings ------------------------------------------------------------------------

// d/dx [x Phi(x)] = Phi(x) + x phi(x), both from mathv.h in double (vectorised; relative error
// < 5e-10, one exp for both), so the forward's output is not needed.
void mt_cpu_gelu_backward(float *dinp, const float *inp, const float *out, const float *dout, int64_t n) {
    (void)out;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i0 = 0; i0 < n; i0 += 16)
        for (int64_t i = i0; i < i0 + 16 && i < n; i += 4) {  // 4 independent chains per block
            int m = n - i < 4 ? (int)(n - i) : 4;
            mt_v4d x = mt_load4(inp + i, m);
            mt_v4d pdf, cdf = mt_normal_cdf_pdf_v4(x, &pdf);
            mt_v4d g = (cdf + x * pdf) * mt_load4(dout + i, m);
            mt_store4(dinp + i, mt_load4(dinp + i, m) + g, m);
        }
}

// Several tokens share a row (same word, position or type): columns split over threads, rows
// added in token order, so there are no races and the sum order is fixed.
void mt_cpu_embeddings_backward(float *dwte, float *dwpe, float *dwtt, const float *dout, const int32_t *ids,
                                const int32_t *types, const int32_t *pos, int N, int C) {
#pragma omp parallel for schedule(static) if ((int64_t)N * C >= PAR_MIN)
    for (int c0 = 0; c0 < C; c0 += COL_BLOCK) {
        int w = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
        for (int n = 0; n < N; n++) {
            const float *g = dout + (size_t)n * C + c0;
            float *rw = dwte ? dwte + (size_t)ids[n] * C + c0 : NULL;
            float *rp = dwpe ? dwpe + (size_t)pos[n] * C + c0 : NULL;
            float *rt = dwtt ? dwtt + (size_t)types[n] * C + c0 : NULL;
            for (int j = 0; j < w; j++) {
                if (rw) rw[j] += g[j];
                if (rp) rp[j] += g[j];
                if (rt) rt[j] += g[j];
            }
        }
    }
}
