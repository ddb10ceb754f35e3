// test_heads.c — pair features, cosine, losses and their gradients (finite differences),
// fitting on separable synthetic data, determinism, and head file round trips.
#include <stdint.h>
#include <unistd.h>

#include "check.h"
#include "common.h"
#include "heads.h"
#include "safetensors.h"

static uint64_t rng_state = 42;
static double uniform(void) {  // xorshift64*, in (0, 1)
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return ((rng_state * 2685821657736338717ULL) >> 11) * (1.0 / 9007199254740992.0) + 1e-12;
}
static double gauss(void) { return sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform()); }

TEST(pair_features_layout) {
    float u[2] = {1, -2}, v[2] = {3, 0.5f}, out[8];
    mt_pair_features(u, v, 2, out);
    float want[8] = {1, -2, 3, 0.5f, 2, 2.5f, 3, -1};
    for (int i = 0; i < 8; i++) CHECK_NEAR(out[i], want[i], 0);
}

TEST(cosine_and_zero_shot) {
    float a[3] = {1, 0, 0}, b[3] = {1, 1, 0}, c[3] = {-1, 0, 0}, z[3] = {0, 0, 0};
    CHECK_NEAR(mt_cosine(a, b, 3), 1 / sqrt(2.0), 1e-6);
    CHECK_NEAR(mt_cosine(a, c, 3), -1, 1e-6);
    CHECK_NEAR(mt_cosine(a, z, 3), 0, 0);
    CHECK_NEAR(mt_zero_shot_score(1), 5, 0);
    CHECK_NEAR(mt_zero_shot_score(0.5f), 2.5, 1e-6);
    CHECK_NEAR(mt_zero_shot_score(-0.3f), 0, 0);
}

TEST(feature_specs) {
    unsigned m;
    CHECK(mt_features_parse("pair,cos", &m) == 0 && m == (MT_FEAT_PAIR | MT_FEAT_COS));
    CHECK(mt_features_parse("emb", &m) == 0 && m == MT_FEAT_EMB);
    CHECK(mt_features_parse("pair,bogus", &m) == -1);
    CHECK(mt_features_parse("", &m) == -1);
    char s[64];
    mt_features_format(MT_FEAT_CLS | MT_FEAT_PAIR, s, sizeof s);
    CHECK(strcmp(s, "pair,cls") == 0);
    CHECK(mt_features_dim(MT_FEAT_PAIR | MT_FEAT_COS | MT_FEAT_CLS, 10) == 51);
}

TEST(features_from_record) {
    mt_record r = {0};
    mt_record_set_id(&r, "x");
    float *a = mt_record_add1(&r, "emb_a", MT_F32, 2)->data;
    a[0] = 3, a[1] = 4;
    float out[16];
    const char *err = NULL;
    CHECK(mt_features_from_record(MT_FEAT_EMB, 2, &r, out, &err) == 0);
    CHECK_NEAR(out[1], 4, 0);
    CHECK(mt_features_from_record(MT_FEAT_PAIR, 2, &r, out, &err) == -1);
    CHECK(err && strstr(err, "emb_b"));
    CHECK(mt_features_from_record(MT_FEAT_EMB, 3, &r, out, &err) == -1);  // wrong size
    float *b = mt_record_add1(&r, "emb_b", MT_F32, 2)->data;
    b[0] = 4, b[1] = -3;
    CHECK(mt_features_from_record(MT_FEAT_PAIR | MT_FEAT_COS, 2, &r, out, &err) == 0);
    CHECK_NEAR(out[4], 1, 0);     // |3 - 4|
    CHECK_NEAR(out[7], -12, 0);   // 4 * -3
    CHECK_NEAR(out[8], 0, 1e-7);  // orthogonal
    mt_record_free(&r);
}

// rows[n] copied into be's memory (free with be->free).
static float *on_backend(const mt_backend *be, const float *rows, size_t n) {
    float *d = be->alloc(n * sizeof *d);
    be->copy_to_device(d, rows, n * sizeof *d);
    return d;
}

// Central finite differences of mt_head_loss against its analytic gradient, for W and b, on
// backend be with cap rows per product (cap < n: the gradient added up over chunks).
static void gradient_check(mt_task task, const mt_backend *be, int cap) {
    const int n = 7, H = 3;
    mt_head *h = mt_head_new(task, MT_FEAT_EMB, H);
    float x[7 * 3], y[7];
    for (int i = 0; i < n * H; i++) x[i] = (float)gauss();
    for (int i = 0; i < n; i++)
        y[i] = task == MT_TASK_SST ? i % 5 : task == MT_TASK_QQP ? i % 2 : (float)(5 * uniform());
    for (int j = 0; j < h->k * H; j++) h->w[j] = (float)(0.5 * gauss());
    for (int k = 0; k < h->k; k++) h->b[k] = (float)(0.3 * gauss());
    float gw[5 * 3], gb[5], *xs = on_backend(be, x, (size_t)n * H);
    mt_head_dev d;
    mt_head_dev_init(&d, h, be, cap);
    const double l2 = 0.3, eps = 1e-2;
    mt_head_loss(h, &d, xs, y, n, l2, gw, gb);
    for (int j = 0; j < h->k * H + h->k; j++) {
        float *p = j < h->k * H ? &h->w[j] : &h->b[j - h->k * H];
        float g = j < h->k * H ? gw[j] : gb[j - h->k * H], saved = *p;
        *p = saved + (float)eps;
        double lp = mt_head_loss(h, &d, xs, y, n, l2, NULL, NULL);
        *p = saved - (float)eps;
        double lm = mt_head_loss(h, &d, xs, y, n, l2, NULL, NULL);
        *p = saved;
        CHECK_NEAR(g, (lp - lm) / (2 * eps), 2e-3 + 1e-3 * fabs(g));
    }
    mt_head_dev_free(&d);
    be->free(xs);
    mt_head_free(h);
}
TEST(gradient_softmax) { gradient_check(MT_TASK_SST, mt_backend_cpu(), 7); }
TEST(gradient_logistic) { gradient_check(MT_TASK_QQP, mt_backend_cpu(), 7); }
TEST(gradient_linear) { gradient_check(MT_TASK_STS, mt_backend_cpu(), 7); }
TEST(gradient_staged_in_chunks) {  // device copies, and dW added up over products of 3 rows
    for (int t = 0; t < MT_N_TASKS; t++) gradient_check((mt_task)t, mt_backend_cpu_staged(), 3);
}

// mt_head_loss on one host row (the CPU backend reads host memory).
static double loss1(const mt_head *h, const float *x, const float *y, double l2) {
    mt_head_dev d;
    mt_head_dev_init(&d, h, mt_backend_cpu(), 1);
    double l = mt_head_loss(h, &d, x, y, 1, l2, NULL, NULL);
    mt_head_dev_free(&d);
    return l;
}

TEST(loss_values_by_hand) {
    // One row x = [1, 2] (already standard), W = [0.5, -1], b = 0.25 -> z = -1.25.
    mt_head *h = mt_head_new(MT_TASK_QQP, MT_FEAT_EMB, 2);
    float x[2] = {1, 2}, y1 = 1, y0 = 0;
    h->w[0] = 0.5f, h->w[1] = -1, h->b[0] = 0.25f;
    CHECK_NEAR(loss1(h, x, &y1, 0), log(1 + exp(1.25)), 1e-6);
    CHECK_NEAR(loss1(h, x, &y0, 0), log(1 + exp(-1.25)), 1e-6);
    CHECK_NEAR(loss1(h, x, &y0, 2), log(1 + exp(-1.25)) + 1.25, 1e-6);
    mt_head_free(h);
    h = mt_head_new(MT_TASK_STS, MT_FEAT_EMB, 2);
    h->w[0] = 1, h->w[1] = 1, h->b[0] = 0;
    float s = 1;
    CHECK_NEAR(loss1(h, x, &s, 0), 0.5 * 4, 1e-6);  // z = 3
    mt_head_free(h);
}

// Synthetic single-sentence data: 5 Gaussian clusters in H dims, well separated.
static void make_sst(int n, int H, float *x, float *y) {
    float mu[5][32];
    for (int c = 0; c < 5; c++)
        for (int j = 0; j < H; j++) mu[c][j] = (float)(2 * gauss());
    for (int i = 0; i < n; i++) {
        int c = i % 5;
        y[i] = c;
        for (int j = 0; j < H; j++) x[i * H + j] = mu[c][j] + (float)(0.7 * gauss()) + 3;
    }
}

static void fit_and_check(mt_head *h, float *x, const float *y, int n, double want) {
    mt_fit_opts o;
    mt_fit_opts_default(&o);
    o.lr = 0.01;
    mt_fit_report rep;
    mt_head_fit(h, mt_backend_cpu(), x, y, n, &o, &rep);
    CHECK(rep.n_held == n / 10 && rep.n_train == n - n / 10);
    CHECK(rep.best_epoch >= 1);
    CHECK(rep.held_metric >= want);
    CHECK(rep.train_metric >= want);
    if (!(rep.held_metric >= want))
        printf("# %s held-out metric %.4f < %.2f\n", mt_task_name(h->task), rep.held_metric, want);
}

TEST(fit_softmax_separable) {
    const int n = 1000, H = 16;
    float *x = malloc(sizeof(float) * n * H), y[1000];
    make_sst(n, H, x, y);
    mt_head *h = mt_head_new(MT_TASK_SST, MT_FEAT_EMB, H);
    fit_and_check(h, x, y, n, 0.97);
    mt_head_free(h);
    free(x);
}

// Pairs: duplicates are v = u + small noise, non-duplicates an independent v.
TEST(fit_logistic_pairs) {
    const int n = 1200, H = 8, D = 4 * H;
    float *x = malloc(sizeof(float) * n * D), y[1200], u[8], v[8];
    for (int i = 0; i < n; i++) {
        y[i] = i % 2;
        for (int j = 0; j < H; j++) {
            u[j] = (float)gauss();
            v[j] = y[i] ? u[j] + (float)(0.1 * gauss()) : (float)gauss();
        }
        mt_pair_features(u, v, H, x + (size_t)i * D);
    }
    mt_head *h = mt_head_new(MT_TASK_QQP, MT_FEAT_PAIR, H);
    fit_and_check(h, x, y, n, 0.9);
    mt_head_free(h);
    free(x);
}

TEST(fit_linear_regression) {
    const int n = 800, H = 10;
    float *x = malloc(sizeof(float) * n * H), y[800], w[10];
    for (int j = 0; j < H; j++) w[j] = (float)gauss();
    for (int i = 0; i < n; i++) {
        double s = 2.5;
        for (int j = 0; j < H; j++) s += 0.3 * w[j] * (x[i * H + j] = (float)gauss());
        y[i] = (float)(s + 0.1 * gauss());
        y[i] = y[i] < 0 ? 0 : y[i] > 5 ? 5 : y[i];
    }
    mt_head *h = mt_head_new(MT_TASK_STS, MT_FEAT_EMB, H);
    fit_and_check(h, x, y, n, 0.95);
    mt_head_free(h);
    free(x);
}

// Fits a fresh 5-class head on a copy of raw[n, H] (the fit standardises its input in place).
static mt_head *fit_copy_on(const mt_backend *be, const float *raw, const float *y, int n, int H, uint64_t seed) {
    float *x = malloc(sizeof(float) * n * H);
    memcpy(x, raw, sizeof(float) * n * H);
    mt_fit_opts o;
    mt_fit_opts_default(&o);
    o.epochs = 5;
    o.seed = seed;
    mt_fit_report rep;
    mt_head *h = mt_head_new(MT_TASK_SST, MT_FEAT_EMB, H);
    mt_head_fit(h, be, x, y, n, &o, &rep);
    free(x);
    return h;
}
static mt_head *fit_copy(const float *raw, const float *y, int n, int H, uint64_t seed) {
    return fit_copy_on(mt_backend_cpu(), raw, y, n, H, seed);
}

TEST(fit_is_deterministic_by_seed) {
    const int n = 300, H = 6;
    float *raw = malloc(sizeof(float) * n * H), y[300];
    make_sst(n, H, raw, y);
    mt_head *a = fit_copy(raw, y, n, H, 1), *b = fit_copy(raw, y, n, H, 1), *c = fit_copy(raw, y, n, H, 2);
    CHECK(memcmp(a->w, b->w, sizeof(float) * 5 * H) == 0);
    CHECK(memcmp(a->mean, b->mean, sizeof(float) * H) == 0);
    CHECK(memcmp(a->w, c->w, sizeof(float) * 5 * H) != 0);    // other shuffles
    CHECK(memcmp(a->mean, c->mean, sizeof(float) * H) != 0);  // other held-out rows
    mt_head_free(a), mt_head_free(b), mt_head_free(c), free(raw);
}

// The device code path (cpu-staged: CPU ops behind explicit copies) gives the CPU's bits, and
// prediction in products of 7 rows agrees with one product of all of them.
TEST(staged_backend_and_chunks_agree) {
    const int n = 300, H = 6;
    float *raw = malloc(sizeof(float) * n * H), y[300];
    make_sst(n, H, raw, y);
    mt_head *a = fit_copy(raw, y, n, H, 1), *b = fit_copy_on(mt_backend_cpu_staged(), raw, y, n, H, 1);
    CHECK(memcmp(a->w, b->w, sizeof(float) * 5 * H) == 0 && memcmp(a->b, b->b, sizeof(float) * 5) == 0);
    float *x1 = malloc(sizeof(float) * n * H), *x2 = malloc(sizeof(float) * n * H);
    float *o1 = malloc(sizeof(float) * n * 5), *o2 = malloc(sizeof(float) * n * 5), p1[300], p2[300];
    memcpy(x1, raw, sizeof(float) * n * H), memcpy(x2, raw, sizeof(float) * n * H);
    mt_head_dev d1, d2;
    mt_head_dev_init(&d1, a, mt_backend_cpu(), n);
    mt_head_dev_init(&d2, a, mt_backend_cpu_staged(), 7);
    mt_head_predict(a, &d1, x1, n, o1, p1);
    for (int s = 0; s < n; s += 7) {
        int m = n - s < 7 ? n - s : 7;
        mt_head_predict(a, &d2, x2 + (size_t)s * H, m, o2 + (size_t)s * 5, p2 + s);
    }
    double worst = 0;
    for (int i = 0; i < n * 5; i++) worst = fmax(worst, fabs(o1[i] - o2[i]));
    CHECK_NEAR(worst, 0, 1e-6);
    mt_head_dev_free(&d1), mt_head_dev_free(&d2);
    mt_head_free(a), mt_head_free(b), free(raw), free(x1), free(x2), free(o1), free(o2);
}

TEST(save_load_round_trip) {
    const int H = 4;
    mt_head *h = mt_head_new(MT_TASK_STS, MT_FEAT_PAIR | MT_FEAT_COS, H);
    for (int j = 0; j < h->dim; j++) {
        h->w[j] = (float)gauss();
        h->mean[j] = (float)gauss();
        h->scale[j] = (float)(1 + uniform());
    }
    h->b[0] = 1.5f;
    strcpy(h->model_fp, "00112233aabbccdd");
    strcpy(h->pool, "mean");
    char path[] = "/tmp/test_heads_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    mt_head_save(path, h);
    mt_head *g = mt_head_load(path);
    CHECK(g->task == MT_TASK_STS && g->features == h->features && g->hidden == H && g->dim == 17);
    CHECK(memcmp(g->w, h->w, sizeof(float) * 17) == 0);
    CHECK(memcmp(g->mean, h->mean, sizeof(float) * 17) == 0);
    CHECK(memcmp(g->scale, h->scale, sizeof(float) * 17) == 0);
    CHECK(g->b[0] == 1.5f);
    CHECK(strcmp(g->model_fp, h->model_fp) == 0 && strcmp(g->pool, "mean") == 0);
    float x[17], x2[17], out1, out2, p1, p2;
    for (int j = 0; j < 17; j++) x2[j] = x[j] = (float)gauss();
    mt_head_dev d;
    mt_head_dev_init(&d, h, mt_backend_cpu(), 1);
    mt_head_predict(h, &d, x, 1, &out1, &p1);
    mt_head_predict(g, &d, x2, 1, &out2, &p2);
    mt_head_dev_free(&d);
    CHECK(out1 == out2 && p1 == p2);
    mt_head_free(g);
    mt_head_free(h);
    unlink(path);
}

// A head file is a safetensors file with the head's metadata; every truncation and a
// corrupt header are refused by the reader instead of crashing.
TEST(head_file_rejects_damage) {
    mt_head *h = mt_head_new(MT_TASK_SST, MT_FEAT_EMB, 3);
    char path[] = "/tmp/test_heads_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    mt_head_save(path, h);
    FILE *f = fopen(path, "rb");
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    mt_safetensors st;
    char err[512], kind[32] = "";
    CHECK(mt_safetensors_open(&st, path, err, sizeof err) == 0 && st.n == 4);
    CHECK(mt_safetensors_meta(&st, "kind", kind, sizeof kind) && strcmp(kind, "mtbert-head") == 0);
    mt_safetensors_close(&st);
    for (size_t cut = 0; cut < n; cut += 7) {  // every truncation is refused
        f = fopen(path, "wb");
        fwrite(buf, 1, cut, f);
        fclose(f);
        int rc = mt_safetensors_open(&st, path, err, sizeof err);
        CHECK(rc == -1);
        if (rc == 0) mt_safetensors_close(&st);
    }
    buf[20] = '#';  // corrupt the JSON
    f = fopen(path, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
    CHECK(mt_safetensors_open(&st, path, err, sizeof err) == -1);
    unlink(path);
    CHECK(mt_safetensors_open(&st, path, err, sizeof err) == -1 && strstr(err, path));
    mt_head_free(h);
}

int main(void) {
    RUN(pair_features_layout);
    RUN(cosine_and_zero_shot);
    RUN(feature_specs);
    RUN(features_from_record);
    RUN(gradient_softmax);
    RUN(gradient_logistic);
    RUN(gradient_linear);
    RUN(gradient_staged_in_chunks);
    RUN(loss_values_by_hand);
    RUN(fit_softmax_separable);
    RUN(fit_logistic_pairs);
    RUN(fit_linear_regression);
    RUN(fit_is_deterministic_by_seed);
    RUN(staged_backend_and_chunks_agree);
    RUN(save_load_round_trip);
    RUN(head_file_rejects_damage);
    return check_summary();
}
