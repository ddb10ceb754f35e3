// ops.c — the CPU backend: forward ops over packed token rows (see backend.h for shapes),
// OpenMP over rows / sequences × heads, sgemm for every matrix product.
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef MT_HAVE_OPENBLAS
#include <cblas.h>
#endif

#include "backend.h"
#include "common.h"
#include "cpu.h"
#include "mathv.h"
#include "workspace.h"
#include "rng.h"

// ---- memory and control --------------------------------------------------------------

// calloc, so large buffers come as fresh zero pages that cost memory only once touched: a
// run's buffers are sized for its worst batch up front (lib/memplan.h), and most batches use
// a fraction. Aligned by hand to 64 bytes; the block calloc returned sits just below.
static void *cpu_alloc(size_t bytes) {
    size_t rounded = (bytes + 63) / 64 * 64;
    char *block = calloc(1, rounded + 64 + sizeof(void *));
    if (!block) mt_die("out of memory allocating %zu bytes", bytes);
    char *p = (char *)(((uintptr_t)block + sizeof(void *) + 63) & ~(uintptr_t)63);
    ((void **)p)[-1] = block;
    return p;
}
static void cpu_free(void *p) {
    if (p) free(((void **)p)[-1]);
}
static void cpu_copy(void *dst, const void *src, size_t bytes) { if (bytes) memmove(dst, src, bytes); }
static void cpu_synchronize(void) {}

// n OpenMP threads do everything, GEMMs included (gemm.c slices them); OpenBLAS itself
// stays at one thread so that two thread pools never fight over the cores.
static void cpu_set_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#endif
#ifdef MT_HAVE_OPENBLAS
    openblas_set_num_threads(1);
#endif
    (void)n;
}

// ---- forward ops -----------------------------------------------------------------------

// out[N,OC] = inp[N,IC] @ weight[OC,IC]^T + bias[OC] (+ residual[N,OC]).
// The bias and residual are written first so one sgemm with beta = 1 finishes the job:
// out is swept once instead of three times.
static void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                           const float *residual, int N, int IC, int OC) {
    if (bias || residual) {
#pragma omp parallel for if ((int64_t)N * OC >= PAR_MIN)
        for (int n = 0; n < N; n++) {
            float *o = out + (size_t)n * OC;
            const float *r = residual ? residual + (size_t)n * OC : NULL;
            for (int j = 0; j < OC; j++) o[j] = (bias ? bias[j] : 0.0f) + (r ? r[j] : 0.0f);
        }
    }
    mt_cpu_gemm(0, 1, N, OC, IC, 1.0f, inp, IC, weight, IC, bias || residual ? 1.0f : 0.0f, out, OC);
}

static void embeddings_forward(float *out, const int32_t *ids, const int32_t *types, const int32_t *pos,
                               const float *wte, const float *wpe, const float *wtt, int N, int C) {
#pragma omp parallel for if ((int64_t)N * C >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *w = wte + (size_t)ids[n] * C, *p = wpe + (size_t)pos[n] * C, *t = wtt + (size_t)types[n] * C;
        float *o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = w[c] + t[c] + p[c];  // HF order: (word + type) + position
    }
}

static void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                              const float *bias, int N, int C, float eps) {
#pragma omp parallel for if ((int64_t)N * C >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        // double sums: the mean of large, nearly equal values must not depend on the order
        // the compiler picks (vectorised or not) — float sums lost 1e-4 at an offset of 100
        double sum = 0.0, sq = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int c = 0; c < C; c++) sum += x[c];
        float m = (float)(sum / C);
#pragma omp simd reduction(+ : sq)
        for (int c = 0; c < C; c++) sq += (double)(x[c] - m) * (x[c] - m);  // two passes: no cancellation
        float v = (float)sq;
        float s = 1.0f / sqrtf(v / C + eps);
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
        mean[n] = m;
        rstd[n] = s;
    }
}

void mt_cpu_attention_dropout_row(float *factors, const mt_dropout_key *drop, uint32_t threshold, uint64_t first,
                                  int L) {
    uint8_t keep[L];
    mt_dropout_mask(keep, (size_t)L, first, drop->seed, drop->step, drop->site, threshold);
    float scale = 1.0f / (1.0f - drop->p);
    for (int j = 0; j < L; j++) factors[j] = keep[j] ? scale : 0.0f;
}

// p[0..L) = softmax(p[0..L)); exp in double from mathv.h (glibc's scalar expf was a third of
// the attention forward).
static void softmax_row(float *p, int L) {
    float maxv = -FLT_MAX, sum = 0.0f;
    for (int j = 0; j < L; j++) maxv = p[j] > maxv ? p[j] : maxv;
    for (int j = 0; j < L; j += 4) {
        int m = L - j < 4 ? L - j : 4;
        mt_store4(p + j, mt_exp_v4(mt_load4(p + j, m) - (double)maxv), m);
    }
    for (int j = 0; j < L; j++) sum += p[j];
    float inv = 1.0f / sum;
    for (int j = 0; j < L; j++) p[j] *= inv;
}

// One head of one sequence: q0/k0/v0 its rows (stride apart), out0 its output rows (C apart),
// att its [L, L] probabilities (NULL: not kept), whose first mask index is `first`.
// S = Q K^T and O = P' V as small register-blocked products (mt_cpu_small_gemm) with K
// transposed into kt[hs][Lp] (Lp = L rounded up to 8, zero columns): 3x the speed of L dot
// products per row. work: hs Lp + L Lp + L floats.
static void attend_head(float *out0, float *att, const float *q0, const float *k0, const float *v0, size_t stride,
                        int C, int L, int hs, float scale, const mt_dropout_key *drop, uint32_t threshold,
                        uint64_t first, float *work) {
    int Lp = (L + 7) / 8 * 8;
    float *kt = work, *S = kt + (size_t)hs * Lp, *factor = S + (size_t)L * Lp;
    for (int d = 0; d < hs; d++)
        for (int j = 0; j < Lp; j++) kt[(size_t)d * Lp + j] = j < L ? k0[j * stride + d] : 0.0f;
    mt_cpu_small_gemm(L, Lp, hs, q0, stride, 1, kt, (size_t)Lp, S, (size_t)Lp, 0);
    for (int i = 0; i < L; i++) {
        float *s = S + (size_t)i * Lp;
        for (int j = 0; j < L; j++) s[j] *= scale;
        softmax_row(s, L);
        if (att) memcpy(att + (size_t)i * L, s, sizeof(float) * L);
        if (drop) {
            mt_cpu_attention_dropout_row(factor, drop, threshold, first + (uint64_t)i * L, L);
            for (int j = 0; j < L; j++) s[j] *= factor[j];
        }
    }
    mt_cpu_small_gemm(L, hs, L, S, (size_t)Lp, 1, v0, stride, out0, (size_t)C, 0);
}

int mt_cpu_longest(const int32_t *offsets, int B, int max_len, const char *op) {
    int longest = 0;
    for (int b = 0; b < B; b++) longest = offsets[b + 1] - offsets[b] > longest ? offsets[b + 1] - offsets[b] : longest;
    if (longest > max_len) mt_die("%s: a sequence of %d tokens, but max_len is %d", op, longest, max_len);
    return longest;
}

static void attention_forward_dropout(float *out, float *att, const float *qkv, const int32_t *offsets,
                                      const int64_t *att_offsets, int B, int max_len, int C, int NH,
                                      const mt_dropout_key *drop) {
    int hs = C / NH, on = drop && drop->p > 0.0f && att, maxL = mt_cpu_longest(offsets, B, max_len, "attention");
    uint32_t threshold = on ? mt_dropout_threshold(drop->p) : 0;
    float scale = 1.0f / sqrtf((float)hs);
    size_t stride = (size_t)3 * C;
    size_t work = (size_t)(hs + maxL + 1) * (maxL + 8);
#pragma omp parallel if ((int64_t)offsets[B] * C >= PAR_MIN / 4)
    {
        float *buf = malloc(sizeof(float) * work);  // per thread, once per call
        if (!buf) mt_die("out of memory in attention");
        // dynamic: sequences differ in length, so (sequence, head) items differ in cost
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                int L = offsets[b + 1] - offsets[b];
                const float *base = qkv + (size_t)offsets[b] * stride + (size_t)h * hs;
                size_t head = (size_t)att_offsets[b] + (size_t)h * L * L;
                attend_head(out + (size_t)offsets[b] * C + (size_t)h * hs, att ? att + head : NULL, base, base + C,
                            base + 2 * C, stride, C, L, hs, scale, on ? drop : NULL, threshold, head, buf);
            }
        free(buf);
    }
}

static void attention_forward(float *out, float *att, const float *qkv, const int32_t *offsets,
                              const int64_t *att_offsets, int B, int max_len, int C, int NH) {
    attention_forward_dropout(out, att, qkv, offsets, att_offsets, B, max_len, C, NH, NULL);
}

// x Phi(x) in double, rounded once: within 0.5 ulp + 5e-10 relative of the exact GELU, also in
// the lower tail where 1 + erff(x/sqrt 2) cancels (erff's form was off by 5% at x = -5).
static void gelu_forward(float *out, const float *inp, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i0 = 0; i0 < n; i0 += 16)
        for (int64_t i = i0; i < i0 + 16 && i < n; i += 4) {  // 4 independent chains per block
            int m = n - i < 4 ? (int)(n - i) : 4;
            mt_v4d x = mt_load4(inp + i, m);
            mt_v4d pdf;
            mt_store4(out + i, x * mt_normal_cdf_pdf_v4(x, &pdf), m);
        }
}

static void tanh_forward(float *out, const float *inp, int64_t n) {
#pragma omp parallel for simd if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) out[i] = tanhf(inp[i]);
}

static void pool_forward(float *out, const float *inp, const int32_t *offsets, int B, int C, int mode) {
#pragma omp parallel for if ((int64_t)offsets[B] * C >= PAR_MIN)
    for (int b = 0; b < B; b++) {
        float *o = out + (size_t)b * C;
        int first = offsets[b], L = offsets[b + 1] - first;
        memcpy(o, inp + (size_t)first * C, sizeof(float) * C);
        if (mode == MT_POOL_CLS) continue;
        for (int t = 1; t < L; t++) {
            const float *x = inp + (size_t)(first + t) * C;
            if (mode == MT_POOL_MAX) for (int c = 0; c < C; c++) o[c] = x[c] > o[c] ? x[c] : o[c];
            else for (int c = 0; c < C; c++) o[c] += x[c];
        }
        if (mode == MT_POOL_MEAN) for (int c = 0; c < C; c++) o[c] /= (float)L;
    }
}

static void zero(void *p, size_t bytes) { if (bytes) memset(p, 0, bytes); }

static void unpack_forward(float *out, const float *inp, const int32_t *offsets, int B, int T, int C) {
#pragma omp parallel for if ((int64_t)B * T * C >= PAR_MIN)
    for (int b = 0; b < B; b++) {
        int L = offsets[b + 1] - offsets[b];
        float *o = out + (size_t)b * T * C;
        memcpy(o, inp + (size_t)offsets[b] * C, sizeof(float) * L * C);
        memset(o + (size_t)L * C, 0, sizeof(float) * (T - L) * C);
    }
}

// The memory plan's ops: the CPU ops take what little work memory they need per call (malloc),
// so there is nothing to reserve, and only the host's memory (or --max-memory) limits a run.
static size_t workspace_bytes(const mt_workspace_shape *s, size_t *each) {
    (void)s;
    if (each) memset(each, 0, MT_WS_COUNT * sizeof *each);
    return 0;
}
static void reserve(const mt_workspace_shape *s) { (void)s; }
static size_t memory_free(void) { return SIZE_MAX; }

static const mt_backend cpu_backend = {
    .name = "cpu",
    .host_memory = 1,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy_to_device = cpu_copy,
    .copy_to_host = cpu_copy,
    .set_threads = cpu_set_threads,
    .synchronize = cpu_synchronize,
    .gemm = mt_cpu_gemm,
    .matmul_forward = matmul_forward,
    .embeddings_forward = embeddings_forward,
    .layernorm_forward = layernorm_forward,
    .attention_forward = attention_forward,
    .gelu_forward = gelu_forward,
    .tanh_forward = tanh_forward,
    .pool_forward = pool_forward,
    .unpack_forward = unpack_forward,
    .zero = zero,
    .attention_forward_dropout = attention_forward_dropout,
    .dropout_forward = mt_cpu_dropout_forward,
    .dropout_backward = mt_cpu_dropout_backward,
    .matmul_backward = mt_cpu_matmul_backward,
    .layernorm_backward = mt_cpu_layernorm_backward,
    .attention_backward = mt_cpu_attention_backward,
    .gelu_backward = mt_cpu_gelu_backward,
    .embeddings_backward = mt_cpu_embeddings_backward,
    .pool_backward = mt_cpu_pool_backward,
    .copy_2d = mt_cpu_copy_2d,
    .add_bias_forward = mt_cpu_add_bias_forward,
    .add_bias_backward = mt_cpu_add_bias_backward,
    .im2col_same = mt_cpu_im2col_same,
    .col2im_same = mt_cpu_col2im_same,
    .relu_dropout_forward = mt_cpu_relu_dropout_forward,
    .relu_dropout_backward = mt_cpu_relu_dropout_backward,
    .max_pool_forward = mt_cpu_max_pool_forward,
    .max_pool_backward = mt_cpu_max_pool_backward,
    .lstm_cell_forward = mt_cpu_lstm_cell_forward,
    .lstm_cell_backward = mt_cpu_lstm_cell_backward,
    .adamw_update_multi = mt_cpu_adamw_update_multi,
    .gram = mt_cpu_gram,
    .combine = mt_cpu_combine,
    .scale = mt_cpu_scale,
    .workspace_bytes = workspace_bytes,
    .reserve = reserve,
    .memory_free = memory_free,
};

const mt_backend *mt_backend_cpu(void) {
    static int initialised;
    if (!initialised) {
        cpu_set_threads(0);
        initialised = 1;
    }
    return &cpu_backend;
}
