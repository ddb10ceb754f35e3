// simcse.c — the supervised SimCSE loss (see simcse.h). Batches are small (B pairs of
// sentence embeddings), so plain double loops; rows are independent, so results do not
// depend on the thread count.
#include "simcse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define NORM_EPS 1e-12  // torch.nn.functional.normalize's default

void mt_simcse_init(mt_simcse *s, int max_B, int D, double tau, int symmetric) {
    if (!(tau > 0)) mt_die("simcse: temperature must be > 0 (got %g)", tau);
    if (max_B < 1 || D < 1) mt_die("simcse: bad sizes B=%d D=%d", max_B, D);
    memset(s, 0, sizeof *s);
    s->max_B = max_B, s->D = D, s->tau = tau, s->symmetric = symmetric;
    size_t bd = (size_t)max_B * D;
    s->u = mt_malloc(bd * sizeof(double));
    s->up = mt_malloc(bd * sizeof(double));
    s->un = mt_malloc(bd * sizeof(double));
    s->du = mt_malloc(bd * sizeof(double));
    s->norm = mt_malloc((size_t)3 * max_B * sizeof(double));
    s->prob = mt_malloc((size_t)max_B * 2 * max_B * sizeof(double));
    s->prob_rev = mt_malloc((size_t)max_B * max_B * sizeof(double));
    s->dS = mt_malloc((size_t)max_B * 2 * max_B * sizeof(double));
}

void mt_simcse_free(mt_simcse *s) {
    free(s->u), free(s->up), free(s->un), free(s->du), free(s->norm);
    free(s->prob), free(s->prob_rev), free(s->dS);
    memset(s, 0, sizeof *s);
}

// u[B,D] = x / max(|x|, eps); norm[B] = |x|
static void normalize_rows(double *u, double *norm, const float *x, int B, int D) {
    for (int i = 0; i < B; i++) {
        double ss = 0;
        for (int d = 0; d < D; d++) ss += (double)x[(size_t)i * D + d] * x[(size_t)i * D + d];
        norm[i] = sqrt(ss);
        double inv = 1.0 / (norm[i] > NORM_EPS ? norm[i] : NORM_EPS);
        for (int d = 0; d < D; d++) u[(size_t)i * D + d] = x[(size_t)i * D + d] * inv;
    }
}

static double dot(const double *a, const double *b, int D) {
    double s = 0;
    for (int d = 0; d < D; d++) s += a[d] * b[d];
    return s;
}

// row[0..n) = softmax(row) in place; returns the log-sum-exp of the input.
static double softmax_inplace(double *row, int n) {
    double m = row[0], sum = 0;
    for (int j = 1; j < n; j++) m = row[j] > m ? row[j] : m;
    for (int j = 0; j < n; j++) sum += (row[j] = exp(row[j] - m));
    for (int j = 0; j < n; j++) row[j] /= sum;
    return m + log(sum);
}

double mt_simcse_forward(mt_simcse *s, const float *h, const float *hp, const float *hn, int B) {
    if (B < 1 || B > s->max_B) mt_die("simcse: batch of %d pairs (room for %d)", B, s->max_B);
    int D = s->D, K = hn ? 2 * B : B;  // candidates per anchor
    s->B = B, s->has_neg = hn != NULL;
    normalize_rows(s->u, s->norm, h, B, D);
    normalize_rows(s->up, s->norm + B, hp, B, D);
    if (hn) normalize_rows(s->un, s->norm + 2 * B, hn, B, D);
    double loss = 0, loss_rev = 0;
    int correct = 0;
    for (int i = 0; i < B; i++) {
        double *row = s->prob + (size_t)i * 2 * B;
        const double *ui = s->u + (size_t)i * D;
        for (int j = 0; j < K; j++)
            row[j] = dot(ui, j < B ? s->up + (size_t)j * D : s->un + (size_t)(j - B) * D, D) / s->tau;
        int best = 0;
        for (int j = 1; j < K; j++) best = row[j] > row[best] ? j : best;
        correct += best == i;
        double own = row[i];
        loss += softmax_inplace(row, K) - own;
    }
    if (s->symmetric)
        for (int i = 0; i < B; i++) {
            double *row = s->prob_rev + (size_t)i * B;
            for (int j = 0; j < B; j++) row[j] = dot(s->up + (size_t)i * D, s->u + (size_t)j * D, D) / s->tau;
            double own = row[i];
            loss_rev += softmax_inplace(row, B) - own;
        }
    s->loss = s->symmetric ? (loss + loss_rev) / (2.0 * B) : loss / B;
    s->accuracy = (double)correct / B;
    return s->loss;
}

// dx[B,D] += (du - u (u . du)) / max(|x|, eps) (the gradient of x / max(|x|, eps); below
// eps the norm is the constant eps, as torch's clamp_min passes no gradient).
static void normalize_backward(float *dx, const double *du, const double *u, const double *norm,
                               int B, int D) {
    for (int i = 0; i < B; i++) {
        const double *g = du + (size_t)i * D, *ui = u + (size_t)i * D;
        double proj = norm[i] > NORM_EPS ? dot(ui, g, D) : 0.0;
        double inv = 1.0 / (norm[i] > NORM_EPS ? norm[i] : NORM_EPS);
        for (int d = 0; d < D; d++) dx[(size_t)i * D + d] += (float)((g[d] - ui[d] * proj) * inv);
    }
}

// du[r] (+)= sum_k dS(r, k) v_k / tau for r < B, where dS(r, k) = dS[r * ld + col0 + k]
// (by_row: r indexes the anchors) or dS[k * ld + col0 + r] (r indexes a candidate column).
static void combine(double *du, int accumulate, const double *dS, int ld, int by_row, int col0,
                    const double *v, int B, int D, double tau) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < B; r++) {
        double *o = du + (size_t)r * D;
        if (!accumulate)
            for (int d = 0; d < D; d++) o[d] = 0;
        for (int k = 0; k < B; k++) {
            double c = (by_row ? dS[(size_t)r * ld + col0 + k] : dS[(size_t)k * ld + col0 + r]) / tau;
            for (int d = 0; d < D; d++) o[d] += c * v[(size_t)k * D + d];
        }
    }
}

void mt_simcse_backward(mt_simcse *s, float *dh, float *dhp, float *dhn, double dloss) {
    int B = s->B, D = s->D, ld = 2 * B, K = s->has_neg ? 2 * B : B;
    double w = dloss / B * (s->symmetric ? 0.5 : 1.0);
    // dS[i,j] = d loss / d S[i,j]: softmax minus one-hot, from both directions.
    for (int i = 0; i < B; i++)
        for (int j = 0; j < K; j++)
            s->dS[(size_t)i * ld + j] = w * (s->prob[(size_t)i * ld + j] - (i == j));
    if (s->symmetric)  // S'[i,j] = S[j,i]
        for (int i = 0; i < B; i++)
            for (int j = 0; j < B; j++)
                s->dS[(size_t)j * ld + i] += w * (s->prob_rev[(size_t)i * B + j] - (i == j));
    // anchors: du_i = sum_j dS[i,j] u+_j / tau + sum_j dS[i,B+j] u-_j / tau
    combine(s->du, 0, s->dS, ld, 1, 0, s->up, B, D, s->tau);
    if (s->has_neg) combine(s->du, 1, s->dS, ld, 1, B, s->un, B, D, s->tau);
    normalize_backward(dh, s->du, s->u, s->norm, B, D);
    // positives: du+_j = sum_i dS[i,j] u_i / tau
    combine(s->du, 0, s->dS, ld, 0, 0, s->u, B, D, s->tau);
    normalize_backward(dhp, s->du, s->up, s->norm + B, B, D);
    if (s->has_neg) {  // negatives: du-_j = sum_i dS[i,B+j] u_i / tau
        combine(s->du, 0, s->dS, ld, 0, B, s->u, B, D, s->tau);
        normalize_backward(dhn, s->du, s->un, s->norm + 2 * B, B, D);
    }
}
