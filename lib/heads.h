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

#include "backend.h"
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

// ---- the head on a backend --------------------------------------------------------------
// The products run on a backend (lib/backend.h), many rows at a time: logits Z = Xs W^T + b
// (matmul_forward) and the gradient dW = dZ^T Xs (gemm). Softmax, sigmoid, loss and metric over
// Z[n, K] stay on the host, which copies only those K <= 5 values per row: kernels would save
// nothing at that size, and the host keeps the double-precision loss of the code before it.
// Rows xs are standardised features in the backend's memory; every call first copies h's
// current W and b to the backend (K x D floats), so h is the one owner of the weights.
typedef struct {
    const mt_backend *be;
    int k, dim, cap;  // outputs, features, rows per product
    float *w, *b;     // [K, D], [K] backend: h's weights as last copied
    float *z, *dw;    // [cap, K] logits, [K, D] gradient (backend)
    float *x;         // [cap, D] backend rows for mt_head_predict (allocated on first use)
    float *zh;        // [cap, K] host: logits, then dLoss/dlogits
} mt_head_dev;
void mt_head_dev_init(mt_head_dev *d, const mt_head *h, const mt_backend *be, int cap);
void mt_head_dev_free(mt_head_dev *d);

// Logits z[n, K] (host) for standardised rows xs[n, D] (backend memory), cap rows per product.
void mt_head_logits(const mt_head *h, mt_head_dev *d, const float *xs, int n, float *z);
// Task outputs of raw (unstandardised) host rows x[n, D], standardised in place and copied to
// the backend, n <= d->cap: out[n, K] sst probs[5]; qqp prob[1]; sts score[1] in [0, 5];
// pred[n] the prediction (mt_task_pred).
void mt_head_predict(const mt_head *h, mt_head_dev *d, float *x, int n, float *out, float *pred);

// Mean loss over n standardised rows xs[n, D] (backend memory) with targets y[n] (host; class
// index, 0/1, or score), plus 0.5·l2·|W|² (no penalty on b): cross-entropy, binary
// cross-entropy, or 0.5·squared error. When gw[K, D] and gb[K] (host) are given they receive
// the gradient (overwritten, not accumulated).
double mt_head_loss(const mt_head *h, mt_head_dev *d, const float *xs, const float *y, int n, double l2,
                    float *gw, float *gb);

// Task metric of the head on standardised rows xs (backend memory): accuracy (sst, qqp) or
// Pearson r (sts).
double mt_head_metric(const mt_head *h, mt_head_dev *d, const float *xs, const float *y, int n);

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

// Fits h on x[n, D] (raw host features; shuffled and standardised in place, then copied to
// be once) and targets y[n]: standardisation from the training rows, then minibatch Adam with
// early stopping on the held-out loss, keeping the best epoch's weights. The products run on
// be (see above); Adam and the weights stay on the host (K x D floats: copying W to the backend
// and dW back per minibatch costs about what a kernel launch does). Deterministic for a given seed, and the
// same bits on the CPU and cpu-staged backends.
void mt_head_fit(mt_head *h, const mt_backend *be, float *x, const float *y, int n, const mt_fit_opts *o,
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
