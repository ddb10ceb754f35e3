// bert.h — the BERT encoder, forward as Hugging Face BertModel, written once against the op
// table of backend.h.
//
//   mt_bert *m = mt_bert_load("models/all-MiniLM-L6-v2", mt_backend_cpu(), err, sizeof err);
//   mt_bert_forward(m, ids, types, lengths, B, T, hidden, pooled);  // hidden[B,T,C], pooled[B,C]
//   mt_bert_pool(m, MT_POOL_MEAN, sentence);                        // sentence[B,C] of that batch
//   mt_bert_free(m);
//
// Training (any backend: every op has its backward on CPU and CUDA alike):
//   mt_bert_reserve(m, max_tokens, max_batch, max_len, 1, 0);
//   const float *h = mt_bert_forward_train(m, ids, types, offsets, B, &drop);  // packed [N,C]
//   ... loss, dh[N,C] ...
//   mt_bert_backward(m, dh, grads);                                            // grads += d loss/d params
//
// Parameters live in ONE allocation; a table maps each Hugging Face tensor name to its shape
// and offset, so loading and (later) checkpoint writing use the same names. The layout puts a
// layer's query, key and value weights (and biases) next to each other, so they form one
// [3C, C] matrix and the three projections are one GEMM.
//
// Activations live in one arena sized from a token budget (real tokens: padding is never
// computed, see backend.h); a forward allocates nothing once the arena covers the batch.
#ifndef MT_BERT_H
#define MT_BERT_H
#include <stddef.h>
#include <stdint.h>

#include "adamw.h"
#include "backend.h"
#include "config.h"
#include "rng.h"

typedef struct {
    char *name;        // Hugging Face name, e.g. "encoder.layer.0.attention.self.query.weight"
    int ndim;          // 1 or 2
    int shape[2];
    size_t offset;     // in floats from the start of mt_bert.params
    size_t numel;
} mt_bert_param;

typedef struct {  // views into mt_bert.params for one encoder layer (C hidden, F intermediate)
    float *qkv_w;       // [3C, C] query | key | value weights
    float *qkv_b;       // [3C]
    float *attn_out_w;  // [C, C]
    float *attn_out_b;  // [C]
    float *ln1_w, *ln1_b;    // [C] attention.output.LayerNorm
    float *fc_w;        // [F, C] intermediate.dense
    float *fc_b;        // [F]
    float *fc_out_w;    // [C, F] output.dense
    float *fc_out_b;    // [C]
    float *ln2_w, *ln2_b;    // [C] output.LayerNorm
} mt_bert_layer;

typedef struct {  // the activation arena; per-layer buffers have L copies when training, else 1
    float *emb;                 // [N, C] word + type + position, before LayerNorm
    float *emb_mean, *emb_rstd; // [N]
    float *x;                   // [L+1 | 2][N, C] layer inputs; the last is the final hidden state
    float *qkv;                 // [L | 1][N, 3C]
    float *att;                 // training only: [L][NH * sum L_b^2] attention state (backend.h: P, or a fused path's log-sum-exp)
    float *atty;                // [L | 1][N, C] attention output, heads concatenated
    float *res1;                // [L | 1][N, C] atty @ Wo^T + bo + x
    float *ln1;                 // [L | 1][N, C]
    float *ln1_mean, *ln1_rstd; // [L | 1][N]
    float *fch;                 // [L | 1][N, F] before GELU
    float *fch_gelu;            // [L | 1][N, F] (aliases fch in inference: GELU in place)
    float *res2;                // [L | 1][N, C] fch_gelu @ W2^T + b2 + ln1
    float *ln2_mean, *ln2_rstd; // [L | 1][N]
    float *cls, *pooled;        // [B, C] pooler input and output
    int32_t *ids, *types, *pos; // [N] packed inputs
    int32_t *offsets;           // [B + 1]
    int64_t *att_offsets;       // [B]
} mt_bert_acts;

// Dropout for a training forward (p = 0: off), as Hugging Face BertModel in train mode: after
// the embedding LayerNorm, on the attention probabilities, after the attention output dense,
// after the FFN output dense. The config's hidden_dropout_prob / attention_probs_dropout_prob
// are NOT used: the caller's p applies to every site (the paper's "dropout 0.1").
// Masks (lib/rng.h): element i of a site is kept iff
// mt_dropout_keep(seed, step, mt_dropout_site(pass, layer, kind), i, mt_dropout_threshold(p)),
// with the kinds below (the embedding dropout is layer 0, kind MT_BERT_DROP_EMBEDDINGS) and i
// the element's index in the packed [N, C] activation, or for the attention probabilities
// the index P[i][j] has in the CPU's saved probabilities (backend.h, attention_forward_dropout).
typedef struct {
    float p;        // in [0, 1)
    uint64_t seed;  // run seed
    uint32_t step;  // optimizer step
    uint32_t pass;  // tells apart several forwards of one step (PCGrad's tasks, SimCSE's views); < 255
} mt_bert_dropout;
#define MT_BERT_DROP_EMBEDDINGS 0u
#define MT_BERT_DROP_ATTENTION_PROBS 1u
#define MT_BERT_DROP_ATTENTION_OUTPUT 2u
#define MT_BERT_DROP_FFN_OUTPUT 3u

// Gradient buffers of mt_bert_backward (backend memory, sized from max_tokens).
typedef struct {
    float *dxa, *dxb;     // [N, C] the layers' input gradients, in turn (the top layer reads dhidden)
    float *g2;            // [N, C] d res2, then d ln1 within a layer
    float *dropped;       // [N, C] a row gradient through a dropout mask (FFN output, embeddings)
    float *dropped2;      // [N, C] the same for the attention output (its own: zero_grads clears both at once)
    float *datty;         // [N, C] attention output
    float *dqkv;          // [N, 3C]
    float *dgelu, *dfch;  // [N, F] after / before GELU
} mt_bert_grad_acts;

// Per-tensor information for the optimizer, filled by the function of the same name. A struct
// tag, not a typedef: C has one name space for typedefs and functions, and the function keeps
// its name. Use it as `struct mt_bert_tensor_info info[n];`.
struct mt_bert_tensor_info {
    size_t offset, size;  // in floats, into params (and a gradient of the same layout)
    int decay;            // 1: weight decay applies (not to biases and LayerNorm weights, as HF)
    int layer;            // for layer-wise lr decay: -1 embeddings, 0..L-1 encoder layers, L pooler
    const char *name;     // Hugging Face name (owned by the model)
};

typedef struct {
    mt_bert_config cfg;
    const mt_backend *be;
    char *dir;
    char fingerprint[17];   // mt_file_fingerprint of model.safetensors
    int has_pooler;
    float *params;          // device memory, one allocation
    size_t num_params;      // floats
    mt_bert_param *param_table;
    int num_param_tensors;
    float *wte, *wpe, *wtt, *emb_ln_w, *emb_ln_b;  // [V,C] [P,C] [TV,C] [C] [C]
    mt_bert_layer *layers;                         // [L]
    float *pool_w, *pool_b;                        // [C,C] [C], NULL without a pooler
    // activation arena
    void *arena;
    int max_tokens, max_batch, max_len, training;
    int max_padded;                                // sequences x longest of a batch at most
    int planned;                                   // sized by mt_bert_reserve: no growth after
    mt_bert_acts acts;
    int32_t *h_ids, *h_types, *h_pos, *h_offsets;  // host staging [max_tokens] / [max_batch+1]
    int64_t *h_att_offsets;                        // [max_batch]
    float *h_hidden;                               // host staging for device backends
    float *dhidden;                                // [max_tokens, C] backend memory: mt_bert_dhidden
    int last_B, last_N;                            // the batch of the last forward
    int last_max_len;                              // its longest sequence (set by pack_batch)
    char *config_json;                             // config.json as loaded, written back by mt_bert_save
    // training
    int trained_forward;                           // 1 when the last forward was mt_bert_forward_train
    mt_bert_dropout drop;                          // its dropout, replayed by mt_bert_backward
    void *grad_arena;
    int grad_tokens;                               // rows the gradient arena holds
    mt_bert_grad_acts grad_acts;
    char err[512];
} mt_bert;

// Loads config.json and model.safetensors from dir (weights may carry a "bert." prefix, as
// in BertFor* checkpoints). NULL with a message in err when anything is missing or mis-shaped.
mt_bert *mt_bert_load(const char *dir, const mt_backend *be, char *err, size_t errlen);
void mt_bert_free(mt_bert *m);

// Allocates the activation arena for up to max_tokens real tokens in up to max_batch sequences
// of at most max_len tokens (training: every layer's activations and attention state (att)
// kept for backward, the gradient buffers and the device staging of dhidden too), and has the
// backend reserve its workspaces for the same shape (mt_bert_workspace_shape), whose padded
// attention buffers hold batches of sequences x longest <= max_padded (0: max_batch x max_len;
// embed's batcher keeps it within its token budget, a tighter bound). Once reserved, a
// forward whose batch falls outside fails with a message (a memory plan too small is a bug);
// without mt_bert_reserve (tests, one-off tools) forwards grow the arena to their batches.
void mt_bert_reserve(mt_bert *m, int max_tokens, int max_batch, int max_len, int training, int max_padded);

// Sizes for a memory plan (lib/memplan.h), before anything is allocated: the arena and the
// gradient buffers mt_bert_reserve allocates (bytes), the parameters of a model of config cfg
// (floats; has_pooler adds the pooler's), and the workspace shape it reserves.
size_t mt_bert_arena_bytes(const mt_bert_config *cfg, int max_tokens, int max_batch, int max_len, int training);
size_t mt_bert_grad_arena_bytes(const mt_bert_config *cfg, int max_tokens);
size_t mt_bert_count_params(const mt_bert_config *cfg, int has_pooler);
mt_workspace_shape mt_bert_workspace_shape(const mt_bert_config *cfg, int max_tokens, int max_batch, int max_len,
                                           int training, size_t num_params);

// Forward of B sequences padded to T: ids, types [B*T] (int32), lengths [B] (1..T real tokens
// at the start of each row). Writes out_hidden [B,T,C] (last hidden state; padding rows zero)
// and out_pooled [B,C] (the tanh pooler), each when not NULL. Returns 0, or -1 with a message
// in mt_bert_error(m) (bad length, token id or type, no pooler in the checkpoint).
int mt_bert_forward(mt_bert *m, const int32_t *ids, const int32_t *types, const int32_t *lengths, int B, int T,
                    float *out_hidden, float *out_pooled);
// Pools the last forward's hidden states: out[B,C], mode MT_POOL_CLS | MT_POOL_MEAN | MT_POOL_MAX
// (over real tokens only).
void mt_bert_pool(mt_bert *m, int mode, float *out);
// The last forward's last hidden state, PACKED: [N, C] host memory (the CPU backend's own
// activations; a copy in host staging for device backends), valid until the next forward.
// *offsets [B+1] (host memory), *B and *N describe the batch; each may be NULL.
const float *mt_bert_packed_hidden(mt_bert *m, const int32_t **offsets, int *B, int *N);
// The same states where m's backend keeps them (its memory: no copy), valid until the next
// forward; *offsets (host memory), *B, *N as above.
const float *mt_bert_packed_hidden_be(const mt_bert *m, const int32_t **offsets, int *B, int *N);
const char *mt_bert_error(const mt_bert *m);

// ---- training ------------------------------------------------------------------------------

// Training forward over PACKED sequences: ids, types [N] int32 (types may be NULL: all 0),
// offsets [B+1] (offsets[0] = 0, strictly increasing, offsets[B] = N). Uses the training
// layout of mt_bert_reserve (switches to it, and grows it, if needed), keeping every layer's
// activations for mt_bert_backward. drop NULL or p = 0: exactly the inference forward.
// Returns the packed last hidden state [N, C] (memory of m's backend; host memory for the CPU
// backend, valid until the next forward), or NULL with mt_bert_error(m) set.
const float *mt_bert_forward_train(mt_bert *m, const int32_t *ids, const int32_t *types, const int32_t *offsets,
                                   int B, const mt_bert_dropout *drop);
// Backward of the last mt_bert_forward_train: dhidden [N, C] packed (backend memory; it may be
// overwritten: today it is only read) → grads [m->num_params] accumulated with += (the layout of
// m->params). The pooler's gradients are left untouched: the pooler is not used in training.
// Dies when the last forward was not a training forward.
void mt_bert_backward(mt_bert *m, float *dhidden, float *grads);
// m's own dhidden buffer [max_tokens, C] (backend memory, reserved with the gradient buffers
// when training is reserved): where a trainer builds the gradient of the last hidden state
// for mt_bert_backward, so no run allocates its own.
float *mt_bert_dhidden(mt_bert *m);
// Writes dir/model.safetensors (Hugging Face names without a "bert." prefix, query / key /
// value as their own tensors, the pooler when the model has one: transformers.BertModel.
// from_pretrained(dir) loads it) and dir/config.json (as loaded), each atomically (temporary
// name, fsync, rename). Creates dir (and its parents) if missing. Returns 0, or -1 with a
// message in err.
int mt_bert_save(const mt_bert *m, const char *dir, char *err, size_t errlen);
// Fills out[0 .. min(max, n) - 1] (out may be NULL) for the n parameter tensors, in the order
// of m->params; returns n.
int mt_bert_tensor_info(const mt_bert *m, struct mt_bert_tensor_info *out, int max);
// AdamW over all of m's parameters, in m's backend memory, with torch's groups: no decay on
// biases and LayerNorm weights; the pooler (no gradient in training, which torch's AdamW skips)
// neither decayed nor moved; llrd > 0: layer-wise lr decay (mt_llrd_scale), else 1.
void mt_bert_adamw_init(mt_adamw *o, const mt_bert *m, const mt_adamw_hparams *hp, double llrd);

const mt_bert_param *mt_bert_find_param(const mt_bert *m, const char *hf_name);
void mt_bert_set_threads(mt_bert *m, int n);

#endif
