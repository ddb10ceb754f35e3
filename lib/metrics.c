// metrics.c — see metrics.h.
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rng.h"

double mt_accuracy(const double *gold, const double *pred, int n) {
    if (n <= 0) return NAN;
    long ok = 0;
    for (int i = 0; i < n; i++) ok += gold[i] == pred[i];
    return (double)ok / n;
}

void mt_confusion(const double *gold, const double *pred, int n, int k, long *cm) {
    memset(cm, 0, sizeof *cm * (size_t)k * k);
    for (int i = 0; i < n; i++) {
        int g = (int)gold[i], p = (int)pred[i];
        if (g >= 0 && g < k && p >= 0 && p < k) cm[g * k + p]++;
    }
}

double mt_macro_f1(const long *cm, int k) {
    double sum = 0;
    int classes = 0;
    for (int c = 0; c < k; c++) {
        long tp = cm[c * k + c], gold_c = 0, pred_c = 0;
        for (int j = 0; j < k; j++) gold_c += cm[c * k + j], pred_c += cm[j * k + c];
        if (gold_c == 0 && pred_c == 0) continue;  // class absent on both sides
        sum += 2.0 * tp / (double)(gold_c + pred_c);  // = 2TP / (2TP + FP + FN)
        classes++;
    }
    return classes ? sum / classes : NAN;
}

double mt_pearson(const double *x, const double *y, int n) {
    if (n < 2) return NAN;
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) mx += x[i], my += y[i];
    mx /= n, my /= n;
    for (int i = 0; i < n; i++) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
    }
    return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : NAN;
}

static const double *rank_keys;  // qsort has no context argument; ranks are not reentrant
static int by_key(const void *a, const void *b) {
    double x = rank_keys[*(const int *)a], y = rank_keys[*(const int *)b];
    return x < y ? -1 : x > y;
}

void mt_average_ranks(const double *x, int n, double *rank) {
    int *order = mt_malloc((size_t)n * sizeof *order);
    for (int i = 0; i < n; i++) order[i] = i;
    rank_keys = x;
    qsort(order, (size_t)n, sizeof *order, by_key);
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && x[order[j + 1]] == x[order[i]]) j++;
        double r = (i + j) / 2.0 + 1;  // positions i..j share ranks i+1..j+1
        for (int t = i; t <= j; t++) rank[order[t]] = r;
        i = j + 1;
    }
    free(order);
}

double mt_spearman(const double *x, const double *y, int n) {
    if (n < 2) return NAN;
    double *rx = mt_malloc((size_t)n * sizeof *rx), *ry = mt_malloc((size_t)n * sizeof *ry);
    mt_average_ranks(x, n, rx);
    mt_average_ranks(y, n, ry);
    double r = mt_pearson(rx, ry, n);
    free(rx);
    free(ry);
    return r;
}

double mt_overall_score(double sst_acc, double qqp_acc, double sts_r) {
    return (sst_acc + qqp_acc + (sts_r + 1) / 2) / 3;
}

int mt_task_classes(mt_task t) {
    return t == MT_TASK_SST ? MT_SST_CLASSES : t == MT_TASK_QQP ? 2 : 0;
}

void mt_eval_compute(const mt_eval_data *d, const int *idx, int n, mt_eval_metrics *m) {
    memset(m, 0, sizeof *m);
    m->accuracy = m->macro_f1 = m->pearson = m->spearman = NAN;
    const double *g = d->gold, *p = d->pred;
    double *gs = NULL, *ps = NULL;
    if (idx) {  // gather the selected rows
        gs = mt_malloc((size_t)n * sizeof *gs), ps = mt_malloc((size_t)n * sizeof *ps);
        for (int i = 0; i < n; i++) gs[i] = d->gold[idx[i]], ps[i] = d->pred[idx[i]];
        g = gs, p = ps;
    } else {
        n = d->n;
    }
    int k = mt_task_classes(d->task);
    if (k) {
        m->accuracy = m->primary = mt_accuracy(g, p, n);
        mt_confusion(g, p, n, k, m->confusion);
        m->macro_f1 = mt_macro_f1(m->confusion, k);
    } else {
        m->pearson = m->primary = mt_pearson(p, g, n);
        m->spearman = mt_spearman(p, g, n);
    }
    free(gs);
    free(ps);
}

// ---- bootstrap --------------------------------------------------------------------

static int by_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// Percentile interval of v[0..n) (sorted here; NANs dropped) with linear interpolation.
static mt_ci percentile_ci(double *v, int n, double level) {
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(v[i])) v[m++] = v[i];
    if (m == 0) return (mt_ci){NAN, NAN};
    qsort(v, (size_t)m, sizeof *v, by_double);
    double q[2] = {(1 - level) / 2, 1 - (1 - level) / 2}, out[2];
    for (int j = 0; j < 2; j++) {
        double pos = q[j] * (m - 1);
        int lo = (int)floor(pos), hi = lo + 1 < m ? lo + 1 : lo;
        out[j] = v[lo] + (pos - lo) * (v[hi] - v[lo]);
    }
    return (mt_ci){out[0], out[1]};
}

enum { M_ACC, M_F1, M_PEARSON, M_SPEARMAN, M_PRIMARY, N_METRICS };

void mt_bootstrap(const mt_eval_data *tasks, int n_tasks, int resamples, uint64_t seed,
                  double level, mt_eval_ci *ci, mt_ci *overall) {
    int B = resamples;
    double *rep = mt_malloc(sizeof *rep * (size_t)B * n_tasks * N_METRICS);
    double *over = mt_malloc(sizeof *over * (size_t)B);
    int max_n = 1;
    for (int t = 0; t < n_tasks; t++) max_n = tasks[t].n > max_n ? tasks[t].n : max_n;
    int *idx = mt_malloc(sizeof *idx * (size_t)max_n);
    uint64_t rng = seed;
    for (int b = 0; b < B; b++) {
        double primary[MT_N_TASKS] = {NAN, NAN, NAN};
        for (int t = 0; t < n_tasks; t++) {
            int n = tasks[t].n;
            for (int i = 0; i < n; i++) idx[i] = (int)(mt_splitmix64(&rng) % (uint64_t)n);
            mt_eval_metrics m;
            mt_eval_compute(&tasks[t], idx, n, &m);
            double *r = rep + ((size_t)t * N_METRICS) * B;
            r[M_ACC * B + b] = m.accuracy, r[M_F1 * B + b] = m.macro_f1;
            r[M_PEARSON * B + b] = m.pearson, r[M_SPEARMAN * B + b] = m.spearman;
            r[M_PRIMARY * B + b] = m.primary;
            primary[tasks[t].task] = m.primary;
        }
        over[b] = mt_overall_score(primary[MT_TASK_SST], primary[MT_TASK_QQP], primary[MT_TASK_STS]);
    }
    for (int t = 0; t < n_tasks; t++) {
        double *r = rep + ((size_t)t * N_METRICS) * B;
        ci[t].accuracy = percentile_ci(r + M_ACC * B, B, level);
        ci[t].macro_f1 = percentile_ci(r + M_F1 * B, B, level);
        ci[t].pearson = percentile_ci(r + M_PEARSON * B, B, level);
        ci[t].spearman = percentile_ci(r + M_SPEARMAN * B, B, level);
        ci[t].primary = percentile_ci(r + M_PRIMARY * B, B, level);
    }
    if (overall) *overall = percentile_ci(over, B, level);
    free(rep);
    free(over);
    free(idx);
}
