// contrastive.h — the logic of `simcse`: contrastive examples mined from token shards, the
// batch plan, the supervised SimCSE training loop over the encoder, and the atomic
// checkpoint directory it writes.
//
//   mt_cl_data d = {0};
//   mt_cl_load_shard(&d, MT_CL_QQP, "qqp.tok", vocab_fp, &mine, limit, &stats);
//   mt_cl_train(m, &d, &opts, log, &result);       // m: mt_bert on the CPU backend
//
// An example is a triple of token sequences (anchor, positive, optional hard negative). A
// batch of B examples is ONE packed encoder forward of 2B (or 3B) sequences: anchors, then
// positives, then negatives; mean (or CLS) pooling; the SimCSE loss of lib/simcse.h; one
// backward through pooling and encoder; AdamW.
#ifndef MT_CONTRASTIVE_H
#define MT_CONTRASTIVE_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bert.h"
#include "stream.h"

// ---- examples ---------------------------------------------------------------------------

typedef struct {
    int32_t *tok;   // every sequence end to end
    size_t n_tok, cap_tok;
    size_t *start;  // [n] first token of sequence i
    int32_t *len;   // [n]
    int n, cap;
} mt_seq_pool;

typedef struct {
    int32_t anchor, positive, negative;  // sequence indices; negative -1 when none
} mt_cl_example;

typedef struct {
    mt_seq_pool seqs;
    mt_cl_example *ex;
    int n_ex, cap_ex;
} mt_cl_data;

int mt_seq_pool_add(mt_seq_pool *p, const int32_t *ids, int len);  // returns the index
void mt_cl_data_free(mt_cl_data *d);
// Real tokens of example i (its two or three sequences).
int mt_cl_example_tokens(const mt_cl_data *d, int i);

// ---- mining positives (and hard negatives) from records ----------------------------------

typedef enum { MT_CL_QQP, MT_CL_STS, MT_CL_SST, MT_CL_NLI } mt_cl_source;
int mt_cl_source_parse(const char *name);  // "qqp" | "sts" | "sst" | "nli"; -1 otherwise
const char *mt_cl_source_name(mt_cl_source s);

typedef struct {
    double min_score;     // STS: a positive needs similarity > min_score (default 4)
    uint64_t seed;        // SST: the same-label pairing is a permutation under this seed
    float nli_entail;     // NLI: label value of entailment (0, tokenize's documented map)
    float nli_contra;     // NLI: label value of contradiction (2)
} mt_cl_mine_options;
mt_cl_mine_options mt_cl_mine_defaults(void);

typedef struct {
    long records;           // records read
    long positives;         // examples made
    long hard_negatives;    // of which with a hard negative (NLI)
    long premises;          // NLI: distinct premises (by token ids)
    long skipped_premises;  // NLI: premises without both an entailment and a contradiction
    long entailments, contradictions;  // NLI: records with those labels
    long unpaired;          // SST: sentences left without a same-label partner
} mt_cl_mine_stats;

// Rules, one per source:
//   qqp  label is_duplicate = 1                 -> (ids_a, ids_b)
//   sts  label similarity > min_score           -> (ids_a, ids_b)
//   sst  label (class 0..15) of ids_a: per label, the sentences in a permutation under
//        (seed, label) pair up in order, 0-1, 2-3, ...; a sentence identical to the one
//        waiting for a partner is left unpaired (a pair is always two different sentences)
//   nli  records grouped by the premise's token ids (ids_a); each entailment hypothesis
//        (ids_b) k of a premise with contradictions c_0..c_{n-1} gives
//        (premise, entailment k, c_{k mod n}); premises lacking either are skipped
// Records are kept in stream order, so the result is a function of the records and seed.
typedef struct mt_cl_miner mt_cl_miner;
mt_cl_miner *mt_cl_miner_new(mt_cl_source src, const mt_cl_mine_options *o, mt_cl_data *d);
// Takes one record; 0, or -1 with the reason in err (a missing label or tensor).
int mt_cl_miner_add(mt_cl_miner *m, const mt_record *r, char *err, size_t errlen);
// Makes the examples that need every record (SST, NLI) and writes this miner's counts to st.
void mt_cl_miner_finish(mt_cl_miner *m, mt_cl_mine_stats *st);
void mt_cl_miner_free(mt_cl_miner *m);

// Reads a token shard (at most `limit` records, 0 = all), mines it into d and writes its
// counts to st. Dies with a
// message naming the file on: a stream that is not a token stream (or not a pair stream,
// for qqp/sts/nli), a vocab_fp other than vocab_fp, a record without the needed tensors
// or labels, and a shard that yields no example (saying what it found).
void mt_cl_load_shard(mt_cl_data *d, mt_cl_source src, const char *path, const char *vocab_fp,
                      const mt_cl_mine_options *o, long limit, mt_cl_mine_stats *st);

// ---- the batch plan -------------------------------------------------------------------

// Epoch e: examples in a permutation under (seed, e, MT_SITE_SHUFFLE); windows of
// MT_CL_BUCKET_BATCHES batches are sorted by tokens (length bucketing: little padding and
// similar-length in-batch negatives), cut into batches of at most batch_size examples and
// batch_tokens real tokens, and the window's batches are shuffled. Batches of one example
// (no in-batch negative) are dropped.
#define MT_CL_BUCKET_BATCHES 32
typedef struct {
    int32_t *ex;     // example indices, batch after batch
    int32_t *start;  // [n_batches + 1] batch b is ex[start[b] .. start[b+1])
    int n_batches, cap_batches;
    size_t n, cap;
} mt_cl_plan;
void mt_cl_plan_epoch(mt_cl_plan *p, const mt_cl_data *d, int epoch, uint64_t seed, int batch_size,
                      int batch_tokens);
void mt_cl_plan_free(mt_cl_plan *p);

// ---- training ---------------------------------------------------------------------------

typedef struct {
    int batch_size;      // examples per step (default 32)
    int batch_tokens;    // real tokens per packed forward at most (default 16384)
    int epochs;          // default 1
    long max_steps;      // 0: every batch of every epoch
    double lr;           // peak, default 3e-5
    double weight_decay; // 0.01 (not on biases / LayerNorm weights)
    double warmup;       // fraction of the steps with linear warm-up (0.1), then linear decay
    double tau;          // 0.05
    double clip;         // global gradient-norm clip (1.0, as transformers' Trainer); 0 = off
    float dropout;       // 0.1 at every encoder dropout site
    int symmetric;
    int pool;            // MT_POOL_MEAN | MT_POOL_CLS
    uint64_t seed;
    int log_every;       // progress line every N steps (0: about every 2 s)
    const char *loss_scale;  // lossscale.h: dynamic | none | VALUE; NULL: by the backend's precision
    double loss_scale_init;  // dynamic's first scale (0: 65536)
    size_t max_memory;   // the memory plan's cap in bytes (0: the backend's free memory only)
    long fail_at_step;   // testing: a NaN loss at this step (0: none)
} mt_cl_train_options;
mt_cl_train_options mt_cl_train_defaults(void);

typedef struct {
    long steps, examples, tokens;
    long skipped;           // steps whose loss or gradient was not finite (loss scaling): no update
    double loss_scale;      // the scale at the end (1 without loss scaling)
    double loss, accuracy;  // of the last step
    double mean_loss;       // over the last min(steps, 20) steps
    double seconds;
} mt_cl_result;

// Trains m's parameters in place. log: TSV "step loss accuracy lr" per step (may be NULL).
// Dies on a NaN/inf loss, and on a NaN/inf gradient norm without loss scaling, naming the step;
// with loss scaling such a step is skipped (lossscale.h).
void mt_cl_train(mt_bert *m, const mt_cl_data *d, const mt_cl_train_options *o, FILE *log,
                 mt_cl_result *res);

// ---- the checkpoint directory ------------------------------------------------------------

// Built in OUT.tmp.PID (removed at exit unless committed), then renamed to OUT in one step,
// so OUT is a whole checkpoint or absent. OUT existing is an error unless replace = 1 (then
// the old directory is moved aside, the new one renamed in, the old one deleted).
typedef struct {
    char *out, *tmp;
    int replace;
} mt_cl_outdir;
void mt_cl_outdir_begin(mt_cl_outdir *o, const char *out, int replace);  // dies on failure
// tmp/name
void mt_cl_outdir_path(const mt_cl_outdir *o, const char *name, char *buf, size_t n);
void mt_cl_outdir_commit(mt_cl_outdir *o);  // dies on failure

#endif
