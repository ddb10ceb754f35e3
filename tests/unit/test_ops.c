// test_ops.c — every forward op of the CPU backend against a plain double-precision
// reference on random inputs.
#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "rand.h"
#include "cpu.h"

static const mt_backend *be;
static double max_abs_diff(const float *a, const double *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

typedef void gemm_fn(int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);

// One gemm against the triple loop, every transpose combination, sizes past the blocking.
static void check_gemm(gemm_fn *gemm, int M, int N, int K) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;  // padded leading dims
            float *A = rand_vec((size_t)(ta ? K : M) * lda, 1), *B = rand_vec((size_t)(tb ? N : K) * ldb, 1);
            float *C = rand_vec((size_t)M * ldc, 1);
            double *ref = malloc(sizeof(double) * M * ldc);
            float alpha = 0.75f, beta = -0.5f;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < ldc; j++) {
                    double s = 0;
                    if (j < N)
                        for (int k = 0; k < K; k++)
                            s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
                    ref[i * ldc + j] = j < N ? alpha * s + beta * C[i * ldc + j] : C[i * ldc + j];  // padding untouched
                }
            gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
            double d = max_abs_diff(C, ref, (size_t)M * ldc);
            if (d > 1e-4 * sqrt(K)) printf("# gemm ta=%d tb=%d %dx%dx%d: max diff %g\n", ta, tb, M, N, K, d);
            CHECK(d <= 1e-4 * sqrt(K));
            free(A); free(B); free(C); free(ref);
        }
}

TEST(gemm_matches_reference) {
    check_gemm(be->gemm, 37, 53, 300);
    check_gemm(be->gemm, 1, 1, 1);
    check_gemm(mt_cpu_gemm_plain, 37, 53, 300);
    check_gemm(mt_cpu_gemm_plain, 70, 270, 513);  // past MC, NC and two KC blocks
    check_gemm(mt_cpu_gemm_plain, 3, 5, 7);
    // beta == 0 overwrites C, even a NaN in it
    float A[2] = {1, 2}, B[2] = {3, 4}, C[1] = {NAN};
    mt_cpu_gemm_plain(0, 0, 1, 1, 2, 1.0f, A, 2, B, 1, 0.0f, C, 1);
    CHECK(C[0] == 11.0f);
}

TEST(matmul_forward_with_bias_and_residual) {
    int N = 19, IC = 45, OC = 33;
    float *inp = rand_vec(N * IC, 1), *w = rand_vec(OC * IC, 1), *bias = rand_vec(OC, 1), *res = rand_vec(N * OC, 1);
    float *out = rand_vec(N * OC, 1);
    double *ref = malloc(sizeof(double) * N * OC);
    for (int variant = 0; variant < 3; variant++) {  // bias+residual, bias only, neither
        const float *bb = variant < 2 ? bias : NULL, *rr = variant == 0 ? res : NULL;
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) {
                double s = (bb ? bb[o] : 0) + (rr ? rr[n * OC + o] : 0);
                for (int i = 0; i < IC; i++) s += (double)inp[n * IC + i] * w[o * IC + i];
                ref[n * OC + o] = s;
            }
        be->matmul_forward(out, inp, w, bb, rr, N, IC, OC);
        CHECK(max_abs_diff(out, ref, N * OC) < 1e-5);
    }
    free(inp); free(w); free(bias); free(res); free(out); free(ref);
}

TEST(layernorm_matches_reference) {
    int N = 13, C = 384;
    float *x = rand_vec(N * C, 3), *w = rand_vec(C, 1), *b = rand_vec(C, 1);
    for (int c = 0; c < C; c++) x[c] += 100.0f;  // a large offset: variance must not cancel
    float *out = malloc(sizeof(float) * N * C), mean[13], rstd[13];
    double *ref = malloc(sizeof(double) * N * C);
    double worst_stat = 0;
    be->layernorm_forward(out, mean, rstd, x, w, b, N, C, 1e-12f);
    for (int n = 0; n < N; n++) {
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[n * C + c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[n * C + c] - m) * (x[n * C + c] - m);
        double s = 1 / sqrt(v / C + 1e-12);
        for (int c = 0; c < C; c++) ref[n * C + c] = (x[n * C + c] - m) * s * w[c] + b[c];
        worst_stat = fmax(worst_stat, fabs(mean[n] - m) / fmax(1, fabs(m)) + fabs(rstd[n] - s) / s);
    }
    double d = max_abs_diff(out, ref, N * C);
    if (d >= 2e-5 || worst_stat >= 1e-5) printf("# layernorm: max diff %g, worst stat %g\n", d, worst_stat);
    CHECK(d < 2e-5);
    CHECK(worst_stat < 1e-5);
    free(x); free(w); free(b); free(out); free(ref);
}

// The padded, masked formulation of Hugging Face (additive finfo.min on padded keys),
// computed in double, against the packed op.
TEST(attention_matches_masked_softmax_reference) {
    enum { B = 3, T = 9, C = 24, NH = 4, HS = C / NH };
    int lengths[B] = {9, 1, 5};
    int32_t offsets[B + 1] = {0};
    int64_t att_off[B] = {0};
    for (int b = 0; b < B; b++) {
        offsets[b + 1] = offsets[b] + lengths[b];
        if (b + 1 < B) att_off[b + 1] = att_off[b] + (int64_t)NH * lengths[b] * lengths[b];
    }
    int N = offsets[B];
    float *qkv = rand_vec((size_t)N * 3 * C, 2), *out = malloc(sizeof(float) * N * C), *out2 = malloc(sizeof(float) * N * C);
    float *att = malloc(sizeof(float) * (att_off[B - 1] + NH * lengths[B - 1] * lengths[B - 1]));
    double *ref = malloc(sizeof(double) * N * C), worst_p = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < lengths[b]; i++) {
                const float *q = qkv + (size_t)(offsets[b] + i) * 3 * C + h * HS;
                double s[T], mx = -INFINITY, sum = 0;
                for (int j = 0; j < T; j++) {  // all T padded positions, masked as HF does
                    double dot = 0;
                    if (j < lengths[b]) {
                        const float *k = qkv + (size_t)(offsets[b] + j) * 3 * C + C + h * HS;
                        for (int d = 0; d < HS; d++) dot += (double)q[d] * k[d];
                    }
                    s[j] = dot / sqrt(HS) + (j < lengths[b] ? 0.0 : -FLT_MAX);
                    mx = fmax(mx, s[j]);
                }
                for (int j = 0; j < T; j++) sum += s[j] = exp(s[j] - mx);
                for (int d = 0; d < HS; d++) {
                    double o = 0;
                    for (int j = 0; j < lengths[b]; j++) o += s[j] / sum * qkv[(size_t)(offsets[b] + j) * 3 * C + 2 * C + h * HS + d];
                    ref[(size_t)(offsets[b] + i) * C + h * HS + d] = o;
                }
                be->attention_forward(out2, att, qkv, offsets, att_off, B, T, C, NH);
                for (int j = 0; j < lengths[b]; j++)
                    worst_p = fmax(worst_p, fabs(att[att_off[b] + ((size_t)h * lengths[b] + i) * lengths[b] + j] - s[j] / sum));
            }
    be->attention_forward(out, NULL, qkv, offsets, att_off, B, T, C, NH);
    CHECK(max_abs_diff(out, ref, (size_t)N * C) < 1e-5);
    CHECK(max_abs_diff(out2, ref, (size_t)N * C) < 1e-5);  // with probabilities saved: same output
    CHECK(worst_p < 1e-6);
    free(qkv); free(out); free(out2); free(att); free(ref);
}

TEST(gelu_and_tanh_match_reference) {
    int n = 2001;
    float *x = malloc(sizeof(float) * n), *out = malloc(sizeof(float) * n);
    double *ref = malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) x[i] = -10.0f + 20.0f * i / (n - 1);
    for (int i = 0; i < n; i++) ref[i] = 0.5 * x[i] * (1 + erf(x[i] / sqrt(2.0)));
    be->gelu_forward(out, x, n);
    CHECK(max_abs_diff(out, ref, n) < 1e-6);
    be->gelu_forward(x, x, n);  // in place
    CHECK(max_abs_diff(x, ref, n) < 1e-6);
    for (int i = 0; i < n; i++) x[i] = -10.0f + 20.0f * i / (n - 1);
    for (int i = 0; i < n; i++) ref[i] = tanh(x[i]);
    be->tanh_forward(out, x, n);
    CHECK(max_abs_diff(out, ref, n) < 1e-6);
    free(x); free(out); free(ref);
}

// GELU and its derivative against double on a dense grid of floats, both tails included:
// relative errors, not absolute, since x Phi(x) is tiny for x << 0 (where 1 + erff(x/sqrt 2)
// loses every digit). Within 1 ulp while the value is a normal float (mathv.h is correctly
// rounded there but for 0.003 ulp, measured on every 5th float with |x| < 40), within 16
// subnormal steps below. The derivative Phi + x phi crosses zero near x = -0.75, so its error
// is relative to the size of its terms.
TEST(gelu_is_accurate_in_relative_terms) {
    enum { n = 200003 };
    float *x = malloc(sizeof(float) * n), *out = malloc(sizeof(float) * n), *dx = calloc(n, sizeof(float));
    float *ones = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) x[i] = -16.0f + 28.0f * (float)i / (n - 1), ones[i] = 1.0f;
    x[0] = 0.0f, x[1] = -0.0f, x[2] = 1e-30f, x[3] = -3e-8f;
    be->gelu_forward(out, x, n);
    be->gelu_backward(dx, x, NULL, ones, n);
    double worst = 0, worst_d = 0;
    for (int i = 0; i < n; i++) {
        double xd = x[i], phi = 0.5 * erfc(-xd / sqrt(2.0)), ref = xd * phi;
        double dref = phi + xd * exp(-0.5 * xd * xd) / sqrt(2.0 * 3.14159265358979323846);
        if (fabs(ref) >= FLT_MIN) worst = fmax(worst, fabs(out[i] - ref) / fabs(ref));
        else CHECK(fabs(out[i] - ref) <= 0x1p-145);
        double terms = phi + fabs(dref - phi);
        if (terms >= FLT_MIN) worst_d = fmax(worst_d, fabs(dx[i] - dref) / terms);
    }
    printf("# gelu: max relative error %.2e, derivative %.2e\n", worst, worst_d);
    CHECK(worst <= FLT_EPSILON);
    CHECK(worst_d <= FLT_EPSILON);
    free(x); free(out); free(dx); free(ones);
}

// The per-head products of attention: every width class (4, 3, 2, 1 vectors of 8 and a scalar
// tail), A read directly and transposed, overwrite and accumulate, against double sums.
TEST(small_gemm_matches_reference) {
    int sizes[][3] = {{1, 1, 1}, {3, 8, 5}, {7, 16, 9}, {5, 24, 3}, {9, 32, 33}, {4, 45, 7}, {30, 32, 30}, {2, 75, 4}};
    double worst = 0;
    for (size_t t = 0; t < sizeof sizes / sizeof *sizes; t++)
        for (int trans = 0; trans < 2; trans++)
            for (int acc = 0; acc < 2; acc++) {
                int M = sizes[t][0], N = sizes[t][1], K = sizes[t][2], ldb = N + 3, ldc = N + 1;
                float *A = rand_vec((size_t)M * K, 1), *B = rand_vec((size_t)K * ldb, 1), *C = rand_vec((size_t)M * ldc, 1);
                size_t a_row = trans ? 1 : (size_t)K, a_col = trans ? (size_t)M : 1;
                double *ref = malloc(sizeof(double) * M * ldc);
                for (int i = 0; i < M; i++)
                    for (int n = 0; n < N; n++) {
                        double sum = acc ? C[(size_t)i * ldc + n] : 0.0;
                        for (int k = 0; k < K; k++) sum += (double)A[i * a_row + k * a_col] * B[(size_t)k * ldb + n];
                        ref[(size_t)i * ldc + n] = sum;
                    }
                mt_cpu_small_gemm(M, N, K, A, a_row, a_col, B, (size_t)ldb, C, (size_t)ldc, acc);
                for (int i = 0; i < M; i++)
                    for (int n = 0; n < N; n++) worst = fmax(worst, fabs(C[(size_t)i * ldc + n] - ref[(size_t)i * ldc + n]));
                free(A); free(B); free(C); free(ref);
            }
    CHECK(worst < 1e-5);
}

TEST(embeddings_sum_three_tables) {
    enum { V = 11, P = 7, TV = 2, C = 5, N = 6 };
    float *wte = rand_vec(V * C, 1), *wpe = rand_vec(P * C, 1), *wtt = rand_vec(TV * C, 1), out[N * C];
    int32_t ids[N] = {0, 10, 3, 3, 7, 1}, types[N] = {0, 0, 1, 1, 0, 1}, pos[N] = {0, 1, 2, 0, 1, 6};
    double ref[N * C];
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            ref[n * C + c] = (double)wte[ids[n] * C + c] + wtt[types[n] * C + c] + wpe[pos[n] * C + c];
    be->embeddings_forward(out, ids, types, pos, wte, wpe, wtt, N, C);
    CHECK(max_abs_diff(out, ref, N * C) < 1e-6);
    free(wte); free(wpe); free(wtt);
}

TEST(pooling_and_unpack) {
    enum { B = 3, C = 4, T = 5 };
    int32_t offsets[B + 1] = {0, 2, 7, 8};
    float *x = rand_vec(8 * C, 1), out[B * C], padded[B * T * C];
    double cls[B * C], mean[B * C], mx[B * C];
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            double s = 0, m = -INFINITY;
            for (int t = offsets[b]; t < offsets[b + 1]; t++) { s += x[t * C + c]; m = fmax(m, x[t * C + c]); }
            cls[b * C + c] = x[offsets[b] * C + c];
            mean[b * C + c] = s / (offsets[b + 1] - offsets[b]);
            mx[b * C + c] = m;
        }
    be->pool_forward(out, x, offsets, B, C, MT_POOL_CLS);
    CHECK(max_abs_diff(out, cls, B * C) == 0);
    be->pool_forward(out, x, offsets, B, C, MT_POOL_MEAN);
    CHECK(max_abs_diff(out, mean, B * C) < 1e-6);
    be->pool_forward(out, x, offsets, B, C, MT_POOL_MAX);
    CHECK(max_abs_diff(out, mx, B * C) == 0);
    memset(padded, 0x7f, sizeof padded);  // garbage that unpack must overwrite
    be->unpack_forward(padded, x, offsets, B, T, C);
    int bad = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) {
                float want = t < offsets[b + 1] - offsets[b] ? x[(offsets[b] + t) * C + c] : 0.0f;
                bad += padded[(b * T + t) * C + c] != want;
            }
    CHECK(bad == 0);
    free(x);
}

TEST(alloc_is_aligned_and_zeroed) {
    float *p = be->alloc(1000);
    CHECK(((uintptr_t)p & 63) == 0);
    int nonzero = 0;
    for (int i = 0; i < 250; i++) nonzero += p[i] != 0.0f;
    CHECK(nonzero == 0);
    be->free(p);
}

int main(void) {
    be = mt_backend_cpu();
    RUN(gemm_matches_reference);
    RUN(matmul_forward_with_bias_and_residual);
    RUN(layernorm_matches_reference);
    RUN(attention_matches_masked_softmax_reference);
    RUN(gelu_and_tanh_match_reference);
    RUN(gelu_is_accurate_in_relative_terms);
    RUN(small_gemm_matches_reference);
    RUN(embeddings_sum_three_tables);
    RUN(pooling_and_unpack);
    RUN(alloc_is_aligned_and_zeroed);
    return check_summary();
}
