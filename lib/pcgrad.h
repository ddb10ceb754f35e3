// pcgrad.h — gradient surgery across tasks (Yu et al. 2020, "Gradient Surgery for
// Multi-Task Learning", Algorithm 1), with per-step conflict telemetry.
//
// Input: K task gradients of the shared parameters, each a float[n] buffer the caller
// allocates once (the per-task backward passes write them; across processes, all-reduce
// them first). Task-specific parameters (heads) are not passed here: they keep their own
// task's gradient. Output: one combined float[n] gradient for the optimizer.
//
// Algorithm 1: for each task i, g_i' = g_i; for each other task j in a fresh random order,
// if g_i' . g_j < 0 then g_i' -= (g_i' . g_j / |g_j|^2) g_j, always with the ORIGINAL g_j;
// then combine the g_i' by mean (default) or sum.
//
// How: every g_i' is g_i minus a combination of the original gradients, so the whole
// algorithm runs on the K x K Gram matrix G[i][j] = g_i . g_j (in double): one pass over
// the buffers computes G, the projections are K^2 arithmetic on it, and one more pass
// writes out = sum_j w_j g_j. Exact in exact arithmetic, two passes over the buffers, no
// per-task copies. The two passes are the backend ops gram and combine (backend.h): the Gram
// pass uses fixed MT_GRAM_BLOCK-element blocks whose partial sums are added in block order,
// so results do not depend on the thread count.
//
// Segments: the shared parameters may be split over buffers in different backends' memory
// (the encoder's on the GPU, the sentence model's on the host). G is then the sum of the
// segments' Gram matrices and each segment is combined on its own backend with the same
// weights; the K x K arithmetic always runs on the host.
//
// Random order: for task i = 0..K-1 in turn, the other tasks in ascending order are put
// through mt_rng_shuffle(rng, ., K-1). Key the rng by (seed, step, MT_SITE_PCGRAD) and a
// resumed run draws the same orders.
#ifndef MT_PCGRAD_H
#define MT_PCGRAD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backend.h"
#include "rng.h"

#define MT_PCGRAD_MAX_TASKS 16

typedef enum { MT_PCGRAD_MEAN, MT_PCGRAD_SUM } mt_pcgrad_reduce;

typedef struct {
    int k;         // tasks, 1..MT_PCGRAD_MAX_TASKS
    size_t n;      // shared parameters (floats per task buffer)
    mt_pcgrad_reduce reduce;
    // The gradients' loss scale (lossscale.h; 1 by default, the caller sets it before a step):
    // gram, norm and removed are of the gradients divided by it, so the telemetry does not
    // change with the scale (the projections are scale-free anyway).
    double grad_scale;

    // ---- the last step (all [k*k] arrays are row-major, index i*k + j) ----
    double *gram;        // [k*k] g_i . g_j of the original gradients
    double *coef;        // [k*k] g_i' = g_i - sum_j coef[i*k+j] g_j  (coef[i*k+i] = 0)
    double *weight;      // [k] out = sum_j weight[j] g_j
    double *cosine;      // [k*k] cos(g_i, g_j); 0 where either gradient is zero
    uint8_t *conflict;   // [k*k] g_i . g_j < 0 (original gradients; symmetric)
    double *norm;        // [k] |g_i|
    double *removed;     // [k] |g_i - g_i'|: the norm projection took from task i
    uint32_t *order;     // [k*(k-1)] row i: the order task i visited the others
    int projections;     // projections applied in the last step

    // ---- running totals since init (steps whose Gram matrix is not finite, which loss
    // scaling skips, are left out) ----
    long steps;
    long *conflict_steps;  // [k*k] steps in which pair (i, j) conflicted
    double *cosine_sum;    // [k*k]
    double *removed_sum;   // [k]
    long projections_total;
} mt_pcgrad;

// All memory is allocated here, once; mt_pcgrad_step allocates nothing.
void mt_pcgrad_init(mt_pcgrad *pc, int k, size_t n, mt_pcgrad_reduce reduce);
void mt_pcgrad_free(mt_pcgrad *pc);

// One piece of the shared parameters: k task gradients of n floats in be's memory.
typedef struct {
    const mt_backend *be;
    const float *const *grads;  // [k] pointers (a host array) to be memory [n], read only
    float *out;                 // [n] be memory, the combined gradient (may not alias a grad)
    size_t n;
} mt_pcgrad_segment;

// The segments' n must add up to pc->n. Fills the last-step telemetry and adds to the
// running totals.
void mt_pcgrad_step_segments(mt_pcgrad *pc, const mt_pcgrad_segment *seg, int n_seg, mt_rng *order_rng);
// One host segment: grads, k pointers to float[n] (host memory), read only; out: float[n]
// (may not alias a grad).
void mt_pcgrad_step(mt_pcgrad *pc, const float *const *grads, float *out, mt_rng *order_rng);

// g_i' of the last step, written to out[n] (host memory; for tests and inspection).
void mt_pcgrad_projected(const mt_pcgrad *pc, const float *const *grads, int i, float *out);

// One line on fp about the last step, e.g.
//   pcgrad step: cos sst/qqp -0.12 sst/sts 0.30 qqp/sts 0.05 | removed sst 0.041 qqp 0 sts 0
// names: k task names, or NULL for "0", "1", ...
void mt_pcgrad_print_step(const mt_pcgrad *pc, const char *const *names, FILE *fp);
// One line on fp about the run so far, e.g.
//   pcgrad: 120 steps | conflict sst/qqp 34% sst/sts 12% qqp/sts 40% | mean cos ... |
//   mean removed ... | 1.2 projections/step
void mt_pcgrad_print_summary(const mt_pcgrad *pc, const char *const *names, FILE *fp);

#endif
