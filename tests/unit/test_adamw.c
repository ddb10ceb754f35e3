// test_adamw.c — AdamW against torch.optim.AdamW (tests/ref/adamw_ref.h, written by
// tests/make_adamw_refs.py), schedules, layer-wise lr decay and global-norm clipping.
#include "adamw.h"
#include "check.h"
#include "../ref/adamw_ref.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define N_TENSORS ((int)(sizeof adamw_ref_tensors / sizeof adamw_ref_tensors[0]))
#define N_PARAMS (sizeof adamw_ref_init / sizeof adamw_ref_init[0])
#define N_CASES ((int)(sizeof adamw_ref_cases / sizeof adamw_ref_cases[0]))
#define REL_TOL 1e-6

// Largest |a - b| / max(|b|, floor) over n values. Parameters use floor = lr: a step
// moves a parameter by up to about lr, so one that crosses zero keeps rounding errors of
// the size of ulp(lr) while its own value is tiny (torch's vectorised lerp uses a fused
// multiply-add on some elements and not on others, so bit equality is not on offer).
static double max_rel_err_floor(const float *a, const float *b, size_t n, double floor) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), floor);
        worst = d > worst ? d : worst;
    }
    return worst;
}

// Largest |a - b| / |b| (|b| floored at 1e-30 so exact zeros compare too).
static double max_rel_err(const float *a, const float *b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), 1e-30);
        worst = d > worst ? d : worst;
    }
    return worst;
}

// Runs one reference case through mt_adamw and compares after every step.
static void run_ref_case(int c) {
    mt_adamw_tensor table[N_TENSORS];
    size_t off = 0;
    for (int i = 0; i < N_TENSORS; i++) {
        table[i] = (mt_adamw_tensor){off, adamw_ref_tensors[i].size,
                                     adamw_ref_cases[c].scaled ? adamw_ref_tensors[i].lr_scale : 1.0,
                                     adamw_ref_tensors[i].decay};
        off += adamw_ref_tensors[i].size;
    }
    CHECK(off == N_PARAMS);
    mt_adamw_hparams hp = mt_adamw_defaults();
    hp.weight_decay = adamw_ref_cases[c].weight_decay;
    mt_lr_schedule sched = {adamw_ref_cases[c].linear ? MT_LR_LINEAR : MT_LR_CONSTANT,
                            ADAMW_REF_LR, adamw_ref_cases[c].linear ? ADAMW_REF_WARMUP : 0,
                            ADAMW_REF_TOTAL};
    mt_adamw opt;
    mt_adamw_init(&opt, mt_backend_cpu(), &hp, table, N_TENSORS, N_PARAMS);
    float params[N_PARAMS], grads[N_PARAMS];
    memcpy(params, adamw_ref_init, sizeof params);
    for (int s = 0; s < ADAMW_REF_STEPS; s++) {
        memcpy(grads, adamw_ref_grads + s * N_PARAMS, sizeof grads);
        if (adamw_ref_cases[c].clip > 0) mt_clip_grad_norm(grads, N_PARAMS, adamw_ref_cases[c].clip);
        mt_adamw_step(&opt, params, grads, mt_lr_at(&sched, opt.step));
        double err = max_rel_err_floor(params, adamw_ref_cases[c].params + s * N_PARAMS, N_PARAMS,
                                       ADAMW_REF_LR);
        if (err > REL_TOL) printf("# case %s step %d: params rel err %.3g\n", adamw_ref_cases[c].name, s + 1, err);
        CHECK(err <= REL_TOL);
    }
    CHECK(opt.step == ADAMW_REF_STEPS);
    CHECK(max_rel_err(opt.m, adamw_ref_cases[c].m, N_PARAMS) <= REL_TOL);
    CHECK(max_rel_err(opt.v, adamw_ref_cases[c].v, N_PARAMS) <= REL_TOL);
    // The steps moved the parameters by much more than the tolerance: the check has teeth.
    CHECK(max_rel_err(params, adamw_ref_init, N_PARAMS) > 1e-3);
    mt_adamw_free(&opt);
}

TEST(matches_torch_plain) { run_ref_case(0); }
TEST(matches_torch_weight_decay_groups) { run_ref_case(1); }
TEST(matches_torch_with_clipping) { run_ref_case(2); }
TEST(matches_torch_with_linear_schedule) { run_ref_case(3); }

TEST(reference_cases_differ) {  // each case exercises something the others do not
    CHECK(N_CASES == 4);
    for (int a = 0; a < N_CASES; a++)
        for (int b = a + 1; b < N_CASES; b++)
            CHECK(max_rel_err(adamw_ref_cases[a].params, adamw_ref_cases[b].params,
                              N_PARAMS * ADAMW_REF_STEPS) > 1e-5);
}

TEST(lr_schedules) {
    mt_lr_schedule lin = {MT_LR_LINEAR, 2.0, 2, 6};
    const double want[] = {0, 1.0, 2.0, 1.5, 1.0, 0.5, 0, 0};
    for (int done = 0; done < 8; done++) CHECK_NEAR(mt_lr_at(&lin, done), want[done], 1e-15);
    mt_lr_schedule cst = {MT_LR_CONSTANT, 3.0, 4, 0};
    CHECK_NEAR(mt_lr_at(&cst, 1), 0.75, 1e-15);
    CHECK_NEAR(mt_lr_at(&cst, 4), 3.0, 0);
    CHECK_NEAR(mt_lr_at(&cst, 1000), 3.0, 0);
    mt_lr_schedule flat = {MT_LR_CONSTANT, 1e-5, 0, 0};
    CHECK_NEAR(mt_lr_at(&flat, 0), 1e-5, 0);
    mt_lr_schedule nowarm = {MT_LR_LINEAR, 1.0, 0, 4};
    CHECK_NEAR(mt_lr_at(&nowarm, 0), 1.0, 0);
    CHECK_NEAR(mt_lr_at(&nowarm, 3), 0.25, 1e-15);
}

TEST(layerwise_lr_decay) {
    CHECK_NEAR(mt_llrd_scale(0.9, 7, 6), 1.0, 0);            // heads
    CHECK_NEAR(mt_llrd_scale(0.9, 6, 6), 0.9, 1e-15);        // top encoder layer
    CHECK_NEAR(mt_llrd_scale(0.9, 0, 6), pow(0.9, 7), 1e-15);  // embeddings
    CHECK_NEAR(mt_llrd_scale(1.0, 0, 6), 1.0, 0);
}

TEST(clip_grad_norm) {
    float g[2] = {3, 4};
    CHECK_NEAR(mt_clip_grad_norm(g, 2, 1.0), 5.0, 0);
    CHECK_NEAR(g[0], 3.0 / (5.0 + 1e-6), 1e-7);
    CHECK_NEAR(g[1], 4.0 / (5.0 + 1e-6), 1e-7);
    float h[2] = {3, 4};
    CHECK_NEAR(mt_clip_grad_norm(h, 2, 10.0), 5.0, 0);  // below max_norm: untouched
    CHECK(h[0] == 3.0f && h[1] == 4.0f);
    float z[3] = {0, 0, 0};
    CHECK_NEAR(mt_clip_grad_norm(z, 3, 1.0), 0.0, 0);
    CHECK(z[0] == 0.0f);
    float bad[2] = {NAN, 1};
    CHECK(isnan(mt_clip_grad_norm(bad, 2, 1.0)));
}

// The norm is the same bits whatever the thread count (fixed blocks, summed in order).
TEST(grad_norm_is_deterministic) {
    size_t n = 1000 * 1000 + 7;
    float *g = malloc(n * sizeof *g);
    double exact = 0;
    for (size_t i = 0; i < n; i++) {
        g[i] = (float)((i * 2654435761u % 1000) / 997.0 - 0.5);
        exact += (double)g[i] * g[i];
    }
    double one, two;
#ifdef _OPENMP
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    one = mt_grad_norm(g, n);
    omp_set_num_threads(threads > 1 ? threads : 2);
    two = mt_grad_norm(g, n);
    omp_set_num_threads(threads);
#else
    one = two = mt_grad_norm(g, n);
#endif
    CHECK(one == two);
    CHECK_NEAR(one, sqrt(exact), 1e-9 * sqrt(exact));
    free(g);
}

int main(void) {
    RUN(matches_torch_plain);
    RUN(matches_torch_weight_decay_groups);
    RUN(matches_torch_with_clipping);
    RUN(matches_torch_with_linear_schedule);
    RUN(reference_cases_differ);
    RUN(lr_schedules);
    RUN(layerwise_lr_decay);
    RUN(clip_grad_norm);
    RUN(grad_norm_is_deterministic);
    return check_summary();
}
