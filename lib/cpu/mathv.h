// mathv.h — exp, the normal CDF and density on vectors of 4 doubles (GCC/Clang vector
// extensions, as gemm.c: AVX2 runs them as single instructions, other targets split them).
// glibc's scalar erff / expf were an eighth of a training step, and GCC will not
// auto-vectorise a loop once it has turned a clamp into a branch. Evaluated in double, so
// the float results are within 0.5 ulp + 5e-10 relative of the exact values.
#ifndef MT_MATHV_H
#define MT_MATHV_H
#include <stdint.h>
#include <string.h>

typedef double mt_v4d __attribute__((vector_size(32)));
typedef int64_t mt_v4i __attribute__((vector_size(32)));
typedef float mt_v4f __attribute__((vector_size(16)));

// a * b + c, fused where the target has FMA (-std=c11 turns off contraction, and unfused the
// polynomials below were latency-bound at twice the time). Same instructions in every lane
// and every tail, so results never depend on how a loop is split over threads.
#if defined(__FMA__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define MT_FMA(a, b, c) ((mt_v4d)_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
#else
#define MT_FMA(a, b, c) ((a) * (b) + (c))
#endif
static inline mt_v4d mt_v4(double c) { return (mt_v4d){c, c, c, c}; }

// mask ? a : b, mask lanes all ones or zero (what vector comparisons return)
static inline mt_v4d mt_v4_select(mt_v4i mask, mt_v4d a, mt_v4d b) {
    return (mt_v4d)((mask & (mt_v4i)a) | (~mask & (mt_v4i)b));
}

// exp(a), a clamped to [-700, 700]: a = n ln2 + r with |r| <= ln2/2, exp(r) by Taylor to r^11
// (truncation < 1.1e-14 relative; measured 1.6e-14 with rounding), 2^n in the exponent bits
// (rint by adding 1.5 * 2^52: the low bits of the sum hold n in two's complement).
static inline mt_v4d mt_exp_v4(mt_v4d a) {
    const double shifter = 0x1.8p52, log2e = 1.4426950408889634, ln2_hi = 0x1.62e42fefa39efp-1,
                 ln2_lo = 0x1.abc9e3b39803fp-56;
    const mt_v4d lo = {-700, -700, -700, -700}, hi = {700, 700, 700, 700};
    a = mt_v4_select(a < lo, lo, a);
    a = mt_v4_select(a > hi, hi, a);
    mt_v4d kd = MT_FMA(a, mt_v4(log2e), mt_v4(shifter)), n = kd - shifter;
    mt_v4d r = MT_FMA(n, mt_v4(-ln2_lo), MT_FMA(n, mt_v4(-ln2_hi), a));
    mt_v4d p = MT_FMA(r, mt_v4(1.0 / 39916800), mt_v4(1.0 / 3628800));
    p = MT_FMA(p, r, mt_v4(1.0 / 362880));
    p = MT_FMA(p, r, mt_v4(1.0 / 40320));
    p = MT_FMA(p, r, mt_v4(1.0 / 5040));
    p = MT_FMA(p, r, mt_v4(1.0 / 720));
    p = MT_FMA(p, r, mt_v4(1.0 / 120));
    p = MT_FMA(p, r, mt_v4(1.0 / 24));
    p = MT_FMA(p, r, mt_v4(1.0 / 6));
    p = MT_FMA(p, r, mt_v4(0.5));
    p = MT_FMA(p, r, mt_v4(1.0));
    p = MT_FMA(p, r, mt_v4(1.0));
    mt_v4i bits = ((mt_v4i)kd + 1023) << 52;
    return p * (mt_v4d)bits;
}

// Phi(x) = P(X <= x) for a standard normal X (the CDF in the erf form of GELU) and the
// density phi(x), sharing one exp. With z = |x|/sqrt 2, t = 1 / (1 + z/2) and
// E = exp(-z^2) = exp(-x^2/2): erfc(z) = t E Q(t), Q a degree-11 Chebyshev fit of
// erfc(z) exp(z^2) / t over z in [0, 10] (max relative error 4.6e-10), phi = E / sqrt(2 pi).
// Phi(x) = erfc(z)/2 for x < 0 (no cancellation in the lower tail, unlike 1 + erf),
// 1 - erfc(z)/2 for x >= 0; from z = 10 on, Phi < 1.1e-45 is 0 (or 1) in float.
static inline mt_v4d mt_normal_cdf_pdf_v4(mt_v4d x, mt_v4d *pdf) {
    mt_v4d z = (mt_v4d)((mt_v4i)x & INT64_MAX) * 0.70710678118654752;  // |x| / sqrt 2
    mt_v4d t = 1.0 / (1.0 + 0.5 * z);
    mt_v4d q = MT_FMA(t, mt_v4(-0.031085231463166572), mt_v4(0.23164299141887196));
    q = MT_FMA(q, t, mt_v4(-0.7372237200318381));
    q = MT_FMA(q, t, mt_v4(1.2692015158752756));
    q = MT_FMA(q, t, mt_v4(-1.2221194205270873));
    q = MT_FMA(q, t, mt_v4(0.6411697563178241));
    q = MT_FMA(q, t, mt_v4(-0.28959139298527126));
    q = MT_FMA(q, t, mt_v4(0.16440505637445305));
    q = MT_FMA(q, t, mt_v4(0.16077217185855888));
    q = MT_FMA(q, t, mt_v4(0.24877604884574786));
    q = MT_FMA(q, t, mt_v4(0.2819528474330414));
    q = MT_FMA(q, t, mt_v4(0.28209937688219316));
    mt_v4d e = mt_exp_v4(-z * z);
    *pdf = 0.39894228040143268 * e;
    mt_v4d half_erfc = 0.5 * t * e * q;
    half_erfc = (mt_v4d)((mt_v4i)half_erfc & (z < 10.0));
    return mt_v4_select(x < 0.0, half_erfc, 1.0 - half_erfc);
}

// Four floats from p (n < 4: the first n, the rest 0) as doubles; and back.
static inline mt_v4d mt_load4(const float *p, int n) {
    mt_v4f f = {0, 0, 0, 0};
    if (n == 4) memcpy(&f, p, sizeof f);  // a constant size: one load, no call
    else memcpy(&f, p, sizeof(float) * (size_t)n);
    return __builtin_convertvector(f, mt_v4d);
}
static inline void mt_store4(float *p, mt_v4d v, int n) {
    mt_v4f f = __builtin_convertvector(v, mt_v4f);
    if (n == 4) memcpy(p, &f, sizeof f);
    else memcpy(p, &f, sizeof(float) * (size_t)n);
}
#endif
