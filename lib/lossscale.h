// lossscale.h — loss scaling for fp16 training, as torch.cuda.amp.GradScaler.
//
// fp16 products lose gradients below 2^-24 and turn values above 65504 into inf. The loss is
// multiplied by `scale` before the backward (every gradient grows by the same factor), and the
// gradient is divided by it again before clipping and the optimizer. Modes:
//   none     scale 1: nothing changes (the default, except with --precision fp16)
//   fixed    a constant scale; a step whose gradient is not finite is skipped
//   dynamic  GradScaler's rule: start at 2^16; a non-finite gradient skips the optimizer step
//            and halves the scale; after 2000 finite steps in a row the scale doubles
// A non-finite loss counts as a non-finite gradient (its backward would give one) in both
// scaling modes; without scaling the trainers stop on it, as they always did.
// A skipped step leaves parameters and AdamW moments (and AdamW's step count, which drives its
// bias correction) untouched, as GradScaler's skipped optimizer.step(). The trainer's own step
// counter still advances, so its data order, dropout keys and lr schedule go on as in torch's
// usual loop (scaler.step, scaler.update, scheduler.step() every iteration); transformers'
// Trainer instead holds the scheduler back on a skipped step.
// With a power-of-two scale the scaling and unscaling are exact (barring overflow and
// subnormals), so a run with --loss-scale 1024 gives the bits of one without.
#ifndef MT_LOSSSCALE_H
#define MT_LOSSSCALE_H

#include <stddef.h>

#include "adamw.h"

typedef enum { MT_LOSS_SCALE_NONE, MT_LOSS_SCALE_FIXED, MT_LOSS_SCALE_DYNAMIC } mt_loss_scale_mode;

#define MT_LOSS_SCALE_INIT 65536.0          // GradScaler's init_scale
#define MT_LOSS_SCALE_GROWTH_INTERVAL 2000  // finite steps in a row before the scale doubles

typedef struct {
    mt_loss_scale_mode mode;
    float scale;    // the loss's multiplier (1 for none); a float, as GradScaler's tensor
    long good;      // dynamic: finite steps in a row since the scale last changed
    long skipped;   // steps skipped so far in the run
} mt_loss_scaler;

// spec: "none" | "dynamic" | a positive finite number (fixed); NULL: dynamic when precision is
// "fp16", else none. init: the dynamic mode's first scale (<= 0: MT_LOSS_SCALE_INIT; must be a
// finite float). Returns 0, or -1 with the reason (naming --loss-scale) in err.
int mt_loss_scaler_init(mt_loss_scaler *s, const char *spec, double init, const char *precision, char *err,
                        size_t errlen);
const char *mt_loss_scale_mode_name(mt_loss_scale_mode m);
// The value of --loss-scale-init as every trainer parses it: 0 (the default, 65536) or a
// positive number that is a finite float; dies naming the option otherwise.
double mt_loss_scale_init_parse(const char *arg);

// After the backward of loss * s->scale: divides every segment by the scale (nothing to do
// for scale 1), then mt_clip_grad_segments(seg, n_seg, max_norm). Returns the global norm of
// the unscaled gradient (inf or NaN when some element is).
double mt_loss_scaler_unscale_clip(const mt_loss_scaler *s, const mt_grad_segment *seg, int n_seg, double max_norm);

// The step's outcome from the norm above: 1 when the optimizer should step (norm finite), 0
// to skip it. Fixed and dynamic modes count the skip and say so on stderr, naming `step` (the
// 1-based step number); dynamic also halves the scale, or doubles it after
// MT_LOSS_SCALE_GROWTH_INTERVAL finite steps in a row (never to inf). None only answers: its
// caller stops on a non-finite gradient as it always did.
int mt_loss_scaler_update(mt_loss_scaler *s, double norm, long step);
// A step whose loss is not finite: its gradient would not be either (GradScaler finds inf in
// it), so the same outcome as a non-finite norm without computing it: returns 0 (skip the
// optimizer step; fixed and dynamic count it, halve the scale (dynamic) and say so on stderr,
// naming `what`, e.g. "sst loss") or, with no loss scaling, -1: its caller stops as before.
int mt_loss_scaler_skip_loss(mt_loss_scaler *s, const char *what, double loss, long step);

// The state as one line for a checkpoint ("dynamic 32768 17 1": mode, scale, good, skipped),
// and back; parse returns 0, or -1 for a malformed line (s unchanged).
void mt_loss_scaler_format(const mt_loss_scaler *s, char *buf, size_t n);
int mt_loss_scaler_parse(mt_loss_scaler *s, const char *text);

#endif
