// test_simcse.c — the supervised SimCSE loss against PyTorch (tests/ref/simcse/simcse.txt.gz,
// written by tests/make_simcse_refs.py: loss and gradients for in-batch negatives, hard
// negatives, the symmetric variant and two temperatures), central differences, and the
// properties the loss must have.
#include "refs.h"
#include "rng.h"
#include "simcse.h"

#define LOSS_TOL 1e-9  // double inside; observed 6.7e-16
#define GRAD_TOL 1e-6  // float gradients; observed 2.0e-8

static void fill(float *x, size_t n, uint32_t stream) {
    mt_rng r;
    mt_rng_init(&r, 5, stream, 9);
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * mt_rng_uniform(&r) - 1.0f;
}

static void check_case(const ref_file *f, const char *name) {
    char key[96];
#define REF(what) (snprintf(key, sizeof key, "%s.%s", name, what), ref_get(f, key))
    const ref_tensor *cfg = REF("config"), *h = REF("h"), *loss = REF("loss");
    if (!cfg || !h || !loss) return;
    int neg = (int)cfg->v[0], sym = (int)cfg->v[1], B = h->shape[0], D = h->shape[1];
    float *in[3] = {0}, *grad[3];
    const char *names[3] = {"h", "hp", "hn"};
    for (int k = 0; k < 3; k++) {
        grad[k] = calloc((size_t)B * D, 4);
        if (k < 2 || neg) in[k] = ref_floats(f, (snprintf(key, sizeof key, "%s.%s", name, names[k]), key), (size_t)B * D);
    }
    mt_simcse s;
    mt_simcse_init(&s, B, D, cfg->v[2], sym);
    double got = mt_simcse_forward(&s, in[0], in[1], in[2], B);
    CHECK_NEAR(got, loss->v[0], LOSS_TOL);
    mt_simcse_backward(&s, grad[0], grad[1], grad[2], 1.0);
    for (int k = 0; k < (neg ? 3 : 2); k++) {
        snprintf(key, sizeof key, "%s.grad.%s", name, names[k]);
        const ref_tensor *r = ref_get(f, key);
        if (!r) continue;
        double d = ref_max_diff(grad[k], r, (size_t)B * D);
        if (d > GRAD_TOL) printf("# %s: max |diff| %.3g\n", key, d);
        CHECK(d <= GRAD_TOL);
    }
    mt_simcse_free(&s);
    for (int k = 0; k < 3; k++) free(in[k]), free(grad[k]);
#undef REF
}

TEST(matches_torch) {
    ref_file f;
    if (!ref_load(&f, "simcse/simcse.txt.gz")) return;
    const char *cases[] = {"inbatch", "hardneg", "symmetric", "symmetric_hardneg", "tau01_hardneg"};
    for (int i = 0; i < 5; i++) check_case(&f, cases[i]);
    ref_free(&f);
}

// Central differences over every input float; the step actually taken is the difference
// of the two perturbed floats, so input rounding does not enter.
static void check_fd(int neg, int sym, double tau) {
    enum { B = 5, D = 7 };
    float x[3][B * D], g[3][B * D] = {{0}};
    for (int k = 0; k < 3; k++) fill(x[k], B * D, 10 + k);
    for (int i = 0; i < B * D; i++) x[1][i] = 0.6f * x[0][i] + 0.4f * x[1][i];  // positives lean to anchors
    mt_simcse s;
    mt_simcse_init(&s, B, D, tau, sym);
    float *hn = neg ? x[2] : NULL;
    mt_simcse_forward(&s, x[0], x[1], hn, B);
    mt_simcse_backward(&s, g[0], g[1], neg ? g[2] : NULL, 2.0);  // dloss = 2
    int bad = 0;
    for (int k = 0; k < (neg ? 3 : 2); k++)
        for (int i = 0; i < B * D; i++) {
            float keep = x[k][i];
            x[k][i] = keep + 1e-4f;
            double up = mt_simcse_forward(&s, x[0], x[1], hn, B), hi = x[k][i];
            x[k][i] = keep - 1e-4f;
            double down = mt_simcse_forward(&s, x[0], x[1], hn, B), lo = x[k][i];
            x[k][i] = keep;
            double num = 2.0 * (up - down) / (hi - lo);
            if (fabs(num - g[k][i]) > 1e-5 + 1e-4 * fabs(num) && bad++ < 5)
                printf("# input %d[%d]: analytic %.8g numeric %.8g\n", k, i, g[k][i], num);
        }
    CHECK(bad == 0);
    mt_simcse_free(&s);
}

TEST(finite_differences) {
    check_fd(0, 0, 0.05);
    check_fd(1, 0, 0.05);
    check_fd(0, 1, 0.05);
    check_fd(1, 1, 0.1);
}

// Cosine similarity ignores scale: loss unchanged, gradient scaled by 1/4 when h is
// multiplied by 4 (exact in float);
// gradients accumulate (+=).
TEST(scale_invariance_and_accumulation) {
    enum { B = 4, D = 6 };
    float h[B * D], hp[B * D], h3[B * D], g[B * D] = {0}, gp[B * D] = {0}, g3[B * D] = {0}, gp3[B * D] = {0};
    fill(h, B * D, 1), fill(hp, B * D, 2);
    for (int i = 0; i < B * D; i++) h3[i] = 4 * h[i];
    mt_simcse s;
    mt_simcse_init(&s, B, D, MT_SIMCSE_TAU, 0);
    double l1 = mt_simcse_forward(&s, h, hp, NULL, B);
    mt_simcse_backward(&s, g, gp, NULL, 1.0);
    mt_simcse_backward(&s, g, gp, NULL, 1.0);  // twice: doubles
    double l3 = mt_simcse_forward(&s, h3, hp, NULL, B);
    mt_simcse_backward(&s, g3, gp3, NULL, 1.0);
    CHECK_NEAR(l1, l3, 1e-12);
    for (int i = 0; i < B * D; i++) {
        CHECK_NEAR(g[i], 8 * g3[i], 1e-6);
        CHECK_NEAR(gp[i], 2 * gp3[i], 1e-6);
    }
    mt_simcse_free(&s);
}

// Each anchor identical to its positive and orthogonal to the others: accuracy 1, loss
// log(1 + (B-1) e^{-1/tau}); one pair: loss 0. A zero embedding stays finite.
TEST(known_values) {
    enum { B = 3, D = 4 };
    float h[B * D] = {1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 3, 0}, g[B * D] = {0}, gp[B * D] = {0};
    mt_simcse s;
    mt_simcse_init(&s, 8, D, 0.5, 0);
    double loss = mt_simcse_forward(&s, h, h, NULL, B);
    CHECK_NEAR(loss, log(1 + 2 * exp(-2.0)), 1e-12);
    CHECK(s.accuracy == 1.0);
    CHECK(mt_simcse_forward(&s, h, h + D, NULL, 1) == 0.0);
    float z[B * D] = {0};
    loss = mt_simcse_forward(&s, z, h, NULL, B);
    mt_simcse_backward(&s, g, gp, NULL, 1.0);
    CHECK_NEAR(loss, log(3.0), 1e-12);  // all similarities 0: uniform
    int finite = 1;
    for (int i = 0; i < B * D; i++) finite &= isfinite(g[i]) && isfinite(gp[i]);
    CHECK(finite);
    mt_simcse_free(&s);
}

int main(void) {
    RUN(matches_torch);
    RUN(finite_differences);
    RUN(scale_invariance_and_accumulation);
    RUN(known_values);
    return check_summary();
}
