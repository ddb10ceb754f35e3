// sentence.h — the sentence model on top of the encoder's token states: CLS and mean
// pooling, the n-gram CNN, the BiLSTM and the SBERT + CNN-BiLSTM concatenation, each as a
// forward/backward pair (llm.c style: backward ACCUMULATES into its gradients with +=).
//
// Layout. Token states are PACKED: the N real tokens of a batch end to end, sequence b at
// rows offsets[b] .. offsets[b+1]-1 of a row-major [N, C] array; no padding anywhere.
// Every sequence has at least one token (offsets strictly increasing).
//
// Semantics, each reproducible in PyTorch (tests/make_sentence_refs.py does exactly this):
//   cls   out[b] = x[offsets[b]]
//   mean  out[b] = mean of the sequence's rows (all rows are real tokens)
//   CNN   for each width w: nn.Conv1d(C, F_w, w, padding='same') over each sequence on its
//         own (zeros beyond both ends: left (w-1)/2, right w-1-(w-1)/2, as torch pads for
//         'same'), so every sequence of length L >= 1 gives exactly L positions, position t
//         aligned with token t; then ReLU, inverted dropout (Philox mask, below), and a max
//         over the L positions -> [B, sum F_w]. Ties go to the first maximal position.
//         The per-position feature map [N, sum F_w] is kept, so the BiLSTM can run over it.
//   LSTM  nn.LSTM(In, H, bidirectional=True), gates i, f, g, o; h0 = c0 = 0; the forward
//         direction reads tokens 0..L-1, the reverse direction L-1..0, each sequence with its
//         own length (what pack_padded_sequence gives); output = [h_fwd(L-1), h_rev(0)],
//         i.e. torch's h_n[0] and h_n[1] concatenated -> [B, 2H].
//   sbert-cnn-bilstm  out[b] = [mean (C) | CNN max-pool (sum F_w) | BiLSTM finals (2H)].
//
// Dropout of the CNN feature map: element (n, f) of the [N, sum F_w] map is kept iff
// mt_dropout_keep(seed, step, site, n * sum_F + f, threshold); kept values are scaled by
// 1/(1-p). The caller picks the site, by convention
// mt_dropout_site(pass, MT_SENT_DROPOUT_LAYER, 0), where pass tells apart the forward passes
// of one step (PCGrad's tasks, SimCSE's anchor/positive/negative), so they draw different
// masks and a resumed run the same ones.
#ifndef MT_SENTENCE_H
#define MT_SENTENCE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

// The layer field of the sentence model's dropout site (above any encoder layer index).
#define MT_SENT_DROPOUT_LAYER 0xFFF0u

// ---- the building blocks -------------------------------------------------------------------
// Written against the backend's op table (lib/backend.h): every pointer is backend memory
// unless it says host. Pooling, ReLU + dropout and max-pool are single ops of the table
// (pool_forward / pool_backward, relu_dropout_*, max_pool_*); here are the composites.

// Inverted dropout settings (the backend's dropout key); a NULL pointer (or p == 0) means
// evaluation: no dropout.
typedef mt_dropout_key mt_dropout;

// The time-step structure of a batch of packed sequences, for the LSTM: step s runs the
// sequences with L_b > s, in ascending b. Built on the host from the host offsets and
// uploaded once per batch (one copy), so the per-step loop never waits for the device.
typedef struct {
    int max_N, max_B;
    int B, N, T;          // the batch: sequences, tokens, longest length
    int *start;           // host [max_N + 1]: step s's entries are [start[s], start[s+1])
    int32_t *host;        // host mirror of dev
    int32_t *dev;         // backend memory: offsets [B+1] | list [N] | next [N] (below)
    const int32_t *offsets, *list, *next;  // into dev: list[e] = b of entry e; next[e] = its
                                           // entry's index in step s+1's list, -1 at its last step
} mt_seq_steps;
void mt_seq_steps_alloc(const mt_backend *be, mt_seq_steps *p, int max_N, int max_B);
void mt_seq_steps_free(const mt_backend *be, mt_seq_steps *p);
// From host offsets[B+1] (strictly increasing, offsets[0] = 0); dies beyond max_N / max_B.
void mt_seq_steps_set(const mt_backend *be, mt_seq_steps *p, const int32_t *offsets, int B);

// Pre-activations of one 'same' convolution, written to columns [0, F) of out (row stride
// ldo, so several widths fill one [N, ldo] feature map side by side):
//   out[n, f] = bias[f] + sum_{c,k} weight[f, c, k] * x[t - (w-1)/2 + k, c]   (zero outside)
// inp[N,C], weight[F,C,w] (torch's Conv1d layout), bias[F], col: scratch [N, C*w],
// offsets[B+1] backend memory.
void mt_conv_same_forward(const mt_backend *be, float *out, int ldo, float *col, const float *inp,
                          const float *weight, const float *bias, const int32_t *offsets, int B, int N,
                          int C, int F, int w);
// dinp[N,C] += ..., dweight[F,C,w] += ..., dbias[F] += ...; dout[N, ldo] (columns [0, F));
// col: scratch [N, C*w]. dinp may be NULL (no input gradient wanted).
void mt_conv_same_backward(const mt_backend *be, float *dinp, float *dweight, float *dbias, float *col,
                           const float *dout, int ldo, const float *inp, const float *weight,
                           const int32_t *offsets, int B, int N, int C, int F, int w);

// One LSTM direction over packed sequences. x[N,In], w_ih[4H,In], w_hh[4H,H], b_ih[4H],
// b_hh[4H]; reverse: read each sequence from its last token to its first.
// Saved for backward (row n = the step that read token n): gates[N,4H] (i, f, g, o after
// their nonlinearities), cell[N,H], hidden[N,H]. hfinal[B,H] = the last step's h.
typedef struct {
    float *gates, *cell, *hidden;  // saved: [N,4H], [N,H], [N,H]
    float *dgates, *hprev;         // scratch [N,4H], [N,H]
    float *step_g, *step_h;        // scratch [B,4H], [B,H]: the rows of one time step
    float *dc;                     // scratch [B,H]: the cell gradient carried back in time
} mt_lstm_acts;
void mt_lstm_acts_alloc(const mt_backend *be, mt_lstm_acts *a, int max_N, int max_B, int H);
void mt_lstm_acts_free(const mt_backend *be, mt_lstm_acts *a);
void mt_lstm_forward(const mt_backend *be, float *hfinal, mt_lstm_acts *a, const mt_seq_steps *st,
                     const float *x, const float *w_ih, const float *w_hh, const float *b_ih,
                     const float *b_hh, int In, int H, int reverse);
// dx[N,In] += (may be NULL), dw_ih, dw_hh, db_ih, db_hh +=; dhfinal[B,H]. The same steps as
// the forward.
void mt_lstm_backward(const mt_backend *be, float *dx, float *dw_ih, float *dw_hh, float *db_ih,
                      float *db_hh, const float *dhfinal, mt_lstm_acts *a, const mt_seq_steps *st,
                      const float *x, const float *w_ih, const float *w_hh, int In, int H, int reverse);

// ---- the sentence model --------------------------------------------------------------------

typedef enum { MT_SENT_CLS, MT_SENT_MEAN, MT_SENT_SBERT_CNN_BILSTM } mt_sentence_kind;
#define MT_SENT_MAX_WIDTHS 8

typedef struct {
    mt_sentence_kind kind;
    int C;                             // token-state width (the encoder's hidden size)
    int n_widths;                      // CNN: how many widths
    int width[MT_SENT_MAX_WIDTHS];     // kernel widths, e.g. 1 2 3 4
    int filters[MT_SENT_MAX_WIDTHS];   // filters per width
    int lstm_hidden;                   // H of each direction
    int lstm_over_cnn;                 // 0: BiLSTM reads the token states; 1: the CNN map
    float cnn_dropout;                 // p of the CNN feature-map dropout (training only)
} mt_sentence_config;

// Widths 1..4, 'filters' each, H = lstm_hidden, over token states, dropout 0.1.
mt_sentence_config mt_sentence_default_config(mt_sentence_kind kind, int C, int filters,
                                              int lstm_hidden);
// "cls", "mean", "sbert-cnn-bilstm" -> kind; -1 if unknown.
int mt_sentence_kind_parse(const char *name);
const char *mt_sentence_kind_name(mt_sentence_kind kind);

#define MT_SENT_MAX_TENSORS (2 * MT_SENT_MAX_WIDTHS + 8)
typedef struct {
    char name[40];         // PyTorch module path, e.g. "cnn.convs.0.weight", "lstm.weight_hh_l0_reverse"
    int ndim, shape[3];
    size_t offset, size;   // the slice [offset, offset + size) of the flat buffer
    int decay;             // 1 for weights, 0 for biases (AdamW groups)
    float init_bound;      // PyTorch default init: uniform(-bound, bound)
} mt_sentence_tensor;

// The parameter table and the output width. cls and mean have no parameters.
typedef struct {
    mt_sentence_config cfg;
    int F;                   // sum of filters (CNN output width); 0 without CNN
    int lstm_in;             // C or F
    int D;                   // sentence-embedding width
    int n_tensors;
    mt_sentence_tensor tensors[MT_SENT_MAX_TENSORS];
    size_t n_params;
} mt_sentence_layout;

// Dies on an invalid config (widths 1..16, filters >= 1, H >= 1).
void mt_sentence_layout_init(mt_sentence_layout *L, const mt_sentence_config *cfg);
// Index of a tensor by name, -1 if absent.
int mt_sentence_tensor_find(const mt_sentence_layout *L, const char *name);

// Pointers into one flat buffer (parameters or their gradients: same layout).
typedef struct {
    float *conv_w[MT_SENT_MAX_WIDTHS], *conv_b[MT_SENT_MAX_WIDTHS];  // [F_w,C,w], [F_w]
    float *w_ih[2], *w_hh[2], *b_ih[2], *b_hh[2];  // [4H,In] [4H,H] [4H] [4H]; [1] = reverse
} mt_sentence_weights;
void mt_sentence_weights_point(mt_sentence_weights *w, const mt_sentence_layout *L, float *base);

// PyTorch's default initialisation (Conv1d and LSTM: uniform +-1/sqrt(fan_in), fan_in =
// C*w for conv, H for LSTM), tensor i drawn from mt_rng stream (MT_SENT_INIT_STREAM + i,
// MT_SITE_INIT) under seed, so adding a tensor never changes the others.
#define MT_SENT_INIT_STREAM 0x53000000u
void mt_sentence_init_params(const mt_sentence_layout *L, float *base, uint64_t seed);

// The most elements of one operand of the model's matrix products for batches of at most max_N
// tokens and max_B sequences (each a span of mt_ws_half_span): what a device backend's 16-bit
// operand copies must hold at --precision bf16 / fp16 (im2col [N, C*w], the LSTM's [N, 4H], the
// weights). 0 for cls and mean (no products).
size_t mt_sentence_operand_floats(const mt_sentence_layout *L, int max_N, int max_B);

// Activations of one forward pass, allocated once (backend memory, be->alloc) for at most
// max_N tokens, max_B sequences; also reserves the backend's operand workspaces for the
// model's products (be->reserve with mt_sentence_operand_floats: they only grow).
typedef struct {
    int max_N, max_B;
    float *fmap;        // [N,F] CNN feature map after ReLU + dropout
    float *dfmap;       // [N,F] its gradient (backward scratch)
    float *col;         // [N, C*max w] im2col scratch
    float *pool;        // [B,F] CNN max-pool
    int32_t *argmax;    // [B,F]
    float *hfin;        // [2][B,H] final states of each direction
    float *dbuf;        // [B, max(C, F, 2H)] backward scratch
    mt_lstm_acts lstm[2];
    mt_seq_steps steps; // the batch's offsets and LSTM step lists, uploaded by the forward
    mt_dropout drop;    // the forward's dropout (p = 0: none), reused by backward
} mt_sentence_acts;
void mt_sentence_acts_alloc(const mt_backend *be, mt_sentence_acts *a, const mt_sentence_layout *L,
                            int max_N, int max_B);
void mt_sentence_acts_free(const mt_backend *be, mt_sentence_acts *a);
// The backend memory mt_sentence_acts_alloc takes for these bounds (the memory plan's item).
size_t mt_sentence_acts_bytes(const mt_sentence_layout *L, int max_N, int max_B);

// out[B, L->D] = the sentence embeddings of inp[N, C] (both backend memory; offsets[B+1] host
// memory). drop: NULL (or p = 0) in evaluation; its p is ignored in favour of cfg.cnn_dropout,
// only seed/step/site are used.
void mt_sentence_forward(const mt_backend *be, float *out, mt_sentence_acts *a, const mt_sentence_layout *L,
                         const mt_sentence_weights *w, const float *inp, const int32_t *offsets,
                         int B, int N, const mt_dropout *drop);
// dinp[N,C] += ..., dw (gradient buffer pointers) += ...; dout[B, D]. Uses the activations
// and the batch (offsets, steps) of the last forward, which had the same inputs.
void mt_sentence_backward(const mt_backend *be, float *dinp, const mt_sentence_weights *dw, const float *dout,
                          mt_sentence_acts *a, const mt_sentence_layout *L, const mt_sentence_weights *w,
                          const float *inp);

#endif
