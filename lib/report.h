// report.h — `evaluate --report DIR`: the analysis report of an evaluation, as files a
// person opens. For each prediction stream:
//   sst, qqp   <stem>-confusion.svg   confusion matrix heat map (counts and row shares)
//   sts        <stem>-scatter.svg     predicted vs gold similarity, y = x line
//   all        <stem>-errors.tsv      the largest errors in both directions
// and index.md (Markdown) and index.html (self-contained: SVGs inlined) with the metric
// table, the plots and the error tables. <stem> is the task name ("sst"; "sst-2" for a
// second stream of the same task). Every file is written atomically (mt_outfile).
//
// Sentences for the error tables come from a task TSV joined by id (mt_texts_read).
#ifndef MT_REPORT_H
#define MT_REPORT_H

#include <stdio.h>

#include "evaluation.h"

// Sentences of one stream's examples, parallel to its ids. b is NULL for single sentences.
typedef struct {
    char **a, **b;
    int n;
} mt_texts;

// Reads the TSV's `sentence` column, or `sentence1` and `sentence2`, and joins it to te's
// ids by the `id` column (or the data line number when there is none, as tokenize does).
// Rows of other ids are ignored. Dies naming the first ids of te that the TSV lacks.
void mt_texts_read(const mt_task_eval *te, const char *tsv, mt_texts *tx);
void mt_texts_free(mt_texts *tx);

// Creates dir (and its parents) unless it exists; dies unless it is a writable directory.
// mt_report_write calls it too; call it early to fail before any work is done.
void mt_report_prepare_dir(const char *dir);
// Writes the report into dir (created if missing). texts: one per stream of ev, or NULL;
// an entry with a == NULL has no sentences (tables show ids only). top: rows per table.
// The evaluation must be computed (mt_evaluation_compute). Dies on any error.
void mt_report_write(const mt_evaluation *ev, const mt_texts *texts, const char *dir, int top);

// ---- pure parts, exposed for the unit tests ------------------------------------------

// Signed difference per example that the error tables rank, and a tie-breaker:
//   sst: predicted − gold class; tie: probability of the predicted class
//   qqp: p(duplicate) − gold for misclassified pairs (pred − gold when the stream has no
//        probability), 0 for correct ones; tie: none (NAN)
//   sts: predicted − gold score; tie: none
void mt_error_differences(const mt_task_eval *te, double *diff, double *tie);

// The examples with sign(diff) == sign (+1 or −1), largest |diff| first, then larger tie
// (NAN last), then lower index; at most max of them into out. Returns how many were written.
int mt_rank_errors(const double *diff, const double *tie, int n, int sign, int *out, int max);

// Text escaped for XML/HTML content and attributes (& < > " '); ASCII control characters
// (tabs, newlines) become spaces, since XML 1.0 forbids most of them.
void mt_write_xml_escaped(FILE *f, const char *s);
// Text for one Markdown table cell: | and Markdown punctuation backslash-escaped, < > &
// as entities, newlines and tabs as spaces, so it cannot break the row or inject markup.
void mt_write_md_escaped(FILE *f, const char *s);

#endif
