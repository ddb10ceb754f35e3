// evaluation.h — what `evaluate` does, as library calls: load prediction streams, join them
// with gold labels, compute metrics with bootstrap intervals, and print them (text, TSV,
// JSON) or write CS224N submission files. The loaded per-example data (ids, gold, pred) are
// kept so that later outputs (plots, error tables for --report) can be added beside these.
#ifndef MT_EVALUATION_H
#define MT_EVALUATION_H

#include <stdint.h>
#include <stdio.h>

#include "metrics.h"
#include "stream.h"

typedef struct {
    char *path;    // the prediction stream
    mt_task task;  // from its header
    mt_meta meta;  // its header (model_fp, head, pool, ... for reports)
    int n;
    char **ids;
    double *gold, *pred;  // pred: class (sst, qqp) or score (sts)
    double *conf;         // sst: probability of the predicted class; qqp: probability of a
                          // duplicate; sts: NAN. NAN too where the stream carries none.
    int has_gold;
    mt_eval_metrics m;
    mt_eval_ci ci;
} mt_task_eval;

typedef struct {
    int n;
    mt_task_eval *t;
    int resamples;  // bootstrap replicates; 0: no intervals
    uint64_t seed;
    double level;
    int has_overall;  // exactly one stream of each task
    double overall;
    mt_ci overall_ci;
} mt_evaluation;

// Reads a prediction stream (kind=predictions, from 'heads'); gold comes from the records'
// labels when they carry the task's label. Dies with a clear message on any error.
void mt_eval_load(mt_task_eval *te, const char *path);
// Replaces the gold values with column `col` (NULL: the task's label name) of a TSV, joined
// by id; dies if ids are missing on either side, naming the first few.
void mt_eval_gold_tsv(mt_task_eval *te, const char *tsv, const char *col);
// Dies unless every example has gold, and gold and predictions are valid for the task.
void mt_eval_check(const mt_task_eval *te);
// Metrics, intervals and the overall score for all loaded streams.
void mt_evaluation_compute(mt_evaluation *ev);
// format: "text", "tsv" or "json"; returns -1 for an unknown format.
int mt_evaluation_print(FILE *f, const mt_evaluation *ev, const char *format);
// CS224N minbert submission layout (the starter code's writer, byte for byte):
//   "id \t Predicted_Sentiment \n" then "<id> , <pred> \n" per example (Predicted_Is_Paraphrase,
//   Predicted_Similiarity — the starter's spelling — for the other tasks). Atomic.
void mt_eval_write_submission(const mt_task_eval *te, const char *path);
void mt_evaluation_free(mt_evaluation *ev);

// The metrics a task reports, in order: key (tsv/json) and label (reports); returns the count.
typedef struct {
    const char *key, *label;
    double value;
    mt_ci ci;
} mt_metric_row;
int mt_metric_rows(const mt_task_eval *te, mt_metric_row *rows);

#endif
