// heads.h — task heads on frozen sentence embeddings: features, the three linear models
// (softmax regression for sentiment, logistic regression for paraphrase, linear regression
// for similarity), their losses and gradients, fitting with early stopping, zero-shot
// similarity, and head files (safetensors).
//
// A head maps a feature vector x (built from one record's embeddings, see mt_features_*)
// to K outputs: z = W·((x − mean) ⊙ scale) + b. The standardisation (mean, scale) is
// computed on the training part of the data and stored with the head.
#ifndef MT_HEADS_H
#define MT_HEADS_H

#include <stdint.h>

#include "stream.h"

// ---- tasks -------------------------------------------------------------------------
typedef enum { MT_TASK_SST = 0, MT_TASK_QQP = 1, MT_TASK_STS = 2 } mt_task;
#define MT_N_TASKS 3
#define MT_SST_CLASSES 5

const char *mt_task_name(mt_task t);            // "sst", "qqp", "sts"
int mt_task_parse(const char *s, mt_task *out);  // 0 on success, -1 for an unknown name
const char *mt_task_label(mt_task t);           // gold label column: label, is_duplicate, similarity
int mt_task_outputs(mt_task t);                 // K: 5, 1, 1
int mt_task_is_pair(mt_task t);
// The prediction from a task's outputs: sst the argmax class (first of equals), qqp 1 when
// the probability is >= 0.5, sts the score itself.
float mt_task_pred(mt_task t, const float *outputs);

// ---- features ------------------------------------------------------------------------
// A feature vector is the concatenation, in this order, of the parts named in a spec such as
// "pair,cos":  emb  = emb_a                          [H]
//              pair = [u; v; |u − v|; u ⊙ v]  (u = emb_a, v = emb_b)   [4H]
//              cos  = cos(u, v)                      [1]
//              cls  = cls_ab (cross-encoder [CLS])   [H]
enum { MT_FEAT_EMB = 1, MT_FEAT_PAIR = 2, MT_FEAT_COS = 4, MT_FEAT_CLS = 8 };
int mt_features_parse(const char *spec, unsigned *mask);  // 0 ok, -1 unknown/empty part
void mt_features_format(unsigned mask, char *out, int cap);  // canonical spec text
unsigned mt_features_default(mt_task t);  // sst: emb; qqp: pair; sts: pair,cos
int mt_features_dim(unsigned mask, int hidden);
// Fills out[mt_features_dim] from record r. Returns 0, or -1 with *err set to a static
// message when a needed tensor is missing or has the wrong size/dtype.
int mt_features_from_record(unsigned mask, int hidden, const mt_record *r, float *out,
                            const char **err);

void mt_pair_features(const float *u, const float *v, int h, float *out /*[4h]*/);
float mt_cosine(const float *u, const float *v, int n);  // 0 when either vector is zero
// Zero-shot similarity score: 5 · clamp(cos, 0, 1). Sentence-embedding cosines of unrelated
// sentences rarely go below 0, so the negative half carries no signal; Pearson r is the
// same for any increasing affine map of cos, only the clamp can change it.
float mt_zero_shot_score(float cos);

// ---- the head --------------------------------------------------------------------
typedef struct {
    mt_task task;
    unsigned features;  // MT_FEAT_* mask
    int hidden;         // H: size of each embedding
    int dim;            // D: feature size
    int k;              // outputs
    float *mean;        // [D]
    float *scale;       // [D] 1 / standard deviation
    float *w;           // [K, D]
    float *b;           // [K]
    char model_fp[64];  // the encoder the embeddings came from ("" if unknown)
    char pool[32];      // the pooling of those embeddings ("" if unknown)
} mt_head;

mt_head *mt_head_new(mt_task task, unsigned features, int hidden);  // zero weights, identity scaling
void mt_head_free(mt_head *h);

// Raw outputs z[K] for a raw (unstandardised) feature vector x[D].
void mt_head_logits(const mt_head *h, const float *x, float *z);
// Task outputs for x: sst probs[5] + argmax; qqp prob[1] + 0/1; sts score[1] in [0, 5] + score.
void mt_head_predict(const mt_head *h, const float *x, float *out, float *pred);

// Mean loss over n standardised rows xs[n, D] with targets y[n] (class index, 0/1, or score),
// plus 0.5·l2·|W|² (no penalty on b): cross-entropy, binary cross-entropy, or 0.5·squared error.
// When gw[K, D] and gb[K] are given they receive the gradient (overwritten, not accumulated).
double mt_head_loss(const mt_head *h, const float *xs, const float *y, int n, double l2,
                    float *gw, float *gb);

// Task metric of the head on standardised rows: accuracy (sst, qqp) or Pearson r (sts).
double mt_head_metric(const mt_head *h, const float *xs, const float *y, int n);

typedef struct {
    double holdout;  // fraction of rows held out for early stopping (0: none)
    double l2;       // L2 penalty on W
    double lr;       // Adam learning rate
    int epochs;      // at most this many passes
    int patience;    // stop after this many epochs without a better held-out loss
    int batch;       // minibatch size
    uint64_t seed;   // held-out split and shuffling
    int verbose;     // log every epoch
} mt_fit_opts;
void mt_fit_opts_default(mt_fit_opts *o);

typedef struct {
    int n_train, n_held, best_epoch, epochs_run;
    double train_loss, held_loss, train_metric, held_metric;
} mt_fit_report;

// Fits h on x[n, D] (raw features; shuffled and standardised in place) and targets y[n]:
// standardisation from the training rows, then minibatch Adam with early stopping on the
// held-out loss, keeping the best epoch's weights. Deterministic for a given seed.
void mt_head_fit(mt_head *h, float *x, const float *y, int n, const mt_fit_opts *o,
                 mt_fit_report *rep);

// Standardises x[n, D] in place with h's mean and scale.
void mt_head_standardise(const mt_head *h, float *x, int n);

// ---- head files ----------------------------------------------------------------------
// Head files are safetensors: tensors W [K, D], b [K], mean [D], scale [D] (F32), and in
// __metadata__: format=mtbert-head, task, features, hidden, model_fp, pool.
// Save writes atomically (temp + rename); load dies with a clear message on a bad file.
void mt_head_save(const char *path, const mt_head *h);
mt_head *mt_head_load(const char *path);

#endif
