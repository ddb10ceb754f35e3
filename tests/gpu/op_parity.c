// op_parity.c — every op of the CUDA backend against the CPU backend on random inputs and
// packed variable-length sequences, one table row per check, exit status 1 when any check
// fails. Needs a GPU (run by tests/gpu/check.sh, not by `make test`); builds anywhere nvcc is.
//
// A check passes when every element satisfies |gpu - cpu| <= atol + rtol * |cpu| (NaN only
// where the CPU has NaN). For matrix products atol is a fraction of max |cpu| ("norm" in the
// table): their rounding error grows with the size of the result, not of each element.
// Tolerances (why):
//   exact      embeddings, CLS/max pooling, unpack, bf16 conversion, memory: same operations
//              in the same order, nothing to round differently
//   1e-6 rel   GELU, tanh, mean pooling: libm vs CUDA erff/tanhf differ by an ulp or two
//   1e-5       LayerNorm, attention (output and probabilities): sums in another order
//   1e-5 norm  fp32 GEMMs (cuBLAS vs OpenBLAS or the plain-C GEMM)
//   5e-3 norm  TF32 GEMMs (10-bit mantissa inputs); 1e-2 norm bf16 GEMMs vs fp32 inputs
//              (8-bit mantissa), 1e-5 norm vs the same bf16-rounded inputs
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cuda.h"
#include "common.h"
#include "device.h"

static const mt_backend *cpu, *gpu;
static int checks, failures;

// ---- inputs ------------------------------------------------------------------------------

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static float frand(void) {  // uniform in [-1, 1), xorshift64*
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return (float)((rng_state * 0x2545F4914F6CDD1DULL) >> 40) / (float)(1 << 23) - 1.0f;
}
static float *rand_vec(size_t n, float center, float scale) {
    float *v = mt_malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = center + scale * frand();
    return v;
}
static float bf16_round(float x) {  // round to nearest even, as __float2bfloat16_rn
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &u, 4);
    return x;
}

// Packed sequences: offsets[B+1] and att_offsets[B] (NH * earlier L^2) from lengths[B].
typedef struct { int B, N, maxL; int32_t *offsets; int64_t *att_offsets; int64_t att_size; } packing;
static packing pack(const int *lengths, int B, int NH) {
    packing p = {B, 0, 0, mt_malloc(sizeof(int32_t) * (B + 1)), mt_malloc(sizeof(int64_t) * B), 0};
    p.offsets[0] = 0;
    for (int b = 0; b < B; b++) {
        p.offsets[b + 1] = p.offsets[b] + lengths[b];
        p.att_offsets[b] = p.att_size;
        p.att_size += (int64_t)NH * lengths[b] * lengths[b];
        if (lengths[b] > p.maxL) p.maxL = lengths[b];
    }
    p.N = p.offsets[B];
    return p;
}
static void unpack_free(packing *p) { free(p->offsets); free(p->att_offsets); }

// ---- device helpers ----------------------------------------------------------------------

static void *up(const void *host, size_t bytes) {
    void *d = gpu->alloc(bytes);
    gpu->copy_to_device(d, host, bytes);
    return d;
}
static float *down(const void *dev, size_t n) {
    float *h = mt_malloc(n * sizeof *h);
    gpu->copy_to_host(h, dev, n * sizeof *h);
    return h;
}

// ---- reporting ---------------------------------------------------------------------------

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

// One table row: got (GPU) against ref (CPU), n elements.
static void report(const char *op, const char *what, const char *prec, const float *got, const float *ref, size_t n,
                   double atol, double rtol) {
    double maxdiff = 0, worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]) || isnan(ref[i])) {
            if (!(isnan(got[i]) && isnan(ref[i]))) worst = INFINITY;
            continue;
        }
        double d = fabs((double)got[i] - ref[i]), tol = atol + rtol * fabs(ref[i]);
        maxdiff = fmax(maxdiff, d);
        worst = fmax(worst, tol > 0 ? d / tol : (d > 0 ? INFINITY : 0));
    }
    int pass = worst <= 1.0;
    checks++;
    failures += !pass;
    printf("%-12s %-40s %-5s %11.3g %9.2g %9.2g %9.3g  %s\n", op, what, prec, maxdiff, atol, rtol, worst,
           pass ? "PASS" : "FAIL");
    fflush(stdout);
}

// ---- matrix products -----------------------------------------------------------------------

enum { FP32, TF32, BF16 };
static const char *prec_name[] = {"fp32", "tf32", "bf16"};

// C = alpha op(A) op(B) + beta C with padded leading dimensions (the padding must survive).
static void check_gemm(int ta, int tb, int M, int N, int K, int prec) {
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = rand_vec(na, 0, 1), *B = rand_vec(nb, 0, 1), *C = rand_vec(nc, 0, 1);
    float *ref = mt_malloc(nc * sizeof *ref), alpha = 0.75f, beta = -0.5f;
    float *dA = up(A, na * 4), *dB = up(B, nb * 4), *dC = up(C, nc * 4);
    char what[96];
    snprintf(what, sizeof what, "%dx%dx%d tA=%d tB=%d", M, N, K, ta, tb);
    memcpy(ref, C, nc * 4);
    cpu->gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, ref, ldc);
    if (prec == BF16) {
        mt_bf16 *hA = gpu->alloc(na * 2), *hB = gpu->alloc(nb * 2);
        mt_cuda_f32_to_bf16(hA, dA, (int64_t)na);
        mt_cuda_f32_to_bf16(hB, dB, (int64_t)nb);
        mt_cuda_gemm_bf16(ta, tb, M, N, K, alpha, hA, lda, hB, ldb, beta, dC, ldc);
        float *got = down(dC, nc);
        report("gemm_bf16", what, "bf16", got, ref, nc, 1e-2 * max_abs(ref, nc), 0);
        // the same product on bf16-rounded inputs: only the accumulation order differs
        for (size_t i = 0; i < na; i++) A[i] = bf16_round(A[i]);
        for (size_t i = 0; i < nb; i++) B[i] = bf16_round(B[i]);
        memcpy(ref, C, nc * 4);
        cpu->gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, ref, ldc);
        strncat(what, " vs rounded", sizeof what - strlen(what) - 1);
        report("gemm_bf16", what, "bf16", got, ref, nc, 1e-5 * max_abs(ref, nc), 0);
        free(got);
        gpu->free(hA);
        gpu->free(hB);
    } else {
        mt_cuda_set_tf32(prec == TF32);
        gpu->gemm(ta, tb, M, N, K, alpha, dA, lda, dB, ldb, beta, dC, ldc);
        mt_cuda_set_tf32(0);
        float *got = down(dC, nc);
        report("gemm", what, prec_name[prec], got, ref, nc, (prec == TF32 ? 5e-3 : 1e-5) * max_abs(ref, nc), 0);
        free(got);
    }
    gpu->free(dA); gpu->free(dB); gpu->free(dC);
    free(A); free(B); free(C); free(ref);
}

static void check_gemms(void) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_gemm(ta, tb, 37, 53, 300, FP32);
            check_gemm(ta, tb, 256, 768, 768, FP32);
        }
    check_gemm(0, 1, 1, 1, 1, FP32);
    check_gemm(0, 0, 5, 7, 0, FP32);  // K = 0: C = beta C
    check_gemm(0, 1, 256, 768, 768, TF32);
    check_gemm(1, 0, 256, 768, 3072, TF32);
    check_gemm(0, 1, 256, 768, 768, BF16);
    check_gemm(1, 1, 130, 70, 301, BF16);
    // beta == 0 overwrites C, even a NaN in it
    float A[2] = {1, 2}, B[2] = {3, 4}, C = NAN, ref = 11;
    float *dA = up(A, 8), *dB = up(B, 8), *dC = up(&C, 4);
    gpu->gemm(0, 0, 1, 1, 2, 1.0f, dA, 2, dB, 1, 0.0f, dC, 1);
    gpu->copy_to_host(&C, dC, 4);
    report("gemm", "beta=0 over NaN", "fp32", &C, &ref, 1, 0, 0);
    gpu->free(dA); gpu->free(dB); gpu->free(dC);
}

// variant: 0 bias + residual, 1 bias, 2 residual, 3 neither. misalign: every pointer one
// float past 16-byte alignment, which takes the fallback path instead of cuBLASLt.
static void check_matmul(int N, int IC, int OC, int variant, int misalign, int prec) {
    int k = misalign ? 1 : 0;
    float *inp = rand_vec(N * IC + k, 0, 1), *w = rand_vec(OC * IC + k, 0, 1), *bias = rand_vec(OC + k, 0, 1);
    float *res = rand_vec(N * OC + k, 0, 1), *ref = rand_vec(N * OC, 0, 1);
    const float *hb = variant <= 1 ? bias + k : NULL, *hr = variant == 0 || variant == 2 ? res + k : NULL;
    float *dinp = up(inp, (N * IC + k) * 4), *dw = up(w, (OC * IC + k) * 4), *db = up(bias, (OC + k) * 4);
    float *dres = up(res, (N * OC + k) * 4), *dout = gpu->alloc((N * OC + k) * 4);
    cpu->matmul_forward(ref, inp + k, w + k, hb, hr, N, IC, OC);
    mt_cuda_set_tf32(prec == TF32);
    gpu->matmul_forward(dout + k, dinp + k, dw + k, hb ? db + k : NULL, hr ? dres + k : NULL, N, IC, OC);
    mt_cuda_set_tf32(0);
    float *got = down(dout + k, (size_t)N * OC);
    static const char *vname[] = {"bias+residual", "bias", "residual", "plain"};
    char what[96];
    snprintf(what, sizeof what, "%dx%d->%d %s%s", N, IC, OC, vname[variant], misalign ? " unaligned" : "");
    report("matmul_fwd", what, prec_name[prec], got, ref, (size_t)N * OC,
           (prec == TF32 ? 5e-3 : 1e-5) * max_abs(ref, (size_t)N * OC), 0);
    gpu->free(dinp); gpu->free(dw); gpu->free(db); gpu->free(dres); gpu->free(dout);
    free(inp); free(w); free(bias); free(res); free(ref); free(got);
}

static void check_matmuls(void) {
    for (int v = 0; v < 4; v++) check_matmul(200, 384, 1152, v, 0, FP32);
    check_matmul(200, 768, 3072, 0, 0, FP32);
    check_matmul(200, 3072, 768, 0, 0, FP32);
    check_matmul(19, 45, 33, 0, 0, FP32);  // rows not 16-byte multiples: fallback
    check_matmul(64, 384, 384, 0, 1, FP32);
    check_matmul(64, 384, 384, 3, 1, FP32);
    check_matmul(200, 768, 3072, 0, 0, TF32);
}

static void check_bf16_conversion(void) {
    size_t n = 100003;
    float *x = rand_vec(n, 0, 1), *ref = mt_malloc(n * 4);
    for (size_t i = 0; i < n; i++) x[i] = ldexpf(x[i], (int)(i % 40) - 20), ref[i] = bf16_round(x[i]);
    float *dx = up(x, n * 4), *dy = gpu->alloc(n * 4);
    mt_bf16 *dh = gpu->alloc(n * 2);
    mt_cuda_f32_to_bf16(dh, dx, (int64_t)n);
    mt_cuda_bf16_to_f32(dy, dh, (int64_t)n);
    float *got = down(dy, n);
    report("bf16_conv", "f32->bf16->f32, 2^-20..2^20", "bf16", got, ref, n, 0, 0);
    gpu->free(dx); gpu->free(dy); gpu->free(dh);
    free(x); free(ref); free(got);
}

// ---- token-wise ops ----------------------------------------------------------------------------

static void check_memory(void) {
    size_t n = (1u << 20) + 5;
    float *x = rand_vec(n, 0, 1), *zero = calloc(n, 4);
    float *d = gpu->alloc(n * 4), *got = down(d, n);
    report("alloc", "zero-filled, 4 MiB", "fp32", got, zero, n, 0, 0);
    gpu->copy_to_device(d, x, n * 4);
    free(got);
    got = down(d, n);
    report("copy", "host->device->host", "fp32", got, x, n, 0, 0);
    gpu->free(d);
    free(x); free(zero); free(got);
}

static void check_embeddings(const packing *p) {
    int N = p->N, C = 384, V = 1000, P = 512, TV = 2;
    int32_t *ids = mt_malloc(N * 4), *types = mt_malloc(N * 4), *pos = mt_malloc(N * 4);
    for (int b = 0; b < p->B; b++)
        for (int n = p->offsets[b]; n < p->offsets[b + 1]; n++)
            ids[n] = (int32_t)((frand() + 1) * 500) % V, types[n] = n % 3 == 0, pos[n] = n - p->offsets[b];
    float *wte = rand_vec((size_t)V * C, 0, 1), *wpe = rand_vec((size_t)P * C, 0, 1), *wtt = rand_vec(TV * C, 0, 1);
    float *ref = mt_malloc((size_t)N * C * 4), *dout = gpu->alloc((size_t)N * C * 4);
    int32_t *dids = up(ids, N * 4), *dtypes = up(types, N * 4), *dpos = up(pos, N * 4);
    float *dwte = up(wte, (size_t)V * C * 4), *dwpe = up(wpe, (size_t)P * C * 4), *dwtt = up(wtt, TV * C * 4);
    cpu->embeddings_forward(ref, ids, types, pos, wte, wpe, wtt, N, C);
    gpu->embeddings_forward(dout, dids, dtypes, dpos, dwte, dwpe, dwtt, N, C);
    float *got = down(dout, (size_t)N * C);
    char what[64];
    snprintf(what, sizeof what, "N=%d C=%d", N, C);
    report("embeddings", what, "fp32", got, ref, (size_t)N * C, 0, 0);
    gpu->free(dout); gpu->free(dids); gpu->free(dtypes); gpu->free(dpos); gpu->free(dwte); gpu->free(dwpe);
    gpu->free(dwtt);
    free(ids); free(types); free(pos); free(wte); free(wpe); free(wtt); free(ref); free(got);
}

static void check_layernorm(int N, int C) {
    float *x = rand_vec((size_t)N * C, 3, 2), *w = rand_vec(C, 1, 0.1f), *bias = rand_vec(C, 0, 0.1f);
    float *ref = mt_malloc((size_t)N * C * 4), *rm = mt_malloc(N * 4), *rr = mt_malloc(N * 4);
    float *dx = up(x, (size_t)N * C * 4), *dw = up(w, C * 4), *db = up(bias, C * 4);
    float *dout = gpu->alloc((size_t)N * C * 4), *dm = gpu->alloc(N * 4), *dr = gpu->alloc(N * 4);
    cpu->layernorm_forward(ref, rm, rr, x, w, bias, N, C, 1e-12f);
    gpu->layernorm_forward(dout, dm, dr, dx, dw, db, N, C, 1e-12f);
    float *got = down(dout, (size_t)N * C), *gm = down(dm, N), *gr = down(dr, N);
    char what[64];
    snprintf(what, sizeof what, "N=%d C=%d out", N, C);
    report("layernorm", what, "fp32", got, ref, (size_t)N * C, 1e-5, 1e-5);
    snprintf(what, sizeof what, "N=%d C=%d mean", N, C);
    report("layernorm", what, "fp32", gm, rm, N, 1e-6, 1e-6);
    snprintf(what, sizeof what, "N=%d C=%d rstd", N, C);
    report("layernorm", what, "fp32", gr, rr, N, 1e-6, 1e-5);
    gpu->layernorm_forward(dx, dm, dr, dx, dw, db, N, C, 1e-12f);  // in place
    free(got);
    got = down(dx, (size_t)N * C);
    snprintf(what, sizeof what, "N=%d C=%d in place", N, C);
    report("layernorm", what, "fp32", got, ref, (size_t)N * C, 1e-5, 1e-5);
    gpu->free(dx); gpu->free(dw); gpu->free(db); gpu->free(dout); gpu->free(dm); gpu->free(dr);
    free(x); free(w); free(bias); free(ref); free(rm); free(rr); free(got); free(gm); free(gr);
}

static void check_attention(const int *lengths, int B, int C, int NH) {
    packing p = pack(lengths, B, NH);
    size_t nqkv = (size_t)p.N * 3 * C, nout = (size_t)p.N * C;
    float *qkv = rand_vec(nqkv, 0, 2), *ref = mt_malloc(nout * 4), *ratt = mt_malloc(p.att_size * 4);
    float *dqkv = up(qkv, nqkv * 4), *dout = gpu->alloc(nout * 4), *datt = gpu->alloc(p.att_size * 4);
    int32_t *doff = up(p.offsets, (B + 1) * 4);
    int64_t *datt_off = up(p.att_offsets, B * 8);
    cpu->attention_forward(ref, ratt, qkv, p.offsets, p.att_offsets, B, C, NH);
    gpu->attention_forward(dout, datt, dqkv, doff, datt_off, B, C, NH);
    float *got = down(dout, nout), *gatt = down(datt, p.att_size);
    char what[96];
    snprintf(what, sizeof what, "B=%d N=%d maxL=%d C=%d NH=%d out", B, p.N, p.maxL, C, NH);
    report("attention", what, "fp32", got, ref, nout, 1e-5, 1e-5);
    snprintf(what, sizeof what, "B=%d N=%d maxL=%d C=%d NH=%d probs", B, p.N, p.maxL, C, NH);
    report("attention", what, "fp32", gatt, ratt, p.att_size, 1e-6, 1e-5);
    gpu->attention_forward(dout, NULL, dqkv, doff, datt_off, B, C, NH);  // probabilities not kept
    free(got);
    got = down(dout, nout);
    snprintf(what, sizeof what, "B=%d C=%d NH=%d out, att=NULL", B, C, NH);
    report("attention", what, "fp32", got, ref, nout, 1e-5, 1e-5);
    gpu->free(dqkv); gpu->free(dout); gpu->free(datt); gpu->free(doff); gpu->free(datt_off);
    free(qkv); free(ref); free(ratt); free(got); free(gatt);
    unpack_free(&p);
}

typedef void unary_fn(float *out, const float *inp, int64_t n);

static void check_unary(const char *name, unary_fn *cpu_fn, unary_fn *gpu_fn, float range) {
    int64_t n = 1000003;
    float *x = rand_vec(n, 0, range), *ref = mt_malloc(n * 4);
    x[0] = 0, x[1] = -0.0f, x[2] = INFINITY, x[3] = -INFINITY, x[4] = NAN;
    float *dx = up(x, n * 4), *dout = gpu->alloc(n * 4);
    cpu_fn(ref, x, n);
    gpu_fn(dout, dx, n);
    float *got = down(dout, n);
    char what[64];
    snprintf(what, sizeof what, "n=%lld in [-%g,%g], inf, nan", (long long)n, range, range);
    report(name, what, "fp32", got, ref, n, 1e-6, 2e-6);
    gpu_fn(dx, dx, n);  // in place
    free(got);
    got = down(dx, n);
    report(name, "in place", "fp32", got, ref, n, 1e-6, 2e-6);
    gpu->free(dx); gpu->free(dout);
    free(x); free(ref); free(got);
}

static void check_pool(const packing *p, int C, int mode) {
    static const char *mname[] = {"cls", "mean", "max"};
    size_t nin = (size_t)p->N * C, nout = (size_t)p->B * C;
    float *x = rand_vec(nin, 0, 1), *ref = mt_malloc(nout * 4);
    float *dx = up(x, nin * 4), *dout = gpu->alloc(nout * 4);
    int32_t *doff = up(p->offsets, (p->B + 1) * 4);
    cpu->pool_forward(ref, x, p->offsets, p->B, C, mode);
    gpu->pool_forward(dout, dx, doff, p->B, C, mode);
    float *got = down(dout, nout);
    char what[64];
    snprintf(what, sizeof what, "%s B=%d N=%d C=%d", mname[mode], p->B, p->N, C);
    double tol = mode == MT_POOL_MEAN ? 1e-6 : 0;
    report("pool", what, "fp32", got, ref, nout, tol, tol);
    gpu->free(dx); gpu->free(dout); gpu->free(doff);
    free(x); free(ref); free(got);
}

static void check_unpack(const packing *p, int C) {
    int T = p->maxL + 5;
    size_t nin = (size_t)p->N * C, nout = (size_t)p->B * T * C;
    float *x = rand_vec(nin, 0, 1), *ref = mt_malloc(nout * 4), *junk = mt_malloc(nout * 4);
    for (size_t i = 0; i < nout; i++) junk[i] = NAN;  // pad rows must be written as zeros
    float *dx = up(x, nin * 4), *dout = up(junk, nout * 4);
    int32_t *doff = up(p->offsets, (p->B + 1) * 4);
    cpu->unpack_forward(ref, x, p->offsets, p->B, T, C);
    gpu->unpack_forward(dout, dx, doff, p->B, T, C);
    float *got = down(dout, nout);
    char what[64];
    snprintf(what, sizeof what, "B=%d T=%d C=%d over NaN", p->B, T, C);
    report("unpack", what, "fp32", got, ref, nout, 0, 0);
    gpu->free(dx); gpu->free(dout); gpu->free(doff);
    free(x); free(ref); free(junk); free(got);
}

// ---- throughput of the pieces (information, not checks) --------------------------------------

// Seconds per call of the statement, after two warm-up calls, on the GPU clock via synchronize.
#define TIME_GPU(secs, reps, stmt)                                        \
    do {                                                                  \
        for (int w_ = 0; w_ < 2; w_++) { stmt; }                          \
        gpu->synchronize();                                               \
        double t0_ = mt_now();                                            \
        for (int r_ = 0; r_ < (reps); r_++) { stmt; }                     \
        gpu->synchronize();                                               \
        secs = (mt_now() - t0_) / (reps);                                 \
    } while (0)

// BERT-base shapes, 128 sequences of 128 tokens: N = 16384 rows, C = 768, F = 3072.
static void bench(void) {
    int N = 16384, C = 768, F = 3072, NH = 12, B = 128;
    float *hx = rand_vec((size_t)N * F, 0, 1);  // random, not zeros: tensor cores draw less on zeros
    float *x = up(hx, (size_t)N * F * 4), *w = up(hx, (size_t)F * C * 4), *y = gpu->alloc((size_t)N * F * 4);
    mt_bf16 *xh = gpu->alloc((size_t)N * C * 2), *wh = gpu->alloc((size_t)F * C * 2);
    mt_cuda_f32_to_bf16(xh, x, (int64_t)N * C);
    mt_cuda_f32_to_bf16(wh, w, (int64_t)F * C);
    free(hx);
    double s, flops = 2.0 * N * F * C;
    printf("\nbench (BERT-base shapes, N=%d tokens; informational)\n", N);
    TIME_GPU(s, 10, gpu->matmul_forward(y, x, w, NULL, NULL, N, C, F));
    printf("  matmul_forward %dx%d->%d fp32   %8.3f ms  %7.1f TFLOP/s\n", N, C, F, s * 1e3, flops / s / 1e12);
    mt_cuda_set_tf32(1);
    TIME_GPU(s, 10, gpu->matmul_forward(y, x, w, NULL, NULL, N, C, F));
    mt_cuda_set_tf32(0);
    printf("  matmul_forward %dx%d->%d tf32   %8.3f ms  %7.1f TFLOP/s\n", N, C, F, s * 1e3, flops / s / 1e12);
    TIME_GPU(s, 10, mt_cuda_gemm_bf16(0, 1, N, F, C, 1.0f, xh, C, wh, C, 0.0f, y, F));
    printf("  gemm_bf16      %dx%d->%d        %8.3f ms  %7.1f TFLOP/s\n", N, C, F, s * 1e3, flops / s / 1e12);
    int32_t *off = mt_malloc((B + 1) * 4);
    for (int b = 0; b <= B; b++) off[b] = b * (N / B);
    int32_t *doff = up(off, (B + 1) * 4);
    TIME_GPU(s, 10, gpu->attention_forward(y, NULL, x, doff, NULL, B, C, NH));
    printf("  attention      B=%d L=%d C=%d   %8.3f ms  %7.1f TFLOP/s\n", B, N / B, C, s * 1e3,
           4.0 * N * (N / B) * C / s / 1e12);
    TIME_GPU(s, 10, gpu->layernorm_forward(y, w, w + N, x, x, x, N, C, 1e-12f));
    printf("  layernorm      N=%d C=%d        %8.3f ms  %7.1f GB/s\n", N, C, s * 1e3, 8.0 * N * C / s / 1e9);
    TIME_GPU(s, 10, gpu->gelu_forward(y, x, (int64_t)N * F));
    printf("  gelu           n=%d         %8.3f ms  %7.1f GB/s\n", N * F, s * 1e3, 8.0 * N * F / s / 1e9);
    gpu->free(x); gpu->free(w); gpu->free(y); gpu->free(xh); gpu->free(wh); gpu->free(doff);
    free(off);
}

int main(int argc, char **argv) {
    mt_set_prog(argv[0]);
    int do_bench = !(argc > 1 && !strcmp(argv[1], "--no-bench"));
    char desc[256];
    if (!mt_gpu_available(desc, sizeof desc)) mt_die("no usable GPU: %s", desc);
    cpu = mt_backend_cpu();
    gpu = mt_backend_select("cuda");
    printf("op parity, CUDA vs CPU: %s\n", desc);
    printf("%-12s %-40s %-5s %11s %9s %9s %9s  %s\n", "op", "case", "prec", "max|diff|", "atol", "rtol",
           "diff/tol", "result");
    check_memory();
    check_gemms();
    check_matmuls();
    check_bf16_conversion();
    int lengths[] = {1, 7, 32, 128, 512, 3, 64, 200}, B = 8, one[] = {1};
    packing p = pack(lengths, B, 1);
    check_embeddings(&p);
    check_layernorm(300, 384);
    check_layernorm(300, 768);
    check_layernorm(37, 45);
    check_attention(lengths, B, 384, 12);  // MiniLM: hs 32
    check_attention(lengths, B, 768, 12);  // BERT-base: hs 64
    check_attention(lengths, B, 96, 1);    // hs 96: lanes past hs idle
    check_attention(lengths, B, 256, 2);   // hs 128
    check_attention(one, 1, 64, 2);        // one token
    check_unary("gelu", cpu->gelu_forward, gpu->gelu_forward, 8);
    check_unary("tanh", cpu->tanh_forward, gpu->tanh_forward, 10);
    for (int mode = 0; mode < 3; mode++) check_pool(&p, 384, mode), check_pool(&p, 45, mode);
    check_unpack(&p, 384);
    check_unpack(&p, 45);
    unpack_free(&p);
    printf("op parity: %d checks, %d failed\n", checks, failures);
    if (do_bench) bench();
    return failures ? 1 : 0;
}
