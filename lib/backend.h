// backend.h — the op interface the model is written against (DESIGN.md §5).
//
// One table of function pointers per device. lib/bert.c calls only these, so the CPU backend
// (lib/cpu/) and a CUDA backend (kernels/, launchers with the same names) are interchangeable.
// Conventions, after llm.c:
//   - every pointer argument is device memory, its shape given in a comment;
//   - activations are PACKED: the N real tokens of a batch laid end to end, no padding;
//     sequence b occupies rows offsets[b] .. offsets[b+1]-1 (offsets[B] = N), so padding
//     costs nothing and a mask never needs materialising;
//   - C hidden size, NH heads (C % NH == 0), F feed-forward width, V vocabulary;
//   - a forward saves what its backward will need (LayerNorm mean/rstd, attention's state
//     in att, pre-GELU input); backward ops "x_backward(dinp, dparams, ..., dout)"
//     accumulating with += are added to this table op by op.
#ifndef MT_BACKEND_H
#define MT_BACKEND_H
#include <stddef.h>
#include <stdint.h>

enum { MT_POOL_CLS = 0, MT_POOL_MEAN = 1, MT_POOL_MAX = 2 };

// One dropout site's mask (inverted dropout, lib/rng.h): element i of the op's array is kept
// iff mt_dropout_keep(seed, step, site, i, mt_dropout_threshold(p)), and kept values are
// scaled by 1/(1-p). A NULL key or p == 0 means no dropout. The element index is the op's own
// (documented per op), so a CUDA kernel computes the same mask from the same key.
typedef struct {
    float p;        // drop probability in [0, 1)
    uint64_t seed;  // run seed
    uint32_t step;  // stream low word (the optimizer step)
    uint32_t site;  // stream high word: mt_dropout_site(pass, layer, kind)
} mt_dropout_key;

// The per-tensor scalars of one AdamW step, as torch computes them in Python doubles and
// hands to float kernels (lib/adamw.c fills them): element i of a tensor becomes
//   p = decay ? p * decay_mul : p;  m += beta1_w * (g - m);  v = v * beta2 + beta2_w * g * g;
//   p += neg_step_size * m / (sqrt(v) / bc2_sqrt + eps)
typedef struct {
    float decay_mul, beta1_w, beta2, beta2_w, bc2_sqrt, eps, neg_step_size;
    int decay;
} mt_adamw_scalars;

// One slice of an adamw_update_multi call: elements [offset, offset + n) of p, g, m, v,
// updated with scalars s (lib/adamw.c: one entry per tensor).
typedef struct {
    size_t offset, n;
    mt_adamw_scalars s;
} mt_adamw_chunk;

#define MT_GRAM_BLOCK 8192  // the gram op's fixed summation block (elements)
#define MT_GRAM_MAX_K 16    // the most buffers one gram / combine call takes

// What a run's batches can be, for sizing a backend's workspaces once (lib/memplan.h fills it
// from the token budget; lib/workspace.h names the workspaces and what each op asks of them).
typedef struct {
    int max_tokens, max_batch, max_len;  // per batch: real tokens, sequences, longest sequence
    int C, NH, F;                        // hidden size, attention heads, feed-forward width
    int training;                        // backward and optimizer ops will run
    size_t gram_n;                       // floats per buffer of the largest gram call (0: none)
    size_t operand_floats;               // the largest operand of a product outside the encoder
                                         // (the sentence model's: mt_sentence_operand_floats; 0: none)
    int max_padded;                      // per batch: sequences x longest at most (embed's batcher
                                         // keeps it within its token budget; 0: max_batch x max_len)
} mt_workspace_shape;

typedef struct mt_backend mt_backend;
struct mt_backend {
    const char *name;
    int host_memory;  // 1 when device pointers are ordinary host pointers (CPU)

    // ---- memory and control ----
    void *(*alloc)(size_t bytes);  // zero-filled, 64-byte aligned (0 bytes too); dies when out of memory
    void (*free)(void *p);
    void (*copy_to_device)(void *dst, const void *src, size_t bytes);
    void (*copy_to_host)(void *dst, const void *src, size_t bytes);
    void (*set_threads)(int n);  // n <= 0: the library default
    void (*synchronize)(void);

    // ---- forward ops ----
    // C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C, row-major, leading dimensions
    // lda/ldb/ldc; op(X) = X^T when trans_x. beta == 0 overwrites C (NaNs in C ignored).
    void (*gemm)(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);
    // out[N,OC] = inp[N,IC] @ weight[OC,IC]^T + bias[OC] (+ residual[N,OC] when not NULL).
    // weight in PyTorch nn.Linear layout; bias may be NULL.
    void (*matmul_forward)(float *out, const float *inp, const float *weight, const float *bias,
                           const float *residual, int N, int IC, int OC);
    // out[N,C] = wte[ids[n]] + wpe[pos[n]] + wtt[types[n]]   (ids, types, pos: int32 [N];
    // wte[V,C] words, wpe[P,C] positions, wtt[TV,C] token types; indices already validated)
    void (*embeddings_forward)(float *out, const int32_t *ids, const int32_t *types, const int32_t *pos,
                               const float *wte, const float *wpe, const float *wtt, int N, int C);
    // out[N,C] = (inp - mean) * rstd * weight[C] + bias[C]; saves mean[N], rstd[N]
    // (rstd = 1/sqrt(biased variance + eps), as torch.nn.LayerNorm).
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                              const float *bias, int N, int C, float eps);
    // Multi-head self-attention of each sequence over its own tokens (the padding mask of
    // Hugging Face BERT, exactly: masked keys get weight 0). qkv[N,3C] holds q | k | v, head h
    // in columns h*hs .. (h+1)*hs-1 of each (hs = C/NH); out[N,C] heads concatenated.
    // att: NULL, or what attention_backward will need, in sequence b's block of NH * L_b^2 floats
    // at att + att_offsets[b] (att_offsets[b] = NH * sum over earlier sequences of L^2). What the
    // block holds is the backend's business, read only by the same backend's attention_backward
    // (same precision and attention mode): the CPU and CUDA's batched path keep the softmax
    // probabilities P as [NH, L_b, L_b]; CUDA's fused path (bf16 / fp16, MTBERT_ATTENTION=fused)
    // each row's log-sum-exp, [NH, L_b] at the block's start (the rest untouched).
    // max_len: the batch's longest L_b (or more), known on the host: device backends size their
    // padded products by it without reading offsets back. A sequence longer than it is a bug.
    void (*attention_forward)(float *out, float *att, const float *qkv, const int32_t *offsets,
                              const int64_t *att_offsets, int B, int max_len, int C, int NH);
    // out[n] = x * Phi(x), the erf form of GELU; out may equal inp.
    void (*gelu_forward)(float *out, const float *inp, int64_t n);
    // out[n] = tanh(inp[n]); out may equal inp.
    void (*tanh_forward)(float *out, const float *inp, int64_t n);
    // out[B,C] from inp[N,C] per sequence: MT_POOL_CLS first token, MT_POOL_MEAN mean of its
    // tokens, MT_POOL_MAX element-wise max over its tokens.
    void (*pool_forward)(float *out, const float *inp, const int32_t *offsets, int B, int C, int mode);
    // out[B,T,C] (padded, pad rows zero) from packed inp[N,C]; requires L_b <= T.
    void (*unpack_forward)(float *out, const float *inp, const int32_t *offsets, int B, int T, int C);

    // ---- training: forward ops with dropout, backward ops (accumulate +=) ----
    // p[bytes] = 0 (gradients accumulate, so buffers are cleared before a backward).
    void (*zero)(void *p, size_t bytes);
    // attention_forward with dropout on the probabilities: out = dropout(P) @ V per head, while
    // att (required) keeps the state for backward (the CPU: P itself, before dropout). Element
    // index of the mask: P[i][j] of head h's index in the CPU's att, att_offsets[b] + (h * L_b + i)
    // * L_b + j, whatever att holds. drop NULL or p == 0: attention_forward exactly.
    void (*attention_forward_dropout)(float *out, float *att, const float *qkv, const int32_t *offsets,
                                      const int64_t *att_offsets, int B, int max_len, int C, int NH,
                                      const mt_dropout_key *drop);
    // out[n] = dropout(inp)[n] + residual[n] (residual may be NULL; out may equal inp);
    // element index i in [0, n). drop NULL or p == 0: a copy (plus residual).
    void (*dropout_forward)(float *out, const float *inp, const float *residual, int64_t n,
                            const mt_dropout_key *drop);
    // dinp[n] += dropout mask ⊙ dout[n] / (1-p), the same mask as dropout_forward with drop.
    void (*dropout_backward)(float *dinp, const float *dout, int64_t n, const mt_dropout_key *drop);
    // Backward of matmul_forward (the residual's gradient is dout itself, the caller's business):
    // dinp[N,IC] += dout[N,OC] @ weight[OC,IC]; dweight[OC,IC] += dout^T @ inp[N,IC];
    // dbias[OC] += sum over rows of dout. Each output may be NULL (not wanted).
    void (*matmul_backward)(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, int N, int IC, int OC);
    // Backward of layernorm_forward from its saved mean[N], rstd[N]: dinp[N,C], dweight[C],
    // dbias[C] += ...; dout[N,C], inp[N,C] the forward's input.
    void (*layernorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                               const float *weight, const float *mean, const float *rstd, int N, int C);
    // Backward of attention_forward_dropout through att as the forward left it (the CPU: P):
    // dqkv[N,3C] += d(q | k | v) from dout[N,C]; qkv[N,3C] the forward's input; drop the same key.
    void (*attention_backward)(float *dqkv, const float *dout, const float *qkv, const float *att,
                               const int32_t *offsets, const int64_t *att_offsets, int B, int max_len, int C, int NH,
                               const mt_dropout_key *drop);
    // dinp[n] += gelu'(inp[n]) * dout[n] (erf form); inp the forward's input, out its output
    // x Phi(x) or NULL (out gives Phi(x) by a division instead of a second erf).
    void (*gelu_backward)(float *dinp, const float *inp, const float *out, const float *dout, int64_t n);
    // Scatter-add of dout[N,C] into dwte[V,C] (rows ids), dwpe[P,C] (rows pos), dwtt[TV,C]
    // (rows types); any of the three may be NULL. Deterministic: rows added in order n = 0..N-1.
    void (*embeddings_backward)(float *dwte, float *dwpe, float *dwtt, const float *dout, const int32_t *ids,
                                const int32_t *types, const int32_t *pos, int N, int C);

    // ---- the sentence model (lib/sentence.c): pooling backward, CNN and BiLSTM pieces ----
    // The backward of pool_forward for MT_POOL_CLS / MT_POOL_MEAN: dinp[N,C] += dout[B,C] at the
    // first row (cls), or dout * (1/L_b) at every row of sequence b (mean).
    void (*pool_backward)(float *dinp, const float *dout, const int32_t *offsets, int B, int C, int mode);
    // dst[rows, cols] (leading dimension ldd) = src[rows, cols] (leading dimension lds).
    void (*copy_2d)(float *dst, int ldd, const float *src, int lds, int rows, int cols);
    // out[n, f] += b1[f] (+ b2[f], the two summed first) for n < N, f < F; out has row stride ldo.
    void (*add_bias_forward)(float *out, int ldo, const float *b1, const float *b2, int N, int F);
    // s[f] = sum over n = 0..N-1 in row order (float) of dout[n * ldo + f]; db1[f] += s and,
    // when db2 is not NULL, db2[f] += s.
    void (*add_bias_backward)(float *db1, float *db2, const float *dout, int ldo, int N, int F);
    // im2col of a 'same' Conv1d of width w over each sequence alone (sentence.h):
    // col[n, c*w + k] = inp[t - (w-1)/2 + k, c] of the same sequence, 0 outside it; col[N, C*w]
    // (N = offsets[B], passed so a device need not read it back).
    void (*im2col_same)(float *col, const float *inp, const int32_t *offsets, int B, int N, int C, int w);
    // Its transpose, accumulating: dinp[N,C] += col2im(dcol[N, C*w]); each dinp element adds its
    // terms in row order (t ascending), so the sum is fixed.
    void (*col2im_same)(float *dinp, const float *dcol, const int32_t *offsets, int B, int N, int C, int w);
    // In place on x[N,D]: x = dropout(relu(x)), mask element index n*D + d.
    void (*relu_dropout_forward)(float *x, int N, int D, const mt_dropout_key *drop);
    // dx[N,D] = y > 0 ? dy * 1/(1-p) : 0 from the forward's output y (no stored mask);
    // overwrites dx, which may alias dy.
    void (*relu_dropout_backward)(float *dx, const float *dy, const float *y, int N, int D,
                                  const mt_dropout_key *drop);
    // out[B,D] = max over each sequence's rows of inp[N,D]; argmax[B,D] (int32) the row of the
    // first maximum.
    void (*max_pool_forward)(float *out, int32_t *argmax, const float *inp, const int32_t *offsets, int B, int D);
    // dinp[argmax[b,d], d] += dout[b,d] (each (b,d) owns its target: no two write one element).
    void (*max_pool_backward)(float *dinp, const float *dout, const int32_t *argmax, int B, int D);
    // One LSTM time step s of one direction (H units, G = 4H) for the nact sequences still
    // running at s: entry j is sequence b = list[j] (ascending b), next[j] its entry in step
    // s+1's list or -1 when s is its last step; it reads row r = offsets[b] + s (reverse:
    // offsets[b+1] - 1 - s). list, next: the step's slices of per-batch int32 arrays.
    // Forward: gates[N,G] row r holds x W_ih^T + b_ih + b_hh and becomes the activated gates
    // i, f, g, o; step_g[nact,G] = h_{t-1} W_hh^T (zeros at s = 0). Writes cell[N,H] and
    // hidden[N,H] row r, and h into step_h[next[j]] (the next step's GEMM input) or, at the
    // last step, into hfinal[b] ([B,H]).
    void (*lstm_cell_forward)(float *gates, float *cell, float *hidden, float *step_h, float *hfinal,
                              const float *step_g, const int32_t *list, const int32_t *next,
                              const int32_t *offsets, int nact, int s, int H, int reverse);
    // Backward of one step: dh = dhfinal[b] at the last step, else step_h[next[j]] (the step
    // after's dg W_hh); dc[B,H] carried by b (zero before the last step). Writes the
    // pre-activation gate gradients into step_g[j] and dgates[r], hprev[r] = h_{t-1} (0 at s = 0)
    // and dc[b] = dc_{t-1}.
    void (*lstm_cell_backward)(float *dgates, float *hprev, float *step_g, float *dc, const float *step_h,
                               const float *dhfinal, const float *gates, const float *cell, const float *hidden,
                               const int32_t *list, const int32_t *next, const int32_t *offsets, int nact,
                               int s, int H, int reverse);

    // ---- optimizer ops: parameters, gradients and moments stay in backend memory ----
    // AdamW (torch.optim.AdamW, lib/adamw.c) on the slices of p, g, m, v that list[count] names
    // (host memory), each with its own scalars (computed on the host in double, as torch does).
    // The slices are in ascending offset and disjoint: a device updates them all at once (CUDA:
    // one launch per 512 entries), so one call updates a whole parameter buffer.
    void (*adamw_update_multi)(float *p, const float *g, float *m, float *v, const mt_adamw_chunk *list,
                               int count);
    // gram[i*k + j] = sum_e g[i][e] * g[j][e] (host memory, double, [k*k], symmetric) for k
    // buffers g[0..k) of n floats (the pointer array is host memory). Partial sums over fixed
    // MT_GRAM_BLOCK-element blocks are added in block order, so the result is the same for
    // any thread count (and k = 1 gives the squared norm).
    void (*gram)(double *gram, const float *const *g, int k, size_t n);
    // out[n] = sum_j w[j] * g[j][n] (w host memory [k]); out must not alias any g[j].
    void (*combine)(float *out, const float *const *g, const double *w, int k, size_t n);
    // x[n] *= s
    void (*scale)(float *x, float s, size_t n);

    // ---- the memory plan (lib/memplan.h): workspaces sized once, up front ----
    // Bytes of each workspace of lib/workspace.h (each[MT_WS_COUNT], may be NULL) that the ops
    // need for any batch within s; returns their sum (the CPU needs none: 0).
    size_t (*workspace_bytes)(const mt_workspace_shape *s, size_t *each);
    // Allocates those workspaces once (a later call re-sizes them). An op asking for more than
    // was reserved dies naming the workspace: the plan was wrong, never a silent grow.
    void (*reserve)(const mt_workspace_shape *s);
    // Bytes the backend could still allocate (device: free memory plus what its workspaces
    // hold now); SIZE_MAX when only the host's memory limits it.
    size_t (*memory_free)(void);
};

// The CPU backend: OpenBLAS sgemm when built with it (MT_HAVE_OPENBLAS), else a blocked
// plain-C GEMM; OpenMP loops for the rest.
const mt_backend *mt_backend_cpu(void);
// Tests only (--device cpu-staged): the CPU ops with host_memory = 0, so the code paths of
// device backends (explicit copies, device-resident training) run without a GPU.
const mt_backend *mt_backend_cpu_staged(void);

#endif
