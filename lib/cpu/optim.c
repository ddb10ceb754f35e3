// optim.c — the CPU backend's optimizer ops (shapes and contracts in backend.h): AdamW's
// per-element update, the blocked deterministic Gram matrix, weighted combination, scaling.
#include <math.h>
#include <string.h>

#include "backend.h"
#include "cpu.h"

#ifdef _OPENMP
#define OMP(directive) _Pragma(directive)
#else
#define OMP(directive)
#endif

// p, g, m, v: [n] one tensor's slices, in torch's order and float arithmetic.
void mt_cpu_adamw_update(float *p, const float *g, float *m, float *v, size_t n, const mt_adamw_scalars *sp) {
    const mt_adamw_scalars s = *sp;
    OMP("omp parallel for simd schedule(static) if (n > 65536)")
    for (size_t i = 0; i < n; i++) {
        float pi = s.decay ? p[i] * s.decay_mul : p[i];
        float mi = m[i] + s.beta1_w * (g[i] - m[i]);
        float vi = v[i] * s.beta2 + s.beta2_w * g[i] * g[i];
        float denom = sqrtf(vi) / s.bc2_sqrt + s.eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi + s.neg_step_size * mi / denom;
    }
}

// gram[k*k] = g_i . g_j over [0, n), in double: each block's upper triangle summed
// locally, blocks added in block order ("ordered"), so the thread count does not matter.
void mt_cpu_gram(double *gram, const float *const *g, int k, size_t n) {
    size_t n_blocks = (n + MT_GRAM_BLOCK - 1) / MT_GRAM_BLOCK;
    memset(gram, 0, (size_t)k * k * sizeof *gram);
    OMP("omp parallel for ordered schedule(static, 1) if (n_blocks > 8)")
    for (size_t b = 0; b < n_blocks; b++) {
        double part[MT_GRAM_MAX_K * MT_GRAM_MAX_K] = {0};
        size_t lo = b * MT_GRAM_BLOCK, hi = lo + MT_GRAM_BLOCK < n ? lo + MT_GRAM_BLOCK : n;
        for (int i = 0; i < k; i++)
            for (int j = i; j < k; j++) {
                double s = 0.0;
                for (size_t x = lo; x < hi; x++) s += (double)g[i][x] * g[j][x];
                part[i * k + j] = s;
            }
        OMP("omp ordered")
        for (int i = 0; i < k; i++)
            for (int j = i; j < k; j++) gram[i * k + j] += part[i * k + j];
    }
    for (int i = 0; i < k; i++)
        for (int j = 0; j < i; j++) gram[i * k + j] = gram[j * k + i];
}

// out[x] = sum_j w[j] g_j[x] in double, rounded once; elementwise, so deterministic.
void mt_cpu_combine(float *out, const float *const *g, const double *w, int k, size_t n) {
    OMP("omp parallel for schedule(static) if (n > 65536)")
    for (size_t x = 0; x < n; x++) {
        double s = 0.0;
        for (int j = 0; j < k; j++) s += w[j] * g[j][x];
        out[x] = (float)s;
    }
}

void mt_cpu_scale(float *x, float s, size_t n) {
    OMP("omp parallel for simd schedule(static) if (n > 65536)")
    for (size_t i = 0; i < n; i++) x[i] *= s;
}
