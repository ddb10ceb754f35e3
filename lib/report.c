// report.c — see report.h. Hand-written SVG and HTML: no plotting library, no scripts.
#include "report.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "gold.h"
#include "tsv.h"

#define SHOW_MISSING 5  // ids named when --text lacks some

// ---- sentences from a TSV ---------------------------------------------------------------

// Column indexes of the sentence(s): `sentence`, or `sentence1` and `sentence2`; dies when
// the TSV has neither, or not the kind that te's task needs.
static void sentence_columns(const mt_tsv *t, const mt_task_eval *te, int *ca, int *cb) {
    int single = mt_tsv_col(t, "sentence"), s1 = mt_tsv_col(t, "sentence1"), s2 = mt_tsv_col(t, "sentence2");
    int pair = s1 >= 0 && s2 >= 0, want_pair = mt_task_is_pair(te->task);
    if (single < 0 && !pair) mt_die("%s: no column 'sentence', nor 'sentence1' and 'sentence2'", t->path);
    if (want_pair ? !pair : single < 0)
        mt_die("%s has %s, but %s is a %s stream (%s)", t->path, pair ? "sentence pairs" : "single sentences",
               te->path, mt_task_name(te->task), want_pair ? "sentence pairs" : "single sentences");
    *ca = want_pair ? s1 : single;
    *cb = want_pair ? s2 : -1;
}

static void die_missing_texts(const mt_task_eval *te, const mt_texts *tx, const char *tsv) {
    char msg[1024] = "";
    int missing = 0;
    for (int i = 0; i < te->n; i++) {
        if (tx->a[i]) continue;
        size_t len = strlen(msg);
        if (missing < SHOW_MISSING)
            snprintf(msg + len, sizeof msg - len, "%s%s", missing ? ", " : "", te->ids[i]);
        missing++;
    }
    if (missing)
        mt_die("--text %s: %d of the %d ids of %s are not in it (%s%s)", tsv, missing, te->n,
               te->path, msg, missing > SHOW_MISSING ? ", ..." : "");
}

void mt_texts_read(const mt_task_eval *te, const char *tsv, mt_texts *tx) {
    mt_tsv *t = mt_tsv_open(tsv);
    int ca, cb, cid = mt_tsv_col(t, "id");
    sentence_columns(t, te, &ca, &cb);
    mt_gold idx;  // id -> position in te
    mt_gold_init(&idx, te->ids, NULL, te->n);
    tx->n = te->n;
    tx->a = mt_calloc((size_t)te->n + 1, sizeof *tx->a);
    tx->b = cb >= 0 ? mt_calloc((size_t)te->n + 1, sizeof *tx->b) : NULL;
    int rc;
    long bad = 0;
    while ((rc = mt_tsv_next(t)) != 0) {
        if (rc < 0) {  // tokenize --skip-bad drops such rows too; a needed one is caught below
            if (bad++ == 0) mt_log("--text: skipping malformed rows (first: %s)", mt_tsv_error(t));
            continue;
        }
        char line_id[32];
        const char *id = mt_tsv_row_id(t, cid, line_id);  // as tokenize keys its records
        int j = mt_gold_find(&idx, id);
        if (j < 0) continue;
        if (tx->a[j]) mt_die("%s:%ld: id '%s' occurs more than once", tsv, t->line_no, id);
        tx->a[j] = mt_strdup(t->field[ca]);
        if (tx->b) tx->b[j] = mt_strdup(t->field[cb]);
    }
    if (bad) mt_log("--text %s: %ld malformed rows skipped", tsv, bad);
    mt_tsv_close(t);
    mt_gold_free(&idx);
    die_missing_texts(te, tx, tsv);
}

void mt_texts_free(mt_texts *tx) {
    for (int i = 0; i < tx->n; i++) {
        free(tx->a ? tx->a[i] : NULL);
        free(tx->b ? tx->b[i] : NULL);
    }
    free(tx->a), free(tx->b);
    memset(tx, 0, sizeof *tx);
}

// ---- ranking errors ----------------------------------------------------------------------

void mt_error_differences(const mt_task_eval *te, double *diff, double *tie) {
    for (int i = 0; i < te->n; i++) {
        double g = te->gold[i], p = te->pred[i], c = te->conf ? te->conf[i] : NAN;
        tie[i] = NAN;
        if (te->task == MT_TASK_SST) {
            diff[i] = p - g, tie[i] = c;
        } else if (te->task == MT_TASK_QQP) {
            // the probability says how confidently wrong; fall back to the class
            diff[i] = p == g ? 0 : isfinite(c) ? c - g : p - g;
        } else {
            diff[i] = p - g;
        }
    }
}

static const double *rank_diff, *rank_tie;  // qsort has no context argument
static int by_error(const void *pa, const void *pb) {
    int a = *(const int *)pa, b = *(const int *)pb;
    double da = fabs(rank_diff[a]), db = fabs(rank_diff[b]);
    if (da != db) return da > db ? -1 : 1;
    if (rank_tie) {
        double ta = rank_tie[a], tb = rank_tie[b];
        if (isnan(ta) != isnan(tb)) return isnan(ta) ? 1 : -1;
        if (!isnan(ta) && ta != tb) return ta > tb ? -1 : 1;
    }
    return a < b ? -1 : a > b;
}

int mt_rank_errors(const double *diff, const double *tie, int n, int sign, int *out, int max) {
    int *cand = mt_malloc(((size_t)n + 1) * sizeof *cand), m = 0;
    for (int i = 0; i < n; i++)
        if (diff[i] * sign > 0) cand[m++] = i;
    rank_diff = diff, rank_tie = tie;
    qsort(cand, (size_t)m, sizeof *cand, by_error);
    int k = m < max ? m : max;
    memcpy(out, cand, (size_t)k * sizeof *out);
    free(cand);
    return k;
}

// ---- escaping ----------------------------------------------------------------------------

void mt_write_xml_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(c < 0x20 || c == 0x7f ? ' ' : c, f);
        }
    }
}

void mt_write_md_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '&') fputs("&amp;", f);
        else if (c == '<') fputs("&lt;", f);
        else if (c == '>') fputs("&gt;", f);
        else if (c < 0x20 || c == 0x7f) fputc(' ', f);
        else if (strchr("\\|`*_[]~", c)) fprintf(f, "\\%c", c);  // markup or a cell break
        else fputc(c, f);
    }
}

// ---- SVG ---------------------------------------------------------------------------------

#define SVG_FONT "font-family=\"Helvetica, Arial, sans-serif\""

static void svg_open(FILE *f, int w, int h) {
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" " SVG_FONT ">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", w, h, w, h);
}

// <text> at (x, y); attrs are extra attributes (trusted, ours); the content is escaped.
static void svg_text(FILE *f, double x, double y, const char *attrs, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void svg_text(FILE *f, double x, double y, const char *attrs, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" %s>", x, y, attrs);
    mt_write_xml_escaped(f, buf);
    fputs("</text>\n", f);
}

static const char *SST_CLASS[MT_SST_CLASSES] = {"very negative", "negative", "neutral",
                                                "positive", "very positive"};
static const char *QQP_CLASS[2] = {"not duplicate", "duplicate"};

static const char *class_name(mt_task t, int c) { return t == MT_TASK_SST ? SST_CLASS[c] : QQP_CLASS[c]; }
static const char *task_title(mt_task t) {
    static const char *TITLE[MT_N_TASKS] = {"Sentiment (SST-5)", "Paraphrase (QQP)", "Similarity (STS-B)"};
    return TITLE[t];
}

// Light to dark blue by share in [0, 1]: ColorBrewer's Blues stops, interpolated, so the
// middle shares stay blue instead of fading to grey.
static void share_colour(double s, char out[8]) {
    static const int STOP[5][3] = {{247, 251, 255}, {198, 219, 239}, {107, 174, 214}, {33, 113, 181}, {8, 48, 107}};
    double x = fmin(fmax(s, 0), 1) * 4;
    int i = x >= 4 ? 3 : (int)x, c[3];
    for (int j = 0; j < 3; j++) c[j] = (int)lround(STOP[i][j] + (x - i) * (STOP[i + 1][j] - STOP[i][j]));
    snprintf(out, 8, "#%02x%02x%02x", c[0], c[1], c[2]);
}

// Rough width of a line of text (sans-serif averages ~0.6 em per character), so that a
// figure is made wide enough for its title.
static double text_width(const char *s, double font_size) {
    int chars = 0;
    for (; *s; s++) chars += ((unsigned char)*s & 0xc0) != 0x80;  // count UTF-8 lead bytes
    return 0.6 * font_size * chars;
}

// Title and grey subtitle centred over a figure of width w.
static void svg_titles(FILE *f, double w, const char *title, const char *subtitle) {
    svg_text(f, w / 2, 26, "text-anchor=\"middle\" font-size=\"17\" font-weight=\"bold\"", "%s", title);
    svg_text(f, w / 2, 46, "text-anchor=\"middle\" font-size=\"12\" fill=\"#555\"", "%s", subtitle);
}

static double figure_width(double content, const char *title, const char *subtitle) {
    return fmax(content, fmax(text_width(title, 17), text_width(subtitle, 12)) + 24);
}

// One cell: shaded by the share of its gold row, count and share written in it.
static void confusion_cell(FILE *f, double x, double y, double size, long count, double share) {
    char fill[8];
    share_colour(share, fill);
    const char *ink = share > 0.5 ? "white" : "#222";
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" "
               "stroke=\"#ccc\"/>\n", x, y, size, size, fill);
    char attrs[96];
    snprintf(attrs, sizeof attrs, "text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\" fill=\"%s\"", ink);
    svg_text(f, x + size / 2, y + size / 2 - 2, attrs, "%ld", count);
    snprintf(attrs, sizeof attrs, "text-anchor=\"middle\" font-size=\"12\" fill=\"%s\"", ink);
    svg_text(f, x + size / 2, y + size / 2 + 16, attrs, "%.1f%%", 100 * share);
}

// Class names under the columns, on two lines (index, name) so that long names fit a cell.
static void confusion_axes(FILE *f, const mt_task_eval *te, double left, double top, double cell) {
    int k = mt_task_classes(te->task);
    double side = k * cell;
    for (int c = 0; c < k; c++) {
        svg_text(f, left - 8, top + (c + 0.5) * cell + 4, "text-anchor=\"end\" font-size=\"12\"",
                 "%d %s", c, class_name(te->task, c));
        svg_text(f, left + (c + 0.5) * cell, top + side + 18, "text-anchor=\"middle\" font-size=\"12\"", "%d", c);
        svg_text(f, left + (c + 0.5) * cell, top + side + 33, "text-anchor=\"middle\" font-size=\"12\"",
                 "%s", class_name(te->task, c));
    }
    svg_text(f, left + side / 2, top + side + 58, "text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\"",
             "predicted");
    char attrs[128];
    snprintf(attrs, sizeof attrs, "text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\" "
             "transform=\"rotate(-90 %.1f %.1f)\"", 18.0, top + side / 2);
    svg_text(f, 18, top + side / 2, attrs, "gold");
}

static void svg_confusion(FILE *f, const mt_task_eval *te) {
    int k = mt_task_classes(te->task);
    char title[160], subtitle[160];
    snprintf(title, sizeof title, "%s: accuracy %.3f", task_title(te->task), te->m.accuracy);
    snprintf(subtitle, sizeof subtitle, "n = %d; rows: gold, columns: predicted; shade: share of the gold row", te->n);
    double cell = k > 2 ? 96 : 130, label_w = 132, side = k * cell, top = 70;
    double w = figure_width(label_w + side + 30, title, subtitle);
    double left = label_w + (w - (label_w + side + 30)) / 2;  // the grid centred in a wide figure
    svg_open(f, (int)w, (int)(top + side + 74));
    svg_titles(f, w, title, subtitle);
    for (int g = 0; g < k; g++) {
        long row = 0;
        for (int p = 0; p < k; p++) row += te->m.confusion[g * k + p];
        for (int p = 0; p < k; p++) {
            long c = te->m.confusion[g * k + p];
            confusion_cell(f, left + p * cell, top + g * cell, cell, c, row ? (double)c / row : 0);
        }
    }
    confusion_axes(f, te, left, top, cell);
    fputs("</svg>\n", f);
}

// Predicted (y) against gold (x) similarity on 0..5 axes with the y = x line.
static void svg_scatter(FILE *f, const mt_task_eval *te) {
    char title[160], subtitle[160];
    snprintf(title, sizeof title, "%s: Pearson r %.3f, Spearman \xcf\x81 %.3f", task_title(te->task),
             te->m.pearson, te->m.spearman);
    snprintf(subtitle, sizeof subtitle, "n = %d; dashed: predicted = gold", te->n);
    const double side = 440, top = 64, lo = 0, hi = 5;
    double w = figure_width(64 + side + 24, title, subtitle), left = 64 + (w - (64 + side + 24)) / 2;
    int h = (int)(top + side + 58);
#define SX(v) (left + ((v) - lo) / (hi - lo) * side)
#define SY(v) (top + side - ((v) - lo) / (hi - lo) * side)
    svg_open(f, (int)w, h);
    svg_titles(f, w, title, subtitle);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#888\"/>\n",
            left, top, side, side);
    for (int t = (int)lo; t <= (int)hi; t++) {  // grid, ticks and tick labels
        fprintf(f, "<path d=\"M%.1f %.1fV%.1fM%.1f %.1fH%.1f\" stroke=\"#e5e5e5\"/>\n", SX(t), top,
                top + side, left, SY(t), left + side);
        fprintf(f, "<path d=\"M%.1f %.1fv6M%.1f %.1fh-6\" stroke=\"#888\"/>\n", SX(t), top + side,
                left, SY(t));
        svg_text(f, SX(t), top + side + 20, "text-anchor=\"middle\" font-size=\"12\"", "%d", t);
        svg_text(f, left - 10, SY(t) + 4, "text-anchor=\"end\" font-size=\"12\"", "%d", t);
    }
    fprintf(f, "<path d=\"M%.1f %.1fL%.1f %.1f\" stroke=\"#d62728\" stroke-width=\"1.5\" "
               "stroke-dasharray=\"6 4\"/>\n", SX(lo), SY(lo), SX(hi), SY(hi));
    fputs("<g fill=\"#1f77b4\" fill-opacity=\"0.35\">\n", f);
    for (int i = 0; i < te->n; i++)
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\"/>\n", SX(te->gold[i]), SY(te->pred[i]));
    fputs("</g>\n", f);
    svg_text(f, left + side / 2, top + side + 46, "text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\"",
             "gold similarity");
    char attrs[128];
    snprintf(attrs, sizeof attrs, "text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\" "
             "transform=\"rotate(-90 %.1f %.1f)\"", left - 44, top + side / 2);
    svg_text(f, left - 44, top + side / 2, attrs, "predicted similarity");
    fputs("</svg>\n", f);
#undef SX
#undef SY
}

static void svg_plot(FILE *f, const mt_task_eval *te) {
    if (te->task == MT_TASK_STS) svg_scatter(f, te);
    else svg_confusion(f, te);
}

// ---- the report's parts --------------------------------------------------------------

// One stream's share of the report: its file stem, plot and ranked errors.
typedef struct {
    const mt_task_eval *te;
    const mt_texts *tx;  // NULL: no sentences
    char stem[32], plot[48], errors[48];
    double *diff, *tie;
    int *rank[2], n_rank[2];  // [0]: positive differences, [1]: negative
} part;

static const char *direction_title(mt_task t, int neg) {
    static const char *TITLE[MT_N_TASKS][2] = {
        {"Over-predicted: predicted class above gold (largest distance, then most confident)",
         "Under-predicted: predicted class below gold (largest distance, then most confident)"},
        {"Most confident false positives (gold 0, predicted duplicate)",
         "Most confident false negatives (gold 1, predicted not duplicate)"},
        {"Largest over-estimates (predicted − gold > 0)", "Largest under-estimates (predicted − gold < 0)"}};
    return TITLE[t][neg];
}

static void part_init(part *p, const mt_evaluation *ev, int i, const mt_texts *texts, int top) {
    memset(p, 0, sizeof *p);
    p->te = &ev->t[i];
    p->tx = texts && texts[i].a ? &texts[i] : NULL;
    int same = 0;  // earlier streams of the same task
    for (int j = 0; j < i; j++) same += ev->t[j].task == p->te->task;
    const char *task = mt_task_name(p->te->task);
    if (same) snprintf(p->stem, sizeof p->stem, "%s-%d", task, same + 1);
    else snprintf(p->stem, sizeof p->stem, "%s", task);
    snprintf(p->plot, sizeof p->plot, "%s-%s.svg", p->stem, p->te->task == MT_TASK_STS ? "scatter" : "confusion");
    snprintf(p->errors, sizeof p->errors, "%s-errors.tsv", p->stem);
    int n = p->te->n;
    p->diff = mt_malloc(((size_t)n + 1) * sizeof *p->diff);
    p->tie = mt_malloc(((size_t)n + 1) * sizeof *p->tie);
    mt_error_differences(p->te, p->diff, p->tie);
    for (int d = 0; d < 2; d++) {
        p->rank[d] = mt_malloc(((size_t)top + 1) * sizeof *p->rank[d]);
        p->n_rank[d] = mt_rank_errors(p->diff, p->tie, n, d ? -1 : 1, p->rank[d], top);
    }
}

static void part_free(part *p) {
    free(p->diff), free(p->tie), free(p->rank[0]), free(p->rank[1]);
}

static int has_prob(const mt_task_eval *te) { return te->task != MT_TASK_STS; }
static const char *prob_header(const mt_task_eval *te) {
    return te->task == MT_TASK_SST ? "p(predicted)" : "p(duplicate)";
}

// A value as the tables show it: classes as integers, scores and probabilities to 3 places.
static void fmt_value(char *buf, size_t cap, const mt_task_eval *te, double v, int is_class) {
    if (isnan(v)) snprintf(buf, cap, "–");
    else if (is_class && te->task != MT_TASK_STS) snprintf(buf, cap, "%d", (int)v);
    else snprintf(buf, cap, "%.3f", v);
}

// The cells of an error-table row after the sentences: gold, predicted, [prob], difference.
static int value_cells(const part *p, int i, char cells[4][32]) {
    const mt_task_eval *te = p->te;
    int n = 0;
    fmt_value(cells[n++], 32, te, te->gold[i], 1);
    fmt_value(cells[n++], 32, te, te->pred[i], 1);
    if (has_prob(te)) fmt_value(cells[n++], 32, te, te->conf ? te->conf[i] : NAN, 0);
    snprintf(cells[n++], 32, te->task == MT_TASK_SST ? "%+.0f" : "%+.3f", p->diff[i]);
    return n;
}

static void write_errors_tsv(const part *p, const char *path) {
    const mt_task_eval *te = p->te;
    mt_outfile o;
    mt_outfile_open(&o, path, 0);
    fprintf(o.fp, "direction\trank\tid\t%s\tgold\tpredicted\t%s%sdifference\n",
            mt_task_is_pair(te->task) ? "sentence1\tsentence2" : "sentence",
            has_prob(te) ? prob_header(te) : "", has_prob(te) ? "\t" : "");
    for (int d = 0; d < 2; d++)
        for (int r = 0; r < p->n_rank[d]; r++) {
            int i = p->rank[d][r];
            char cells[4][32];
            int nc = value_cells(p, i, cells);
            fprintf(o.fp, "%s\t%d\t%s\t%s", d ? "negative" : "positive", r + 1, te->ids[i],
                    p->tx ? p->tx->a[i] : "");
            if (mt_task_is_pair(te->task)) fprintf(o.fp, "\t%s", p->tx ? p->tx->b[i] : "");
            for (int c = 0; c < nc; c++) fprintf(o.fp, "\t%s", cells[c]);
            fputc('\n', o.fp);
        }
    if (ferror(o.fp)) mt_die("%s: write error", path);
    mt_outfile_commit(&o);
}

// ---- index.md ------------------------------------------------------------------------


static void ci_text(char *buf, size_t cap, const mt_evaluation *ev, mt_ci ci) {
    if (ev->resamples) snprintf(buf, cap, "[%.4f, %.4f]", ci.lo, ci.hi);
    else snprintf(buf, cap, "–");
}

static void md_metrics(FILE *f, const mt_evaluation *ev, const part *parts) {
    fputs("| task | metric | value | 95% CI | n | predictions |\n|---|---|--:|---|--:|---|\n", f);
    for (int i = 0; i < ev->n; i++) {
        mt_metric_row rows[2];
        int nr = mt_metric_rows(&ev->t[i], rows);
        for (int j = 0; j < nr; j++) {
            char ci[64];
            ci_text(ci, sizeof ci, ev, rows[j].ci);
            fprintf(f, "| %s | %s | %.4f | %s | %d | ", parts[i].stem, rows[j].label, rows[j].value, ci,
                    ev->t[i].n);
            mt_write_md_escaped(f, ev->t[i].path);
            fputs(" |\n", f);
        }
    }
    if (ev->has_overall) {
        char ci[64];
        ci_text(ci, sizeof ci, ev, ev->overall_ci);
        fprintf(f, "| all | overall | %.4f | %s | | (sst_acc + qqp_acc + (sts_r + 1) / 2) / 3 |\n", ev->overall, ci);
    }
    if (ev->resamples)
        fprintf(f, "\nIntervals: %.0f%% bootstrap percentile, %d resamples, seed %llu.\n",
                100 * ev->level, ev->resamples, (unsigned long long)ev->seed);
}

static void md_error_table(FILE *f, const part *p, int d) {
    const mt_task_eval *te = p->te;
    fputs("\n#### ", f);
    mt_write_md_escaped(f, direction_title(te->task, d));
    fputs("\n\n", f);
    if (p->n_rank[d] == 0) {
        fputs("None.\n", f);
        return;
    }
    int pair = mt_task_is_pair(te->task);
    fprintf(f, "| # | id | %s | gold | predicted | %s%sdifference |\n",
            pair ? "sentence 1 | sentence 2" : "sentence", has_prob(te) ? prob_header(te) : "",
            has_prob(te) ? " | " : "");
    fprintf(f, "|--:|---|%s--:|--:|%s--:|\n", pair ? "---|---|" : "---|", has_prob(te) ? "--:|" : "");
    for (int r = 0; r < p->n_rank[d]; r++) {
        int i = p->rank[d][r];
        fprintf(f, "| %d | ", r + 1);
        mt_write_md_escaped(f, te->ids[i]);
        fputs(" | ", f);
        mt_write_md_escaped(f, p->tx ? p->tx->a[i] : "");
        if (pair) {
            fputs(" | ", f);
            mt_write_md_escaped(f, p->tx ? p->tx->b[i] : "");
        }
        char cells[4][32];
        int nc = value_cells(p, i, cells);
        for (int c = 0; c < nc; c++) fprintf(f, " | %s", cells[c]);
        fputs(" |\n", f);
    }
}

static void md_part(FILE *f, const part *p, int top) {
    fprintf(f, "\n## %s — ", task_title(p->te->task));
    mt_write_md_escaped(f, p->te->path);
    fprintf(f, "\n\n![%s](%s)\n", p->te->task == MT_TASK_STS ? "scatter plot" : "confusion matrix", p->plot);
    if (p->te->task == MT_TASK_SST)
        fputs("\nClasses: 0 very negative, 1 negative, 2 neutral, 3 positive, 4 very positive.\n", f);
    fprintf(f, "\n### Largest errors (top %d each way; all columns: [%s](%s))\n", top, p->errors, p->errors);
    if (!p->tx) fputs("\nNo `--text` given for this stream: sentences are left empty.\n", f);
    for (int d = 0; d < 2; d++) md_error_table(f, p, d);
}

static void write_index_md(const mt_evaluation *ev, const part *parts, const char *path, int top) {
    mt_outfile o;
    mt_outfile_open(&o, path, 0);
    fputs("# Evaluation report\n\n", o.fp);
    md_metrics(o.fp, ev, parts);
    for (int i = 0; i < ev->n; i++) md_part(o.fp, &parts[i], top);
    if (ferror(o.fp)) mt_die("%s: write error", path);
    mt_outfile_commit(&o);
}

// ---- index.html ----------------------------------------------------------------------

// Written so that it is well-formed XML as well as HTML (void elements self-closed), so
// tests can check its escaping with any XML parser.
static const char *HTML_HEAD =
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
    "<title>Evaluation report</title>\n<style>\n"
    "body { font-family: Helvetica, Arial, sans-serif; max-width: 1200px; margin: 2em auto; "
    "padding: 0 1em; color: #222; }\n"
    "table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 14px; }\n"
    "th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }\n"
    "th { background: #f3f3f3; }\n td.num { text-align: right; font-variant-numeric: tabular-nums; "
    "white-space: nowrap; }\n"
    "td.id { font-family: monospace; font-size: 12px; }\n svg { max-width: 100%; height: auto; }\n"
    "</style>\n</head>\n<body>\n<h1>Evaluation report</h1>\n";

static void html_metrics(FILE *f, const mt_evaluation *ev, const part *parts) {
    fputs("<table>\n<tr><th>task</th><th>metric</th><th>value</th><th>95% CI</th><th>n</th>"
          "<th>predictions</th></tr>\n", f);
    for (int i = 0; i < ev->n; i++) {
        mt_metric_row rows[2];
        int nr = mt_metric_rows(&ev->t[i], rows);
        for (int j = 0; j < nr; j++) {
            char ci[64];
            ci_text(ci, sizeof ci, ev, rows[j].ci);
            fprintf(f, "<tr><td>%s</td><td>%s</td><td class=\"num\">%.4f</td><td class=\"num\">%s</td>"
                       "<td class=\"num\">%d</td><td>", parts[i].stem, rows[j].label, rows[j].value, ci, ev->t[i].n);
            mt_write_xml_escaped(f, ev->t[i].path);
            fputs("</td></tr>\n", f);
        }
    }
    if (ev->has_overall) {
        char ci[64];
        ci_text(ci, sizeof ci, ev, ev->overall_ci);
        fprintf(f, "<tr><td>all</td><td>overall</td><td class=\"num\">%.4f</td><td class=\"num\">%s</td>"
                   "<td></td><td>(sst_acc + qqp_acc + (sts_r + 1) / 2) / 3</td></tr>\n", ev->overall, ci);
    }
    fputs("</table>\n", f);
    if (ev->resamples)
        fprintf(f, "<p>Intervals: %.0f%% bootstrap percentile, %d resamples, seed %llu.</p>\n",
                100 * ev->level, ev->resamples, (unsigned long long)ev->seed);
}

static void html_cell(FILE *f, const char *cls, const char *text) {
    fprintf(f, "<td%s%s%s>", cls ? " class=\"" : "", cls ? cls : "", cls ? "\"" : "");
    mt_write_xml_escaped(f, text);
    fputs("</td>", f);
}

static void html_error_table(FILE *f, const part *p, int d) {
    const mt_task_eval *te = p->te;
    fputs("<h4>", f);
    mt_write_xml_escaped(f, direction_title(te->task, d));
    fputs("</h4>\n", f);
    if (p->n_rank[d] == 0) {
        fputs("<p>None.</p>\n", f);
        return;
    }
    int pair = mt_task_is_pair(te->task);
    fprintf(f, "<table>\n<tr><th>#</th><th>id</th>%s<th>gold</th><th>predicted</th>%s%s%s<th>difference</th></tr>\n",
            pair ? "<th>sentence 1</th><th>sentence 2</th>" : "<th>sentence</th>",
            has_prob(te) ? "<th>" : "", has_prob(te) ? prob_header(te) : "", has_prob(te) ? "</th>" : "");
    for (int r = 0; r < p->n_rank[d]; r++) {
        int i = p->rank[d][r];
        fprintf(f, "<tr><td class=\"num\">%d</td>", r + 1);
        html_cell(f, "id", te->ids[i]);
        html_cell(f, NULL, p->tx ? p->tx->a[i] : "");
        if (pair) html_cell(f, NULL, p->tx ? p->tx->b[i] : "");
        char cells[4][32];
        int nc = value_cells(p, i, cells);
        for (int c = 0; c < nc; c++) html_cell(f, "num", cells[c]);
        fputs("</tr>\n", f);
    }
    fputs("</table>\n", f);
}

static void html_part(FILE *f, const part *p, int top) {
    fprintf(f, "<h2>%s — ", task_title(p->te->task));
    mt_write_xml_escaped(f, p->te->path);
    fprintf(f, "</h2>\n<p><a href=\"%s\">%s</a></p>\n", p->plot, p->plot);
    svg_plot(f, p->te);  // inlined, so the page stands alone
    if (p->te->task == MT_TASK_SST)
        fputs("<p>Classes: 0 very negative, 1 negative, 2 neutral, 3 positive, 4 very positive.</p>\n", f);
    fprintf(f, "<h3>Largest errors (top %d each way; all columns: <a href=\"%s\">%s</a>)</h3>\n", top,
            p->errors, p->errors);
    if (!p->tx) fputs("<p>No <code>--text</code> given for this stream: sentences are left empty.</p>\n", f);
    for (int d = 0; d < 2; d++) html_error_table(f, p, d);
}

static void write_index_html(const mt_evaluation *ev, const part *parts, const char *path, int top) {
    mt_outfile o;
    mt_outfile_open(&o, path, 0);
    fputs(HTML_HEAD, o.fp);
    html_metrics(o.fp, ev, parts);
    for (int i = 0; i < ev->n; i++) html_part(o.fp, &parts[i], top);
    fputs("</body>\n</html>\n", o.fp);
    if (ferror(o.fp)) mt_die("%s: write error", path);
    mt_outfile_commit(&o);
}

// ---- putting it together -----------------------------------------------------------------

void mt_report_prepare_dir(const char *dir) {
    char err[4300];
    if (mt_mkdirs(dir, err, sizeof err)) mt_die("--report %s: %s", dir, err);
    if (access(dir, W_OK | X_OK)) mt_die("--report %s: not writable: %s", dir, strerror(errno));
}

static char *join_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = mt_malloc(n);
    snprintf(s, n, "%s/%s", dir, name);
    return s;
}

static void write_plot(const part *p, const char *dir) {
    char *path = join_path(dir, p->plot);
    mt_outfile o;
    mt_outfile_open(&o, path, 0);
    fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", o.fp);
    svg_plot(o.fp, p->te);
    if (ferror(o.fp)) mt_die("%s: write error", path);
    mt_outfile_commit(&o);
    free(path);
}

void mt_report_write(const mt_evaluation *ev, const mt_texts *texts, const char *dir, int top) {
    mt_report_prepare_dir(dir);
    part *parts = mt_malloc(sizeof *parts * ((size_t)ev->n + 1));
    for (int i = 0; i < ev->n; i++) {
        part_init(&parts[i], ev, i, texts, top);
        write_plot(&parts[i], dir);
        char *path = join_path(dir, parts[i].errors);
        write_errors_tsv(&parts[i], path);
        free(path);
    }
    char *md = join_path(dir, "index.md"), *html = join_path(dir, "index.html");
    write_index_md(ev, parts, md, top);
    write_index_html(ev, parts, html, top);
    mt_log("report: %s and %s (%d streams)", md, html, ev->n);
    for (int i = 0; i < ev->n; i++) part_free(&parts[i]);
    free(parts), free(md), free(html);
}
