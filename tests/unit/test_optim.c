// test_optim.c — the CPU backend's optimizer ops (backend.h: adamw_update_multi, gram, combine,
// scale) against plain formulas, the Gram pass's thread-count independence, the segmented
// PCGrad / norm entry points against the one-buffer ones, and the staged backend (host_memory
// = 0) against the CPU backend.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "adamw.h"
#include "backend.h"
#include "check.h"
#include "pcgrad.h"

static float val(size_t i, unsigned salt) { return (float)(((i * 2654435761u + salt * 40503u) % 1999) / 999.0 - 1.0); }

static float *filled(size_t n, unsigned salt) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = val(i, salt);
    return x;
}

// The update loop lib/adamw.c had before it became an op, written out again: slice by slice,
// each with its own scalars, over a list with gaps (untouched) and an empty slice.
TEST(adamw_update_multi_matches_formula) {
    const mt_backend *be = mt_backend_cpu();
    size_t n = 200011;
    float *p = filled(n, 1), *g = filled(n, 2), *m = filled(n, 3), *v = filled(n, 4);
    for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]) * 1e-3f;
    float *p2 = malloc(n * sizeof *p2), *m2 = malloc(n * sizeof *m2), *v2 = malloc(n * sizeof *v2);
    memcpy(p2, p, n * sizeof *p), memcpy(m2, m, n * sizeof *m), memcpy(v2, v, n * sizeof *v);
    mt_adamw_chunk list[4] = {{.offset = 0, .n = 100003}, {.offset = 100003, .n = 0}, {.offset = 100010, .n = 7},
                              {.offset = 100100, .n = 99911}};  // gaps at 100003..100009, 100017..100099
    for (int step = 0; step < 2; step++) {
        for (int c = 0; c < 4; c++)
            list[c].s = (mt_adamw_scalars){.decay_mul = 0.999f - 0.01f * c, .beta1_w = 0.1f, .beta2 = 0.999f,
                                           .beta2_w = 0.001f, .bc2_sqrt = 0.0447f, .eps = 1e-8f,
                                           .neg_step_size = -1e-4f * (c + 1), .decay = (c + step) % 2};
        be->adamw_update_multi(p, g, m, v, list, 4);
        for (int c = 0; c < 4; c++) {
            const mt_adamw_scalars s = list[c].s;
            for (size_t i = list[c].offset; i < list[c].offset + list[c].n; i++) {
                float pi = s.decay ? p2[i] * s.decay_mul : p2[i];
                float mi = m2[i] + s.beta1_w * (g[i] - m2[i]);
                float vi = v2[i] * s.beta2 + s.beta2_w * g[i] * g[i];
                float denom = sqrtf(vi) / s.bc2_sqrt + s.eps;
                m2[i] = mi, v2[i] = vi, p2[i] = pi + s.neg_step_size * mi / denom;
            }
        }
        CHECK(!memcmp(p, p2, n * sizeof *p) && !memcmp(m, m2, n * sizeof *m) && !memcmp(v, v2, n * sizeof *v));
    }
    CHECK(p[100005] == val(100005, 1) && p[100050] == val(100050, 1) && p[0] != val(0, 1));
    free(p), free(g), free(m), free(v), free(p2), free(m2), free(v2);
}

// mt_adamw_step's one call over the table equals a call per tensor (what it made before) with
// the same scalars, whatever order the table lists its tensors in.
TEST(adamw_step_matches_per_tensor_calls) {
    const mt_backend *be = mt_backend_cpu();
    size_t n = 5000;
    mt_adamw_tensor t[3] = {{3000, 2000, 0.5, 1}, {0, 1000, 1.0, 1}, {1000, 2000, 0.81, 0}};
    mt_adamw_tensor r[3] = {t[2], t[1], t[0]};
    mt_adamw_hparams hp = mt_adamw_defaults();
    mt_adamw a, c;
    mt_adamw_init(&a, be, &hp, t, 3, n);
    mt_adamw_init(&c, be, &hp, r, 3, n);
    float *pa = filled(n, 50), *pb = filled(n, 50), *pc = filled(n, 50), *g = filled(n, 51);
    float *mb = calloc(n, sizeof *mb), *vb = calloc(n, sizeof *vb);
    for (int s = 0; s < 3; s++) {
        mt_adamw_step(&a, pa, g, 1e-3 * (s + 1));
        mt_adamw_step(&c, pc, g, 1e-3 * (s + 1));
        for (int i = 0; i < 3; i++) be->adamw_update_multi(pb, g, mb, vb, &a.list[i], 1);  // this step's scalars
    }
    CHECK(a.list[0].offset == 0 && a.list[1].offset == 1000 && a.list[2].offset == 3000);  // sorted
    CHECK(!memcmp(pa, pb, n * sizeof *pa) && !memcmp(a.m, mb, n * sizeof *mb) && !memcmp(a.v, vb, n * sizeof *vb));
    CHECK(!memcmp(pa, pc, n * sizeof *pa) && !memcmp(a.m, c.m, n * sizeof *mb) && !memcmp(a.v, c.v, n * sizeof *vb));
    CHECK(pa[0] != val(0, 50) && pa[4999] != val(4999, 50));
    mt_adamw_free(&a), mt_adamw_free(&c);
    free(pa), free(pb), free(pc), free(g), free(mb), free(vb);
}

static void gram_with_threads(int threads, double *out, const float *const *g, int k, size_t n) {
#ifdef _OPENMP
    int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    mt_backend_cpu()->gram(out, g, k, n);
    omp_set_num_threads(before);
#else
    (void)threads;
    mt_backend_cpu()->gram(out, g, k, n);
#endif
}

// Symmetric, near the exact dot products, and the same bits for 1, 2 and 3 threads.
TEST(gram_deterministic_across_threads) {
    enum { KK = 4 };
    size_t n = 20 * MT_GRAM_BLOCK + 123;
    float *g[KK];
    for (int i = 0; i < KK; i++) g[i] = filled(n, 10 + i);
    double a[KK * KK], b[KK * KK], c[KK * KK];
    gram_with_threads(1, a, (const float *const *)g, KK, n);
    gram_with_threads(2, b, (const float *const *)g, KK, n);
    gram_with_threads(3, c, (const float *const *)g, KK, n);
    CHECK(!memcmp(a, b, sizeof a) && !memcmp(a, c, sizeof a));
    for (int i = 0; i < KK; i++)
        for (int j = 0; j < KK; j++) {
            long double exact = 0;
            for (size_t x = 0; x < n; x++) exact += (long double)g[i][x] * g[j][x];
            CHECK_NEAR(a[i * KK + j], (double)exact, 1e-9 * (fabs((double)exact) + 1));
            CHECK(a[i * KK + j] == a[j * KK + i]);
        }
    double one;  // k = 1: the squared norm, as mt_grad_norm
    gram_with_threads(2, &one, (const float *const *)g, 1, n);
    CHECK(one == a[0]);
    CHECK(sqrt(one) == mt_grad_norm(g[0], n));
    double empty[4] = {1, 1, 1, 1};
    mt_backend_cpu()->gram(empty, (const float *const *)g, 2, 0);
    CHECK(empty[0] == 0 && empty[1] == 0 && empty[2] == 0 && empty[3] == 0);
    for (int i = 0; i < KK; i++) free(g[i]);
}

TEST(combine_and_scale) {
    size_t n = 70001;
    float *g[3] = {filled(n, 20), filled(n, 21), filled(n, 22)}, *out = malloc(n * sizeof *out);
    double w[3] = {0.5, -1.25, 1.0 / 3.0};
    mt_backend_cpu()->combine(out, (const float *const *)g, w, 3, n);
    int ok = 1;
    for (size_t x = 0; x < n; x++) ok &= out[x] == (float)(w[0] * g[0][x] + w[1] * g[1][x] + w[2] * g[2][x]);
    CHECK(ok);
    float *y = filled(n, 23);
    mt_backend_cpu()->scale(y, 0.375f, n);
    ok = 1;
    for (size_t x = 0; x < n; x++) ok &= y[x] == val(x, 23) * 0.375f;
    CHECK(ok);
    mt_backend_cpu()->scale(y, NAN, 3);
    CHECK(isnan(y[0]) && isnan(y[2]) && !isnan(y[3]));
    for (int i = 0; i < 3; i++) free(g[i]);
    free(out), free(y);
}

// Splitting the buffers into segments (one on the staged backend) gives the one-buffer
// result within rounding of the Gram sums, and the same clipping.
TEST(segments_match_one_buffer) {
    enum { KK = 3 };
    size_t n1 = 5 * MT_GRAM_BLOCK + 77, n2 = 3001, n = n1 + n2;
    float *g[KK], *a[KK], *b[KK];
    for (int i = 0; i < KK; i++) {
        g[i] = filled(n, 30 + i);
        for (size_t x = 0; x < n; x += 3) g[i][x] += (float)(i == 1 ? -0.8 : 0.3);  // make conflicts
        a[i] = g[i], b[i] = g[i] + n1;
    }
    float *out1 = malloc(n * sizeof(float)), *out2 = malloc(n * sizeof(float));
    mt_pcgrad p1, p2;
    mt_rng r1, r2;
    mt_rng_init(&r1, 7, 0, MT_SITE_PCGRAD), mt_rng_init(&r2, 7, 0, MT_SITE_PCGRAD);
    mt_pcgrad_init(&p1, KK, n, MT_PCGRAD_MEAN), mt_pcgrad_init(&p2, KK, n, MT_PCGRAD_MEAN);
    mt_pcgrad_step(&p1, (const float *const *)g, out1, &r1);
    // the staged backend keeps a device's workspace reservation: the gram's scratch, up front
    mt_backend_cpu_staged()->reserve(&(mt_workspace_shape){.training = 1, .gram_n = n1});
    mt_pcgrad_segment seg[2] = {{mt_backend_cpu_staged(), (const float *const *)a, out2, n1},
                                {mt_backend_cpu(), (const float *const *)b, out2 + n1, n2}};
    mt_pcgrad_step_segments(&p2, seg, 2, &r2);
    CHECK(p1.projections > 0 && p1.projections == p2.projections);
    for (int x = 0; x < KK * KK; x++) CHECK_NEAR(p1.gram[x], p2.gram[x], 1e-12 * fabs(p1.gram[x]));
    float worst = 0;
    for (size_t x = 0; x < n; x++) worst = fmaxf(worst, fabsf(out1[x] - out2[x]));
    CHECK(worst <= 1e-6f);
    mt_grad_segment gs[2] = {{mt_backend_cpu_staged(), out2, n1}, {mt_backend_cpu(), out2 + n1, n2}};
    double n_one = mt_clip_grad_norm(out1, n, 0.5), n_two = mt_clip_grad_segments(gs, 2, 0.5);
    CHECK_NEAR(n_one, n_two, 1e-9 * n_one);
    CHECK(n_one > 0.5);
    CHECK_NEAR(mt_grad_norm(out1, n), 0.5, 1e-6);
    CHECK_NEAR(mt_clip_grad_segments(gs, 2, 0), 0.5, 1e-6);
    mt_pcgrad_free(&p1), mt_pcgrad_free(&p2);
    for (int i = 0; i < KK; i++) free(g[i]);
    free(out1), free(out2);
}

// AdamW through the staged backend: the same bits as through the CPU backend.
TEST(adamw_on_staged_backend) {
    size_t n = 1000;
    mt_adamw_tensor t[2] = {{0, 600, 1.0, 1}, {600, 400, 0.5, 0}};
    mt_adamw_hparams hp = mt_adamw_defaults();
    mt_adamw a, b;
    mt_adamw_init(&a, mt_backend_cpu(), &hp, t, 2, n);
    mt_adamw_init(&b, mt_backend_cpu_staged(), &hp, t, 2, n);
    float *pa = filled(n, 40), *pb = filled(n, 40), *g = filled(n, 41);
    for (int s = 0; s < 3; s++) mt_adamw_step(&a, pa, g, 1e-3), mt_adamw_step(&b, pb, g, 1e-3);
    CHECK(!memcmp(pa, pb, n * sizeof *pa) && !memcmp(a.m, b.m, n * sizeof *pa) && !memcmp(a.v, b.v, n * sizeof *pa));
    CHECK(a.step == 3 && pa[0] != val(0, 40));
    mt_adamw_free(&a), mt_adamw_free(&b);
    free(pa), free(pb), free(g);
}

int main(void) {
    RUN(adamw_update_multi_matches_formula);
    RUN(adamw_step_matches_per_tensor_calls);
    RUN(gram_deterministic_across_threads);
    RUN(combine_and_scale);
    RUN(segments_match_one_buffer);
    RUN(adamw_on_staged_backend);
    return check_summary();
}
