// memplan.h — a run's memory, planned once before anything is allocated (issue 6).
//
// From the model's config, the batch bounds (max tokens, sequences and length per batch),
// training or not and what the trainer keeps on the device, the plan lists every buffer of the
// run's backend memory with its size: parameters, gradients, AdamW moments, PCGrad's per-task
// gradients, the activation arena, the backward's buffers and the backend's workspaces
// (mt_backend.workspace_bytes, at the precision set); mt_mem_plan_taskmodel adds the sentence
// model's parameters, gradients, moments, PCGrad copies and activations. mt_mem_plan_check compares its total with
// what the backend has (free device memory) and the user's cap (--max-memory, MTBERT_MAX_MEMORY)
// and dies before the run starts when it does not fit; mt_bert_reserve then allocates it.
//
//   mt_mem_plan p;
//   mt_mem_plan_encoder(&p, &cfg, be, &(mt_mem_run){.max_tokens = 8192, .max_batch = 48, .max_len = 128,
//                                                  .training = 1, .moments = 1, .task_grads = 3});
//   mt_mem_plan_check(&p, be, mt_max_memory(opt), 0, "lower --batch-tokens (now 8192)", 0);
#ifndef MT_MEMPLAN_H
#define MT_MEMPLAN_H
#include <stddef.h>

#include "backend.h"
#include "config.h"
#include "taskmodel.h"

#define MT_MEM_MAX_ITEMS 24

typedef struct {
    const char *name;  // "parameters", "activations", "attention scores", ...
    size_t bytes;
} mt_mem_item;

typedef struct {
    mt_mem_item item[MT_MEM_MAX_ITEMS];
    int n;
    size_t total;
} mt_mem_plan;

typedef struct {
    int max_tokens, max_batch, max_len;  // bounds of every batch of the run (mt_bert_reserve's)
    int training;                        // activations kept for backward, gradients
    int moments;                         // AdamW's two moments live in backend memory
    int task_grads;                      // PCGrad: per-task gradient copies in backend memory
    size_t operand_floats;               // the largest operand of a product beside the encoder's
                                         // (mt_sentence_operand_floats; 0: none)
    int max_padded;                      // sequences x longest of a batch at most (embed's
                                         // batcher: its token budget; 0: max_batch x max_len)
    size_t gram_n;                       // training: floats per buffer of the largest gram call
                                         // beside the encoder's parameters (PCGrad and clipping
                                         // over the sentence model's segment; 0: none)
} mt_mem_run;

// The plan of an encoder run on backend be (the pooler counted whether or not the checkpoint
// has one: at most C*C + C floats too many). Items of 0 bytes are left out.
void mt_mem_plan_encoder(mt_mem_plan *p, const mt_bert_config *cfg, const mt_backend *be, const mt_mem_run *r);
// Appends the task model's items to an encoder plan: the sentence model's parameters and (r's
// training, moments, task_grads) gradients, AdamW moments and PCGrad copies, and the
// activations kept on be for passes of at most max_examples examples and r->max_tokens tokens
// (mt_tm_acts_backend_bytes: what mt_tm_acts_reserve allocates).
void mt_mem_plan_taskmodel(mt_mem_plan *p, const mt_taskmodel *tm, const mt_backend *be, const mt_mem_run *r,
                           int max_examples);
// Appends an item (name must outlive the plan).
void mt_mem_plan_add(mt_mem_plan *p, const char *name, size_t bytes);

// One code path both sizes and allocates a set of backend buffers, so the plan's numbers are
// the allocation's: mt_mem_take adds bytes up and, when be is set, allocates them (be NULL:
// sizing only, returns NULL).
typedef struct {
    const mt_backend *be;
    size_t bytes;
} mt_mem_sizer;
static inline void *mt_mem_take(mt_mem_sizer *s, size_t bytes) {
    s->bytes += bytes;
    return s->be ? s->be->alloc(bytes) : NULL;
}

// "20G", "512M", "64k", "1.5G", "1000000" (bytes; K/M/G/T are powers of 1024, an optional
// trailing B or iB is accepted) -> bytes; dies naming opt on anything else.
size_t mt_parse_size(const char *opt, const char *s);
// The cap: the option's value when given, else MTBERT_MAX_MEMORY when set, else 0 (none).
size_t mt_max_memory(const char *option_value);
// "1.50 GiB", "512.0 MiB", "900 B" into buf.
const char *mt_format_bytes(size_t bytes, char *buf, size_t n);

// Logs the plan's total on stderr (one line; every item with verbose), then dies, before any
// of it is allocated, when the total exceeds the cap (0: none) or the backend's free memory:
// the message gives the total needed, what is available, the largest items and `lower` (what
// the user can lower, with its current values). held: bytes of the plan allocated already
// (e.g. parameters loaded), which the backend's free memory no longer shows.
void mt_mem_plan_check(const mt_mem_plan *p, const mt_backend *be, size_t cap, int verbose, const char *lower,
                       size_t held);

#endif
