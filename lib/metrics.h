// metrics.h — evaluation metrics for the three tasks: accuracy, macro-F1 and the confusion
// matrix (sentiment, paraphrase), Pearson and Spearman correlation (similarity), the overall
// score, and bootstrap confidence intervals (percentile method, seeded).
#ifndef MT_METRICS_H
#define MT_METRICS_H

#include <stdint.h>

#include "heads.h"  // mt_task

#define MT_MAX_CLASSES MT_SST_CLASSES

double mt_accuracy(const double *gold, const double *pred, int n);
// cm[g * k + p] counts examples of gold class g predicted as p (rows gold, columns predicted).
// Classes are the values 0..k-1; anything else is counted nowhere (callers validate first).
void mt_confusion(const double *gold, const double *pred, int n, int k, long *cm);
// Mean over classes of F1 = 2TP / (2TP + FP + FN), over the classes that occur in gold or
// predictions (as scikit-learn's f1_score(average="macro")). NAN for an empty matrix.
double mt_macro_f1(const long *cm, int k);
double mt_pearson(const double *x, const double *y, int n);   // NAN if either is constant
void mt_average_ranks(const double *x, int n, double *rank);  // ties share their mean rank (1-based)
double mt_spearman(const double *x, const double *y, int n);  // Pearson of average ranks
// (sst_acc + qqp_acc + (sts_r + 1) / 2) / 3
double mt_overall_score(double sst_acc, double qqp_acc, double sts_r);

// One task's predictions joined with gold: class indices (sst, qqp) or scores (sts).
typedef struct {
    mt_task task;
    int n;
    const double *gold, *pred;
} mt_eval_data;

typedef struct {
    double accuracy, macro_f1;  // sst, qqp
    long confusion[MT_MAX_CLASSES * MT_MAX_CLASSES];
    double pearson, spearman;   // sts
    double primary;             // accuracy (sst, qqp) or Pearson r (sts)
} mt_eval_metrics;

// Metrics over the rows idx[0..n) of d (idx NULL: all rows, n = d->n).
void mt_eval_compute(const mt_eval_data *d, const int *idx, int n, mt_eval_metrics *m);
int mt_task_classes(mt_task t);  // 5, 2, or 0 for a regression task

typedef struct {
    double lo, hi;
} mt_ci;
typedef struct {
    mt_ci accuracy, macro_f1, pearson, spearman, primary;
} mt_eval_ci;

// Bootstrap percentile intervals at `level` (e.g. 0.95) from `resamples` replicates; each
// replicate resamples every task's rows independently with replacement. ci[i] belongs to
// tasks[i]. If overall is non-NULL, tasks must be exactly sst, qqp, sts (any order) and it
// receives the interval of the overall score computed on the same replicates.
void mt_bootstrap(const mt_eval_data *tasks, int n_tasks, int resamples, uint64_t seed,
                  double level, mt_eval_ci *ci, mt_ci *overall);

#endif
