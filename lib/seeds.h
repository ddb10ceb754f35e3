// seeds.h — `evaluate --over-seeds`: the same task evaluated in runs that differ only by
// seed, summarised per task and metric as mean ± sample standard deviation (n − 1), with
// min and max; the form of the single-task baselines table (SEEDS=10).
#ifndef MT_SEEDS_H
#define MT_SEEDS_H

#include <stdio.h>

#include "evaluation.h"

// Mean and sample standard deviation (divisor n − 1) of x[0..n); sd is NAN when n < 2,
// both are NAN when n < 1.
void mt_mean_std(const double *x, int n, double *mean, double *sd);

// Prints the summary of the computed streams of ev, grouped by task in the order tasks
// first appear. format: "text", "tsv" (task, metric, mean, std, runs, min, max) or "json".
// Logs a note on stderr when streams of one task are not on the same example ids.
void mt_seeds_print(FILE *f, const mt_evaluation *ev, const char *format);

#endif
