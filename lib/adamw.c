// adamw.c — AdamW as torch.optim.AdamW, schedules, clipping (see adamw.h).
#include "adamw.h"

#include <math.h>
#include <stdlib.h>

#include "common.h"

mt_adamw_hparams mt_adamw_defaults(void) {
    return (mt_adamw_hparams){.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
}

static int by_offset(const void *a, const void *b) {
    size_t x = ((const mt_adamw_tensor *)a)->offset, y = ((const mt_adamw_tensor *)b)->offset;
    return (x > y) - (x < y);
}

// The table, sorted by offset, must tile [0, n) exactly: every parameter updated once, none
// missed (and the op's list in ascending offset, as backend.h asks).
static void check_tiling(const mt_adamw_tensor *s, int k, size_t n) {
    size_t end = 0;
    for (int i = 0; i < k; i++) {
        if (s[i].offset != end)
            mt_die("adamw: tensor at offset %zu leaves a gap or overlap at %zu", s[i].offset, end);
        end += s[i].size;
    }
    if (end != n) mt_die("adamw: tensors cover %zu of %zu parameters", end, n);
}

void mt_adamw_init(mt_adamw *o, const mt_backend *be, const mt_adamw_hparams *hp, const mt_adamw_tensor *tensors,
                   int n_tensors, size_t n) {
    if (n_tensors <= 0) mt_die("adamw: no tensors");
    o->tensors = mt_malloc((size_t)n_tensors * sizeof *o->tensors);
    for (int i = 0; i < n_tensors; i++) o->tensors[i] = tensors[i];
    qsort(o->tensors, (size_t)n_tensors, sizeof *o->tensors, by_offset);  // elementwise: order is free
    check_tiling(o->tensors, n_tensors, n);
    o->be = be;
    o->hp = *hp;
    o->n = n;
    o->m = be->alloc(n * sizeof(float));  // zero-filled
    o->v = be->alloc(n * sizeof(float));
    o->step = 0;
    o->n_tensors = n_tensors;
    o->list = mt_malloc((size_t)n_tensors * sizeof *o->list);
}

void mt_adamw_free(mt_adamw *o) {
    if (o->be) o->be->free(o->m), o->be->free(o->v);
    free(o->tensors), free(o->list);
    o->m = o->v = NULL;
    o->tensors = NULL;
    o->list = NULL;
}

// The scalars torch computes in Python doubles and hands to float kernels.
static mt_adamw_scalars scalars_for(const mt_adamw *o, const mt_adamw_tensor *t, double lr) {
    const mt_adamw_hparams *hp = &o->hp;
    double lr_t = lr * t->lr_scale;
    double wd = t->decay ? hp->weight_decay : 0.0;
    double bc1 = 1.0 - pow(hp->beta1, (double)o->step);
    double bc2 = 1.0 - pow(hp->beta2, (double)o->step);
    return (mt_adamw_scalars){
        .decay_mul = (float)(1.0 - lr_t * wd),
        .beta1_w = (float)(1.0 - hp->beta1),
        .beta2 = (float)hp->beta2,
        .beta2_w = (float)(1.0 - hp->beta2),
        .bc2_sqrt = (float)sqrt(bc2),
        .eps = (float)hp->eps,
        .neg_step_size = (float)(-(lr_t / bc1)),
        .decay = wd != 0.0,  // torch skips the multiply when weight_decay == 0
    };
}

void mt_adamw_step(mt_adamw *o, float *params, const float *grads, double lr) {
    o->step++;
    for (int i = 0; i < o->n_tensors; i++) {
        const mt_adamw_tensor *t = &o->tensors[i];
        o->list[i] = (mt_adamw_chunk){t->offset, t->size, scalars_for(o, t, lr)};
    }
    if (o->n_tensors)  // an optimizer never initialised (no tensors) steps as a no-op
        o->be->adamw_update_multi(params, grads, o->m, o->v, o->list, o->n_tensors);
}

double mt_lr_at(const mt_lr_schedule *s, long done) {
    if (done < s->warmup_steps) return s->peak * (double)done / (double)s->warmup_steps;
    if (s->kind == MT_LR_CONSTANT) return s->peak;
    long decay_steps = s->total_steps - s->warmup_steps;
    double left = (double)(s->total_steps - done) / (double)(decay_steps > 1 ? decay_steps : 1);
    return s->peak * (left > 0.0 ? left : 0.0);
}

double mt_llrd_scale(double decay, int layer, int n_layers) {
    if (layer < 0 || layer > n_layers + 1)
        mt_die("layer-wise lr decay: layer %d outside 0..%d", layer, n_layers + 1);
    return pow(decay, (double)(n_layers + 1 - layer));
}

double mt_clip_grad_segments(const mt_grad_segment *seg, int n_seg, double max_norm) {
    double total = 0.0;
    for (int i = 0; i < n_seg; i++) {
        if (!seg[i].n) continue;
        double sq;
        const float *g = seg[i].g;
        seg[i].be->gram(&sq, &g, 1, seg[i].n);  // blocked and ordered: thread-count independent
        total += sq;
    }
    double norm = sqrt(total);
    if (max_norm <= 0) return norm;
    float coef = (float)(max_norm / (norm + 1e-6));  // NaN stays NaN, as in torch
    if (coef > 1.0f) coef = 1.0f;
    if (coef == 1.0f) return norm;  // x * 1 == x for every float
    for (int i = 0; i < n_seg; i++)
        if (seg[i].n) seg[i].be->scale(seg[i].g, coef, seg[i].n);
    return norm;
}

double mt_grad_norm(const float *grads, size_t n) {
    mt_grad_segment s = {mt_backend_cpu(), (float *)grads, n};
    return mt_clip_grad_segments(&s, 1, 0.0);
}

double mt_clip_grad_norm(float *grads, size_t n, double max_norm) {
    mt_grad_segment s = {mt_backend_cpu(), grads, n};
    return mt_clip_grad_segments(&s, 1, max_norm);
}
