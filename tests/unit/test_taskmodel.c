// test_taskmodel.c — the task heads and losses: finite-difference checks of every backward
// (each task, each pair model, each sentence model, with and without dropout), hand-computed
// losses, inference = training forward, heads.safetensors round trip.
#include <stdint.h>
#include <unistd.h>

#include "check.h"
#include "common.h"
#include "rng.h"
#include "taskmodel.h"

enum { C_TEST = 8, B_TEST = 3 };

typedef struct {
    int nseq, N;
    int32_t offsets[3 * B_TEST + 1];
    float *hidden;
    float labels[B_TEST];
} fixture;

// Random token states for a batch of B_TEST examples of task, lengths 1..5.
static void make_fixture(fixture *f, const mt_taskmodel *tm, int task, uint64_t seed) {
    mt_rng r;
    mt_rng_init(&r, seed, 1, 2);
    f->nseq = mt_taskmodel_sequences(tm, task, B_TEST, NULL, NULL);
    f->offsets[0] = 0;
    for (int s = 0; s < f->nseq; s++) f->offsets[s + 1] = f->offsets[s] + 1 + (int)mt_rng_below(&r, 5);
    f->N = f->offsets[f->nseq];
    f->hidden = mt_malloc((size_t)f->N * C_TEST * sizeof(float));
    for (int i = 0; i < f->N * C_TEST; i++) f->hidden[i] = 2.0f * mt_rng_uniform(&r) - 1.0f;
    for (int b = 0; b < B_TEST; b++)
        f->labels[b] = task == MT_TASK_SST ? (float)(b % 5) : task == MT_TASK_QQP ? (float)(b & 1) : 1.7f * b;
}

static mt_taskmodel new_model(int kind, int pair) {
    mt_sentence_config sc = mt_sentence_default_config((mt_sentence_kind)kind, C_TEST, 3, 4);
    mt_taskmodel tm;
    mt_taskmodel_init(&tm, &sc, (mt_pair_model)pair, 7);
    for (size_t i = 0; i < tm.n_params; i++) tm.params[i] *= 3.0f;  // larger weights: larger gradients
    return tm;
}

static double loss_at(mt_taskmodel *tm, mt_tm_acts *a, int task, fixture *f, const mt_tm_dropout *drop) {
    return mt_taskmodel_forward(tm, a, task, f->hidden, f->offsets, B_TEST, f->labels, drop);
}

// Central differences of the loss against the analytic gradient at every element of x[n].
static int fd_check(mt_taskmodel *tm, mt_tm_acts *a, int task, fixture *f, const mt_tm_dropout *drop,
                    float *x, const float *grad, size_t n, const char *what) {
    const float eps = 1e-3f;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + eps;
        double lp = loss_at(tm, a, task, f, drop);
        x[i] = keep - eps;
        double lm = loss_at(tm, a, task, f, drop);
        x[i] = keep;
        double fd = (lp - lm) / (2 * eps), tol = 5e-4 + 3e-3 * fabs(fd);
        if (fabs(fd - grad[i]) > tol && bad++ < 3)
            printf("# %s %s[%zu]: finite difference %.6g, backward %.6g\n", mt_task_name(task), what, i, fd, grad[i]);
    }
    return bad;
}

static void check_gradients(int kind, int pair, int task, float p) {
    mt_taskmodel tm = new_model(kind, pair);
    fixture f;
    make_fixture(&f, &tm, task, 11 + (uint64_t)task);
    mt_tm_acts a = {0};
    mt_tm_dropout drop = {p, 99, 5, 1};
    float *dh = mt_malloc((size_t)f.N * C_TEST * sizeof(float));
    float *dp = mt_calloc(tm.n_params, sizeof(float));
    double loss = loss_at(&tm, &a, task, &f, &drop);
    CHECK(isfinite(loss) && loss > 0);
    mt_taskmodel_backward(&tm, &a, dh, dp, dp + tm.n_sent, 1.0f);
    int bad = fd_check(&tm, &a, task, &f, &drop, f.hidden, dh, (size_t)f.N * C_TEST, "hidden");
    bad += fd_check(&tm, &a, task, &f, &drop, tm.params, dp, tm.n_params, "params");
    if (bad) printf("# sentence %s, pair %s, p %g: %d bad gradients\n", mt_sentence_kind_name(kind), mt_pair_model_name(pair), p, bad);
    CHECK(bad == 0);
    free(dh), free(dp), free(f.hidden);
    mt_tm_acts_free(&a);
    mt_taskmodel_free(&tm);
}

TEST(gradients_sst) {
    for (int kind = 0; kind < 3; kind++)
        for (int drop = 0; drop < 2; drop++) check_gradients(kind, MT_PAIR_ENSEMBLE, MT_TASK_SST, drop ? 0.3f : 0.0f);
}

TEST(gradients_qqp_each_pair_model) {
    for (int pair = 0; pair < 3; pair++)
        for (int drop = 0; drop < 2; drop++) check_gradients(MT_SENT_MEAN, pair, MT_TASK_QQP, drop ? 0.3f : 0.0f);
    check_gradients(MT_SENT_CLS, MT_PAIR_ENSEMBLE, MT_TASK_QQP, 0.2f);
    check_gradients(MT_SENT_SBERT_CNN_BILSTM, MT_PAIR_ENSEMBLE, MT_TASK_QQP, 0.2f);
}

TEST(gradients_sts_each_pair_model) {
    for (int pair = 0; pair < 3; pair++)
        for (int drop = 0; drop < 2; drop++) check_gradients(MT_SENT_MEAN, pair, MT_TASK_STS, drop ? 0.3f : 0.0f);
    check_gradients(MT_SENT_CLS, MT_PAIR_BI, MT_TASK_STS, 0.0f);
    check_gradients(MT_SENT_SBERT_CNN_BILSTM, MT_PAIR_ENSEMBLE, MT_TASK_STS, 0.2f);
}

// With zero head weights the losses have closed forms.
TEST(losses_by_hand) {
    mt_taskmodel tm = new_model(MT_SENT_MEAN, MT_PAIR_CROSS);
    memset(tm.params, 0, tm.n_params * sizeof(float));
    mt_tm_acts a = {0};
    fixture f;
    make_fixture(&f, &tm, MT_TASK_SST, 3);
    CHECK_NEAR(loss_at(&tm, &a, MT_TASK_SST, &f, NULL), log(5.0), 1e-6);  // uniform over 5 classes
    free(f.hidden);
    make_fixture(&f, &tm, MT_TASK_QQP, 3);
    CHECK_NEAR(loss_at(&tm, &a, MT_TASK_QQP, &f, NULL), log(2.0), 1e-6);  // sigmoid(0) = 1/2
    tm.w.head[MT_TM_QQP_CROSS_B][0] = 2.0f;  // z = 2 for all: labels 0,1,0
    double want = (2 * log1p(exp(2.0)) + log1p(exp(-2.0))) / 3;
    CHECK_NEAR(loss_at(&tm, &a, MT_TASK_QQP, &f, NULL), want, 1e-6);
    free(f.hidden);
    make_fixture(&f, &tm, MT_TASK_STS, 3);
    tm.w.head[MT_TM_STS_CROSS_B][0] = 1.0f;  // s = 1 for all: labels 0, 1.7, 3.4
    CHECK_NEAR(loss_at(&tm, &a, MT_TASK_STS, &f, NULL), (1.0 + 0.49 + 2.4 * 2.4) / 3, 1e-5);
    free(f.hidden);
    mt_tm_acts_free(&a);
    mt_taskmodel_free(&tm);
}

// STS bi-encoder: identical sentences score 5, opposite ones 0.
TEST(sts_cosine_score_range) {
    mt_taskmodel tm = new_model(MT_SENT_CLS, MT_PAIR_BI);
    float u[C_TEST], v[C_TEST], s;
    for (int c = 0; c < C_TEST; c++) u[c] = (float)(c + 1), v[c] = -u[c];
    mt_tm_predictor p;
    mt_tm_predictor_init(&p, &tm, mt_backend_cpu());
    mt_taskmodel_predict(&tm, &p, MT_TASK_STS, 1, u, u, NULL, &s);
    CHECK_NEAR(s, 5.0, 1e-5);
    mt_taskmodel_predict(&tm, &p, MT_TASK_STS, 1, u, v, NULL, &s);
    CHECK_NEAR(s, 0.0, 1e-5);
    mt_tm_predictor_free(&p);
    mt_taskmodel_free(&tm);
}

// Inference on pooled vectors, all records in one product (on the CPU, and behind device
// copies on cpu-staged), equals the training forward without dropout.
TEST(predict_matches_forward) {
    for (int pair = 0; pair < 3; pair++)
        for (int task = 0; task < MT_N_TASKS; task++) {
            mt_taskmodel tm = new_model(MT_SENT_MEAN, pair);
            fixture f;
            make_fixture(&f, &tm, task, 5);
            mt_tm_acts a = {0};
            loss_at(&tm, &a, task, &f, NULL);
            int D = tm.D, width = task == MT_TASK_SST ? MT_SST_CLASSES : 1;
            float cls[B_TEST * C_TEST], out[B_TEST * MT_SST_CLASSES];
            for (int b = 0; a.cross_first >= 0 && b < B_TEST; b++)
                memcpy(cls + b * C_TEST, f.hidden + (size_t)f.offsets[a.cross_first + b] * C_TEST, sizeof(float) * C_TEST);
            const float *eb = mt_task_is_pair(task) && a.bi_first >= 0 ? a.emb + (size_t)B_TEST * D : NULL;
            const float *ea = a.bi_first >= 0 ? a.emb : NULL;
            const mt_backend *be[2] = {mt_backend_cpu(), mt_backend_cpu_staged()};
            for (int d = 0; d < 2; d++) {
                mt_tm_predictor p;
                mt_tm_predictor_init(&p, &tm, be[d]);
                mt_taskmodel_predict(&tm, &p, task, B_TEST, ea, eb, a.cross_first >= 0 ? cls : NULL, out);
                for (int k = 0; k < B_TEST * width; k++) CHECK_NEAR(out[k], a.out[k], 1e-5);
                mt_tm_predictor_free(&p);
            }
            free(f.hidden);
            mt_tm_acts_free(&a);
            mt_taskmodel_free(&tm);
        }
}

// cpu-staged with its allocations counted.
static long staged_allocs;
static void *counted_alloc(size_t bytes) { return staged_allocs++, mt_backend_cpu_staged()->alloc(bytes); }

// The predictor keeps its backend buffers: a stream of chunks allocates when a chunk is larger
// than any before it, never per call, and gives the bits of a fresh predictor per chunk.
TEST(predict_keeps_its_buffers) {
    mt_backend counted = *mt_backend_cpu_staged();
    counted.alloc = counted_alloc;
    mt_taskmodel tm = new_model(MT_SENT_MEAN, MT_PAIR_ENSEMBLE);
    int D = tm.D, n = 6;
    float ea[6 * C_TEST], eb[6 * C_TEST], cls[6 * C_TEST], out[6], ref[6];
    mt_rng r;
    mt_rng_init(&r, 7, 0, 0);
    for (int i = 0; i < n * D; i++) ea[i] = mt_rng_uniform(&r) - 0.5f, eb[i] = mt_rng_uniform(&r) - 0.5f;
    for (int i = 0; i < n * C_TEST; i++) cls[i] = mt_rng_uniform(&r) - 0.5f;
    mt_tm_predictor p;
    mt_tm_predictor_init(&p, &tm, &counted);
    long after_init = staged_allocs;
    mt_taskmodel_predict(&tm, &p, MT_TASK_QQP, n, ea, eb, cls, out);
    long after_first = staged_allocs;
    for (int rep = 0; rep < 3; rep++)
        for (int s = 0; s < n; s += 2) mt_taskmodel_predict(&tm, &p, MT_TASK_QQP, 2, ea + s * D, eb + s * D, cls + s * C_TEST, out + s);
    CHECK(after_first - after_init <= 2 && staged_allocs == after_first);
    mt_tm_predictor_free(&p);
    for (int s = 0; s < n; s += 2) {  // a fresh predictor per chunk, as before it kept them
        mt_tm_predictor_init(&p, &tm, mt_backend_cpu_staged());
        mt_taskmodel_predict(&tm, &p, MT_TASK_QQP, 2, ea + s * D, eb + s * D, cls + s * C_TEST, ref + s);
        mt_tm_predictor_free(&p);
    }
    CHECK(!memcmp(out, ref, sizeof out));
    mt_taskmodel_free(&tm);
}

// Dropout is keyed: the same (seed, step, pass) gives the same loss, another pass another.
TEST(dropout_is_keyed) {
    mt_taskmodel tm = new_model(MT_SENT_MEAN, MT_PAIR_ENSEMBLE);
    fixture f;
    make_fixture(&f, &tm, MT_TASK_QQP, 9);
    mt_tm_acts a = {0};
    mt_tm_dropout d1 = {0.5f, 1, 2, 0}, d2 = {0.5f, 1, 2, 1};
    double l1 = loss_at(&tm, &a, MT_TASK_QQP, &f, &d1), l1b = loss_at(&tm, &a, MT_TASK_QQP, &f, &d1);
    double l2 = loss_at(&tm, &a, MT_TASK_QQP, &f, &d2), l0 = loss_at(&tm, &a, MT_TASK_QQP, &f, NULL);
    CHECK(l1 == l1b);
    CHECK(l1 != l2);
    CHECK(l1 != l0);
    free(f.hidden);
    mt_tm_acts_free(&a);
    mt_taskmodel_free(&tm);
}

TEST(save_load_round_trip) {
    char path[] = "/tmp/test_taskmodel_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    for (int kind = 0; kind < 3; kind++) {
        mt_taskmodel tm = new_model(kind, MT_PAIR_CROSS), back;
        snprintf(tm.model_fp, sizeof tm.model_fp, "0123456789abcdef");
        char err[512];
        CHECK(mt_taskmodel_save(&tm, path, err, sizeof err) == 0);
        int rc = mt_taskmodel_load(&back, path, err, sizeof err);
        if (rc) printf("# %s\n", err);
        CHECK(rc == 0);
        if (!rc) {
            CHECK(back.n_params == tm.n_params && back.pair == MT_PAIR_CROSS && back.sent.cfg.kind == tm.sent.cfg.kind);
            CHECK(memcmp(back.params, tm.params, tm.n_params * sizeof(float)) == 0);
            CHECK(!strcmp(back.model_fp, "0123456789abcdef"));
            CHECK(mt_taskmodel_find(&back, "qqp_bi.weight") >= 0);
            char again[64];  // saving what was loaded gives the same bytes (metadata included)
            snprintf(again, sizeof again, "%s.again", path);
            CHECK(mt_taskmodel_save(&back, again, err, sizeof err) == 0);
            CHECK(same_file(path, again));
            unlink(again);
            mt_taskmodel_free(&back);
        }
        mt_taskmodel_free(&tm);
    }
    char err[512];
    mt_taskmodel back;
    FILE *g = fopen(path, "wb");
    fputs("not a safetensors file", g);
    fclose(g);
    CHECK(mt_taskmodel_load(&back, path, err, sizeof err) != 0);
    unlink(path);
}

TEST(names_and_layout) {
    CHECK(mt_pair_model_parse("ensemble") == MT_PAIR_ENSEMBLE && mt_pair_model_parse("both") == -1);
    CHECK(!strcmp(mt_task_label(MT_TASK_STS), "similarity"));
    mt_taskmodel tm = new_model(MT_SENT_MEAN, MT_PAIR_ENSEMBLE);
    int bf, cf;
    CHECK(mt_taskmodel_sequences(&tm, MT_TASK_SST, 4, &bf, &cf) == 4 && bf == 0 && cf == -1);
    CHECK(mt_taskmodel_sequences(&tm, MT_TASK_QQP, 4, &bf, &cf) == 12 && bf == 0 && cf == 8);
    CHECK(tm.n_sent == 0 && tm.n_params == (size_t)(5 * C_TEST + 5 + 3 * C_TEST + 1 + 2 * (C_TEST + 1)));
    mt_taskmodel_free(&tm);
    tm = new_model(MT_SENT_MEAN, MT_PAIR_CROSS);
    CHECK(mt_taskmodel_sequences(&tm, MT_TASK_STS, 4, &bf, &cf) == 4 && bf == -1 && cf == 0);
    mt_taskmodel_free(&tm);
}

int main(void) {
    RUN(gradients_sst);
    RUN(gradients_qqp_each_pair_model);
    RUN(gradients_sts_each_pair_model);
    RUN(losses_by_hand);
    RUN(sts_cosine_score_range);
    RUN(predict_matches_forward);
    RUN(predict_keeps_its_buffers);
    RUN(dropout_is_keyed);
    RUN(save_load_round_trip);
    RUN(names_and_layout);
    return check_summary();
}
