// op_parity.c — every op of the CUDA backend against the CPU backend on random inputs and
// packed variable-length sequences, one table row per check, exit status 1 when any check
// fails. Needs a GPU (run by tests/gpu/check.sh, not by `make test`); builds anywhere nvcc is.
//
// A check passes when every element satisfies |gpu - cpu| <= atol + rtol * |cpu| (NaN only
// where the CPU has NaN). For matrix products atol is a fraction of max |cpu| ("norm" in the
// table): their rounding error grows with the size of the result, not of each element.
// Tolerances (why):
//   exact      embeddings (also as heads' row gather), CLS/max pooling, unpack, bf16 and fp16
//              conversion (fp16: inf past 65504, subnormals), memory: same operations in the
//              same order, nothing to round
//              differently
//   1e-6 rel   tanh, mean pooling: libm vs CUDA tanhf differ by an ulp or two; GELU 2.5e-7 rel
//              (2 ulps, no atol: both sides x Phi(x) in double with Phi by erfc, rounded once)
//   1e-5       LayerNorm, attention (output and probabilities): sums in another order
//   1e-5 norm  fp32 GEMMs (cuBLAS vs OpenBLAS or the plain-C GEMM)
//   5e-3 norm  TF32 GEMMs (10-bit mantissa inputs); 1e-2 norm bf16 GEMMs vs fp32 inputs
//              (8-bit mantissa), 1e-5 norm vs the same bf16-rounded inputs; 2e-3 norm fp16
//              GEMMs and matmul_forward (--precision fp16: 11-bit significand) vs fp32 inputs,
//              1e-5 norm vs fp16-rounded inputs; an fp16 operand past 65504 gives inf
//   10 u       attention at --precision bf16 / fp16 (u = unit roundoff, 2^-8 / 2^-11): out
//              10 u max|ref|, probabilities 10 u absolute (Q, K, P, V each rounded once)
// Training ops (the CPU twins in lib/cpu/backward.c):
//   exact      dropout forward / backward (p = 0.1 and p = 0; the Philox masks must be
//              bit-identical, and the scale and residual add are rounded as on the CPU),
//              embeddings_backward (the same float additions in token order)
//   1e-5 norm  matmul_backward (dinp, dweight: GEMMs; dbias: column sums), attention forward
//              with dropout and attention_backward (sums in another order; atol 1e-5 max|ref|,
//              rtol 1e-5), layernorm_backward (dinp 1e-5 rel; dweight, dbias 1e-5 norm)
//   1e-6 rel   gelu_backward (both sides in double, one rounding each; atol 1e-6)
// Fused attention (kernels/flash.cu, forced on for its rows; bf16 and fp16, hs 32 and 64, lengths
// 1 to 512 across the 64-row tiles' edges, p = 0 and 0.1; CUDA only, skipped by --cpu-standin):
//   10 u       forward out, 10 u max|ref| (Q, K, V and the unnormalised P rounded once each, as the
//              batched rows); log-sum-exps saved in att, 10 u max|score| (q and k rounded once)
//   exact      what is written (every real row of out, nothing past out or dqkv, att holding
//              exactly NH * L_b values per block), dqkv run twice (no atomics), and the dropout
//              mask: with Q = 0, integer V and dO and power-of-two lengths every 16-bit operand is
//              exact, so out and dV agree to 2e-5 max|ref| (the CPU's own rounding) while one
//              element masked differently moves them by 2e-3 or more
//   rel. L2    dqkv's increment after the fused forward and backward vs the CPU's: 5e-2 bf16,
//              1e-2 fp16 (Q, K, V, dO, P and dS each rounded once; dS = P (dP - D) cancels, so
//              its error relative to the gradient is several u), the batched path's backward at
//              the same precision reported beside it against the same tolerance as the baseline;
//              B = 70000 sequences of 1 to 3 tokens (past gridDim.z's 65535): out 10 u, dqkv 5e-2
// Sentence-model ops (lib/cpu/sentence.c):
//   exact      pool_backward (cls, mean), copy_2d, add_bias forward / backward (float column
//              sums in row order), im2col / col2im (copies; sums in row order), relu_dropout
//              forward / backward (Philox mask), max_pool forward (values and argmax, ties to
//              the first row) / backward
//   1e-5 norm  the whole sentence model (lib/sentence.c) through each table: output, dinp,
//              parameter gradients (GEMMs; the LSTM cell's expf / tanhf an ulp or two apart);
//              at bf16 / fp16 (GPU products on 16-bit operands) relative L2: out 5e-2 / 1e-2,
//              gradients 0.25 (max-pool near-ties reroute a column's gradient)
// Optimizer ops, against the CPU table's (lib/cpu/optim.c):
//   exact      adamw_update_multi (the kernel rounds each operation as the C does): one slice,
//              slices at the 4096-element chunk edges with empty ones and gaps (untouched), 1100
//              slices (three launches), MiniLM-L6's real tensor list with --llrd scales; 3 steps
//   1e-6 rel   combine (expected exact), scale (exact)
//   1e-9 rel   gram (double partial sums over MT_GRAM_BLOCK blocks; only the order within a
//              block differs)
// Memory plan ops: exact flags (workspace_bytes sums its items and covers workspace.c's asks;
// memory_free counts the reservation; the CPU: nothing to reserve, no device limit).
//
// --fused-only: the fused attention's rows alone (check.sh --sanitize runs them under
// compute-sanitizer's racecheck and synccheck: flash.cu's warps share tiles in shared memory).
// --cpu-standin: the CPU backend stands in for the GPU (every row exact or within tolerance,
// bf16 / fp16 rows, the fused attention's rows and the bench skipped);
// proves the harness runs, nothing about the kernels. Runs without a GPU.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cuda.h"
#include "common.h"
#include "device.h"
#include "rand.h"
#include "rng.h"
#include "sentence.h"
#include "workspace.h"

static const mt_backend *cpu, *gpu;
static int checks, failures, standin;

// ---- inputs ------------------------------------------------------------------------------

static float *rand_around(size_t n, float center, float scale) {  // center + scale * frand()
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

static float fp16_round(float x) {  // round to nearest even, as __float2half_rn (inf past 65504)
    if (!isfinite(x)) return x;
    double a = fabs(x);
    if (a >= 65520.0) return copysignf(INFINITY, x);  // halfway to 2^16 and beyond: ties go to even (inf)
    int e;
    frexp(a, &e);                  // a in [2^(e-1), 2^e): 11 significant bits, ulp 2^(e-11)
    int q = e - 11 < -24 ? -24 : e - 11;  // subnormals: ulp 2^-24
    return copysignf((float)ldexp(nearbyint(ldexp(a, -q)), q), x);
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
static packing pack_uniform(int B, int L, int NH) {  // B sequences of L tokens (the benches)
    int *lengths = mt_malloc(sizeof(int) * B);
    for (int b = 0; b < B; b++) lengths[b] = L;
    packing p = pack(lengths, B, NH);
    free(lengths);
    return p;
}

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
        if (got[i] == ref[i]) continue;  // equal infinities too
        if (isinf(got[i]) || isinf(ref[i])) {  // inf / inf tolerances would be NaN, which fmax drops
            worst = INFINITY;
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

// One table row for ||got - ref|| / ||ref|| (2-norms over n elements) against tol; "rel.L2" is
// appended to what.
static void report_rel_l2(const char *op, const char *what, const char *prec, const float *got, const float *ref,
                          size_t n, double tol) {
    double d2 = 0, r2 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        d2 += d * d, r2 += (double)ref[i] * ref[i];
    }
    float rel = isfinite(d2) && r2 > 0 ? (float)sqrt(d2 / r2) : INFINITY, zero = 0;
    char w[128];
    snprintf(w, sizeof w, "%s rel.L2", what);
    report(op, w, prec, &rel, &zero, 1, tol, 0);
}

// ---- matrix products -----------------------------------------------------------------------

enum { FP32, TF32, BF16, FP16 };  // the order of MT_PRECISION_*
static const char *prec_name[] = {"fp32", "tf32", "bf16", "fp16"};
static float (*const round_half[])(float) = {NULL, NULL, bf16_round, fp16_round};

// C = alpha op(A) op(B) + beta C with padded leading dimensions (the padding must survive).
static void check_gemm(int ta, int tb, int M, int N, int K, int prec) {
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = rand_around(na, 0, 1), *B = rand_around(nb, 0, 1), *C = rand_around(nc, 0, 1);
    float *ref = mt_malloc(nc * sizeof *ref), alpha = 0.75f, beta = -0.5f;
    float *dA = up(A, na * 4), *dB = up(B, nb * 4), *dC = up(C, nc * 4);
    char what[96];
    snprintf(what, sizeof what, "%dx%dx%d tA=%d tB=%d", M, N, K, ta, tb);
    memcpy(ref, C, nc * 4);
    cpu->gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, ref, ldc);
    if (prec == BF16 || prec == FP16) {
        float *got;
        if (prec == BF16) {  // the explicit bf16 entry point on converted copies
            mt_bf16 *hA = gpu->alloc(na * 2), *hB = gpu->alloc(nb * 2);
            mt_cuda_f32_to_bf16(hA, dA, (int64_t)na);
            mt_cuda_f32_to_bf16(hB, dB, (int64_t)nb);
            mt_cuda_gemm_bf16(ta, tb, M, N, K, alpha, hA, lda, hB, ldb, beta, dC, ldc);
            gpu->free(hA);
            gpu->free(hB);
        } else {  // the precision switch: operands rounded in gemm.cu's workspace
            mt_cuda_set_precision("fp16");
            gpu->gemm(ta, tb, M, N, K, alpha, dA, lda, dB, ldb, beta, dC, ldc);
            mt_cuda_set_precision("fp32");
        }
        got = down(dC, nc);
        const char *op = prec == BF16 ? "gemm_bf16" : "gemm";
        report(op, what, prec_name[prec], got, ref, nc, (prec == BF16 ? 1e-2 : 2e-3) * max_abs(ref, nc), 0);
        // the same product on 16-bit-rounded inputs: only the accumulation order differs
        float (*round16)(float) = prec == BF16 ? bf16_round : fp16_round;
        for (size_t i = 0; i < na; i++) A[i] = round16(A[i]);
        for (size_t i = 0; i < nb; i++) B[i] = round16(B[i]);
        memcpy(ref, C, nc * 4);
        cpu->gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, ref, ldc);
        strncat(what, " vs rounded", sizeof what - strlen(what) - 1);
        report(op, what, prec_name[prec], got, ref, nc, 1e-5 * max_abs(ref, nc), 0);
        free(got);
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

static void skip_row(const char *op, const char *what, const char *why);

// --precision fp16: an operand past fp16's 65504 becomes inf, and so does the product (what
// loss scaling detects); 65504 itself stays finite.
static void check_fp16_overflow(void) {
    float A[2] = {1e5f, 65504.0f}, B = 1.0f, C[2] = {0, 0}, ref[2] = {INFINITY, 65504.0f};
    float *dA = up(A, 8), *dB = up(&B, 4), *dC = up(C, 8);
    mt_cuda_set_precision("fp16");
    gpu->gemm(0, 0, 2, 1, 1, 1.0f, dA, 1, dB, 1, 0.0f, dC, 1);  // C[2,1] = A[2,1] B[1,1]
    mt_cuda_set_precision("fp32");
    gpu->copy_to_host(C, dC, 8);
    report("gemm", "fp16 operand 1e5 -> inf, 65504 kept", "fp16", C, ref, 2, 0, 0);
    gpu->free(dA); gpu->free(dB); gpu->free(dC);
}

static void check_gemms(void) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_gemm(ta, tb, 37, 53, 300, FP32);
            check_gemm(ta, tb, 256, 768, 768, FP32);
        }
    check_gemm(0, 1, 1, 1, 1, FP32);
    check_gemm(0, 0, 5, 7, 0, FP32);  // K = 0: C = beta C
    check_gemm(1, 0, 5, 1537, 64, FP32);  // heads' gradient dW[K,D] = dZ^T Xs
    check_gemm(1, 0, 1, 1536, 37, FP32);
    check_gemm(0, 1, 256, 768, 768, TF32);
    check_gemm(1, 0, 256, 768, 3072, TF32);
    if (!standin) {
        check_gemm(0, 1, 256, 768, 768, BF16);
        check_gemm(1, 1, 130, 70, 301, BF16);
        check_gemm(0, 1, 256, 768, 768, FP16);
        check_gemm(1, 0, 130, 70, 301, FP16);
        check_gemm(1, 1, 37, 53, 300, FP16);
        check_fp16_overflow();
    } else {
        skip_row("gemm", "bf16 / fp16", "CUDA only");
    }
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
    float *inp = rand_around(N * IC + k, 0, 1), *w = rand_around(OC * IC + k, 0, 1), *bias = rand_around(OC + k, 0, 1);
    float *res = rand_around(N * OC + k, 0, 1), *ref = rand_around(N * OC, 0, 1);
    const float *hb = variant <= 1 ? bias + k : NULL, *hr = variant == 0 || variant == 2 ? res + k : NULL;
    float *dinp = up(inp, (N * IC + k) * 4), *dw = up(w, (OC * IC + k) * 4), *db = up(bias, (OC + k) * 4);
    float *dres = up(res, (N * OC + k) * 4), *dout = gpu->alloc((N * OC + k) * 4);
    cpu->matmul_forward(ref, inp + k, w + k, hb, hr, N, IC, OC);
    mt_cuda_set_precision(prec_name[prec]);
    gpu->matmul_forward(dout + k, dinp + k, dw + k, hb ? db + k : NULL, hr ? dres + k : NULL, N, IC, OC);
    mt_cuda_set_precision("fp32");
    float *got = down(dout + k, (size_t)N * OC);
    static const char *vname[] = {"bias+residual", "bias", "residual", "plain"};
    char what[96];
    snprintf(what, sizeof what, "%dx%d->%d %s%s", N, IC, OC, vname[variant], misalign ? " unaligned" : "");
    static const double rel[] = {1e-5, 5e-3, 1e-2, 2e-3};  // by precision (the header's table)
    report("matmul_fwd", what, prec_name[prec], got, ref, (size_t)N * OC, rel[prec] * max_abs(ref, (size_t)N * OC), 0);
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
    // heads (lib/heads.c, lib/taskmodel.c): K = 1 or 5 outputs over D = 384 .. 1537 features
    check_matmul(4096, 1537, 1, 1, 0, FP32);
    check_matmul(853, 384, 5, 1, 0, FP32);
    check_matmul(64, 1536, 5, 1, 1, FP32);
    if (standin) {
        skip_row("matmul_fwd", "fp16", "CUDA only");
        return;
    }
    check_matmul(200, 768, 3072, 0, 0, FP16);  // cuBLASLt, bias epilogue, residual as C
    check_matmul(200, 384, 1152, 3, 0, FP16);
    check_matmul(64, 384, 384, 0, 1, FP16);    // unaligned: the fallback gemm
}

// f32 -> 16 bits -> f32 over 2^-30..2^20 (fp16: subnormals, flush to zero, inf past 65504).
static void check_half_conversion(int prec) {
    size_t n = 100003;
    float *x = rand_around(n, 0, 1), *ref = mt_malloc(n * 4);
    x[0] = 65504.0f, x[1] = 65519.0f, x[2] = 65520.0f, x[3] = -1e6f, x[4] = ldexpf(1.0f, -25), x[5] = ldexpf(3.0f, -26);
    for (size_t i = 6; i < n; i++) x[i] = ldexpf(x[i], (int)(i % 50) - 30);
    for (size_t i = 0; i < n; i++) ref[i] = round_half[prec](x[i]);
    float *dx = up(x, n * 4), *dy = gpu->alloc(n * 4);
    uint16_t *dh = gpu->alloc(n * 2);
    if (prec == FP16) mt_cuda_f32_to_f16(dh, dx, (int64_t)n), mt_cuda_f16_to_f32(dy, dh, (int64_t)n);
    else mt_cuda_f32_to_bf16(dh, dx, (int64_t)n), mt_cuda_bf16_to_f32(dy, dh, (int64_t)n);
    float *got = down(dy, n);
    char op[16];
    snprintf(op, sizeof op, "%s_conv", prec_name[prec]);
    report(op, "f32->16->f32, 2^-30..2^20, edges", prec_name[prec], got, ref, n, 0, 0);
    gpu->free(dx); gpu->free(dy); gpu->free(dh);
    free(x); free(ref); free(got);
}

// ---- token-wise ops ----------------------------------------------------------------------------

static void check_memory(void) {
    size_t n = (1u << 20) + 5;
    float *x = rand_around(n, 0, 1), *zero = calloc(n, 4);
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
    float *wte = rand_around((size_t)V * C, 0, 1), *wpe = rand_around((size_t)P * C, 0, 1), *wtt = rand_around(TV * C, 0, 1);
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

// heads fit gathers its minibatch rows with embeddings_forward and all-zero position and type
// tables: out[i] must be exactly x[ids[i]] (lib/heads.c).
static void check_row_gather(void) {
    int rows = 3001, m = 64, D = 1537;
    int32_t ids[64], zeros[64] = {0};
    for (int i = 0; i < m; i++) ids[i] = (int32_t)((frand() + 1) * 0.5f * rows) % rows;
    ids[0] = rows - 1;
    float *x = rand_around((size_t)rows * D, 0, 1), *zrow = calloc(D, 4), *ref = mt_malloc((size_t)m * D * 4);
    for (int i = 0; i < m; i++) memcpy(ref + (size_t)i * D, x + (size_t)ids[i] * D, (size_t)D * 4);
    float *dx = up(x, (size_t)rows * D * 4), *dz = up(zrow, (size_t)D * 4), *dout = gpu->alloc((size_t)m * D * 4);
    int32_t *dids = up(ids, sizeof ids), *dzeros = up(zeros, sizeof zeros);
    gpu->embeddings_forward(dout, dids, dzeros, dzeros, dx, dz, dz, m, D);
    float *got = down(dout, (size_t)m * D);
    report("embeddings", "as heads' row gather, 64 of 3001 x 1537", "fp32", got, ref, (size_t)m * D, 0, 0);
    gpu->free(dx); gpu->free(dz); gpu->free(dout); gpu->free(dids); gpu->free(dzeros);
    free(x); free(zrow); free(ref); free(got);
}

static void check_layernorm(int N, int C) {
    float *x = rand_around((size_t)N * C, 3, 2), *w = rand_around(C, 1, 0.1f), *bias = rand_around(C, 0, 0.1f);
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

// attention_forward against the CPU at precision prec: fp32 within 1e-5 (also with att NULL);
// bf16 / fp16 (the batched products on 16-bit operands) within 10 u of the header's table.
static void check_attention(const int *lengths, int B, int C, int NH, int prec) {
    packing p = pack(lengths, B, NH);
    size_t nqkv = (size_t)p.N * 3 * C, nout = (size_t)p.N * C;
    float *qkv = rand_around(nqkv, 0, 2), *ref = mt_malloc(nout * 4), *ratt = mt_malloc(p.att_size * 4);
    float *dqkv = up(qkv, nqkv * 4), *dout = gpu->alloc(nout * 4), *datt = gpu->alloc(p.att_size * 4);
    int32_t *doff = up(p.offsets, (B + 1) * 4);
    int64_t *datt_off = up(p.att_offsets, B * 8);
    cpu->attention_forward(ref, ratt, qkv, p.offsets, p.att_offsets, B, p.maxL, C, NH);
    if (prec != FP32) mt_cuda_set_precision(prec_name[prec]);
    gpu->attention_forward(dout, datt, dqkv, doff, datt_off, B, p.maxL, C, NH);
    if (prec != FP32) mt_cuda_set_precision("fp32");
    float *got = down(dout, nout), *gatt = down(datt, p.att_size);
    double u = prec == FP16 ? ldexp(1, -11) : ldexp(1, -8);
    double out_atol = prec == FP32 ? 1e-5 : 10 * u * max_abs(ref, nout), out_rtol = prec == FP32 ? 1e-5 : 0;
    char what[96];
    snprintf(what, sizeof what, "B=%d N=%d maxL=%d C=%d NH=%d out", B, p.N, p.maxL, C, NH);
    report("attention", what, prec_name[prec], got, ref, nout, out_atol, out_rtol);
    snprintf(what, sizeof what, "B=%d N=%d maxL=%d C=%d NH=%d probs", B, p.N, p.maxL, C, NH);
    report("attention", what, prec_name[prec], gatt, ratt, p.att_size, prec == FP32 ? 1e-6 : 10 * u,
           prec == FP32 ? 1e-5 : 0);
    if (prec == FP32) {
        gpu->attention_forward(dout, NULL, dqkv, doff, datt_off, B, p.maxL, C, NH);  // probabilities not kept
        free(got);
        got = down(dout, nout);
        snprintf(what, sizeof what, "B=%d C=%d NH=%d out, att=NULL", B, C, NH);
        report("attention", what, "fp32", got, ref, nout, 1e-5, 1e-5);
    }
    gpu->free(dqkv); gpu->free(dout); gpu->free(datt); gpu->free(doff); gpu->free(datt_off);
    free(qkv); free(ref); free(ratt); free(got); free(gatt);
    unpack_free(&p);
}

typedef void unary_fn(float *out, const float *inp, int64_t n);

static void check_unary(const char *name, unary_fn *cpu_fn, unary_fn *gpu_fn, float range, double atol, double rtol) {
    int64_t n = 1000003;
    float *x = rand_around(n, 0, range), *ref = mt_malloc(n * 4);
    x[0] = 0, x[1] = -0.0f, x[2] = INFINITY, x[3] = -INFINITY, x[4] = NAN;
    float *dx = up(x, n * 4), *dout = gpu->alloc(n * 4);
    cpu_fn(ref, x, n);
    gpu_fn(dout, dx, n);
    float *got = down(dout, n);
    char what[64];
    snprintf(what, sizeof what, "n=%lld in [-%g,%g], inf, nan", (long long)n, range, range);
    report(name, what, "fp32", got, ref, n, atol, rtol);
    gpu_fn(dx, dx, n);  // in place
    free(got);
    got = down(dx, n);
    report(name, "in place", "fp32", got, ref, n, atol, rtol);
    gpu->free(dx); gpu->free(dout);
    free(x); free(ref); free(got);
}

static void check_pool(const packing *p, int C, int mode) {
    static const char *mname[] = {"cls", "mean", "max"};
    size_t nin = (size_t)p->N * C, nout = (size_t)p->B * C;
    float *x = rand_around(nin, 0, 1), *ref = mt_malloc(nout * 4);
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
    float *x = rand_around(nin, 0, 1), *ref = mt_malloc(nout * 4), *junk = mt_malloc(nout * 4);
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

// ---- training ops: dropout and backward ----------------------------------------------------

static void skip_row(const char *op, const char *what, const char *why) {
    printf("%-12s %-40s %-5s %11s %9s %9s %9s  SKIP (%s)\n", op, what, "-", "-", "-", "-", "-", why);
}

// One dropout key per check: p = 0.1 (or the given p), a seed with both halves non-zero.
static mt_dropout_key key_of(float p, uint32_t site) {
    mt_dropout_key k = {p, 0x0123456789ABCDEFULL, 7, site};
    return k;
}

static void check_dropout(int64_t n, float p) {
    mt_dropout_key key = key_of(p, mt_dropout_site(1, 3, 2));
    float *x = rand_around(n, 0, 1), *res = rand_around(n, 0, 1), *acc = rand_around(n, 0, 1);
    float *ref = mt_malloc(n * 4), *ref2 = mt_malloc(n * 4);
    float *dx = up(x, n * 4), *dres = up(res, n * 4), *dacc = up(acc, n * 4), *dy = gpu->alloc(n * 4);
    char what[96];
    // without residual, and the mask itself against lib/rng.h element by element
    cpu->dropout_forward(ref, x, NULL, n, &key);
    gpu->dropout_forward(dy, dx, NULL, n, &key);
    float *got = down(dy, n);
    snprintf(what, sizeof what, "fwd n=%lld p=%g", (long long)n, p);
    report("dropout", what, "fp32", got, ref, n, 0, 0);
    if (p > 0) {
        uint32_t thr = mt_dropout_threshold(p);
        float *mask_got = mt_malloc(n * 4), *mask_ref = mt_malloc(n * 4);
        for (int64_t i = 0; i < n; i++) {
            mask_got[i] = got[i] != 0.0f || x[i] == 0.0f;
            mask_ref[i] = (float)mt_dropout_keep(key.seed, key.step, key.site, (uint64_t)i, thr);
        }
        snprintf(what, sizeof what, "mask vs mt_dropout_keep n=%lld p=%g", (long long)n, p);
        report("dropout", what, "-", mask_got, mask_ref, n, 0, 0);
        free(mask_got); free(mask_ref);
    }
    free(got);
    // with residual, in place (out == inp)
    cpu->dropout_forward(ref, x, res, n, &key);
    gpu->dropout_forward(dx, dx, dres, n, &key);
    got = down(dx, n);
    snprintf(what, sizeof what, "fwd+residual in place n=%lld p=%g", (long long)n, p);
    report("dropout", what, "fp32", got, ref, n, 0, 0);
    free(got);
    // backward: dinp += mask * dout / (1-p)
    memcpy(ref2, acc, n * 4);
    cpu->dropout_backward(ref2, res, n, &key);
    gpu->dropout_backward(dacc, dres, n, &key);
    got = down(dacc, n);
    snprintf(what, sizeof what, "bwd n=%lld p=%g", (long long)n, p);
    report("dropout", what, "fp32", got, ref2, n, 0, 0);
    free(got);
    // a NULL key: a copy (plus residual)
    cpu->dropout_forward(ref, x, res, n, NULL);
    gpu->copy_to_device(dx, x, n * 4);
    gpu->dropout_forward(dy, dx, dres, n, NULL);
    got = down(dy, n);
    report("dropout", "fwd+residual, key NULL", "fp32", got, ref, n, 0, 0);
    gpu->free(dx); gpu->free(dres); gpu->free(dacc); gpu->free(dy);
    free(x); free(res); free(acc); free(ref); free(ref2); free(got);
}

// attention_forward_dropout against the CPU's; p = 0 must equal attention_forward.
static void check_attention_dropout(const int *lengths, int B, int C, int NH, float p) {
    packing pk = pack(lengths, B, NH);
    mt_dropout_key key = key_of(p, mt_dropout_site(0, 5, 1));
    size_t nqkv = (size_t)pk.N * 3 * C, nout = (size_t)pk.N * C;
    float *qkv = rand_around(nqkv, 0, 2), *ref = mt_malloc(nout * 4), *ratt = mt_malloc(pk.att_size * 4);
    float *dqkv = up(qkv, nqkv * 4), *dout = gpu->alloc(nout * 4), *datt = gpu->alloc(pk.att_size * 4);
    int32_t *doff = up(pk.offsets, (B + 1) * 4);
    int64_t *datt_off = up(pk.att_offsets, B * 8);
    cpu->attention_forward_dropout(ref, ratt, qkv, pk.offsets, pk.att_offsets, B, pk.maxL, C, NH, &key);
    gpu->attention_forward_dropout(dout, datt, dqkv, doff, datt_off, B, pk.maxL, C, NH, &key);
    float *got = down(dout, nout), *gatt = down(datt, pk.att_size);
    char what[96];
    snprintf(what, sizeof what, "B=%d N=%d maxL=%d C=%d NH=%d p=%g out", B, pk.N, pk.maxL, C, NH, p);
    report("attn_fwd_dp", what, "fp32", got, ref, nout, 1e-5, 1e-5);
    snprintf(what, sizeof what, "B=%d C=%d NH=%d p=%g probs (pre-dropout)", B, C, NH, p);
    report("attn_fwd_dp", what, "fp32", gatt, ratt, pk.att_size, 1e-6, 1e-5);
    gpu->free(dqkv); gpu->free(dout); gpu->free(datt); gpu->free(doff); gpu->free(datt_off);
    free(qkv); free(ref); free(ratt); free(got); free(gatt);
    unpack_free(&pk);
}

// attention_backward through the CPU forward's probabilities (uploaded: both sides read the
// same P), into a dqkv that already holds values (+=).
static void check_attention_backward(const int *lengths, int B, int C, int NH, float p) {
    packing pk = pack(lengths, B, NH);
    mt_dropout_key key = key_of(p, mt_dropout_site(0, 2, 1));
    const mt_dropout_key *k = p > 0 ? &key : NULL;
    size_t nqkv = (size_t)pk.N * 3 * C, nout = (size_t)pk.N * C;
    float *qkv = rand_around(nqkv, 0, 2), *dout = rand_around(nout, 0, 1), *dqkv = rand_around(nqkv, 0, 0.1f);
    float *att = mt_malloc(pk.att_size * 4), *out = mt_malloc(nout * 4);
    cpu->attention_forward_dropout(out, att, qkv, pk.offsets, pk.att_offsets, B, pk.maxL, C, NH, k);
    float *d_qkv = up(qkv, nqkv * 4), *d_dout = up(dout, nout * 4), *d_dqkv = up(dqkv, nqkv * 4);
    float *d_att = up(att, pk.att_size * 4);
    int32_t *doff = up(pk.offsets, (B + 1) * 4);
    int64_t *datt_off = up(pk.att_offsets, B * 8);
    cpu->attention_backward(dqkv, dout, qkv, att, pk.offsets, pk.att_offsets, B, pk.maxL, C, NH, k);
    gpu->attention_backward(d_dqkv, d_dout, d_qkv, d_att, doff, datt_off, B, pk.maxL, C, NH, k);
    float *got = down(d_dqkv, nqkv);
    char what[96];
    snprintf(what, sizeof what, "B=%d N=%d maxL=%d C=%d NH=%d p=%g dqkv", B, pk.N, pk.maxL, C, NH, p);
    report("attn_bwd", what, "fp32", got, dqkv, nqkv, 1e-5 * max_abs(dqkv, nqkv), 1e-5);
    // run-to-run: a second call from the same start gives the same bits
    float *got2;
    gpu->copy_to_device(d_dqkv, got, nqkv * 4);  // any start; compare two runs' increments
    gpu->attention_backward(d_dqkv, d_dout, d_qkv, d_att, doff, datt_off, B, pk.maxL, C, NH, k);
    got2 = down(d_dqkv, nqkv);
    gpu->copy_to_device(d_dqkv, got, nqkv * 4);
    gpu->attention_backward(d_dqkv, d_dout, d_qkv, d_att, doff, datt_off, B, pk.maxL, C, NH, k);
    free(got);
    got = down(d_dqkv, nqkv);
    snprintf(what, sizeof what, "B=%d C=%d NH=%d p=%g run twice", B, C, NH, p);
    report("attn_bwd", what, "fp32", got, got2, nqkv, 0, 0);
    gpu->free(d_qkv); gpu->free(d_dout); gpu->free(d_dqkv); gpu->free(d_att); gpu->free(doff); gpu->free(datt_off);
    free(qkv); free(dout); free(dqkv); free(att); free(out); free(got); free(got2);
    unpack_free(&pk);
}

// ---- fused attention (kernels/flash.cu): CUDA only, forced on here whatever MTBERT_ATTENTION says ----

// The GPU at precision prec with attention mode `mode`; attention_mode_reset() back to fp32 batched.
static void attention_mode(int prec, const char *mode) {
    mt_cuda_set_precision(prec_name[prec]);
    if (mt_cuda_set_attention(mode) != 0) mt_die("attention mode %s", mode);
}
static void attention_mode_reset(void) { attention_mode(FP32, "batched"); }

// n floats of x followed by `guard` NaNs, uploaded: the guard must survive the op.
static float *up_guarded(const float *x, size_t n, size_t guard) {
    float *h = mt_malloc((n + guard) * 4);
    if (x) memcpy(h, x, n * 4);
    else for (size_t i = 0; i < n; i++) h[i] = NAN;
    for (size_t i = n; i < n + guard; i++) h[i] = NAN;
    float *d = up(h, (n + guard) * 4);
    free(h);
    return d;
}
static int all_nan(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) if (!isnan(x[i])) return 0;
    return 1;
}

// lse[att_offsets[b] + h L + i] = log sum_j exp(scale q_i . k_j) in double from the fp32 inputs;
// *max_s the largest |scaled score|.
static float *host_lse(const float *qkv, const packing *pk, int C, int NH, double *max_s) {
    int hs = C / NH;
    double scale = 1.0 / sqrt((double)hs);
    float *lse = mt_calloc(pk->att_size, 4);
    double *s = mt_malloc(sizeof(double) * pk->maxL);
    *max_s = 0;
    for (int b = 0; b < pk->B; b++) {
        int first = pk->offsets[b], L = pk->offsets[b + 1] - first;
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < L; i++) {
                const float *q = qkv + (size_t)(first + i) * 3 * C + h * hs;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < L; j++) {
                    const float *k = qkv + (size_t)(first + j) * 3 * C + C + h * hs;
                    double d = 0;
                    for (int e = 0; e < hs; e++) d += (double)q[e] * k[e];
                    s[j] = d * scale, mx = fmax(mx, s[j]), *max_s = fmax(*max_s, fabs(s[j]));
                }
                for (int j = 0; j < L; j++) sum += exp(s[j] - mx);
                lse[pk->att_offsets[b] + (int64_t)h * L + i] = (float)(mx + log(sum));
            }
    }
    free(s);
    return lse;
}

// Fused forward, then fused backward, against the CPU's attention_forward_dropout and
// attention_backward (p = 0: no key), at prec (BF16 / FP16). Rows: out (10 u max|ref|, as the
// batched rows); what was written (every real row of out, nothing past it, in att exactly the
// NH * L_b log-sum-exps at the start of each block); the log-sum-exps (10 u max|score|: q and k
// rounded once each); dqkv's increment (relative L2, the header's table); dqkv run twice (exact:
// no atomics); and the batched path's backward at the same precision as the baseline.
static void check_attention_fused(const int *lengths, int B, int C, int NH, int prec, float p) {
    packing pk = pack(lengths, B, NH);
    mt_dropout_key key = key_of(p, mt_dropout_site(0, 4, 1));
    const mt_dropout_key *k = p > 0 ? &key : NULL;
    const size_t guard = 4096, nqkv = (size_t)pk.N * 3 * C, nout = (size_t)pk.N * C;
    float *qkv = rand_around(nqkv, 0, 2), *dout = rand_around(nout, 0, 1), *start = rand_around(nqkv, 0, 0.1f);
    float *ref = mt_malloc(nout * 4), *ratt = mt_malloc(pk.att_size * 4), *rd = mt_malloc(nqkv * 4);
    memcpy(rd, start, nqkv * 4);
    cpu->attention_forward_dropout(ref, ratt, qkv, pk.offsets, pk.att_offsets, B, pk.maxL, C, NH, k);
    cpu->attention_backward(rd, dout, qkv, ratt, pk.offsets, pk.att_offsets, B, pk.maxL, C, NH, k);
    float *d_qkv = up(qkv, nqkv * 4), *d_dout = up(dout, nout * 4), *d_out = up_guarded(NULL, nout, guard);
    float *d_att = up_guarded(NULL, pk.att_size, guard), *d_dqkv = up_guarded(start, nqkv, guard);
    int32_t *doff = up(pk.offsets, (B + 1) * 4);
    int64_t *datt_off = up(pk.att_offsets, B * 8);
    attention_mode(prec, "fused");
    gpu->attention_forward_dropout(d_out, d_att, d_qkv, doff, datt_off, B, pk.maxL, C, NH, k);
    gpu->attention_backward(d_dqkv, d_dout, d_qkv, d_att, doff, datt_off, B, pk.maxL, C, NH, k);
    attention_mode_reset();
    float *got = down(d_out, nout + guard), *gatt = down(d_att, pk.att_size + guard), *gd = down(d_dqkv, nqkv + guard);
    double u = prec == FP16 ? ldexp(1, -11) : ldexp(1, -8), max_s;
    char what[96];
    snprintf(what, sizeof what, "B=%d N=%d maxL=%d C=%d NH=%d p=%g out", B, pk.N, pk.maxL, C, NH, p);
    report("attn_fused", what, prec_name[prec], got, ref, nout, 10 * u * max_abs(ref, nout), 0);
    float flags[3] = {1, all_nan(got + nout, guard) && all_nan(gatt + pk.att_size, guard), 1}, want[3] = {1, 1, 1};
    for (size_t i = 0; i < nout; i++) flags[0] = flags[0] && !isnan(got[i]);
    for (int b = 0; b < B; b++) {
        int64_t used = (int64_t)NH * lengths[b];
        for (int64_t i = 0; i < used * lengths[b]; i++) flags[2] = flags[2] && (i < used) == !isnan(gatt[pk.att_offsets[b] + i]);
    }
    snprintf(what, sizeof what, "C=%d NH=%d p=%g rows written, guards, att = lse", C, NH, p);
    report("attn_fused", what, "-", flags, want, 3, 0, 0);
    float *lse = host_lse(qkv, &pk, C, NH, &max_s), *glse = mt_malloc(pk.att_size * 4);
    for (int64_t i = 0; i < pk.att_size; i++) glse[i] = isnan(gatt[i]) ? 0 : gatt[i], lse[i] = isnan(gatt[i]) ? 0 : lse[i];
    snprintf(what, sizeof what, "C=%d NH=%d p=%g log-sum-exp (in att)", C, NH, p);
    report("attn_fused", what, prec_name[prec], glse, lse, pk.att_size, 10 * u * max_s, 0);
    for (size_t i = 0; i < nqkv; i++) gd[i] -= start[i], rd[i] -= start[i];  // the increments
    snprintf(what, sizeof what, "B=%d maxL=%d C=%d NH=%d p=%g dqkv", B, pk.maxL, C, NH, p);
    report_rel_l2("attn_fused", what, prec_name[prec], gd, rd, nqkv, prec == BF16 ? 5e-2 : 1e-2);
    float guards[1] = {(float)all_nan(gd + nqkv, guard)}, one = 1;
    report("attn_fused", "dqkv: nothing written past it", "-", guards, &one, 1, 0, 0);
    // run to run: the same start twice gives the same bits
    float *twice[2];
    for (int r = 0; r < 2; r++) {
        gpu->copy_to_device(d_dqkv, start, nqkv * 4);
        attention_mode(prec, "fused");
        gpu->attention_backward(d_dqkv, d_dout, d_qkv, d_att, doff, datt_off, B, pk.maxL, C, NH, k);
        attention_mode_reset();
        twice[r] = down(d_dqkv, nqkv);
    }
    snprintf(what, sizeof what, "C=%d NH=%d p=%g dqkv run twice", C, NH, p);
    report("attn_fused", what, "-", twice[1], twice[0], nqkv, 0, 0);
    // the batched path at the same precision: the baseline the tolerance above is judged by
    gpu->copy_to_device(d_dqkv, start, nqkv * 4);
    float *d_patt = gpu->alloc(pk.att_size * 4);
    attention_mode(prec, "batched");
    gpu->attention_forward_dropout(d_out, d_patt, d_qkv, doff, datt_off, B, pk.maxL, C, NH, k);
    gpu->attention_backward(d_dqkv, d_dout, d_qkv, d_patt, doff, datt_off, B, pk.maxL, C, NH, k);
    attention_mode_reset();
    float *bd = down(d_dqkv, nqkv);
    for (size_t i = 0; i < nqkv; i++) bd[i] -= start[i];
    snprintf(what, sizeof what, "C=%d NH=%d p=%g dqkv, batched (baseline)", C, NH, p);
    report_rel_l2("attn_bwd", what, prec_name[prec], bd, rd, nqkv, prec == BF16 ? 5e-2 : 1e-2);
    gpu->free(d_qkv); gpu->free(d_dout); gpu->free(d_out); gpu->free(d_att); gpu->free(d_dqkv); gpu->free(d_patt);
    gpu->free(doff); gpu->free(datt_off);
    free(qkv); free(dout); free(start); free(ref); free(ratt); free(rd); free(got); free(gatt); free(gd);
    free(lse); free(glse); free(twice[0]); free(twice[1]); free(bd);
    unpack_free(&pk);
}

// The fused path's forward and backward (dqkv from zero) at prec on the GPU, and the CPU's of
// the same inputs: out [N, C] and dqkv [N, 3C] of each, on the host.
typedef struct { float *ref, *got, *rd, *gd; } fused_vs_cpu;
static fused_vs_cpu run_fused_vs_cpu(const packing *pk, const float *qkv, const float *dout, int C, int NH, int prec,
                                     const mt_dropout_key *key) {
    const int B = pk->B;
    const size_t nqkv = (size_t)pk->N * 3 * C, nout = (size_t)pk->N * C;
    fused_vs_cpu r = {mt_malloc(nout * 4), NULL, mt_calloc(nqkv, 4), NULL};
    float *att = mt_malloc(pk->att_size * 4);
    cpu->attention_forward_dropout(r.ref, att, qkv, pk->offsets, pk->att_offsets, B, pk->maxL, C, NH, key);
    cpu->attention_backward(r.rd, dout, qkv, att, pk->offsets, pk->att_offsets, B, pk->maxL, C, NH, key);
    float *d_qkv = up(qkv, nqkv * 4), *d_dout = up(dout, nout * 4), *d_out = gpu->alloc(nout * 4);
    float *d_att = gpu->alloc(pk->att_size * 4), *d_dqkv = gpu->alloc(nqkv * 4);
    int32_t *doff = up(pk->offsets, (B + 1) * 4);
    int64_t *datt_off = up(pk->att_offsets, B * 8);
    gpu->zero(d_dqkv, nqkv * 4);
    attention_mode(prec, "fused");
    gpu->attention_forward_dropout(d_out, d_att, d_qkv, doff, datt_off, B, pk->maxL, C, NH, key);
    gpu->attention_backward(d_dqkv, d_dout, d_qkv, d_att, doff, datt_off, B, pk->maxL, C, NH, key);
    attention_mode_reset();
    r.got = down(d_out, nout), r.gd = down(d_dqkv, nqkv);
    gpu->free(d_qkv); gpu->free(d_dout); gpu->free(d_out); gpu->free(d_att); gpu->free(d_dqkv); gpu->free(doff);
    gpu->free(datt_off);
    free(att);
    return r;
}
static void fused_vs_cpu_free(fused_vs_cpu *r) { free(r->ref); free(r->got); free(r->rd); free(r->gd); }

// The dropout mask of the fused path, exactly: Q = 0 makes every score 0 and P = 1/L, and with
// V and dO small integers and power-of-two lengths every 16-bit operand (1, 1/L, V, dO) is exact,
// so out and dV are sums of exact terms. One element masked differently moves them by at least
// 1.1/512 (of values near 3): 2e-5 max|ref| (the CPU's own float rounding) cannot hide it.
static void check_attention_fused_mask(int C, int NH, int prec) {
    const int lengths[] = {1, 2, 32, 64, 128, 512}, B = 6;
    packing pk = pack(lengths, B, NH);
    mt_dropout_key key = key_of(0.1f, mt_dropout_site(0, 6, 1));
    const size_t nqkv = (size_t)pk.N * 3 * C, nout = (size_t)pk.N * C;
    float *qkv = rand_around(nqkv, 0, 2), *dout = mt_malloc(nout * 4);
    for (int n = 0; n < pk.N; n++)
        for (int c = 0; c < C; c++) {
            float *row = qkv + (size_t)n * 3 * C;
            row[c] = 0.0f;                                       // Q
            row[2 * C + c] = (float)(1 + (int)((frand() + 1) * 2));  // V in 1..4 (frand in [-1, 1))
            dout[(size_t)n * C + c] = (float)(1 + (int)((frand() + 1) * 2));
        }
    fused_vs_cpu r = run_fused_vs_cpu(&pk, qkv, dout, C, NH, prec, &key);
    float *ref = r.ref, *got = r.got, *rd = r.rd, *gd = r.gd;
    float *dv_ref = mt_malloc(nout * 4), *dv_got = mt_malloc(nout * 4);
    for (int n = 0; n < pk.N; n++)
        for (int c = 0; c < C; c++)
            dv_ref[(size_t)n * C + c] = rd[(size_t)n * 3 * C + 2 * C + c], dv_got[(size_t)n * C + c] = gd[(size_t)n * 3 * C + 2 * C + c];
    char what[96];
    snprintf(what, sizeof what, "mask: Q=0, integer V, C=%d NH=%d p=0.1 out", C, NH);
    report("attn_fused", what, prec_name[prec], got, ref, nout, 2e-5 * max_abs(ref, nout), 0);
    snprintf(what, sizeof what, "mask: Q=0, integer V, dO, C=%d NH=%d p=0.1 dV", C, NH);
    report("attn_fused", what, prec_name[prec], dv_got, dv_ref, nout, 2e-5 * max_abs(dv_ref, nout), 0);
    free(qkv); free(dout); free(dv_ref); free(dv_got);
    fused_vs_cpu_free(&r);
    unpack_free(&pk);
}

// Every fused-attention row: lengths across the 64-row tiles' edges, hs 32 (MiniLM) and 64 (BERT-base).
static void check_attention_fused_all(void) {
    if (standin) return skip_row("attn_fused", "bf16 / fp16 (kernels/flash.cu)", "CUDA only");
    int edges[] = {1, 7, 64, 65, 200, 512, 3, 130};
    for (int prec = BF16; prec <= FP16; prec++)
        for (int hs = 32; hs <= 64; hs *= 2)
            for (int dp = 0; dp < 2; dp++) check_attention_fused(edges, 8, 12 * hs, 12, prec, dp ? 0.1f : 0.0f);
    check_attention_fused_mask(768, 12, BF16);
    check_attention_fused_mask(384, 12, FP16);
}

// More sequences than gridDim.z allows (65535): flash.cu folds B into the grid's x. B = 70000 of
// 1 to 3 tokens at bf16, hs 32, p = 0.1: out (10 u max|ref|) and dqkv's increment (rel. L2 5e-2)
// against the CPU. Not in --fused-only: 210,000 blocks a kernel would be slow under racecheck.
static void check_attention_fused_many(void) {
    if (standin) return skip_row("attn_fused", "70000 sequences (kernels/flash.cu)", "CUDA only");
    const int B = 70000, C = 64, NH = 2;
    int *lengths = mt_malloc(B * sizeof(int));
    for (int b = 0; b < B; b++) lengths[b] = 1 + b % 3;
    packing pk = pack(lengths, B, NH);
    mt_dropout_key key = key_of(0.1f, mt_dropout_site(0, 7, 1));
    const size_t nqkv = (size_t)pk.N * 3 * C, nout = (size_t)pk.N * C;
    float *qkv = rand_around(nqkv, 0, 2), *dout = rand_around(nout, 0, 1);
    fused_vs_cpu r = run_fused_vs_cpu(&pk, qkv, dout, C, NH, BF16, &key);
    report("attn_fused", "B=70000 (past gridDim.z) p=0.1 out", "bf16", r.got, r.ref, nout,
           10 * ldexp(1, -8) * max_abs(r.ref, nout), 0);
    report_rel_l2("attn_fused", "B=70000 p=0.1 dqkv", "bf16", r.gd, r.rd, nqkv, 5e-2);
    free(lengths); free(qkv); free(dout);
    fused_vs_cpu_free(&r);
    unpack_free(&pk);
}

// mask: bit 0 dinp, bit 1 dweight, bit 2 dbias wanted (the others NULL).
static void check_matmul_backward(int N, int IC, int OC, int mask) {
    float *dout = rand_around((size_t)N * OC, 0, 1), *inp = rand_around((size_t)N * IC, 0, 1), *w = rand_around((size_t)OC * IC, 0, 1);
    float *dinp = rand_around((size_t)N * IC, 0, 1), *dw = rand_around((size_t)OC * IC, 0, 1), *db = rand_around(OC, 0, 1);
    float *d_dout = up(dout, (size_t)N * OC * 4), *d_inp = up(inp, (size_t)N * IC * 4), *d_w = up(w, (size_t)OC * IC * 4);
    float *d_dinp = up(dinp, (size_t)N * IC * 4), *d_dw = up(dw, (size_t)OC * IC * 4), *d_db = up(db, OC * 4);
    cpu->matmul_backward(mask & 1 ? dinp : NULL, mask & 2 ? dw : NULL, mask & 4 ? db : NULL, dout, inp, w, N, IC, OC);
    gpu->matmul_backward(mask & 1 ? d_dinp : NULL, mask & 2 ? d_dw : NULL, mask & 4 ? d_db : NULL, d_dout, d_inp, d_w,
                         N, IC, OC);
    char what[96];
    const char *names[3] = {"dinp", "dweight", "dbias"};
    float *refs[3] = {dinp, dw, db}, *devs[3] = {d_dinp, d_dw, d_db};
    size_t sizes[3] = {(size_t)N * IC, (size_t)OC * IC, (size_t)OC};
    for (int t = 0; t < 3; t++) {  // an output not wanted must be untouched (exact)
        float *got = down(devs[t], sizes[t]);
        snprintf(what, sizeof what, "%dx%d->%d %s%s", N, IC, OC, names[t], mask >> t & 1 ? "" : " (NULL: untouched)");
        report("matmul_bwd", what, "fp32", got, refs[t], sizes[t], mask >> t & 1 ? 1e-5 * max_abs(refs[t], sizes[t]) : 0,
               mask >> t & 1 ? 1e-5 : 0);
        free(got);
    }
    gpu->free(d_dout); gpu->free(d_inp); gpu->free(d_w); gpu->free(d_dinp); gpu->free(d_dw); gpu->free(d_db);
    free(dout); free(inp); free(w); free(dinp); free(dw); free(db);
}

static void check_layernorm_backward(int N, int C) {
    float *x = rand_around((size_t)N * C, 3, 2), *w = rand_around(C, 1, 0.1f), *bias = rand_around(C, 0, 0.1f);
    float *y = mt_malloc((size_t)N * C * 4), *mean = mt_malloc(N * 4), *rstd = mt_malloc(N * 4);
    cpu->layernorm_forward(y, mean, rstd, x, w, bias, N, C, 1e-12f);
    float *dout = rand_around((size_t)N * C, 0, 1), *dinp = rand_around((size_t)N * C, 0, 1);
    float *dw = rand_around(C, 0, 1), *db = rand_around(C, 0, 1);
    float *d_x = up(x, (size_t)N * C * 4), *d_w = up(w, C * 4), *d_mean = up(mean, N * 4), *d_rstd = up(rstd, N * 4);
    float *d_dout = up(dout, (size_t)N * C * 4), *d_dinp = up(dinp, (size_t)N * C * 4), *d_dw = up(dw, C * 4);
    float *d_db = up(db, C * 4);
    cpu->layernorm_backward(dinp, dw, db, dout, x, w, mean, rstd, N, C);
    gpu->layernorm_backward(d_dinp, d_dw, d_db, d_dout, d_x, d_w, d_mean, d_rstd, N, C);
    float *g1 = down(d_dinp, (size_t)N * C), *g2 = down(d_dw, C), *g3 = down(d_db, C);
    char what[64];
    snprintf(what, sizeof what, "N=%d C=%d dinp", N, C);
    report("ln_bwd", what, "fp32", g1, dinp, (size_t)N * C, 1e-5, 1e-5);
    snprintf(what, sizeof what, "N=%d C=%d dweight", N, C);
    report("ln_bwd", what, "fp32", g2, dw, C, 1e-5 * max_abs(dw, C), 1e-5);
    snprintf(what, sizeof what, "N=%d C=%d dbias", N, C);
    report("ln_bwd", what, "fp32", g3, db, C, 1e-5 * max_abs(db, C), 1e-5);
    // dinp only: dweight, dbias untouched
    float *dw0 = g2, *db0 = g3;
    gpu->layernorm_backward(d_dinp, NULL, NULL, d_dout, d_x, d_w, d_mean, d_rstd, N, C);
    g2 = down(d_dw, C), g3 = down(d_db, C);
    report("ln_bwd", "dweight NULL: untouched", "fp32", g2, dw0, C, 0, 0);
    report("ln_bwd", "dbias NULL: untouched", "fp32", g3, db0, C, 0, 0);
    gpu->free(d_x); gpu->free(d_w); gpu->free(d_mean); gpu->free(d_rstd); gpu->free(d_dout); gpu->free(d_dinp);
    gpu->free(d_dw); gpu->free(d_db);
    free(x); free(w); free(bias); free(y); free(mean); free(rstd); free(dout); free(dinp); free(dw); free(db);
    free(g1); free(g2); free(g3); free(dw0); free(db0);
}

static void check_gelu_backward(void) {
    int64_t n = 1000003;
    float *x = rand_around(n, 0, 8), *dout = rand_around(n, 0, 1), *dinp = rand_around(n, 0, 1), *y = mt_malloc(n * 4);
    x[0] = 0, x[1] = -0.0f, x[2] = 12, x[3] = -12;
    cpu->gelu_forward(y, x, n);
    float *d_x = up(x, n * 4), *d_dout = up(dout, n * 4), *d_dinp = up(dinp, n * 4), *d_y = up(y, n * 4);
    float *d_dinp2 = up(dinp, n * 4);
    cpu->gelu_backward(dinp, x, NULL, dout, n);
    gpu->gelu_backward(d_dinp, d_x, NULL, d_dout, n);
    gpu->gelu_backward(d_dinp2, d_x, d_y, d_dout, n);
    float *got = down(d_dinp, n), *got2 = down(d_dinp2, n);
    report("gelu_bwd", "n=1000003 in [-8,8], +-12, out NULL", "fp32", got, dinp, n, 1e-6, 1e-6);
    report("gelu_bwd", "n=1000003 with out given", "fp32", got2, dinp, n, 1e-6, 1e-6);
    gpu->free(d_x); gpu->free(d_dout); gpu->free(d_dinp); gpu->free(d_y); gpu->free(d_dinp2);
    free(x); free(dout); free(dinp); free(y); free(got); free(got2);
}

// Many tokens share a row (V small), so the order of the additions shows.
static void check_embeddings_backward(const packing *p, int C, int V, int with_all) {
    int N = p->N, P = 512, TV = 2;
    int32_t *ids = mt_malloc(N * 4), *types = mt_malloc(N * 4), *pos = mt_malloc(N * 4);
    for (int b = 0; b < p->B; b++)
        for (int n = p->offsets[b]; n < p->offsets[b + 1]; n++)
            ids[n] = (int32_t)((frand() + 1) * 0.5f * V) % V, types[n] = n % 3 == 0, pos[n] = n - p->offsets[b];
    float *dout = rand_around((size_t)N * C, 0, 1);
    float *wte = rand_around((size_t)V * C, 0, 1), *wpe = rand_around((size_t)P * C, 0, 1), *wtt = rand_around((size_t)TV * C, 0, 1);
    float *d_dout = up(dout, (size_t)N * C * 4), *d_wte = up(wte, (size_t)V * C * 4), *d_wpe = up(wpe, (size_t)P * C * 4);
    float *d_wtt = up(wtt, (size_t)TV * C * 4);
    int32_t *d_ids = up(ids, N * 4), *d_types = up(types, N * 4), *d_pos = up(pos, N * 4);
    cpu->embeddings_backward(wte, with_all ? wpe : NULL, wtt, dout, ids, types, pos, N, C);
    gpu->embeddings_backward(d_wte, with_all ? d_wpe : NULL, d_wtt, d_dout, d_ids, d_types, d_pos, N, C);
    char what[96];
    float *g1 = down(d_wte, (size_t)V * C), *g2 = down(d_wpe, (size_t)P * C), *g3 = down(d_wtt, (size_t)TV * C);
    snprintf(what, sizeof what, "N=%d C=%d V=%d dwte", N, C, V);
    report("embed_bwd", what, "fp32", g1, wte, (size_t)V * C, 0, 0);
    snprintf(what, sizeof what, "N=%d C=%d dwpe%s", N, C, with_all ? "" : " (NULL: untouched)");
    report("embed_bwd", what, "fp32", g2, wpe, (size_t)P * C, 0, 0);
    snprintf(what, sizeof what, "N=%d C=%d dwtt", N, C);
    report("embed_bwd", what, "fp32", g3, wtt, (size_t)TV * C, 0, 0);
    gpu->free(d_dout); gpu->free(d_wte); gpu->free(d_wpe); gpu->free(d_wtt); gpu->free(d_ids); gpu->free(d_types);
    gpu->free(d_pos);
    free(ids); free(types); free(pos); free(dout); free(wte); free(wpe); free(wtt); free(g1); free(g2); free(g3);
}

// ---- the sentence model's ops (lib/cpu/sentence.c, kernels/sentence.cu) ---------------------

// dev (GPU, n floats) against ref (CPU); frees the downloaded copy.
static void report_dev(const char *op, const char *what, const void *dev, const float *ref, size_t n, double atol,
                       double rtol) {
    float *got = down(dev, n);
    report(op, what, "fp32", got, ref, n, atol, rtol);
    free(got);
}

// pool_backward (cls, mean), copy_2d, add_bias forward/backward: the CPU's operations in its
// order, so exact.
static void check_sentence_small_ops(const packing *p, int C) {
    size_t nx = (size_t)p->N * C, nb = (size_t)p->B * C;
    float *acc = rand_around(nx, 0, 1), *g = rand_around(nb, 0, 1), *ref = mt_malloc(nx * 4);
    float *d_acc = gpu->alloc(nx * 4), *d_g = up(g, nb * 4);
    int32_t *doff = up(p->offsets, (p->B + 1) * 4);
    char what[96];
    for (int mode = 0; mode < 2; mode++) {
        memcpy(ref, acc, nx * 4);
        gpu->copy_to_device(d_acc, acc, nx * 4);
        cpu->pool_backward(ref, g, p->offsets, p->B, C, mode);
        gpu->pool_backward(d_acc, d_g, doff, p->B, C, mode);
        snprintf(what, sizeof what, "%s B=%d N=%d C=%d", mode == MT_POOL_CLS ? "cls" : "mean", p->B, p->N, C);
        report_dev("pool_bwd", what, d_acc, ref, nx, 0, 0);
    }
    // copy_2d: columns 3 .. 3+C/2 of [N, C] rows into a [N, C/2 + 5] buffer
    int w = C / 2, ldd = w + 5;
    float *junk = rand_around((size_t)p->N * ldd, 0, 1), *d_dst = up(junk, (size_t)p->N * ldd * 4);
    gpu->copy_to_device(d_acc, acc, nx * 4);
    cpu->copy_2d(junk, ldd, acc + 3, C, p->N, w - 3);
    gpu->copy_2d(d_dst, ldd, d_acc + 3, C, p->N, w - 3);
    snprintf(what, sizeof what, "[%d,%d] of ld %d into ld %d", p->N, w - 3, C, ldd);
    report_dev("copy_2d", what, d_dst, junk, (size_t)p->N * ldd, 0, 0);
    // add_bias on columns [0, w) of rows of stride C, one bias and two; backward into two
    float *b1 = rand_around(C, 0, 1), *b2 = rand_around(C, 0, 1), *db = rand_around(C, 0, 1), *db2 = rand_around(C, 0, 1);
    float *d_b1 = up(b1, C * 4), *d_b2 = up(b2, C * 4), *d_db = up(db, C * 4), *d_db2 = up(db2, C * 4);
    memcpy(ref, acc, nx * 4);
    cpu->add_bias_forward(ref, C, b1, NULL, p->N, w);
    cpu->add_bias_forward(ref, C, b1, b2, p->N, w);
    gpu->add_bias_forward(d_acc, C, d_b1, NULL, p->N, w);
    gpu->add_bias_forward(d_acc, C, d_b1, d_b2, p->N, w);
    snprintf(what, sizeof what, "fwd N=%d F=%d ld %d, b1 then b1+b2", p->N, w, C);
    report_dev("add_bias", what, d_acc, ref, nx, 0, 0);
    cpu->add_bias_backward(db, NULL, acc, C, p->N, w);
    cpu->add_bias_backward(db, db2, acc, C, p->N, C);
    gpu->copy_to_device(d_acc, acc, nx * 4);
    gpu->add_bias_backward(d_db, NULL, d_acc, C, p->N, w);
    gpu->add_bias_backward(d_db, d_db2, d_acc, C, p->N, C);
    snprintf(what, sizeof what, "bwd N=%d F=%d,%d: db1", p->N, w, C);
    report_dev("add_bias", what, d_db, db, C, 0, 0);
    snprintf(what, sizeof what, "bwd N=%d F=%d: db2", p->N, C);
    report_dev("add_bias", what, d_db2, db2, C, 0, 0);
    gpu->free(d_acc); gpu->free(d_g); gpu->free(doff); gpu->free(d_dst);
    gpu->free(d_b1); gpu->free(d_b2); gpu->free(d_db); gpu->free(d_db2);
    free(acc); free(g); free(ref); free(junk); free(b1); free(b2); free(db); free(db2);
}

// im2col / col2im of a width-w 'same' convolution: copies and in-order sums, exact.
static void check_im2col(const packing *p, int C, int w) {
    size_t nx = (size_t)p->N * C, ncol = nx * w;
    float *x = rand_around(nx, 0, 1), *dcol = rand_around(ncol, 0, 1), *acc = rand_around(nx, 0, 1);
    float *ref = mt_malloc(ncol * 4), *d_x = up(x, nx * 4), *d_col = gpu->alloc(ncol * 4);
    int32_t *doff = up(p->offsets, (p->B + 1) * 4);
    char what[96];
    cpu->im2col_same(ref, x, p->offsets, p->B, p->N, C, w);
    gpu->im2col_same(d_col, d_x, doff, p->B, p->N, C, w);
    snprintf(what, sizeof what, "w=%d B=%d N=%d C=%d", w, p->B, p->N, C);
    report_dev("im2col", what, d_col, ref, ncol, 0, 0);
    gpu->copy_to_device(d_col, dcol, ncol * 4);
    gpu->copy_to_device(d_x, acc, nx * 4);
    cpu->col2im_same(acc, dcol, p->offsets, p->B, p->N, C, w);
    gpu->col2im_same(d_x, d_col, doff, p->B, p->N, C, w);
    report_dev("col2im", what, d_x, acc, nx, 0, 0);
    gpu->free(d_x); gpu->free(d_col); gpu->free(doff);
    free(x); free(dcol); free(acc); free(ref);
}

// relu_dropout (the Philox mask bit for bit) and max_pool with its argmax: exact. coarse: inputs
// rounded to multiples of 1/2, so positive maxima tie too (argmax must keep the first row).
static void check_relu_dropout_max_pool(const packing *p, int D, float pdrop, int coarse) {
    mt_dropout_key key = key_of(pdrop, mt_dropout_site(2, MT_SENT_DROPOUT_LAYER, 0));
    size_t n = (size_t)p->N * D, nb = (size_t)p->B * D;
    float *x = rand_around(n, 0, 1), *dy = rand_around(n, 0, 1), *acc = rand_around(n, 0, 1), *g = rand_around(nb, 0, 1);
    for (size_t i = 0; coarse && i < n; i++) x[i] = roundf(2.0f * x[i]) / 2.0f;
    float *ref = mt_malloc(n * 4), *pool = mt_malloc(nb * 4), *am = mt_malloc(nb * 4);
    int32_t *arg = mt_malloc(nb * 4);
    float *d_x = up(x, n * 4), *d_dy = up(dy, n * 4), *d_pool = gpu->alloc(nb * 4), *d_acc = up(acc, n * 4);
    float *d_g = up(g, nb * 4);
    int32_t *d_arg = gpu->alloc(nb * 4), *doff = up(p->offsets, (p->B + 1) * 4);
    char what[96];
    memcpy(ref, x, n * 4);
    cpu->relu_dropout_forward(ref, p->N, D, &key);
    gpu->relu_dropout_forward(d_x, p->N, D, &key);
    snprintf(what, sizeof what, "fwd N=%d D=%d p=%g%s", p->N, D, pdrop, coarse ? " coarse" : "");
    report_dev("relu_drop", what, d_x, ref, n, 0, 0);
    float *y = down(d_x, n);
    cpu->relu_dropout_backward(dy, dy, ref, p->N, D, &key);
    gpu->relu_dropout_backward(d_dy, d_dy, d_x, p->N, D, &key);
    snprintf(what, sizeof what, "bwd in place N=%d D=%d p=%g", p->N, D, pdrop);
    report_dev("relu_drop", what, d_dy, dy, n, 0, 0);
    cpu->max_pool_forward(pool, arg, ref, p->offsets, p->B, D);
    gpu->max_pool_forward(d_pool, d_arg, d_x, doff, p->B, D);
    snprintf(what, sizeof what, "fwd B=%d D=%d (ties: ReLU zeros%s)", p->B, D, coarse ? ", halves" : "");
    report_dev("max_pool", what, d_pool, pool, nb, 0, 0);
    int32_t *garg = mt_malloc(nb * 4);
    gpu->copy_to_host(garg, d_arg, nb * 4);
    float *gam = mt_malloc(nb * 4);
    for (size_t i = 0; i < nb; i++) am[i] = (float)arg[i], gam[i] = (float)garg[i];
    report("max_pool", "argmax (first maximum)", "-", gam, am, nb, 0, 0);
    cpu->max_pool_backward(acc, g, arg, p->B, D);
    gpu->max_pool_backward(d_acc, d_g, d_arg, p->B, D);
    snprintf(what, sizeof what, "bwd B=%d D=%d", p->B, D);
    report_dev("max_pool", what, d_acc, acc, n, 0, 0);
    gpu->free(d_x); gpu->free(d_dy); gpu->free(d_pool); gpu->free(d_acc); gpu->free(d_g); gpu->free(d_arg);
    gpu->free(doff);
    free(x); free(dy); free(acc); free(g); free(ref); free(pool); free(am); free(arg); free(y); free(garg); free(gam);
}

// Every floating tensor of the model on one side, for the whole-model check.
typedef struct { float *params, *grads, *x, *dx, *out; } sent_bufs;

static sent_bufs sent_bufs_up(const mt_backend *be, const float *params, const float *x, const float *dx, size_t np,
                              size_t nx, size_t nout) {
    sent_bufs b = {be->alloc(np * 4 + 4), be->alloc(np * 4 + 4), be->alloc(nx * 4), be->alloc(nx * 4),
                   be->alloc(nout * 4)};
    be->copy_to_device(b.params, params, np * 4);
    be->copy_to_device(b.x, x, nx * 4);
    be->copy_to_device(b.dx, dx, nx * 4);
    return b;
}

// The sentence model (lib/sentence.c) forward and backward through both tables: conv blocks,
// both LSTM directions (cell ops + per-step GEMMs), dropout. GEMMs and expf/tanhf differ, so
// 1e-5 norm (atol 1e-5 max|ref|, rtol 1e-5); the embedding rows also within that. prec BF16 /
// FP16: the GPU's products on 16-bit operands (strided operands, the operand workspaces that
// mt_sentence_acts_alloc reserves) against the CPU's fp32, relative L2 error: out <= 5e-2 /
// 1e-2; dinp, dparams <= 0.25, a smoke bound: a max-pool near-tie (gap below the 16-bit
// rounding, ~1% of columns) routes that column's gradient to another row, ~sqrt(2%) of the norm.
static void check_sentence_model(const int *lengths, int B, int C, int filters, int H, int over_cnn, float pdrop,
                                 int prec) {
    packing pk = pack(lengths, B, 1);
    mt_sentence_config cfg = mt_sentence_default_config(MT_SENT_SBERT_CNN_BILSTM, C, filters, H);
    cfg.lstm_over_cnn = over_cnn;
    cfg.cnn_dropout = pdrop;
    mt_sentence_layout L;
    mt_sentence_layout_init(&L, &cfg);
    size_t np = L.n_params, nx = (size_t)pk.N * C, nout = (size_t)B * L.D;
    float *params = mt_malloc(np * 4), *x = rand_around(nx, 0, 1), *dx0 = rand_around(nx, 0, 0.1f);
    float *R = rand_around(nout, 0, 1);
    mt_sentence_init_params(&L, params, 11);
    mt_dropout key = key_of(pdrop, mt_dropout_site(0, MT_SENT_DROPOUT_LAYER, 0));
    const mt_backend *side[2] = {cpu, gpu};
    float *host[2][3];  // [side][out, dx, grads]
    for (int s = 0; s < 2; s++) {
        const mt_backend *be = side[s];
        sent_bufs b = sent_bufs_up(be, params, x, dx0, np, nx, nout);
        float *dR = be->alloc(nout * 4);
        be->copy_to_device(dR, R, nout * 4);
        mt_sentence_weights w, dw;
        mt_sentence_weights_point(&w, &L, b.params), mt_sentence_weights_point(&dw, &L, b.grads);
        mt_sentence_acts a;
        if (s == 1 && prec != FP32) mt_cuda_set_precision(prec_name[prec]);
        mt_sentence_acts_alloc(be, &a, &L, pk.N, B);
        mt_sentence_forward(be, b.out, &a, &L, &w, b.x, pk.offsets, B, pk.N, pdrop > 0 ? &key : NULL);
        mt_sentence_backward(be, b.dx, &dw, dR, &a, &L, &w, b.x);
        if (s == 1 && prec != FP32) mt_cuda_set_precision("fp32");
        host[s][0] = mt_malloc(nout * 4), host[s][1] = mt_malloc(nx * 4), host[s][2] = mt_malloc(np * 4);
        be->copy_to_host(host[s][0], b.out, nout * 4);
        be->copy_to_host(host[s][1], b.dx, nx * 4);
        be->copy_to_host(host[s][2], b.grads, np * 4);
        mt_sentence_acts_free(be, &a);
        be->free(b.params), be->free(b.grads), be->free(b.x), be->free(b.dx), be->free(b.out), be->free(dR);
    }
    char what[96];
    const char *names[3] = {"out", "dinp", "dparams"};
    size_t sizes[3] = {nout, nx, np};
    for (int t = 0; t < 3; t++) {
        snprintf(what, sizeof what, "%s B=%d C=%d F=4x%d H=%d%s p=%g", names[t], B, C, filters, H,
                 over_cnn ? " over CNN" : "", pdrop);
        if (prec == FP32) {
            report("sentence", what, "fp32", host[1][t], host[0][t], sizes[t], 1e-5 * max_abs(host[0][t], sizes[t]), 1e-5);
            continue;
        }
        report_rel_l2("sentence", what, prec_name[prec], host[1][t], host[0][t], sizes[t],
                      t > 0 ? 0.25 : prec == BF16 ? 5e-2 : 1e-2);
    }
    for (int s = 0; s < 2; s++)
        for (int t = 0; t < 3; t++) free(host[s][t]);
    free(params); free(x); free(dx0); free(R);
    unpack_free(&pk);
}

// ---- optimizer ops, against the CPU table (lib/cpu/optim.c, itself tested in test_optim) ---------

// The scalars of step `step` with lr, as lib/adamw.c's scalars_for (torch defaults).
static mt_adamw_scalars adamw_scalars(int step, double lr, int decay) {
    double wd = decay ? 0.01 : 0.0, bc1 = 1.0 - pow(0.9, step), bc2 = 1.0 - pow(0.999, step);
    mt_adamw_scalars s = {(float)(1.0 - lr * wd), (float)(1.0 - 0.9), 0.999f, (float)(1.0 - 0.999), (float)sqrt(bc2),
                          1e-8f, (float)(-(lr / bc1)), wd != 0.0};
    return s;
}

// p, g, m, v [n] through `steps` updates of list[count] (at lr 2e-5, each slice's lr times its
// scale[i], decay[i]) on both tables: exact, every element (those in no slice untouched).
static void check_adamw_list(const char *what, mt_adamw_chunk *list, const double *scale, const int *decay,
                             int count, size_t n) {
    char row[128];
    if (!gpu->adamw_update_multi) {
        skip_row("adamw", what, "adamw_update_multi NULL in this table");
        return;
    }
    float *p = rand_around(n, 0, 1), *g = rand_around(n, 0, 1e-2f), *m = rand_around(n, 0, 1e-3f), *v = rand_around(n, 1e-5f, 1e-5f);
    float *dp = up(p, n * 4), *dg = up(g, n * 4), *dm = up(m, n * 4), *dv = up(v, n * 4);
    for (int step = 1; step <= 3; step++) {  // a few steps: moments carried on the device
        for (int i = 0; i < count; i++) list[i].s = adamw_scalars(step, 2e-5 * scale[i], decay[i]);
        cpu->adamw_update_multi(p, g, m, v, list, count);
        gpu->adamw_update_multi(dp, dg, dm, dv, list, count);
    }
    float *gp = down(dp, n), *gm = down(dm, n), *gv = down(dv, n);
    const char *name[3] = {"p", "m", "v"};
    float *got[3] = {gp, gm, gv}, *ref[3] = {p, m, v};
    for (int t = 0; t < 3; t++) {
        snprintf(row, sizeof row, "%s n=%zu 3 steps %s", what, n, name[t]);
        report("adamw", row, "fp32", got[t], ref[t], n, 0, 0);
    }
    gpu->free(dp); gpu->free(dg); gpu->free(dm); gpu->free(dv);
    free(p); free(g); free(m); free(v); free(gp); free(gm); free(gv);
}

// Slices of the given sizes laid end to end after `gap` untouched elements each; decay on every
// other slice, lr scales 1, 0.9, 0.81, ... Returns the elements spanned.
static size_t adamw_layout(mt_adamw_chunk *list, double *scale, int *decay, const size_t *sizes, int count,
                           size_t gap) {
    size_t at = 0;
    for (int i = 0; i < count; i++) {
        at += gap;
        list[i] = (mt_adamw_chunk){.offset = at, .n = sizes[i]};
        scale[i] = pow(0.9, i % 8), decay[i] = i % 2;
        at += sizes[i];
    }
    return at;
}

// A real step's list: MiniLM-L6's 103 tensors in the encoder's layout (embeddings, 6 layers, pooler),
// with --llrd 0.9's scales and no decay on biases and LayerNorm weights, as lib/bert.c builds it.
static int minilm_list(mt_adamw_chunk *list, double *scale, int *decay, size_t *n) {
    const size_t C = 384, F = 1536, L = 6;
    int k = 0;
    size_t at = 0;
#define T(size, sc, dc) (list[k] = (mt_adamw_chunk){.offset = at, .n = (size)}, scale[k] = (sc), decay[k++] = (dc), at += (size))
    T(30522 * C, pow(0.9, L + 1), 1), T(512 * C, pow(0.9, L + 1), 1), T(2 * C, pow(0.9, L + 1), 1);
    T(C, pow(0.9, L + 1), 0), T(C, pow(0.9, L + 1), 0);
    for (size_t l = 0; l < L; l++) {
        double sc = pow(0.9, (double)(L - l));
        for (int qkvo = 0; qkvo < 4; qkvo++) T(C * C, sc, 1), T(C, sc, 0);  // query, key, value, output
        T(C, sc, 0), T(C, sc, 0);
        T(F * C, sc, 1), T(F, sc, 0), T(C * F, sc, 1), T(C, sc, 0), T(C, sc, 0), T(C, sc, 0);
    }
    T(C * C, 1.0, 0), T(C, 1.0, 0);
#undef T
    *n = at;
    return k;
}

static void check_adamw(void) {
    enum { MANY = 1100 };  // past one launch's 512 slices: three launches
    mt_adamw_chunk *list = mt_malloc(MANY * sizeof *list);
    double *scale = mt_malloc(MANY * sizeof *scale);
    int *decay = mt_malloc(MANY * sizeof *decay);
    size_t sizes[MANY], n;
    sizes[0] = 1000003;  // one big slice: many chunks, a partial last one
    n = adamw_layout(list, scale, decay, sizes, 1, 0);
    check_adamw_list("one slice", list, scale, decay, 1, n);
    // slice edges at the 4096-element chunk's edges, empty slices, one element, gaps between
    size_t edges[] = {4095, 4096, 4097, 0, 1, 8192, 0, 12289, 384, 0};
    n = adamw_layout(list, scale, decay, edges, 10, 3);
    check_adamw_list("edges+gaps", list, scale, decay, 10, n + 5);
    for (int i = 0; i < MANY; i++) sizes[i] = (size_t)(i * 37 % 700);  // some empty
    n = adamw_layout(list, scale, decay, sizes, MANY, 1);
    check_adamw_list("1100 slices", list, scale, decay, MANY, n);
    int k = minilm_list(list, scale, decay, &n);
    check_adamw_list("MiniLM-L6 llrd", list, scale, decay, k, n);
    free(list), free(scale), free(decay);
}

static void check_gram_combine(int k, size_t n) {
    char what[96];
    if (!gpu->gram || !gpu->combine || !gpu->scale) {
        skip_row("gram", "", "gram / combine / scale NULL in this table");
        return;
    }
    float *h[MT_GRAM_MAX_K], *d[MT_GRAM_MAX_K];
    double w[MT_GRAM_MAX_K];
    for (int j = 0; j < k; j++) {
        h[j] = rand_around(n, j % 2 ? 0.01f : 0, 1), d[j] = up(h[j], n * 4);
        w[j] = 1.0 - 0.37 * j;
    }
    double *ref = mt_malloc(sizeof(double) * k * k), *got = mt_malloc(sizeof(double) * k * k);
    cpu->gram(ref, (const float *const *)h, k, n);
    for (int i = 0; i < k * k; i++) got[i] = NAN;
    gpu->gram(got, (const float *const *)d, k, n);
    // relative 1e-9 of the largest entry (off-diagonal dots may be near 0), as doubles
    double maxref = 0, maxdiff = 0, worst = 0;
    for (int i = 0; i < k * k; i++) maxref = fmax(maxref, fabs(ref[i]));
    for (int i = 0; i < k * k; i++) {
        double diff = fabs(got[i] - ref[i]), tol = 1e-9 * maxref;
        if (isnan(got[i])) diff = INFINITY;
        maxdiff = fmax(maxdiff, diff);
        worst = fmax(worst, tol > 0 ? diff / tol : (diff > 0 ? INFINITY : 0));
    }
    checks++;
    failures += !(worst <= 1.0);
    snprintf(what, sizeof what, "k=%d n=%zu (double)", k, n);
    printf("%-12s %-40s %-5s %11.3g %9.2g %9.2g %9.3g  %s\n", "gram", what, "fp64", maxdiff, 1e-9 * maxref, 0.0,
           worst, worst <= 1.0 ? "PASS" : "FAIL");
    // combine: out = sum_j w_j g_j, double as lib/pcgrad.c's weighted_sum
    float *out = mt_malloc(n * 4), *dout = gpu->alloc(n * 4);
    cpu->combine(out, (const float *const *)h, w, k, n);
    gpu->combine(dout, (const float *const *)d, w, k, n);
    float *gout = down(dout, n);
    snprintf(what, sizeof what, "k=%d n=%zu", k, n);
    report("combine", what, "fp32", gout, out, n, 0, 1e-6);
    // scale: x *= s
    memcpy(out, h[0], n * 4);
    cpu->scale(out, 0.3f, n);
    gpu->scale(d[0], 0.3f, n);
    free(gout);
    gout = down(d[0], n);
    report("scale", what, "fp32", gout, out, n, 0, 0);
    for (int j = 0; j < k; j++) gpu->free(d[j]), free(h[j]);
    gpu->free(dout);
    free(ref); free(got); free(out); free(gout);
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
    float *hx = rand_around((size_t)N * F, 0, 1);  // random, not zeros: tensor cores draw less on zeros
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
    packing pk = pack_uniform(B, N / B, NH);
    int32_t *doff = up(pk.offsets, (B + 1) * 4);
    TIME_GPU(s, 10, gpu->attention_forward(y, NULL, x, doff, NULL, B, N / B, C, NH));
    printf("  attention      B=%d L=%d C=%d   %8.3f ms  %7.1f TFLOP/s\n", B, N / B, C, s * 1e3,
           4.0 * N * (N / B) * C / s / 1e12);
    TIME_GPU(s, 10, gpu->layernorm_forward(y, w, w + N, x, x, x, N, C, 1e-12f));
    printf("  layernorm      N=%d C=%d        %8.3f ms  %7.1f GB/s\n", N, C, s * 1e3, 8.0 * N * C / s / 1e9);
    TIME_GPU(s, 10, gpu->gelu_forward(y, x, (int64_t)N * F));
    printf("  gelu           n=%d         %8.3f ms  %7.1f GB/s\n", N * F, s * 1e3, 8.0 * N * F / s / 1e9);
    gpu->free(x); gpu->free(w); gpu->free(y); gpu->free(xh); gpu->free(wh); gpu->free(doff);
    unpack_free(&pk);
}

// The backward and optimizer ops at BERT-base shapes: N = 8192 tokens in 64 sequences of 128,
// C = 768, NH = 12, F = 3072 (information, not checks).
static void bench_backward(void) {
    int N = 8192, C = 768, F = 3072, NH = 12, B = 64, L = 128;
    size_t big = (size_t)N * F;  // the largest activation; every buffer below fits in it
    float *hx = rand_around(big, 0, 1);
    float *a = up(hx, big * 4), *b = up(hx, big * 4), *c = up(hx, big * 4), *d = up(hx, big * 4);
    free(hx);
    double s;
    printf("\nbench, backward (N=%d tokens, %d x %d, C=%d, NH=%d, F=%d; informational)\n", N, B, L, C, NH, F);
    TIME_GPU(s, 10, gpu->matmul_backward(a, b, c, d, a + (size_t)N * C, b + (size_t)F * C, N, C, F));
    printf("  matmul_backward %dx%d->%d fp32 %8.3f ms  %7.1f TFLOP/s\n", N, C, F, s * 1e3, 4.0 * N * C * F / s / 1e12);
    TIME_GPU(s, 10, gpu->matmul_backward(NULL, NULL, c, d, a, b, N, C, F));
    printf("  matmul_bwd dbias only N=%d OC=%d %8.3f ms  %7.1f GB/s\n", N, F, s * 1e3, 4.0 * N * F / s / 1e9);
    TIME_GPU(s, 10, gpu->layernorm_backward(a, b, b + C, c, d, b + 2 * C, b + 3 * C, b + 4 * C, N, C));
    printf("  layernorm_backward N=%d C=%d  %8.3f ms  %7.1f GB/s\n", N, C, s * 1e3, 12.0 * N * C / s / 1e9);
    packing pk = pack_uniform(B, L, NH);
    int32_t *doff = up(pk.offsets, (B + 1) * 4);
    int64_t *datt_off = up(pk.att_offsets, B * 8);
    // probabilities: the buffer holds values in [-1, 1); timing does not depend on them
    mt_dropout_key key = key_of(0.1f, mt_dropout_site(0, 1, 1));
    TIME_GPU(s, 10, gpu->attention_forward_dropout(a, d, b, doff, datt_off, B, L, C, NH, &key));
    printf("  attention_fwd p=0.1 B=%d L=%d  %8.3f ms\n", B, L, s * 1e3);
    TIME_GPU(s, 5, gpu->attention_backward(a, c, b, d, doff, datt_off, B, L, C, NH, NULL));
    printf("  attention_backward B=%d L=%d  %8.3f ms  %7.1f TFLOP/s\n", B, L, s * 1e3, 8.0 * N * L * C / s / 1e12);
    TIME_GPU(s, 5, gpu->attention_backward(a, c, b, d, doff, datt_off, B, L, C, NH, &key));
    printf("  attention_bwd p=0.1 B=%d L=%d %8.3f ms\n", B, L, s * 1e3);
    TIME_GPU(s, 10, gpu->gelu_backward(a, b, NULL, c, (int64_t)N * F));
    printf("  gelu_backward n=%d      %8.3f ms  %7.1f GB/s\n", N * F, s * 1e3, 12.0 * N * F / s / 1e9);
    TIME_GPU(s, 10, gpu->dropout_forward(a, b, c, (int64_t)N * C, &key));
    printf("  dropout_fwd+res n=%d     %8.3f ms  %7.1f GB/s\n", N * C, s * 1e3, 12.0 * N * C / s / 1e9);
    int32_t *ids = mt_malloc(N * 4), *types = mt_malloc(N * 4), *pos = mt_malloc(N * 4);
    for (int n = 0; n < N; n++) ids[n] = (int32_t)((frand() + 1) * 15000), types[n] = n % 2, pos[n] = n % L;
    int32_t *dids = up(ids, N * 4), *dtypes = up(types, N * 4), *dpos = up(pos, N * 4);
    TIME_GPU(s, 10, gpu->embeddings_backward(a, b, c, d, dids, dtypes, dpos, N, C));
    printf("  embeddings_backward N=%d C=%d %8.3f ms\n", N, C, s * 1e3);
    if (gpu->adamw_update_multi && gpu->gram) {
        size_t np = big / 4 * 4;  // 25M parameters a buffer (BERT-base: 110M)
        mt_adamw_chunk one = {0, np, adamw_scalars(10, 2e-5, 1)}, list[128];
        double scale[128];
        int decay[128];
        size_t nm;
        int k = minilm_list(list, scale, decay, &nm);  // 22.7M parameters in k slices
        for (int i = 0; i < k; i++) list[i].s = adamw_scalars(10, 2e-5 * scale[i], decay[i]);
        TIME_GPU(s, 10, gpu->adamw_update_multi(a, b, c, d, &one, 1));
        printf("  adamw 1 slice n=%zu   %8.3f ms  %7.1f GB/s\n", np, s * 1e3, 28.0 * np / s / 1e9);
        if (nm <= np) {
            TIME_GPU(s, 10, gpu->adamw_update_multi(a, b, c, d, list, k));
            printf("  adamw %d slices n=%zu %8.3f ms  %7.1f GB/s\n", k, nm, s * 1e3, 28.0 * nm / s / 1e9);
        }
        const float *gs[3] = {a, b, c};
        double gm[9];
        TIME_GPU(s, 10, gpu->gram(gm, gs, 3, np));
        printf("  gram k=3 n=%zu         %8.3f ms  %7.1f GB/s\n", np, s * 1e3, 3.0 * 4 * np / s / 1e9);
    }
    gpu->free(a); gpu->free(b); gpu->free(c); gpu->free(d); gpu->free(doff); gpu->free(datt_off);
    gpu->free(dids); gpu->free(dtypes); gpu->free(dpos);
    unpack_free(&pk); free(ids); free(types); free(pos);
}

// Attention at bf16, batched vs fused (kernels/flash.cu), B sequences of L tokens: the forward
// without att (inference), with dropout p = 0.1 and att (training), and the backward with the
// same key. FLOPs: 4 B L^2 C forward (Q K^T and P V), twice that backward (information only).
static void bench_attention_modes(int B, int L, int C, int NH) {
    const int N = B * L;
    float *hx = rand_around((size_t)N * 3 * C, 0, 1);
    float *qkv = up(hx, (size_t)N * 3 * C * 4), *dqkv = gpu->alloc((size_t)N * 3 * C * 4);
    float *out = gpu->alloc((size_t)N * C * 4), *dout = up(hx, (size_t)N * C * 4);
    float *att = gpu->alloc((size_t)B * NH * L * L * 4);
    free(hx);
    packing pk = pack_uniform(B, L, NH);
    int32_t *doff = up(pk.offsets, (B + 1) * 4);
    int64_t *datt_off = up(pk.att_offsets, B * 8);
    mt_dropout_key key = key_of(0.1f, mt_dropout_site(0, 1, 1));
    const double fwd = 4.0 * B * (double)L * L * C;
    const char *modes[2] = {"batched", "fused"};
    double s;
    for (int m = 0; m < 2; m++) {
        attention_mode(BF16, modes[m]);
        TIME_GPU(s, 10, gpu->attention_forward(out, NULL, qkv, doff, NULL, B, L, C, NH));
        printf("  attention %-7s bf16 B=%d L=%d C=%d NH=%d fwd      %8.3f ms  %7.1f TFLOP/s\n", modes[m], B, L, C, NH,
               s * 1e3, fwd / s / 1e12);
        TIME_GPU(s, 10, gpu->attention_forward_dropout(out, att, qkv, doff, datt_off, B, L, C, NH, &key));
        printf("  attention %-7s bf16 B=%d L=%d C=%d NH=%d fwd p=0.1 %8.3f ms  %7.1f TFLOP/s\n", modes[m], B, L, C,
               NH, s * 1e3, fwd / s / 1e12);
        TIME_GPU(s, 5, gpu->attention_backward(dqkv, dout, qkv, att, doff, datt_off, B, L, C, NH, &key));
        printf("  attention %-7s bf16 B=%d L=%d C=%d NH=%d bwd p=0.1 %8.3f ms  %7.1f TFLOP/s\n", modes[m], B, L, C,
               NH, s * 1e3, 2 * fwd / s / 1e12);
        attention_mode_reset();
    }
    gpu->free(qkv); gpu->free(dqkv); gpu->free(out); gpu->free(dout); gpu->free(att); gpu->free(doff);
    gpu->free(datt_off);
    unpack_free(&pk);
}

// The memory plan's ops, as flags (1 = holds): workspace_bytes sums its items; on the GPU each
// workspace covers the device-independent ask of workspace.c and memory_free counts what the
// reservation holds; the CPU reserves nothing and has no device limit.
static void check_workspaces(void) {
    mt_workspace_shape s = {16384, 128, 128, 768, 12, 3072, 1, (size_t)8192 * 3072, 0, 0};
    size_t each[MT_WS_COUNT], generic[MT_WS_COUNT], sum = 0;
    size_t total = gpu->workspace_bytes(&s, each), gen_total = mt_workspace_generic(&s, generic);
    float got[3] = {0, 0, 0}, want[3] = {1, 1, 1};
    for (int i = 0; i < MT_WS_COUNT; i++) sum += each[i];
    got[0] = sum == total;
    if (standin) {
        got[1] = total == 0, got[2] = gpu->memory_free() == SIZE_MAX;
    } else {
        got[1] = 1;
        for (int i = 0; i < MT_WS_COUNT; i++) got[1] = got[1] && each[i] >= generic[i];
        got[2] = gpu->memory_free() >= gen_total;  // the reservation of reserve_workspaces holds as much
    }
    report("workspaces", "BERT-base bench shape: sum, cover, free", "-", got, want, 3, 0, 0);
}

// The workspaces (lib/workspace.h) of every check and bench below, reserved up front as a run
// does, each workspace grown to the larger of two shapes: the parity cases (8 sequences up to
// 512 tokens, 3 up to 1300; gram up to 16 x 1000003) and the BERT-base benches (16384 tokens in
// 128 sequences of 128; gram over 8192 x 3072; 64 sequences of 512 for the attention modes' bench).
// An op asking for more dies naming its workspace.
static void reserve_workspaces(void) {
    mt_workspace_shape checks = {2000, 8, 1300, 768, 12, 3072, 1, 1000003, 0, 0};
    mt_workspace_shape bench = {16384, 128, 128, 768, 12, 3072, 1, (size_t)8192 * 3072, 0, 0};
    mt_workspace_shape bench512 = {32768, 64, 512, 768, 12, 3072, 1, 0, 0, 0};  // bench_attention_modes at L = 512
    gpu->reserve(&checks);
    gpu->reserve(&bench);
    gpu->reserve(&bench512);
}

int main(int argc, char **argv) {
    mt_set_prog(argv[0]);
    int do_bench = 1, fused_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-bench")) do_bench = 0;
        else if (!strcmp(argv[i], "--cpu-standin")) standin = 1;
        else if (!strcmp(argv[i], "--fused-only")) fused_only = 1;  // for compute-sanitizer's racecheck / synccheck
        else mt_die("usage: %s [--no-bench] [--cpu-standin] [--fused-only]", argv[0]);
    }
    char desc[256];
    cpu = mt_backend_cpu();
    if (standin) {
        gpu = cpu;
        snprintf(desc, sizeof desc, "the CPU standing in for the GPU (--cpu-standin): proves the harness only");
        do_bench = 0;
    } else {
        // kernels/ is linked into this program (it calls mt_cuda_* itself): take the table from
        // that copy, not from the .so that mt_backend_select would load beside it
        if (!mt_cuda_probe(desc, sizeof desc)) mt_die("no usable GPU: %s", desc);
        gpu = mt_backend_cuda();
        mt_cuda_set_attention("batched");  // the rows below are the batched path's, whatever MTBERT_ATTENTION says
    }
    reserve_workspaces();
    printf("op parity, CUDA vs CPU: %s\n", desc);
    printf("%-12s %-40s %-5s %11s %9s %9s %9s  %s\n", "op", "case", "prec", "max|diff|", "atol", "rtol",
           "diff/tol", "result");
    if (fused_only) {
        check_attention_fused_all();
        printf("op parity: %d checks, %d failed\n", checks, failures);
        return failures ? 1 : 0;
    }
    check_memory();
    check_workspaces();
    check_gemms();
    check_matmuls();
    if (standin) skip_row("bf16_conv", "fp16_conv", "CUDA only");
    else check_half_conversion(BF16), check_half_conversion(FP16);
    int lengths[] = {1, 7, 32, 128, 512, 3, 64, 200}, B = 8, one[] = {1};
    packing p = pack(lengths, B, 1);
    check_embeddings(&p);
    check_row_gather();
    check_layernorm(300, 384);
    check_layernorm(300, 768);
    check_layernorm(37, 45);
    check_attention(lengths, B, 384, 12, FP32);  // MiniLM: hs 32
    check_attention(lengths, B, 768, 12, FP32);  // BERT-base: hs 64
    check_attention(lengths, B, 96, 1, FP32);   // hs 96: one head, not a power of two
    check_attention(lengths, B, 256, 2, FP32);  // hs 128
    check_attention(one, 1, 64, 2, FP32);      // one token
    if (standin) skip_row("attention", "bf16 / fp16", "CUDA only");
    else check_attention(lengths, B, 384, 12, BF16), check_attention(lengths, B, 384, 12, FP16);
    check_unary("gelu", cpu->gelu_forward, gpu->gelu_forward, 8, 0, 2.5e-7);
    check_unary("tanh", cpu->tanh_forward, gpu->tanh_forward, 10, 1e-6, 2e-6);
    for (int mode = 0; mode < 3; mode++) check_pool(&p, 384, mode), check_pool(&p, 45, mode);
    check_unpack(&p, 384);
    check_unpack(&p, 45);

    // training ops
    check_dropout(1000003, 0.1f);
    check_dropout(4099, 0.5f);
    check_dropout(1001, 0.0f);
    check_attention_dropout(lengths, B, 384, 12, 0.1f);
    check_attention_dropout(lengths, B, 768, 12, 0.1f);
    check_attention_dropout(lengths, B, 256, 2, 0.1f);
    check_attention_dropout(lengths, B, 384, 12, 0.0f);
    check_attention_dropout(one, 1, 64, 2, 0.1f);
    int longer[] = {1300, 5, 33};  // one sequence far longer than the others: most of each padded [Lmax, Lmax] block is padding
    check_attention_backward(lengths, B, 384, 12, 0.1f);
    check_attention_backward(lengths, B, 384, 12, 0.0f);
    check_attention_backward(lengths, B, 768, 12, 0.1f);
    check_attention_backward(lengths, B, 96, 1, 0.1f);
    check_attention_backward(lengths, B, 256, 2, 0.0f);
    check_attention_backward(one, 1, 64, 2, 0.1f);
    check_attention_backward(longer, 3, 64, 1, 0.1f);
    check_attention_fused_all();
    check_attention_fused_many();
    check_matmul_backward(200, 384, 1152, 7);
    check_matmul_backward(517, 768, 3072, 7);
    check_matmul_backward(19, 45, 33, 7);
    check_matmul_backward(64, 96, 80, 1);
    check_matmul_backward(64, 96, 80, 2);
    check_matmul_backward(64, 96, 80, 4);
    check_layernorm_backward(300, 384);
    check_layernorm_backward(517, 768);
    check_layernorm_backward(37, 45);
    check_gelu_backward();
    check_embeddings_backward(&p, 384, 1000, 1);
    check_embeddings_backward(&p, 45, 7, 0);  // 7 words: long runs of one row

    // the sentence model's ops, and the model through each table
    check_sentence_small_ops(&p, 384);
    check_sentence_small_ops(&p, 45);
    for (int w = 1; w <= 5; w++) check_im2col(&p, 45, w);
    check_im2col(&p, 384, 4);
    check_relu_dropout_max_pool(&p, 256, 0.1f, 0);
    check_relu_dropout_max_pool(&p, 45, 0.0f, 0);
    check_relu_dropout_max_pool(&p, 45, 0.1f, 1);  // rows start mid Philox block; N*D % 4 = 3: a tail
    packing p1 = pack(one, 1, 1);  // B = 1, one token: the smallest grids, windows past both ends
    check_sentence_small_ops(&p1, 45);
    for (int w = 1; w <= 4; w++) check_im2col(&p1, 45, w);
    check_relu_dropout_max_pool(&p1, 45, 0.1f, 0);
    unpack_free(&p1);
    int short_lengths[] = {1, 7, 32, 3, 64, 2, 17, 40};
    check_sentence_model(short_lengths, 8, 384, 64, 128, 0, 0.1f, FP32);
    check_sentence_model(short_lengths, 8, 384, 64, 128, 1, 0.0f, FP32);
    check_sentence_model(lengths, B, 45, 5, 7, 1, 0.1f, FP32);
    check_sentence_model(one, 1, 32, 3, 4, 0, 0.1f, FP32);
    if (standin) skip_row("sentence", "bf16 / fp16", "CUDA only");
    else check_sentence_model(short_lengths, 8, 384, 64, 128, 1, 0.1f, BF16),
         check_sentence_model(short_lengths, 8, 384, 64, 128, 0, 0.1f, FP16);
    unpack_free(&p);

    // optimizer ops
    check_adamw();
    check_gram_combine(1, 100003);
    check_gram_combine(3, 3 * MT_GRAM_BLOCK + 17);
    check_gram_combine(MT_GRAM_MAX_K, 50000);
    check_gram_combine(2, 5);

    printf("op parity: %d checks, %d failed\n", checks, failures);
    if (do_bench) {
        bench(), bench_backward();
        printf("\nbench, attention modes (bf16; informational)\n");
        bench_attention_modes(64, 512, 768, 12);
        bench_attention_modes(128, 128, 384, 12);
    }
    return failures ? 1 : 0;
}
