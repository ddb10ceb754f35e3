// evaluate — metrics of prediction streams against gold labels.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "evaluation.h"

static const char *USAGE =
    "usage: evaluate [options] [PRED...]\n"
    "\n"
    "Reads prediction streams (from 'heads'; default: one on stdin), joins them with gold\n"
    "labels, and prints per task: accuracy, macro-F1 and the confusion matrix (sst, qqp), or\n"
    "Pearson and Spearman correlation (sts), with bootstrap confidence intervals. Given one\n"
    "stream of each task it also prints the overall score\n"
    "(sst_acc + qqp_acc + (sts_r + 1) / 2) / 3.\n"
    "Gold labels come from the records (tokenize --label carries them through every stage),\n"
    "or from a TSV joined by id; ids missing on either side are an error.\n"
    "\n"
    "options:\n"
    "  --gold FILE.tsv     gold labels from this TSV (repeat: one per stream, in order)\n"
    "  --gold-col COL      its column (default: label, is_duplicate or similarity by task)\n"
    "  --format F          text (default), tsv (task, metric, value, ci_lo, ci_hi, n) or json\n"
    "  --ci N              bootstrap resamples for the 95% intervals (default 1000; 0: none)\n"
    "  --seed S            bootstrap seed (default 1)\n"
    "  --submission FILE   also write the per-example CS224N submission file (repeat: one per\n"
    "                      stream); works without gold labels (then no metrics are printed)\n"
    "  -o, --output FILE   metrics to FILE instead of stdout (written atomically)\n"
    "  -q, --quiet         no log lines;  -h, --help  this text\n"
    "\n"
    "examples:\n"
    "  set -o pipefail\n"
    "  bin/tokenize --model models/all-MiniLM-L6-v2 --pair sentence1,sentence2 --label similarity \\\n"
    "      data/sts-train.tsv | bin/embed --model models/all-MiniLM-L6-v2 --pool mean \\\n"
    "      | bin/heads --task sts --zero-shot | bin/evaluate\n"
    "  bin/evaluate runs/sst-val.pred runs/qqp-val.pred runs/sts-val.pred\n"
    "  bin/evaluate --format json --ci 2000 runs/sst-val.pred\n"
    "  bin/evaluate --gold data/sst-train.tsv --submission runs/sst-dev-output.csv runs/sst.pred\n";

#define MAX_STREAMS 16

typedef struct {
    const char *gold[MAX_STREAMS], *submission[MAX_STREAMS];
    int n_gold, n_submission;
    const char *gold_col, *format, *out_path;
    int resamples;
    uint64_t seed;
} options;

static void add_path(const char **list, int *n, const char *path, const char *opt) {
    if (*n == MAX_STREAMS) mt_die("option %s: at most %d", opt, MAX_STREAMS);
    list[(*n)++] = path;
}

static int parse_args(int argc, char **argv, options *o) {
    enum { O_GOLD = 256, O_COL, O_FMT, O_CI, O_SEED, O_SUB };
    static const struct option opts[] = {
        {"gold", required_argument, 0, O_GOLD},   {"gold-col", required_argument, 0, O_COL},
        {"format", required_argument, 0, O_FMT},  {"ci", required_argument, 0, O_CI},
        {"seed", required_argument, 0, O_SEED},   {"submission", required_argument, 0, O_SUB},
        {"output", required_argument, 0, 'o'},    {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    o->format = "text";
    o->resamples = 1000;
    o->seed = 1;
    int c;
    while ((c = getopt_long(argc, argv, "o:qh", opts, NULL)) != -1) {
        switch (c) {
        case O_GOLD: add_path(o->gold, &o->n_gold, optarg, "--gold"); break;
        case O_COL: o->gold_col = optarg; break;
        case O_FMT: o->format = optarg; break;
        case O_CI: o->resamples = (int)mt_parse_long("--ci", optarg, 0, 1000000); break;
        case O_SEED: o->seed = (uint64_t)mt_parse_long("--seed", optarg, 0, 1L << 62); break;
        case O_SUB: add_path(o->submission, &o->n_submission, optarg, "--submission"); break;
        case 'o': o->out_path = optarg; break;
        case 'q': mt_quiet = 1; break;
        case 'h': fputs(USAGE, stdout); exit(0);
        default: fputs(USAGE, stderr); exit(2);
        }
    }
    if (strcmp(o->format, "text") && strcmp(o->format, "tsv") && strcmp(o->format, "json"))
        mt_die("option --format: '%s' is not text, tsv or json", o->format);
    int n = argc > optind ? argc - optind : 1;
    if (n > MAX_STREAMS) mt_die("at most %d prediction streams", MAX_STREAMS);
    if (o->n_gold && o->n_gold != n)
        mt_die("%d --gold files for %d prediction streams: give one per stream, in order", o->n_gold, n);
    if (o->n_submission && o->n_submission != n)
        mt_die("%d --submission files for %d prediction streams: give one per stream, in order",
               o->n_submission, n);
    if (o->gold_col && !o->n_gold) mt_die("--gold-col needs --gold");
    return n;
}

int main(int argc, char **argv) {
    mt_set_prog(argv[0]);
    options o = {0};
    int n = parse_args(argc, argv, &o);
    mt_evaluation ev = {n, mt_calloc((size_t)n, sizeof(mt_task_eval)), o.resamples, o.seed, 0.95, 0, 0, {0, 0}};
    int all_gold = 1;
    for (int i = 0; i < n; i++) {
        mt_task_eval *te = &ev.t[i];
        mt_eval_load(te, argc > optind ? argv[optind + i] : "-");
        if (o.n_gold) mt_eval_gold_tsv(te, o.gold[i], o.gold_col);
        all_gold &= te->has_gold;
    }
    for (int i = 0; i < o.n_submission; i++) {
        mt_eval_write_submission(&ev.t[i], o.submission[i]);
        mt_log("wrote %s (%d rows)", o.submission[i], ev.t[i].n);
    }
    if (!all_gold && o.n_submission) {
        mt_log("no gold labels in the streams and no --gold: metrics skipped");
    } else {
        for (int i = 0; i < n; i++) mt_eval_check(&ev.t[i]);
        mt_evaluation_compute(&ev);
        mt_outfile out;
        mt_outfile_open(&out, o.out_path, 0);
        mt_evaluation_print(out.fp, &ev, o.format);
        mt_outfile_commit(&out);
    }
    mt_evaluation_free(&ev);
    return 0;
}
