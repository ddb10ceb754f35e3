// taskmodel.h — the three task heads of DESIGN.md §1 on top of the encoder's token states,
// with their losses, forward and backward (gradients ACCUMULATED with +=, llm.c style).
//
// Inputs. The trainer runs ONE encoder pass per task batch, its sequences packed as:
//   sst        sequences 0..B-1 = the sentences
//   qqp, sts   bi part (pair model bi | ensemble):    0..B-1 = sentence a, B..2B-1 = sentence b
//              cross part (pair model cross | ensemble): the next B = [CLS] a [SEP] b [SEP]
// so hidden[N, C] and offsets[nseq + 1] of that pass are all the task model needs
// (mt_taskmodel_sequences says how many sequences a batch of B examples takes).
//
// Model (e = sentence embedding of width D = the sentence model's output; c = the last-layer
// [CLS] state of the joint sequence, width C; drop = inverted dropout, before each linear):
//   sst   logits[5] = W_sst · drop(e) + b                    cross-entropy (mean over batch)
//   qqp   z_bi = w · drop([u; v; |u - v|]) + b,  z_cross = w · drop(c) + b
//         z = z_bi | z_cross | (z_bi + z_cross) / 2          sigmoid cross-entropy (mean)
//   sts   s_bi = 2.5 (1 + cos(u, v)),            s_cross = w · drop(c) + b
//         s = s_bi | s_cross | (s_bi + s_cross) / 2          squared error vs 0..5 (mean)
// cos as torch.nn.functional.cosine_similarity (norms clamped at 1e-8).
//
// Parameters live in one flat buffer laid out [sentence model (n_sent) | heads (n_heads)],
// so the shared part (sentence model) and the task-specific part (heads) are separate slices
// — PCGrad projects the first together with the encoder and leaves the second alone.
// Backends. The sentence model runs on the encoder's backend (mt_taskmodel_to_backend): its
// parameters, the token states and their gradient stay in that memory, and only the [2B, D]
// embeddings (and the cross part's [B, C] [CLS] states) cross to the host, where the heads
// and losses run (they act on a few KB). Without that call everything is host memory.
// Head tensors (HF-style names, saved in heads.safetensors): sst.weight [5,D], sst.bias [5],
// qqp_bi.weight [1,3D], qqp_bi.bias [1], qqp_cross.weight [1,C], qqp_cross.bias [1],
// sts_cross.weight [1,C], sts_cross.bias [1]; the sentence model's as "sentence.<name>".
//
// Dropout: element (b, k) of a head input of width K is kept iff
// mt_dropout_keep(seed, step, site, b*K + k, threshold), site =
// mt_dropout_site(pass, MT_HEAD_DROPOUT_LAYER, input) with input 1 sst, 2 qqp bi features,
// 3 qqp cross, 4 sts cross; the CNN of the sentence model uses
// mt_dropout_site(pass, MT_SENT_DROPOUT_LAYER, 0). `pass` tells apart the forward passes of
// one step (the trainer uses the task index).
#ifndef MT_TASKMODEL_H
#define MT_TASKMODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "heads.h"  // mt_task, MT_N_TASKS, MT_SST_CLASSES, mt_task_name / _parse / _label / _is_pair
#include "sentence.h"

typedef enum { MT_PAIR_BI, MT_PAIR_CROSS, MT_PAIR_ENSEMBLE } mt_pair_model;

#define MT_HEAD_DROPOUT_LAYER 0xFFF1u  // above MT_SENT_DROPOUT_LAYER and any encoder layer
#define MT_TM_INIT_STREAM 0x48000000u  // head tensor i initialised from stream (this + i, MT_SITE_INIT)

const char *mt_pair_model_name(int pair);  // "bi", "cross", "ensemble"
int mt_pair_model_parse(const char *name); // -1 if unknown

enum { MT_TM_SST_W, MT_TM_SST_B, MT_TM_QQP_BI_W, MT_TM_QQP_BI_B, MT_TM_QQP_CROSS_W,
       MT_TM_QQP_CROSS_B, MT_TM_STS_CROSS_W, MT_TM_STS_CROSS_B, MT_TM_N_HEAD_TENSORS };

typedef struct {
    char name[48];       // as saved: "sst.weight", "sentence.cnn.convs.0.weight", ...
    int ndim, shape[3];
    size_t offset, size; // slice of the flat buffer (sentence tensors first)
    int decay;           // 1 weights, 0 biases (AdamW groups)
} mt_tm_tensor;

// Views of one flat buffer (parameters or gradients: same layout).
typedef struct {
    float *head[MT_TM_N_HEAD_TENSORS];  // indexed by MT_TM_SST_W ...
    mt_sentence_weights sent;
} mt_tm_views;

typedef struct {
    int C, D;                 // encoder width, sentence-embedding width
    mt_pair_model pair;
    mt_sentence_layout sent;  // the sentence model (cls | mean | sbert-cnn-bilstm)
    size_t n_sent, n_heads, n_params;
    float *params;            // [n_params], owned (host)
    mt_tm_views w;            // views of params; w.sent views sent_params
    const mt_backend *be;     // the sentence model's backend (NULL: the CPU)
    float *sent_params;       // [n_sent] the sentence model's parameters in be memory
                              // (params itself on a host-memory backend)
    int n_tensors;
    mt_tm_tensor tensors[MT_SENT_MAX_TENSORS + MT_TM_N_HEAD_TENSORS];
    char model_fp[17];        // fingerprint of the encoder it goes with ("" unknown)
} mt_taskmodel;

// A new task model for encoder width sc->C, heads initialised as nn.Linear's default
// (uniform +-1/sqrt(fan_in), weights and biases) and the sentence model as PyTorch's,
// both from lib/rng streams under seed.
void mt_taskmodel_init(mt_taskmodel *tm, const mt_sentence_config *sc, mt_pair_model pair, uint64_t seed);
void mt_taskmodel_free(mt_taskmodel *tm);
// Points v at base (a buffer of n_params floats laid out as params).
void mt_taskmodel_point(const mt_taskmodel *tm, float *base, mt_tm_views *v);
int mt_taskmodel_find(const mt_taskmodel *tm, const char *name);  // tensor index, -1 if absent
// Moves the sentence model to be (the encoder's backend; call after init / load): its
// parameters are copied into be memory, where its forward and backward then run.
void mt_taskmodel_to_backend(mt_taskmodel *tm, const mt_backend *be);
// The sentence model's parameters copied back into params (before saving; a no-op on the host).
void mt_taskmodel_sync_host(mt_taskmodel *tm);
// The backend the sentence model runs on (the CPU's until mt_taskmodel_to_backend).
const mt_backend *mt_taskmodel_backend(const mt_taskmodel *tm);

// heads.safetensors: every tensor, metadata sentence_model, pair_model, hidden, model_fp (and
// the CNN/BiLSTM sizes for sbert-cnn-bilstm). Atomic (temporary name + rename).
int mt_taskmodel_save(const mt_taskmodel *tm, const char *path, char *err, size_t errlen);
// Loads a heads.safetensors into a new task model (architecture from its metadata). Returns 0,
// or -1 with a message naming the file and what is wrong (missing tensor, wrong shape, ...).
int mt_taskmodel_load(mt_taskmodel *tm, const char *path, char *err, size_t errlen);

// Sequences of the encoder pass for a batch of B examples of task (see the top of the file),
// and where its parts start (-1: absent).
int mt_taskmodel_sequences(const mt_taskmodel *tm, int task, int B, int *bi_first, int *cross_first);

typedef struct {
    float p;        // drop probability in [0, 1); 0 = none
    uint64_t seed;
    uint32_t step, pass;
} mt_tm_dropout;

// Activations of one forward: reserved up front for a run's bounds (mt_tm_acts_reserve, as the
// trainer does), else grown on demand (a forward allocates only when a batch is larger than
// any before).
typedef struct {
    int cap_B, cap_N;
    const mt_backend *be;     // the sentence model's (the backend memory below)
    mt_sentence_acts sacts;
    float *emb, *demb;        // [2B, D] sentence embeddings (a's, then b's) and gradient
    float *cls, *dcls;        // [B, C] cross-encoder [CLS] and gradient
    float *d_emb, *d_demb;    // be memory: emb and demb there (the host buffers when be's is)
    float *d_cls, *d_dcls;    // be memory: cls and dcls there (likewise)
    int32_t *d_offsets;       // be memory [3B + 1]: the pass's offsets (offsets itself on the host)
    float *x_bi, *xd_bi;      // [B, 3D] qqp features, dropped
    float *xd_e, *xd_cls;     // [B, D] dropped e (sst); [B, C] dropped c
    uint8_t *keep;            // [B * max(3D, C)] dropout mask scratch
    float *dx;                // [B, max(3D, C)] backward scratch
    float *z_bi, *z_cross;    // [B] the two pair-model outputs (qqp logits / sts scores)
    float *cos, *nu, *nv;     // [B] sts: cos(u, v), clamped norms
    float *out;               // [B, 5] sst probabilities; [B] qqp probability; [B] sts score
    float *dz;                // [B, 5] d loss / d logits (or z)
    // the last forward
    int task, B, N, nseq, bi_first, cross_first;
    const float *hidden;
    const int32_t *offsets;
    mt_tm_dropout drop;
    double loss;
} mt_tm_acts;
void mt_tm_acts_free(mt_tm_acts *a);
// Allocates a for passes of at most max_B examples and max_N tokens up front (the run's plan),
// so no forward within those bounds allocates.
void mt_tm_acts_reserve(const mt_taskmodel *tm, mt_tm_acts *a, int max_B, int max_N);
// The backend memory a reservation for those bounds takes on be: the sentence model's
// activations and the embeddings, [CLS] states and offsets kept there.
size_t mt_tm_acts_backend_bytes(const mt_taskmodel *tm, const mt_backend *be, int max_B, int max_N);

// Loss (mean over the B examples) of task on the encoder pass hidden[N, C] (memory of the
// task model's backend), offsets[nseq+1] (host; N = offsets[nseq]); labels[B]: sst class 0..4,
// qqp 0/1, sts 0..5. labels NULL: predictions only (a->out, host), loss 0. drop NULL or p 0:
// evaluation. Saves what backward needs in a.
double mt_taskmodel_forward(mt_taskmodel *tm, mt_tm_acts *a, int task, const float *hidden,
                            const int32_t *offsets, int B, const float *labels, const mt_tm_dropout *drop);
// Gradients of the last forward's loss (times dloss): dhidden[N, C] is OVERWRITTEN (zero
// where the loss does not depend on it); dsent[n_sent] and dheads[n_heads] accumulate (+=).
// dhidden and dsent are memory of the task model's backend, dheads host memory.
void mt_taskmodel_backward(mt_taskmodel *tm, mt_tm_acts *a, float *dhidden, float *dsent, float *dheads,
                           float dloss);

// What mt_taskmodel_predict keeps on its backend for the model's life (as heads' mt_head_dev):
// the head tensors, copied once, and the rows and outputs of a product, grown to the most
// records one call has passed (so a stream of equal chunks allocates once). A host-memory
// backend needs none of it (nothing allocated).
typedef struct {
    const mt_backend *be;
    int cap;       // records x and y hold
    float *heads;  // [n_heads] be memory: the head tensors, laid out as in tm->params
    float *x, *y;  // [cap, max(3D, C)] a product's rows, [cap, MT_SST_CLASSES] its outputs
} mt_tm_predictor;
void mt_tm_predictor_init(mt_tm_predictor *p, const mt_taskmodel *tm, const mt_backend *be);
void mt_tm_predictor_free(mt_tm_predictor *p);

// Inference on embed's pooled vectors (the `heads` stage) of n records, host arrays:
// emb_a[n, D], emb_b[n, D] (pairs with a bi part; else NULL), cls_ab[n, C] (pairs with a
// cross part; else NULL). The linear heads run as one product each on p->be (matmul_forward);
// the sts cosine, sigmoid and softmax on the host. out[n, K]: sst probs[5]; qqp
// P(duplicate) [1]; sts score [1]. Only valid when the sentence model is cls or mean (embed's
// pooling).
void mt_taskmodel_predict(const mt_taskmodel *tm, mt_tm_predictor *p, int task, int n, const float *emb_a,
                          const float *emb_b, const float *cls_ab, float *out);

#endif
