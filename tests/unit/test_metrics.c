// test_metrics.c — metrics against values computed by hand (and checked with scikit-learn /
// scipy formulas), and the bootstrap intervals' coverage and determinism.
#include "check.h"
#include "metrics.h"

static const double GOLD[5] = {0, 1, 2, 2, 1}, PRED[5] = {0, 2, 2, 2, 1};

TEST(accuracy_by_hand) {
    CHECK_NEAR(mt_accuracy(GOLD, PRED, 5), 0.8, 1e-12);
    CHECK_NEAR(mt_accuracy(GOLD, GOLD, 5), 1.0, 0);
    CHECK(isnan(mt_accuracy(GOLD, PRED, 0)));
}

TEST(confusion_by_hand) {
    long cm[9];
    mt_confusion(GOLD, PRED, 5, 3, cm);
    long want[9] = {1, 0, 0,   // gold 0
                    0, 1, 1,   // gold 1: one right, one predicted 2
                    0, 0, 2};  // gold 2
    for (int i = 0; i < 9; i++) CHECK(cm[i] == want[i]);
}

TEST(macro_f1_by_hand) {
    // per class F1: 2·1/(1+1) = 1, 2·1/(2+1) = 2/3, 2·2/(2+3) = 0.8
    long cm[25];
    mt_confusion(GOLD, PRED, 5, 3, cm);
    CHECK_NEAR(mt_macro_f1(cm, 3), (1 + 2.0 / 3 + 0.8) / 3, 1e-12);
    // classes 3 and 4 occur on neither side: left out of the average, as scikit-learn does
    mt_confusion(GOLD, PRED, 5, 5, cm);
    CHECK_NEAR(mt_macro_f1(cm, 5), (1 + 2.0 / 3 + 0.8) / 3, 1e-12);
    // a class only predicted, never gold, counts with F1 0
    double g[2] = {0, 0}, p[2] = {0, 1};
    mt_confusion(g, p, 2, 2, cm);
    CHECK_NEAR(mt_macro_f1(cm, 2), (2.0 / 3 + 0) / 2, 1e-12);
}

TEST(pearson_by_hand) {
    double x[5] = {1, 2, 3, 4, 5}, y[5] = {2, 4, 5, 4, 5};
    CHECK_NEAR(mt_pearson(x, y, 5), 6 / sqrt(60.0), 1e-12);
    double neg[5] = {5, 4, 3, 2, 1}, flat[5] = {3, 3, 3, 3, 3};
    CHECK_NEAR(mt_pearson(x, neg, 5), -1, 1e-12);
    CHECK(isnan(mt_pearson(x, flat, 5)));
}

TEST(average_ranks_with_ties) {
    double x[6] = {10, 20, 10, 30, 20, 10}, r[6];
    mt_average_ranks(x, 6, r);
    double want[6] = {2, 4.5, 2, 6, 4.5, 2};
    for (int i = 0; i < 6; i++) CHECK_NEAR(r[i], want[i], 0);
}

TEST(spearman_with_ties) {
    // y ranks (1, 2.5, 4.5, 2.5, 4.5): rho = 7 / sqrt(10 · 9) (scipy: 0.7378647873726218)
    double x[5] = {1, 2, 3, 4, 5}, y[5] = {2, 4, 5, 4, 5};
    CHECK_NEAR(mt_spearman(x, y, 5), 0.7378647873726218, 1e-12);
    double sq[5] = {1, 4, 9, 16, 25};  // monotone: rho 1 while Pearson < 1
    CHECK_NEAR(mt_spearman(x, sq, 5), 1, 1e-12);
    CHECK(mt_pearson(x, sq, 5) < 0.99);
}

TEST(overall_score) {
    CHECK_NEAR(mt_overall_score(0.5, 0.9, 0.8), (0.5 + 0.9 + 0.9) / 3, 1e-12);
    CHECK_NEAR(mt_overall_score(0.529, 0.905, 0.881), 0.7920, 5e-4);  // the paper's test row
}

TEST(eval_compute_per_task) {
    mt_eval_data d = {MT_TASK_SST, 5, GOLD, PRED};
    mt_eval_metrics m;
    mt_eval_compute(&d, NULL, 0, &m);
    CHECK_NEAR(m.accuracy, 0.8, 1e-12);
    CHECK_NEAR(m.primary, 0.8, 1e-12);
    CHECK(m.confusion[1 * 5 + 2] == 1 && isnan(m.pearson));
    int idx[3] = {1, 1, 0};  // rows 1, 1, 0: two wrong, one right
    mt_eval_compute(&d, idx, 3, &m);
    CHECK_NEAR(m.accuracy, 1.0 / 3, 1e-12);
    double x[5] = {1, 2, 3, 4, 5}, y[5] = {2, 4, 5, 4, 5};
    mt_eval_data s = {MT_TASK_STS, 5, y, x};
    mt_eval_compute(&s, NULL, 0, &m);
    CHECK_NEAR(m.pearson, 6 / sqrt(60.0), 1e-12);
    CHECK_NEAR(m.primary, m.pearson, 0);
    CHECK_NEAR(m.spearman, 0.7378647873726218, 1e-12);
    CHECK(isnan(m.accuracy));
}

TEST(bootstrap_intervals) {
    enum { N = 1000 };
    static double g[N], p[N], sg[N], sp[N];
    uint64_t s = 7;
    for (int i = 0; i < N; i++) {
        g[i] = i % 2;
        p[i] = (i % 10) < 7 ? g[i] : 1 - g[i];  // exactly 70% right
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        sg[i] = (s >> 40) % 500 / 100.0;
        sp[i] = sg[i] + ((s >> 20) % 100) / 50.0;  // noisy but correlated
    }
    mt_eval_data t[3] = {{MT_TASK_QQP, N, g, p}, {MT_TASK_SST, N, g, g}, {MT_TASK_STS, N, sg, sp}};
    mt_eval_ci ci[3], ci2[3];
    mt_ci over, over2;
    mt_bootstrap(t, 3, 500, 1, 0.95, ci, &over);
    // binomial standard error sqrt(.7·.3/1000) = .0145: the 95% interval is about ±.028
    CHECK(ci[0].accuracy.lo > 0.66 && ci[0].accuracy.lo < 0.685);
    CHECK(ci[0].accuracy.hi > 0.715 && ci[0].accuracy.hi < 0.74);
    CHECK(ci[1].accuracy.lo == 1 && ci[1].accuracy.hi == 1);  // perfect predictions
    mt_eval_metrics m;
    mt_eval_compute(&t[2], NULL, 0, &m);
    CHECK(ci[2].pearson.lo < m.pearson && m.pearson < ci[2].pearson.hi);
    CHECK(ci[2].pearson.hi - ci[2].pearson.lo < 0.1);
    double point = mt_overall_score(1, 0.7, m.pearson);
    CHECK(over.lo < point && point < over.hi);
    mt_bootstrap(t, 3, 500, 1, 0.95, ci2, &over2);  // same seed, same intervals
    CHECK(ci2[2].spearman.lo == ci[2].spearman.lo && over2.hi == over.hi);
    mt_bootstrap(t, 3, 500, 2, 0.95, ci2, &over2);
    CHECK(ci2[2].pearson.lo != ci[2].pearson.lo);
}

int main(void) {
    RUN(accuracy_by_hand);
    RUN(confusion_by_hand);
    RUN(macro_f1_by_hand);
    RUN(pearson_by_hand);
    RUN(average_ranks_with_ties);
    RUN(spearman_with_ties);
    RUN(overall_score);
    RUN(eval_compute_per_task);
    RUN(bootstrap_intervals);
    return check_summary();
}
