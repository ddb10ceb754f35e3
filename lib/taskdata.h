// taskdata.h — training data for pcgrad-train: a task's token shard held in memory, the
// per-pass batch order (shuffle, length bucketing in a window, token budget), and packing
// a batch for the encoder in the layout lib/taskmodel.h expects.
//
// Batch order of one pass over a task (deterministic in (seed, task, pass), nothing else):
//   rng   = mt_rng stream (lo = pass << 4 | task, hi = MT_SITE_SHUFFLE) under the run seed
//   perm  = mt_rng_permutation(n)
//   each run of `window` examples of perm is stably sorted by cost (tokens the example puts
//   through the encoder), then cut into batches of at most batch_size examples and
//   batch_tokens tokens (a batch always takes at least one example)
//   the batch order is then shuffled (mt_rng_shuffle, same stream), so lengths do not come
//   in runs. Every example is in exactly one batch per pass.
#ifndef MT_TASKDATA_H
#define MT_TASKDATA_H

#include <stdint.h>

#include "taskmodel.h"

enum { MT_SEQ_A, MT_SEQ_B, MT_SEQ_AB, MT_N_SEQ };  // ids_a, ids_b, ids_ab (types_ab with it)

typedef struct {
    int task;
    char *path;
    int n;                      // examples
    float *label;               // [n]
    int64_t *start;             // [n][MT_N_SEQ] offset of each sequence in tokens (-1: absent)
    int32_t *len;               // [n][MT_N_SEQ]
    int32_t *tokens, *types;    // all sequences end to end; types only for ids_ab (0 elsewhere)
    int64_t n_tokens;
    int32_t *cost;              // [n] encoder tokens of the example under the task model
    int max_len;                // longest sequence
} mt_taskdata;

// Reads a token shard of task (a `tokenize` stream: kind=tokens, the task's label, ids_a, and
// for pairs ids_b, ids_ab, types_ab). Dies with a message naming the file on any problem: not
// a token stream, vocab_fp differs from vocab_fp (unless NULL), a missing or out-of-range
// label (sst 0..4 integer, qqp 0/1, sts 0..5), missing tensors, a bad token type. limit > 0:
// the first limit records only.
void mt_taskdata_load(mt_taskdata *d, int task, const char *path, const char *vocab_fp, long limit);
void mt_taskdata_free(mt_taskdata *d);
// Sets cost[] for the task model's pair model (which sequences go through the encoder).
void mt_taskdata_set_cost(mt_taskdata *d, const mt_taskmodel *tm);

typedef struct {
    int n, n_batches;
    int32_t *order;   // [n] example indices in batch order
    int32_t *first;   // [n_batches + 1] batch b = order[first[b] .. first[b+1])
} mt_batches;

void mt_batches_make(mt_batches *bt, const mt_taskdata *d, uint64_t seed, uint32_t pass, int batch_size,
                     int batch_tokens, int window);
void mt_batches_free(mt_batches *bt);

// One encoder pass for B examples, packed (taskmodel.h layout), buffers grown on demand.
typedef struct {
    int B, nseq, N;
    int32_t *ids, *types, *offsets;  // [N], [N], [nseq + 1]
    float *labels;                   // [B]
    int cap_N, cap_seq;
    int max_len;                     // longest sequence of this pass
} mt_packed;
void mt_pack(mt_packed *p, const mt_taskdata *d, const mt_taskmodel *tm, const int32_t *examples, int B);
void mt_packed_free(mt_packed *p);

#endif
