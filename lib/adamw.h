// adamw.h — AdamW exactly as torch.optim.AdamW, over flat fp32 buffers, with per-tensor
// weight decay and learning-rate multipliers, lr schedules and global-norm clipping.
//
// All parameters live in one allocation (float params[n]) in the memory of a backend
// (backend.h; host memory for the CPU); gradients, first and second moments are parallel
// buffers of the same layout in the same memory, and the update is the backend's
// adamw_update_multi op, one call per step for all tensors (one launch on a GPU, where a call
// per tensor was ~100 small launches for MiniLM). A tensor table names each tensor's slice
// and its group settings, which is how torch's parameter groups map here:
//   no weight decay on biases and LayerNorm weights   -> decay = 0
//   layer-wise lr decay                              -> lr_scale = mt_llrd_scale(...)
// One step, per element, in torch's order and float arithmetic (torch 2.x, single-tensor):
//   p  = p * (1 - lr*wd)                      (decoupled decay, before the update)
//   m  = m + (1-beta1) * (g - m)              (lerp)
//   v  = v * beta2 + (1-beta2) * g * g
//   p  = p - (lr / (1-beta1^t)) * m / (sqrt(v) / sqrt(1-beta2^t) + eps)
#ifndef MT_ADAMW_H
#define MT_ADAMW_H

#include <stddef.h>

#include "backend.h"

typedef struct {
    size_t offset, size;  // the tensor's slice [offset, offset + size) of the flat buffers
    double lr_scale;      // multiplier on the scheduled lr (layer-wise decay); 1 = none
    int decay;            // 1: weight decay applies; 0: biases and LayerNorm weights
} mt_adamw_tensor;

typedef struct {
    double beta1, beta2, eps, weight_decay;
} mt_adamw_hparams;

// torch's defaults except weight decay, which is the recipe's: betas (0.9, 0.999),
// eps 1e-8, weight_decay 0.01.
mt_adamw_hparams mt_adamw_defaults(void);

typedef struct {
    const mt_backend *be;      // whose memory params, grads, m and v are
    mt_adamw_hparams hp;
    size_t n;                  // number of parameters (floats)
    float *m, *v;              // [n] first and second moments (be memory), zero at start
    long step;                 // optimizer steps taken (torch's state["step"])
    mt_adamw_tensor *tensors;  // [n_tensors] copy of the table sorted by offset; slices tile [0, n)
    mt_adamw_chunk *list;      // [n_tensors] the op's list (host memory), refilled each step
    int n_tensors;
} mt_adamw;

// Dies if the slices overlap, leave gaps, or do not cover exactly n floats. The moments are
// allocated with be->alloc.
void mt_adamw_init(mt_adamw *o, const mt_backend *be, const mt_adamw_hparams *hp, const mt_adamw_tensor *tensors,
                   int n_tensors, size_t n);
void mt_adamw_free(mt_adamw *o);
// One update of params[n] from grads[n] (both be memory) at learning rate lr (the scheduled value; each
// tensor uses lr * lr_scale). Increments o->step first, as torch does.
void mt_adamw_step(mt_adamw *o, float *params, const float *grads, double lr);

// ---- learning-rate schedules ------------------------------------------------------------
typedef enum { MT_LR_CONSTANT, MT_LR_LINEAR } mt_lr_kind;
typedef struct {
    mt_lr_kind kind;
    double peak;              // the base lr, reached at the end of warm-up
    long warmup_steps;        // 0 = no warm-up
    long total_steps;         // MT_LR_LINEAR: the lr reaches 0 here
} mt_lr_schedule;
// The lr for the optimizer step that follows `done` completed steps (0 for the first), as
// transformers' get_{constant,linear}_schedule_with_warmup with LambdaLR stepped after
// each optimizer step: warm-up done/warmup; then 1 (constant) or
// max(0, (total - done) / (total - warmup)) (linear); times peak.
double mt_lr_at(const mt_lr_schedule *s, long done);

// Multiplier for layer-wise lr decay: layer 0 is the embeddings, 1..n_layers the encoder
// layers, n_layers + 1 the heads (scale 1); scale = decay^(n_layers + 1 - layer).
double mt_llrd_scale(double decay, int layer, int n_layers);

// ---- gradient clipping -----------------------------------------------------------------
// As torch.nn.utils.clip_grad_norm_(params, max_norm): the L2 norm of all of grads[n],
// then grads *= min(max_norm / (norm + 1e-6), 1). Returns the norm before clipping (NaN
// or inf if a gradient is; the grads are then scaled by NaN too, as in torch, so the
// caller must check). The sum of squares is in double, in fixed blocks summed in order (the
// backend's gram op with k = 1); the scaling is its scale op.
// These two take host memory (the CPU backend).
double mt_clip_grad_norm(float *grads, size_t n, double max_norm);
// The same norm without clipping.
double mt_grad_norm(const float *grads, size_t n);

// A gradient split over several buffers, possibly in different backends' memory (e.g. the
// encoder's on the GPU, the task model's on the host): one segment each.
typedef struct {
    const mt_backend *be;
    float *g;   // [n] be memory
    size_t n;
} mt_grad_segment;
// The global norm over all segments (the sum of their squared norms), and, when max_norm > 0,
// the clipping above applied to every segment with one coefficient. Returns the norm.
double mt_clip_grad_segments(const mt_grad_segment *seg, int n_seg, double max_norm);

#endif
