// optim.c — the CPU backend's optimizer ops (shapes and contracts in backend.h): AdamW's
// per-element update over a list of slices, the blocked deterministic Gram matrix, weighted combination, scaling.
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
static void adamw_slice(float *p, const float *g, float *m, float *v, size_t n, const mt_adamw_scalars *sp) {
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

// Slice by slice, each its own parallel loop: the elements are independent, so the order and
// the thread count do not change a bit.
void mt_cpu_adamw_update_multi(float *p, const float *g, float *m, float *v, const mt_adamw_chunk *list,
                               int count) {
    for (int i = 0; i < count; i++) {
        size_t o = list[i].offset;
        adamw_slice(p + o, g + o, m + o, v + o, list[i].n, &list[i].s);
    }
}

// One block's a . b in double, in GRAM_LANES interleaved partial sums added lane by lane at
// the end: a fixed order (set by the block alone), and independent chains the compiler can
// vectorise. One running sum was bound by the adds' latency, not by memory (~100 ms a call
// on MiniLM's 22.7M parameters).
enum { GRAM_LANES = 16 };
static double block_dot(const float *a, const float *b, size_t lo, size_t hi) {
    double lane[GRAM_LANES] = {0};
    size_t x = lo;
    for (; x + GRAM_LANES <= hi; x += GRAM_LANES)
        for (int l = 0; l < GRAM_LANES; l++) lane[l] += (double)a[x + l] * b[x + l];
    double s = 0.0;
    for (int l = 0; l < GRAM_LANES; l++) s += lane[l];
    for (; x < hi; x++) s += (double)a[x] * b[x];
    return s;
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
            for (int j = i; j < k; j++) part[i * k + j] = block_dot(g[i], g[j], lo, hi);
        OMP("omp ordered")
        for (int i = 0; i < k; i++)
            for (int j = i; j < k; j++) gram[i * k + j] += part[i * k + j];
    }
    for (int i = 0; i < k; i++)
        for (int j = 0; j < i; j++) gram[i * k + j] = gram[j * k + i];
}

// out[x] = sum_j w[j] g_j[x] in double (j ascending from 0.0), rounded once; elementwise, so
// deterministic. Chunks of COMBINE_CHUNK elements keep the sums in a local array so each j
// is one vectorisable pass (the loop over j inside the loop over x was not vectorised).
enum { COMBINE_CHUNK = 1024 };
void mt_cpu_combine(float *out, const float *const *g, const double *w, int k, size_t n) {
    size_t n_chunks = (n + COMBINE_CHUNK - 1) / COMBINE_CHUNK;
    OMP("omp parallel for schedule(static) if (n > 65536)")
    for (size_t c = 0; c < n_chunks; c++) {
        size_t lo = c * COMBINE_CHUNK, len = n - lo < COMBINE_CHUNK ? n - lo : COMBINE_CHUNK;
        double s[COMBINE_CHUNK] = {0};
        for (int j = 0; j < k; j++) {
            const float *gj = g[j] + lo;
            double wj = w[j];
            for (size_t x = 0; x < len; x++) s[x] += wj * gj[x];
        }
        for (size_t x = 0; x < len; x++) out[lo + x] = (float)s[x];
    }
}

void mt_cpu_scale(float *x, float s, size_t n) {
    OMP("omp parallel for simd schedule(static) if (n > 65536)")
    for (size_t i = 0; i < n; i++) x[i] *= s;
}
