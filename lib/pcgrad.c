// pcgrad.c — PCGrad on the Gram matrix of the task gradients (see pcgrad.h).
#include "pcgrad.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

void mt_pcgrad_init(mt_pcgrad *pc, int k, size_t n, mt_pcgrad_reduce reduce) {
    if (k < 1 || k > MT_PCGRAD_MAX_TASKS)
        mt_die("pcgrad: %d tasks; between 1 and %d are supported", k, MT_PCGRAD_MAX_TASKS);
    memset(pc, 0, sizeof *pc);
    size_t kk = (size_t)k * k;
    pc->k = k;
    pc->n = n;
    pc->reduce = reduce;
    pc->grad_scale = 1.0;
    pc->gram = mt_calloc(kk, sizeof(double));
    pc->coef = mt_calloc(kk, sizeof(double));
    pc->weight = mt_calloc((size_t)k, sizeof(double));
    pc->cosine = mt_calloc(kk, sizeof(double));
    pc->conflict = mt_calloc(kk, 1);
    pc->norm = mt_calloc((size_t)k, sizeof(double));
    pc->removed = mt_calloc((size_t)k, sizeof(double));
    pc->order = mt_calloc((size_t)k * (size_t)(k > 1 ? k - 1 : 1), sizeof(uint32_t));
    pc->conflict_steps = mt_calloc(kk, sizeof(long));
    pc->cosine_sum = mt_calloc(kk, sizeof(double));
    pc->removed_sum = mt_calloc((size_t)k, sizeof(double));
}

void mt_pcgrad_free(mt_pcgrad *pc) {
    free(pc->gram);
    free(pc->coef);
    free(pc->weight);
    free(pc->cosine);
    free(pc->conflict);
    free(pc->norm);
    free(pc->removed);
    free(pc->order);
    free(pc->conflict_steps);
    free(pc->cosine_sum);
    free(pc->removed_sum);
    memset(pc, 0, sizeof *pc);
}

// Algorithm 1 for task i, on coefficients: g_i' . g_j = G[i][j] - sum_l coef[i][l] G[l][j].
// Returns the number of projections applied.
static int project_task(mt_pcgrad *pc, int i, mt_rng *rng) {
    int k = pc->k, applied = 0;
    const double *G = pc->gram;
    double *c = pc->coef + (size_t)i * k;
    uint32_t *order = pc->order + (size_t)i * (k - 1);
    for (int j = 0, m = 0; j < k; j++)
        if (j != i) order[m++] = (uint32_t)j;
    mt_rng_shuffle(rng, order, (size_t)(k - 1));
    for (int l = 0; l < k; l++) c[l] = 0.0;
    for (int m = 0; m < k - 1; m++) {
        int j = (int)order[m];
        double dot = G[i * k + j];
        for (int l = 0; l < k; l++) dot -= c[l] * G[l * k + j];
        if (dot < 0.0 && G[j * k + j] > 0.0) {
            c[j] += dot / G[j * k + j];
            applied++;
        }
    }
    return applied;
}

// |sum_l c_l g_l|^2 = c^T G c, the squared norm taken from task i.
static double removed_norm(const mt_pcgrad *pc, int i) {
    int k = pc->k;
    const double *c = pc->coef + (size_t)i * k;
    double s = 0.0;
    for (int l = 0; l < k; l++)
        for (int m = 0; m < k; m++) s += c[l] * c[m] * pc->gram[l * k + m];
    return s > 0.0 ? sqrt(s) : 0.0;
}

// sum_i g_i' = sum_j (1 - sum_i coef[i][j]) g_j; mean divides by k.
static void combine_weights(mt_pcgrad *pc) {
    int k = pc->k;
    double scale = pc->reduce == MT_PCGRAD_MEAN ? 1.0 / k : 1.0;
    for (int j = 0; j < k; j++) {
        double w = 1.0;
        for (int i = 0; i < k; i++) w -= pc->coef[i * k + j];
        pc->weight[j] = w * scale;
    }
}

static void record_stats(mt_pcgrad *pc) {
    int k = pc->k, finite = 1;
    if (pc->grad_scale != 1.0)  // the unscaled gradients' (exact for a power of two)
        for (int x = 0; x < k * k; x++) pc->gram[x] /= pc->grad_scale * pc->grad_scale;
    for (int x = 0; x < k * k; x++) finite &= isfinite(pc->gram[x]) != 0;
    for (int i = 0; i < k; i++) pc->norm[i] = sqrt(pc->gram[i * k + i]);
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            double d = pc->norm[i] * pc->norm[j];
            pc->cosine[i * k + j] = d > 0.0 ? pc->gram[i * k + j] / d : 0.0;
            pc->conflict[i * k + j] = pc->gram[i * k + j] < 0.0;
        }
    for (int i = 0; i < k; i++) pc->removed[i] = removed_norm(pc, i);
    if (!finite) return;
    for (int x = 0; x < k * k; x++) pc->conflict_steps[x] += pc->conflict[x], pc->cosine_sum[x] += pc->cosine[x];
    for (int i = 0; i < k; i++) pc->removed_sum[i] += pc->removed[i];
    pc->steps++;
    pc->projections_total += pc->projections;
}

// G = the sum of the segments' Gram matrices (each the backend's blocked, ordered gram).
static void gram_segments(mt_pcgrad *pc, const mt_pcgrad_segment *seg, int n_seg) {
    int k = pc->k;
    double part[MT_PCGRAD_MAX_TASKS * MT_PCGRAD_MAX_TASKS];
    memset(pc->gram, 0, (size_t)k * k * sizeof(double));
    for (int s = 0; s < n_seg; s++) {
        if (!seg[s].n) continue;
        seg[s].be->gram(part, seg[s].grads, k, seg[s].n);
        for (int x = 0; x < k * k; x++) pc->gram[x] += part[x];
    }
}

void mt_pcgrad_step_segments(mt_pcgrad *pc, const mt_pcgrad_segment *seg, int n_seg, mt_rng *order_rng) {
    size_t n = 0;
    for (int s = 0; s < n_seg; s++) n += seg[s].n;
    if (n != pc->n) mt_die("pcgrad: segments of %zu floats in all, %zu expected", n, pc->n);
    gram_segments(pc, seg, n_seg);
    pc->projections = 0;
    for (int i = 0; i < pc->k; i++) pc->projections += project_task(pc, i, order_rng);
    combine_weights(pc);
    for (int s = 0; s < n_seg; s++)
        if (seg[s].n) seg[s].be->combine(seg[s].out, seg[s].grads, pc->weight, pc->k, seg[s].n);
    record_stats(pc);
}

void mt_pcgrad_step(mt_pcgrad *pc, const float *const *grads, float *out, mt_rng *order_rng) {
    mt_pcgrad_segment seg = {mt_backend_cpu(), grads, out, pc->n};
    mt_pcgrad_step_segments(pc, &seg, 1, order_rng);
}

void mt_pcgrad_projected(const mt_pcgrad *pc, const float *const *grads, int i, float *out) {
    if (i < 0 || i >= pc->k) mt_die("pcgrad: no task %d", i);
    double w[MT_PCGRAD_MAX_TASKS];
    for (int j = 0; j < pc->k; j++) w[j] = (j == i) - pc->coef[i * pc->k + j];
    mt_backend_cpu()->combine(out, grads, w, pc->k, pc->n);
}

static const char *task_name(const char *const *names, int i, char buf[12]) {
    if (names) return names[i];
    snprintf(buf, 12, "%d", i);
    return buf;
}

// " a/b V" for every pair i < j, V = scale * m[i*k+j] printed with fmt.
static void print_pairs(const mt_pcgrad *pc, const char *const *names, FILE *fp,
                        const double *m, const long *ml, double scale, const char *fmt) {
    char a[12], b[12];
    for (int i = 0; i < pc->k; i++)
        for (int j = i + 1; j < pc->k; j++) {
            double v = (m ? m[i * pc->k + j] : (double)ml[i * pc->k + j]) * scale;
            fprintf(fp, " %s/%s ", task_name(names, i, a), task_name(names, j, b));
            fprintf(fp, fmt, v);
        }
}

static void print_tasks(const mt_pcgrad *pc, const char *const *names, FILE *fp,
                        const double *v, double scale) {
    char a[12];
    for (int i = 0; i < pc->k; i++) fprintf(fp, " %s %.4g", task_name(names, i, a), v[i] * scale);
}

void mt_pcgrad_print_step(const mt_pcgrad *pc, const char *const *names, FILE *fp) {
    fprintf(fp, "pcgrad step: cos");
    print_pairs(pc, names, fp, pc->cosine, NULL, 1.0, "%.3f");
    fprintf(fp, " | removed");
    print_tasks(pc, names, fp, pc->removed, 1.0);
    fprintf(fp, " | %d projections\n", pc->projections);
}

void mt_pcgrad_print_summary(const mt_pcgrad *pc, const char *const *names, FILE *fp) {
    double per_step = pc->steps ? 1.0 / (double)pc->steps : 0.0;
    fprintf(fp, "pcgrad: %ld steps | conflict", pc->steps);
    print_pairs(pc, names, fp, NULL, pc->conflict_steps, 100.0 * per_step, "%.0f%%");
    fprintf(fp, " | mean cos");
    print_pairs(pc, names, fp, pc->cosine_sum, NULL, per_step, "%.3f");
    fprintf(fp, " | mean removed");
    print_tasks(pc, names, fp, pc->removed_sum, per_step);
    fprintf(fp, " | %.2f projections/step\n", (double)pc->projections_total * per_step);
}
