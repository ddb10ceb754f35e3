// test_pcgrad.c — PCGrad on hand-computed 2- and 3-task cases, against a direct
// transcription of Algorithm 1, the projection property, determinism and telemetry.
#include "check.h"
#include "pcgrad.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// Runs one step of k tasks over n-element gradients (rows of g) and returns the output
// in out; pc stays initialised for the caller to inspect and must be freed.
static void step(mt_pcgrad *pc, int k, size_t n, const float *g, float *out,
                 mt_pcgrad_reduce reduce, uint64_t seed) {
    const float *rows[MT_PCGRAD_MAX_TASKS];
    for (int i = 0; i < k; i++) rows[i] = g + (size_t)i * n;
    mt_rng rng;
    mt_rng_init(&rng, seed, 0, MT_SITE_PCGRAD);
    mt_pcgrad_init(pc, k, n, reduce);
    mt_pcgrad_step(pc, rows, out, &rng);
}

static int equal(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof *a) == 0; }

// g1 = (1,0), g2 = (-1,1): g1' = g1 + g2/2 = (.5,.5); g2' = g2 + g1 = (0,1).
TEST(two_tasks_conflicting) {
    const float g[] = {1, 0, -1, 1}, sum[] = {0.5f, 1.5f}, mean[] = {0.25f, 0.75f};
    float out[2], proj[2];
    mt_pcgrad pc;
    step(&pc, 2, 2, g, out, MT_PCGRAD_SUM, 1);
    CHECK(equal(out, sum, 2));
    const float *rows[] = {g, g + 2};
    mt_pcgrad_projected(&pc, rows, 0, proj);
    CHECK(proj[0] == 0.5f && proj[1] == 0.5f);
    mt_pcgrad_projected(&pc, rows, 1, proj);
    CHECK(proj[0] == 0.0f && proj[1] == 1.0f);
    CHECK(pc.conflict[1] && pc.conflict[2] && !pc.conflict[0]);
    CHECK_NEAR(pc.cosine[1], -1 / sqrt(2), 1e-15);
    CHECK_NEAR(pc.removed[0], sqrt(0.5), 1e-15);  // |g1 - g1'| = |(-.5,.5)|
    CHECK_NEAR(pc.removed[1], 1.0, 1e-15);        // |g2 - g2'| = |(-1,0)|
    CHECK(pc.projections == 2);
    mt_pcgrad_free(&pc);
    step(&pc, 2, 2, g, out, MT_PCGRAD_MEAN, 1);
    CHECK(equal(out, mean, 2));
    mt_pcgrad_free(&pc);
}

// g1 = (1,2), g2 = (3,-1): g1.g2 = 1 > 0, nothing projected, mean = (2, .5).
TEST(two_tasks_not_conflicting) {
    const float g[] = {1, 2, 3, -1}, mean[] = {2.0f, 0.5f};
    float out[2];
    mt_pcgrad pc;
    step(&pc, 2, 2, g, out, MT_PCGRAD_MEAN, 1);
    CHECK(equal(out, mean, 2));
    CHECK(!pc.conflict[1] && pc.projections == 0);
    CHECK(pc.removed[0] == 0.0 && pc.removed[1] == 0.0);
    CHECK_NEAR(pc.cosine[1], 1 / sqrt(50.0), 1e-15);
    mt_pcgrad_free(&pc);
}

// Parallel: (1,2) and (2,4) pass untouched. Anti-parallel: (1,2) and (-2,-4) each lose
// everything: g1' = g1 - (-10/20) g2 = 0, g2' = g2 - (-10/5) g1 = 0.
TEST(parallel_and_antiparallel) {
    const float par[] = {1, 2, 2, 4}, anti[] = {1, 2, -2, -4}, par_sum[] = {3, 6}, zero[] = {0, 0};
    float out[2];
    mt_pcgrad pc;
    step(&pc, 2, 2, par, out, MT_PCGRAD_SUM, 1);
    CHECK(equal(out, par_sum, 2));
    CHECK_NEAR(pc.cosine[1], 1.0, 1e-15);
    mt_pcgrad_free(&pc);
    step(&pc, 2, 2, anti, out, MT_PCGRAD_SUM, 1);
    CHECK(equal(out, zero, 2));
    CHECK_NEAR(pc.cosine[1], -1.0, 1e-15);
    CHECK_NEAR(pc.removed[0], sqrt(5.0), 1e-14);
    CHECK_NEAR(pc.removed[1], sqrt(20.0), 1e-14);
    mt_pcgrad_free(&pc);
}

// A zero gradient conflicts with nothing and projects nothing (no division by zero).
TEST(zero_gradient) {
    const float g[] = {0, 0, 1, -1}, sum[] = {1, -1};
    float out[2];
    mt_pcgrad pc;
    step(&pc, 2, 2, g, out, MT_PCGRAD_SUM, 1);
    CHECK(equal(out, sum, 2));
    CHECK(pc.cosine[1] == 0.0 && !pc.conflict[1] && pc.projections == 0);
    mt_pcgrad_free(&pc);
}

// g1 = (1,0,0), g2 = (-1,1,0), g3 = (-1,0,1). Task 1 conflicts with both, and its result
// depends on the order: via g2 then g3 -> (.25,.5,.25); via g3 then g2 -> (.25,.25,.5).
// g2' = (0,1,0) and g3' = (0,0,1) either way. Sum = g1' + (0,1,1).
TEST(three_tasks_order_matters) {
    const float g[] = {1, 0, 0, -1, 1, 0, -1, 0, 1};
    const float sum_23[] = {0.25f, 1.5f, 1.25f}, sum_32[] = {0.25f, 1.25f, 1.5f};
    int seen_23 = 0, seen_32 = 0;
    for (uint64_t seed = 0; seed < 20; seed++) {
        float out[3];
        mt_pcgrad pc;
        step(&pc, 3, 3, g, out, MT_PCGRAD_SUM, seed);
        // The recorded order is the one mt_rng_shuffle gives for [1, 2].
        uint32_t want[2] = {1, 2};
        mt_rng rng;
        mt_rng_init(&rng, seed, 0, MT_SITE_PCGRAD);
        mt_rng_shuffle(&rng, want, 2);
        CHECK(pc.order[0] == want[0] && pc.order[1] == want[1]);
        int via_2_first = pc.order[0] == 1;
        CHECK(equal(out, via_2_first ? sum_23 : sum_32, 3));
        seen_23 += via_2_first, seen_32 += !via_2_first;
        mt_pcgrad_free(&pc);
    }
    CHECK(seen_23 > 0 && seen_32 > 0);  // the order really is random
}

// Algorithm 1 written out directly: copies, dot products and projections in double.
static void direct_pcgrad(int k, size_t n, const float *g, const uint32_t *order, double *out) {
    double *p = calloc(n, sizeof *p);
    for (size_t x = 0; x < n; x++) out[x] = 0;
    for (int i = 0; i < k; i++) {
        for (size_t x = 0; x < n; x++) p[x] = g[i * n + x];
        for (int m = 0; m < k - 1; m++) {
            const float *gj = g + order[i * (k - 1) + m] * n;
            double dot = 0, nn = 0;
            for (size_t x = 0; x < n; x++) dot += p[x] * gj[x], nn += (double)gj[x] * gj[x];
            if (dot < 0 && nn > 0)
                for (size_t x = 0; x < n; x++) p[x] -= dot / nn * gj[x];
        }
        for (size_t x = 0; x < n; x++) out[x] += p[x] / k;
    }
    free(p);
}

TEST(matches_direct_algorithm_1) {
    enum { N = 257 };
    mt_rng data;
    mt_rng_init(&data, 77, 0, 0);
    for (int k = 2; k <= 5; k++)
        for (int trial = 0; trial < 20; trial++) {
            float *g = malloc((size_t)k * N * sizeof *g), out[N];
            double want[N];
            // a shared direction plus noise, so some pairs conflict and others do not
            for (int x = 0; x < N; x++) {
                float common = mt_rng_uniform(&data) - 0.5f;
                for (int i = 0; i < k; i++) g[i * N + x] = 0.3f * common + mt_rng_uniform(&data) - 0.5f;
            }
            mt_pcgrad pc;
            step(&pc, k, N, g, out, MT_PCGRAD_MEAN, (uint64_t)trial);
            direct_pcgrad(k, N, g, pc.order, want);
            double worst = 0, scale = 0;
            for (int x = 0; x < N; x++) {
                worst = fmax(worst, fabs(out[x] - want[x]));
                scale = fmax(scale, fabs(want[x]));
            }
            CHECK(worst <= 1e-6 * scale);
            mt_pcgrad_free(&pc);
            free(g);
        }
}

// Two tasks: after projection each g_i' has a non-negative dot product with the other
// original g_j (zero up to float rounding of g_i' when they conflicted).
TEST(property_two_tasks_no_conflict_left) {
    enum { N = 100 };
    mt_rng data;
    mt_rng_init(&data, 5, 0, 0);
    int conflicted = 0;
    for (int trial = 0; trial < 200; trial++) {
        float g[2 * N], out[N], proj[N];
        for (int x = 0; x < 2 * N; x++) g[x] = mt_rng_uniform(&data) - 0.5f;
        mt_pcgrad pc;
        step(&pc, 2, N, g, out, MT_PCGRAD_MEAN, (uint64_t)trial);
        conflicted += pc.conflict[1];
        const float *rows[] = {g, g + N};
        for (int i = 0; i < 2; i++) {
            mt_pcgrad_projected(&pc, rows, i, proj);
            double dot = 0;
            for (int x = 0; x < N; x++) dot += (double)proj[x] * rows[1 - i][x];
            CHECK(dot >= -1e-6 * pc.norm[0] * pc.norm[1]);
        }
        mt_pcgrad_free(&pc);
    }
    CHECK(conflicted > 50 && conflicted < 150);  // both kinds of pair were tested
}

// Same bits with 1 thread and with several (fixed blocks summed in order).
TEST(deterministic_across_threads) {
    size_t n = 300000;
    float *g = malloc(3 * n * sizeof *g), *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    mt_rng data;
    mt_rng_init(&data, 8, 0, 0);
    for (size_t x = 0; x < 3 * n; x++) g[x] = mt_rng_uniform(&data) - 0.5f + (x >= n ? -0.001f : 0.001f);
    mt_pcgrad pc;
#ifdef _OPENMP
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    step(&pc, 3, n, g, a, MT_PCGRAD_MEAN, 3);
    double gram01 = pc.gram[1];
    mt_pcgrad_free(&pc);
    omp_set_num_threads(threads > 1 ? threads : 2);
    step(&pc, 3, n, g, b, MT_PCGRAD_MEAN, 3);
    omp_set_num_threads(threads);
    CHECK(gram01 == pc.gram[1]);
#else
    step(&pc, 3, n, g, a, MT_PCGRAD_MEAN, 3);
    mt_pcgrad_free(&pc);
    step(&pc, 3, n, g, b, MT_PCGRAD_MEAN, 3);
#endif
    CHECK(equal(a, b, n));
    mt_pcgrad_free(&pc);
    free(g), free(a), free(b);
}

// Running totals over a conflicting and a non-conflicting step, and the printed lines.
TEST(telemetry_totals_and_summary) {
    const float conflicting[] = {1, 0, -1, 1}, agreeing[] = {1, 2, 3, -1};
    const float *rows_c[] = {conflicting, conflicting + 2}, *rows_a[] = {agreeing, agreeing + 2};
    float out[2];
    mt_rng rng;
    mt_rng_init(&rng, 1, 0, MT_SITE_PCGRAD);
    mt_pcgrad pc;
    mt_pcgrad_init(&pc, 2, 2, MT_PCGRAD_MEAN);
    mt_pcgrad_step(&pc, rows_c, out, &rng);
    mt_pcgrad_step(&pc, rows_a, out, &rng);
    CHECK(pc.steps == 2 && pc.conflict_steps[1] == 1 && pc.projections_total == 2);
    CHECK_NEAR(pc.removed_sum[1], 1.0, 1e-15);
    char buf[512] = {0};
    FILE *fp = fmemopen(buf, sizeof buf - 1, "w");
    const char *names[] = {"sst", "qqp"};
    mt_pcgrad_print_summary(&pc, names, fp);
    mt_pcgrad_print_step(&pc, NULL, fp);
    fclose(fp);
    CHECK(strstr(buf, "pcgrad: 2 steps | conflict sst/qqp 50%") != NULL);
    CHECK(strstr(buf, "mean removed sst 0.3536 qqp 0.5") != NULL);
    CHECK(strstr(buf, "1.00 projections/step") != NULL);
    CHECK(strstr(buf, "pcgrad step: cos 0/1 0.141 | removed 0 0 1 0 | 0 projections") != NULL);
    mt_pcgrad_free(&pc);
}

int main(void) {
    RUN(two_tasks_conflicting);
    RUN(two_tasks_not_conflicting);
    RUN(parallel_and_antiparallel);
    RUN(zero_gradient);
    RUN(three_tasks_order_matters);
    RUN(matches_direct_algorithm_1);
    RUN(property_two_tasks_no_conflict_left);
    RUN(deterministic_across_threads);
    RUN(telemetry_totals_and_summary);
    return check_summary();
}
