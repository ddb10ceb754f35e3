// evaluation.c — see evaluation.h.
#include "evaluation.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gold.h"
#include "json.h"

// ---- loading -------------------------------------------------------------------------

static mt_task stream_task(const mt_reader *r) {
    const mt_meta *m = mt_reader_meta(r);
    const char *kind = mt_meta_get(m, "kind"), *task = mt_meta_get(m, "task");
    mt_task t;
    if (!kind || strcmp(kind, "predictions") != 0)
        mt_die("%s: expected a prediction stream (kind=predictions, from 'heads'), got kind=%s",
               mt_reader_path(r), kind ? kind : "(none)");
    if (!task || mt_task_parse(task, &t))
        mt_die("%s: header has no valid 'task' (sst, qqp or sts)", mt_reader_path(r));
    return t;
}

static float pred_of(const mt_reader *r, const mt_record *rec) {
    const mt_tensor *p = mt_record_get(rec, "pred");
    if (!p || p->dtype != MT_F32 || mt_tensor_numel(p) != 1)
        mt_die("%s: record %ld (id %s) has no f32 [1] tensor 'pred'", mt_reader_path(r),
               mt_reader_count(r), rec->id);
    return *(const float *)p->data;
}

// The head's probability behind the prediction (see mt_task_eval.conf), NAN if absent.
static double confidence_of(mt_task task, const mt_record *rec, double pred) {
    const mt_tensor *t = mt_record_get(rec, task == MT_TASK_SST ? "probs" : "prob");
    if (task == MT_TASK_STS || !t || t->dtype != MT_F32) return NAN;
    const float *p = t->data;
    if (task == MT_TASK_QQP) return mt_tensor_numel(t) == 1 ? p[0] : NAN;
    int c = (int)pred;
    return c >= 0 && (size_t)c < mt_tensor_numel(t) ? p[c] : NAN;
}

void mt_eval_load(mt_task_eval *te, const char *path) {
    memset(te, 0, sizeof *te);
    mt_reader *r = mt_reader_open(path, 1);
    te->path = mt_strdup(mt_reader_path(r));
    te->task = stream_task(r);
    mt_meta_copy(&te->meta, mt_reader_meta(r));
    const char *label = mt_task_label(te->task);
    mt_record rec = {0};
    int cap = 0, labelled = 0;
    while (mt_reader_next(r, &rec) == 1) {
        if (te->n == cap) {
            cap = cap ? 2 * cap : 1024;
            te->ids = mt_realloc(te->ids, (size_t)cap * sizeof *te->ids);
            te->gold = mt_realloc(te->gold, (size_t)cap * sizeof *te->gold);
            te->pred = mt_realloc(te->pred, (size_t)cap * sizeof *te->pred);
            te->conf = mt_realloc(te->conf, (size_t)cap * sizeof *te->conf);
        }
        float y;
        int has = mt_record_label(&rec, label, &y);
        labelled += has;
        te->gold[te->n] = has ? y : NAN;
        te->pred[te->n] = pred_of(r, &rec);
        te->conf[te->n] = confidence_of(te->task, &rec, te->pred[te->n]);
        te->ids[te->n++] = mt_strdup(rec.id);
    }
    te->has_gold = te->n > 0 && labelled == te->n;
    mt_record_free(&rec);
    mt_reader_close(r);
    mt_gold idx;
    int dup = mt_gold_init(&idx, te->ids, NULL, te->n);
    if (dup >= 0) mt_die("%s: id '%s' occurs more than once", te->path, te->ids[dup]);
    mt_gold_free(&idx);
}

void mt_eval_gold_tsv(mt_task_eval *te, const char *tsv, const char *col) {
    mt_gold g;
    char err[1024];
    if (mt_gold_read_tsv(tsv, col ? col : mt_task_label(te->task), &g, err, sizeof err))
        mt_die("%s", err);
    if (mt_gold_join(&g, te->ids, te->n, te->gold, err, sizeof err))
        mt_die("joining %s with %s by id: %s", te->path, tsv, err);
    te->has_gold = 1;
    mt_gold_free(&g);
}

static int valid_value(mt_task t, double v) {
    switch (t) {
    case MT_TASK_SST: return v >= 0 && v <= 4 && v == floor(v);
    case MT_TASK_QQP: return v == 0 || v == 1;
    case MT_TASK_STS: return v >= 0 && v <= 5;
    }
    return 0;
}

void mt_eval_check(const mt_task_eval *te) {
    const char *label = mt_task_label(te->task);
    if (te->n == 0) mt_die("%s: no predictions", te->path);
    for (int i = 0; i < te->n; i++) {
        if (isnan(te->gold[i]))
            mt_die("%s: example %s has no gold '%s' (the stream does not carry it: give "
                   "--gold FILE.tsv)", te->path, te->ids[i], label);
        if (!valid_value(te->task, te->gold[i]))
            mt_die("%s: example %s: gold %s = %g is not valid for %s", te->path, te->ids[i], label,
                   te->gold[i], mt_task_name(te->task));
        if (!valid_value(te->task, te->pred[i]))
            mt_die("%s: example %s: prediction %g is not valid for %s", te->path, te->ids[i],
                   te->pred[i], mt_task_name(te->task));
    }
}

// ---- computing -----------------------------------------------------------------------

void mt_evaluation_compute(mt_evaluation *ev) {
    int count[MT_N_TASKS] = {0};
    double primary[MT_N_TASKS] = {NAN, NAN, NAN};
    mt_eval_data *d = mt_malloc(sizeof *d * (size_t)ev->n);
    for (int i = 0; i < ev->n; i++) {
        mt_task_eval *te = &ev->t[i];
        d[i] = (mt_eval_data){te->task, te->n, te->gold, te->pred};
        mt_eval_compute(&d[i], NULL, 0, &te->m);
        count[te->task]++;
        primary[te->task] = te->m.primary;
    }
    ev->has_overall = ev->n == 3 && count[0] == 1 && count[1] == 1 && count[2] == 1;
    ev->overall = ev->has_overall ? mt_overall_score(primary[0], primary[1], primary[2]) : NAN;
    mt_eval_ci *ci = mt_malloc(sizeof *ci * (size_t)ev->n);
    if (ev->resamples > 0) {
        mt_bootstrap(d, ev->n, ev->resamples, ev->seed, ev->level, ci,
                     ev->has_overall ? &ev->overall_ci : NULL);
        for (int i = 0; i < ev->n; i++) ev->t[i].ci = ci[i];
    }
    free(ci);
    free(d);
}

// ---- printing -------------------------------------------------------------------------

int mt_metric_rows(const mt_task_eval *te, mt_metric_row *rows) {
    if (te->task == MT_TASK_STS) {
        rows[0] = (mt_metric_row){"pearson", "Pearson r", te->m.pearson, te->ci.pearson};
        rows[1] = (mt_metric_row){"spearman", "Spearman ρ", te->m.spearman, te->ci.spearman};
    } else {
        rows[0] = (mt_metric_row){"accuracy", "accuracy", te->m.accuracy, te->ci.accuracy};
        rows[1] = (mt_metric_row){"macro_f1", "macro-F1", te->m.macro_f1, te->ci.macro_f1};
    }
    return 2;
}

static void print_confusion_text(FILE *f, const mt_task_eval *te) {
    int k = mt_task_classes(te->task);
    fprintf(f, "  confusion (rows gold, columns predicted)\n      ");
    for (int p = 0; p < k; p++) fprintf(f, " %6d", p);
    fputc('\n', f);
    for (int g = 0; g < k; g++) {
        fprintf(f, "  %3d ", g);
        for (int p = 0; p < k; p++) fprintf(f, " %6ld", te->m.confusion[g * k + p]);
        fputc('\n', f);
    }
}

static void print_text(FILE *f, const mt_evaluation *ev) {
    for (int i = 0; i < ev->n; i++) {
        const mt_task_eval *te = &ev->t[i];
        mt_metric_row rows[4];
        int nr = mt_metric_rows(te, rows);
        fprintf(f, "%s  %s  (%d examples)\n", mt_task_name(te->task), te->path, te->n);
        for (int j = 0; j < nr; j++) {
            fprintf(f, "  %-9s %.4f", rows[j].key, rows[j].value);
            if (ev->resamples) fprintf(f, "  [%.4f, %.4f]", rows[j].ci.lo, rows[j].ci.hi);
            fputc('\n', f);
        }
        if (mt_task_classes(te->task)) print_confusion_text(f, te);
    }
    if (ev->has_overall) {
        fprintf(f, "overall     %.4f", ev->overall);
        if (ev->resamples) fprintf(f, "  [%.4f, %.4f]", ev->overall_ci.lo, ev->overall_ci.hi);
        fprintf(f, "   (sst_acc + qqp_acc + (sts_r + 1) / 2) / 3\n");
    }
    if (ev->resamples)
        fprintf(f, "[lo, hi]: %.0f%% bootstrap percentile intervals, %d resamples, seed %llu\n",
                100 * ev->level, ev->resamples, (unsigned long long)ev->seed);
}

static void tsv_row(FILE *f, const char *task, const char *metric, double v, const mt_ci *ci, int n) {
    fprintf(f, "%s\t%s\t%.6f\t", task, metric, v);
    if (ci) fprintf(f, "%.6f\t%.6f", ci->lo, ci->hi);
    else fputc('\t', f);
    fprintf(f, "\t%d\n", n);
}

static void print_tsv(FILE *f, const mt_evaluation *ev) {
    fprintf(f, "task\tmetric\tvalue\tci_lo\tci_hi\tn\n");
    int total = 0;
    for (int i = 0; i < ev->n; i++) {
        const mt_task_eval *te = &ev->t[i];
        mt_metric_row rows[4];
        int nr = mt_metric_rows(te, rows), k = mt_task_classes(te->task);
        total += te->n;
        for (int j = 0; j < nr; j++)
            tsv_row(f, mt_task_name(te->task), rows[j].key, rows[j].value,
                    ev->resamples ? &rows[j].ci : NULL, te->n);
        for (int g = 0; g < k; g++)
            for (int p = 0; p < k; p++) {
                char name[64];
                snprintf(name, sizeof name, "confusion_%d_%d", g, p);
                tsv_row(f, mt_task_name(te->task), name, (double)te->m.confusion[g * k + p], NULL, te->n);
            }
    }
    if (ev->has_overall) tsv_row(f, "all", "overall", ev->overall, ev->resamples ? &ev->overall_ci : NULL, total);
}

static void json_metric(FILE *f, const char *name, double v, const mt_ci *ci) {
    fprintf(f, "\"%s\":{\"value\":", name);
    mt_json_write_number(f, "%.6g", v);
    if (ci) {
        fputs(",\"ci\":[", f);
        mt_json_write_number(f, "%.6g", ci->lo);
        fputc(',', f);
        mt_json_write_number(f, "%.6g", ci->hi);
        fputc(']', f);
    }
    fputc('}', f);
}

static void json_task(FILE *f, const mt_evaluation *ev, const mt_task_eval *te) {
    mt_metric_row rows[4];
    int nr = mt_metric_rows(te, rows), k = mt_task_classes(te->task);
    fprintf(f, "{\"task\":\"%s\",\"path\":", mt_task_name(te->task));
    mt_json_write_string(f, te->path);
    fprintf(f, ",\"n\":%d", te->n);
    for (int j = 0; j < nr; j++) {
        fputc(',', f);
        json_metric(f, rows[j].key, rows[j].value, ev->resamples ? &rows[j].ci : NULL);
    }
    if (k) {
        fputs(",\"confusion\":[", f);
        for (int g = 0; g < k; g++) {
            fputs(g ? ",[" : "[", f);
            for (int p = 0; p < k; p++) fprintf(f, "%s%ld", p ? "," : "", te->m.confusion[g * k + p]);
            fputc(']', f);
        }
        fputc(']', f);
    }
    fputc('}', f);
}

static void print_json(FILE *f, const mt_evaluation *ev) {
    fputs("{\"tasks\":[", f);
    for (int i = 0; i < ev->n; i++) {
        if (i) fputc(',', f);
        json_task(f, ev, &ev->t[i]);
    }
    fputc(']', f);
    if (ev->has_overall) {
        fputc(',', f);
        json_metric(f, "overall", ev->overall, ev->resamples ? &ev->overall_ci : NULL);
    }
    if (ev->resamples)
        fprintf(f, ",\"bootstrap\":{\"resamples\":%d,\"level\":%g,\"seed\":%llu}", ev->resamples,
                ev->level, (unsigned long long)ev->seed);
    fputs("}\n", f);
}

int mt_evaluation_print(FILE *f, const mt_evaluation *ev, const char *format) {
    if (strcmp(format, "text") == 0) print_text(f, ev);
    else if (strcmp(format, "tsv") == 0) print_tsv(f, ev);
    else if (strcmp(format, "json") == 0) print_json(f, ev);
    else return -1;
    return 0;
}

// ---- submission files ------------------------------------------------------------------

void mt_eval_write_submission(const mt_task_eval *te, const char *path) {
    static const char *COLUMN[MT_N_TASKS] = {"Predicted_Sentiment", "Predicted_Is_Paraphrase",
                                            "Predicted_Similiarity"};
    mt_outfile out;
    mt_outfile_open(&out, path, 0);
    fprintf(out.fp, "id \t %s \n", COLUMN[te->task]);
    for (int i = 0; i < te->n; i++) {
        if (te->task == MT_TASK_STS) fprintf(out.fp, "%s , %.6g \n", te->ids[i], te->pred[i]);
        else fprintf(out.fp, "%s , %d \n", te->ids[i], (int)te->pred[i]);
    }
    if (ferror(out.fp)) mt_die("%s: write error", path);
    mt_outfile_commit(&out);
}

void mt_evaluation_free(mt_evaluation *ev) {
    for (int i = 0; i < ev->n; i++) {
        mt_task_eval *te = &ev->t[i];
        for (int j = 0; j < te->n; j++) free(te->ids[j]);
        free(te->ids), free(te->gold), free(te->pred), free(te->conf), free(te->path);
        mt_meta_free(&te->meta);
    }
    free(ev->t);
    ev->t = NULL;
    ev->n = 0;
}
