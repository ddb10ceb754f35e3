// seeds.c — see seeds.h.
#include "seeds.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gold.h"
#include "json.h"

void mt_mean_std(const double *x, int n, double *mean, double *sd) {
    *mean = *sd = NAN;
    if (n < 1) return;
    double m = 0;
    for (int i = 0; i < n; i++) m += x[i];
    m /= n;
    *mean = m;
    if (n < 2) return;
    double ss = 0;  // two passes: no cancellation for values close together (as seeds are)
    for (int i = 0; i < n; i++) ss += (x[i] - m) * (x[i] - m);
    *sd = sqrt(ss / (n - 1));
}

typedef struct {
    const char *name;
    double mean, sd, min, max;
} seed_metric;

// Metric j (0, 1) of a computed stream, by the names `evaluate --format tsv` uses.
static double metric_value(const mt_task_eval *te, int j, const char **name) {
    mt_metric_row rows[2];
    mt_metric_rows(te, rows);
    *name = rows[j].key;
    return rows[j].value;
}

// Summary of metric j over the streams of task t; returns the number of runs.
static int summarise(const mt_evaluation *ev, mt_task t, int j, seed_metric *s) {
    double *v = mt_malloc(sizeof *v * ((size_t)ev->n + 1));
    int k = 0;
    s->name = "";
    s->min = INFINITY, s->max = -INFINITY;
    for (int i = 0; i < ev->n; i++) {
        if (ev->t[i].task != t) continue;
        v[k] = metric_value(&ev->t[i], j, &s->name);
        s->min = fmin(s->min, v[k]), s->max = fmax(s->max, v[k]);
        k++;
    }
    mt_mean_std(v, k, &s->mean, &s->sd);
    free(v);
    return k;
}

// Notes (stderr) when the streams of task t are not on the first one's example ids.
static void check_same_examples(const mt_evaluation *ev, mt_task t) {
    const mt_task_eval *first = NULL;
    mt_gold idx = {0};
    for (int i = 0; i < ev->n; i++) {
        const mt_task_eval *te = &ev->t[i];
        if (te->task != t) continue;
        if (!first) {
            first = te;
            mt_gold_init(&idx, te->ids, NULL, te->n);
            continue;
        }
        int same = te->n == first->n;
        for (int e = 0; same && e < te->n; e++) same = mt_gold_find(&idx, te->ids[e]) >= 0;
        if (!same)
            mt_log("note: %s and %s are not on the same examples: the spread mixes seeds with data",
                   first->path, te->path);
    }
    mt_gold_free(&idx);
}

static void print_row(FILE *f, const char *format, mt_task t, const seed_metric *s, int runs, int first) {
    const char *task = mt_task_name(t);
    if (strcmp(format, "tsv") == 0) {
        fprintf(f, "%s\t%s\t%.6f\t%.6f\t%d\t%.6f\t%.6f\n", task, s->name, s->mean, s->sd, runs, s->min, s->max);
    } else if (strcmp(format, "json") == 0) {
        fprintf(f, "%s{\"task\":\"%s\",\"metric\":\"%s\",\"runs\":%d", first ? "" : ",", task, s->name, runs);
        const char *key[4] = {"mean", "std", "min", "max"};
        double val[4] = {s->mean, s->sd, s->min, s->max};
        for (int q = 0; q < 4; q++) {
            fprintf(f, ",\"%s\":", key[q]);
            mt_json_write_number(f, "%.6g", val[q]);
        }
        fputc('}', f);
    } else {
        char sd[32];  // one run has no spread
        snprintf(sd, sizeof sd, isnan(s->sd) ? "n/a" : "%.4f", s->sd);
        fprintf(f, "%-4s %-9s %.4f ± %s  (%d run%s; min %.4f, max %.4f)\n", task, s->name, s->mean, sd,
                runs, runs == 1 ? "" : "s", s->min, s->max);
    }
}

void mt_seeds_print(FILE *f, const mt_evaluation *ev, const char *format) {
    int seen[MT_N_TASKS] = {0}, first = 1;
    if (strcmp(format, "tsv") == 0) fputs("task\tmetric\tmean\tstd\truns\tmin\tmax\n", f);
    if (strcmp(format, "json") == 0) fputs("{\"over_seeds\":[", f);
    for (int i = 0; i < ev->n; i++) {
        mt_task t = ev->t[i].task;
        if (seen[t]++) continue;
        check_same_examples(ev, t);
        for (int j = 0; j < 2; j++) {
            seed_metric s;
            int runs = summarise(ev, t, j, &s);
            print_row(f, format, t, &s, runs, first);
            first = 0;
        }
    }
    if (strcmp(format, "json") == 0) fputs("]}\n", f);
    else if (strcmp(format, "text") == 0) fputs("mean ± sample standard deviation (n − 1) over runs\n", f);
}
