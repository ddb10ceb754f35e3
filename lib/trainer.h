// trainer.h — multi-task fine-tuning (the logic of pcgrad-train): encoder + task model over
// tokenized shards, AdamW, optional PCGrad, per-epoch dev evaluation, best/last checkpoints,
// exact resume.
//
// A STEP is one optimizer update. Every task that is active in the current phase contributes
// to every step:
//   without --pcgrad  each task takes its next batch (batch_size examples, token budget);
//                     the step's gradient is the SUM of the task losses' gradients.
//   with --pcgrad     a step has slots = max(K, batch_size / partial_batch) partial batches
//                     of partial_batch examples: one per task (every task in every step),
//                     the remaining slots go to tasks drawn uniformly with replacement
//                     (stream (step, MT_SITE_TASK_SAMPLE)); a task's partial batches form one
//                     encoder pass and its loss is their mean. The per-task gradients of the
//                     SHARED parameters (encoder + sentence model) are combined by
//                     mt_pcgrad_step (order stream (step, MT_SITE_PCGRAD)); each head gets its
//                     own task's gradient untouched.
// Each task walks its own sequence of passes (taskdata.h batch order of pass 0, 1, ...), so a
// smaller task is simply revisited. An EPOCH is as many steps as the largest active task needs
// for one pass (with --pcgrad: in expectation). PHASES: one with all tasks, or with
// --schedule one per listed task, in order, each of `epochs` epochs.
// Dropout of task t's pass in step s is keyed (seed, s, pass = t). Nothing random depends on
// anything but the seed and those counters, which is what makes resume exact.
#ifndef MT_TRAINER_H
#define MT_TRAINER_H

#include <stdint.h>

#include "taskmodel.h"

typedef struct {
    // inputs / outputs
    char *model_dir;                        // the base model (vocabulary, architecture)
    char *init_dir;                         // start from this checkpoint (encoder + heads if present)
    char *task_path[MT_N_TASKS];            // training shards (NULL: task not trained)
    char *dev_path[MT_N_TASKS];             // dev shards (NULL: not evaluated)
    char *out_dir;
    // recipe
    int epochs, batch_size, partial_batch, batch_tokens, window;
    double lr, weight_decay, warmup, clip, llrd;  // warmup < 1: a fraction of all steps
    int lr_linear;                          // 0 constant (after warm-up), 1 linear decay to 0
    float dropout;
    long seed;
    int pcgrad, pcgrad_sum;
    int schedule[MT_N_TASKS], n_schedule;   // sequential phases; 0: all tasks together
    int pair_model, sentence_model, cnn_filters, lstm_hidden;
    long max_steps, limit;                  // 0: no limit
    // this process only (not part of a resumed run's identity)
    long stop_after_steps;                  // save `last` and exit 0 once step reaches this
    long fail_at_step;                      // testing: a NaN loss at this step
    int threads;
    const char *device;                     // auto | cpu | cuda (mt_backend_select)
    const char *precision;                  // CUDA matrix products: fp32 | tf32 | bf16 | fp16 (NULL: MTBERT_PRECISION, else fp32)
    const char *max_memory;                 // --max-memory SIZE (NULL: MTBERT_MAX_MEMORY, else none)
    // loss scaling (lossscale.h): set when a run starts and kept in its state; given to a
    // resume, loss_scale starts a new scaler
    const char *loss_scale;                 // dynamic | none | VALUE; NULL: dynamic with fp16, else none
    double loss_scale_init;                 // dynamic's first scale (0: 65536)
} mt_train_options;

void mt_train_defaults(mt_train_options *o);
// Frees the strings of o (model_dir, init_dir, task/dev paths, out_dir).
void mt_train_options_free(mt_train_options *o);
// Runs a training from scratch (o->out_dir must not hold a run) and returns the exit status.
int mt_train(mt_train_options *o);
// Continues the run in dir from dir/last (the run's options come from its state file; only
// stop_after_steps, fail_at_step, threads, device, precision, max_memory are taken from o, and the loss
// scaling when o->loss_scale is set; else the run's saved scaler).
int mt_train_resume(const char *dir, mt_train_options *o);

#endif
