// gemm.c — CPU matrix products: cblas_sgemm when built with OpenBLAS, otherwise a blocked,
// packed plain-C GEMM (GotoBLAS structure: pack a KC×NC panel of B and an MC×KC block of A,
// then a 6×16 register-tile micro-kernel on GCC/Clang vector extensions: 12 accumulators of
// 8 floats, which AVX2 keeps in registers and any other target splits as it can).
#include <string.h>

#include "cpu.h"
#ifdef MT_HAVE_OPENBLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#define KC 256
#define NC 256
#define MC 72  // a multiple of MR
#define MR 6
#define NR 16

// Element (i, k) of op(X) for a row-major X with leading dimension ld.
static inline float at(const float *X, int ld, int trans, int i, int k) {
    return trans ? X[(size_t)k * ld + i] : X[(size_t)i * ld + k];
}

// Bp: nc/NR panels, each [kc][NR], zero-padded past n. Reads follow B's memory order.
static void pack_b(float *Bp, const float *B, int ldb, int tb, int k0, int kc, int n0, int nc) {
    for (int j0 = 0; j0 < nc; j0 += NR) {
        float *panel = Bp + (size_t)j0 * kc;
        int nr = nc - j0 < NR ? nc - j0 : NR;
        if (nr < NR) memset(panel, 0, sizeof(float) * kc * NR);
        if (tb)  // B^T: row j of B is column j of op(B), contiguous over k
            for (int j = 0; j < nr; j++) {
                const float *src = B + (size_t)(n0 + j0 + j) * ldb + k0;
                for (int k = 0; k < kc; k++) panel[k * NR + j] = src[k];
            }
        else
            for (int k = 0; k < kc; k++) memcpy(panel + k * NR, B + (size_t)(k0 + k) * ldb + n0 + j0, sizeof(float) * nr);
    }
}

// Ap: mc/MR panels, each [kc][MR], scaled by alpha, zero-padded past m.
static void pack_a(float *Ap, const float *A, int lda, int ta, float alpha, int i0, int mc, int k0, int kc) {
    for (int r0 = 0; r0 < mc; r0 += MR)
        for (int k = 0; k < kc; k++) {
            float *dst = Ap + (size_t)r0 * kc + (size_t)k * MR;
            for (int r = 0; r < MR; r++) dst[r] = r0 + r < mc ? alpha * at(A, lda, ta, i0 + r0 + r, k0 + k) : 0.0f;
        }
}

typedef float v8f __attribute__((vector_size(32)));

// C[0..m, 0..n] += Ap-panel[kc][MR] @ Bp-panel[kc][NR] (m <= MR, n <= NR; Bp 32-byte aligned).
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=fast")))  // let -std=c11 still fuse multiply-adds
#endif
static void micro_kernel(int kc, const float *restrict a, const float *restrict b, float *C, int ldc, int m, int n) {
    v8f acc[MR][2];
    memset(acc, 0, sizeof acc);
    for (int k = 0; k < kc; k++) {
        v8f b0 = *(const v8f *)(b + k * NR), b1 = *(const v8f *)(b + k * NR + 8);
        for (int r = 0; r < MR; r++) {
            float ar = a[k * MR + r];
            acc[r][0] += ar * b0;
            acc[r][1] += ar * b1;
        }
    }
    float tile[MR][NR];
    memcpy(tile, acc, sizeof tile);
    for (int r = 0; r < m; r++)
        for (int j = 0; j < n; j++) C[(size_t)r * ldc + j] += tile[r][j];
}

static void scale_c(float *C, int ldc, int M, int N, float beta) {
    if (beta == 1.0f) return;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
}

void mt_cpu_gemm_plain(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc) {
    scale_c(C, ldc, M, N, beta);
    if (K == 0 || alpha == 0.0f) return;
    _Alignas(64) float Bp[KC * NC];
    for (int n0 = 0; n0 < N; n0 += NC) {
        int nc = N - n0 < NC ? N - n0 : NC;
        for (int k0 = 0; k0 < K; k0 += KC) {
            int kc = K - k0 < KC ? K - k0 : KC;
            pack_b(Bp, B, ldb, tb, k0, kc, n0, nc);
#pragma omp parallel for schedule(dynamic)
            for (int i0 = 0; i0 < M; i0 += MC) {
                _Alignas(64) float Ap[MC * KC];
                int mc = M - i0 < MC ? M - i0 : MC;
                pack_a(Ap, A, lda, ta, alpha, i0, mc, k0, kc);
                for (int r0 = 0; r0 < mc; r0 += MR)
                    for (int j0 = 0; j0 < nc; j0 += NR)
                        micro_kernel(kc, Ap + (size_t)r0 * kc, Bp + (size_t)j0 * kc,
                                     C + (size_t)(i0 + r0) * ldc + n0 + j0, ldc,
                                     mc - r0 < MR ? mc - r0 : MR, nc - j0 < NR ? nc - j0 : NR);
            }
        }
    }
}

#ifdef MT_HAVE_OPENBLAS
// One thread pool, not two: OpenBLAS runs single-threaded (see ops.c) and the product is
// split into column (or row) slices over the OpenMP threads. Two pools, OpenMP spinning
// while OpenBLAS threads wait for a core, made a forward 20× slower on 2 shared cores.
static void gemm_blas_split(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                            const float *B, int ldb, float beta, float *C, int ldc) {
    int nt = 1;
#ifdef _OPENMP
    if ((double)M * N * K >= 1 << 18 && !omp_in_parallel()) nt = omp_get_max_threads();
#endif
    // Each thread packs the whole of the operand it shares: share the smaller one (column
    // slices share A[M,K], row slices B[K,N]), as long as slices keep 64 rows or columns
    // (sharing the larger doubled sgemm's packing time at 2 threads).
    int by_cols = M <= N ? N >= 64 * nt || N >= M : !(M >= 64 * nt);
    int extent = by_cols ? N : M;
    if (nt > extent) nt = extent;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int t = 0; t < nt; t++) {
        int lo = (int)((long)extent * t / nt), hi = (int)((long)extent * (t + 1) / nt);
        if (by_cols) {
            lo = lo / 16 * 16; hi = t == nt - 1 ? N : hi / 16 * 16;  // aligned slice edges
            if (hi <= lo) continue;
            const float *Bs = tb ? B + (size_t)lo * ldb : B + lo;
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, hi - lo,
                        K, alpha, A, lda, Bs, ldb, beta, C + lo, ldc);
        } else {
            const float *As = ta ? A + lo : A + (size_t)lo * lda;
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, hi - lo, N,
                        K, alpha, As, lda, B, ldb, beta, C + (size_t)lo * ldc, ldc);
        }
    }
}
#endif

void mt_cpu_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
#ifdef MT_HAVE_OPENBLAS
    gemm_blas_split(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    mt_cpu_gemm_plain(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

// ---- small products (attention, per sequence and head) ----------------------------------------

static inline v8f load8(const float *p) { v8f v; memcpy(&v, p, sizeof v); return v; }
static inline void store8(float *p, v8f v) { memcpy(p, &v, sizeof v); }

// One row i, columns n0 .. n0 + 8 nv - 1 (nv <= 4 vectors): the accumulators stay in registers
// over the whole k loop, which is what sgemm's packing costs too much to give at this size.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=fast")))
#endif
static void small_row(int nv, int K, const float *a, size_t a_col, const float *B, size_t ldb, float *c, int acc) {
    v8f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    if (nv == 4)
        for (int k = 0; k < K; k++) {
            float ak = a[k * a_col];
            const float *b = B + k * ldb;
            s0 += ak * load8(b), s1 += ak * load8(b + 8), s2 += ak * load8(b + 16), s3 += ak * load8(b + 24);
        }
    else
        for (int k = 0; k < K; k++) {
            float ak = a[k * a_col];
            const float *b = B + k * ldb;
            s0 += ak * load8(b);
            if (nv > 1) s1 += ak * load8(b + 8);
            if (nv > 2) s2 += ak * load8(b + 16);
        }
    v8f s[4] = {s0, s1, s2, s3};
    for (int v = 0; v < nv; v++) store8(c + 8 * v, acc ? load8(c + 8 * v) + s[v] : s[v]);
}

// Rows i and i + 1, 32 columns: 8 accumulators, each B vector loaded once for both rows
// (the one-row loop above waits on loads: 5 per 4 FMAs).
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=fast")))
#endif
static void small_rows2(int K, const float *a, size_t a_row, size_t a_col, const float *B, size_t ldb, float *c,
                        size_t ldc, int acc) {
    v8f s[2][4] = {{{0}}};
    for (int k = 0; k < K; k++) {
        float a0 = a[k * a_col], a1 = a[a_row + k * a_col];
        const float *b = B + k * ldb;
        v8f b0 = load8(b), b1 = load8(b + 8), b2 = load8(b + 16), b3 = load8(b + 24);
        s[0][0] += a0 * b0, s[0][1] += a0 * b1, s[0][2] += a0 * b2, s[0][3] += a0 * b3;
        s[1][0] += a1 * b0, s[1][1] += a1 * b1, s[1][2] += a1 * b2, s[1][3] += a1 * b3;
    }
    for (int r = 0; r < 2; r++)
        for (int v = 0; v < 4; v++) {
            float *cv = c + r * ldc + 8 * v;
            store8(cv, acc ? load8(cv) + s[r][v] : s[r][v]);
        }
}

// Row i from column n0 on: blocks of up to 32 columns, then plain sums past the last 8.
static void small_row_from(int i, int n0, int N, int K, const float *A, size_t a_row, size_t a_col, const float *B,
                           size_t ldb, float *C, size_t ldc, int accumulate) {
    const float *a = A + i * a_row;
    float *c = C + i * ldc;
    int N8 = N / 8 * 8;
    for (; n0 < N8; n0 += 32) small_row(N8 - n0 < 32 ? (N8 - n0) / 8 : 4, K, a, a_col, B + n0, ldb, c + n0, accumulate);
    for (int n = N8; n < N; n++) {
        float s = 0.0f;
        for (int k = 0; k < K; k++) s += a[k * a_col] * B[k * ldb + n];
        c[n] = accumulate ? c[n] + s : s;
    }
}

void mt_cpu_small_gemm(int M, int N, int K, const float *A, size_t a_row, size_t a_col, const float *B, size_t ldb,
                       float *C, size_t ldc, int accumulate) {
    int N32 = N / 32 * 32, i = 0;
    for (; i + 1 < M; i += 2) {  // pairs of rows over whole 32-column blocks, then the rest of each
        for (int n0 = 0; n0 < N32; n0 += 32)
            small_rows2(K, A + i * a_row, a_row, a_col, B + n0, ldb, C + i * ldc + n0, ldc, accumulate);
        small_row_from(i, N32, N, K, A, a_row, a_col, B, ldb, C, ldc, accumulate);
        small_row_from(i + 1, N32, N, K, A, a_row, a_col, B, ldb, C, ldc, accumulate);
    }
    if (i < M) small_row_from(i, 0, N, K, A, a_row, a_col, B, ldb, C, ldc, accumulate);
}
