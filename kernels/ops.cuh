// ops.cuh — the CUDA launchers, named and shaped like their CPU twins in lib/cpu/ops.c
// (shapes in lib/backend.h). All run on mt_cuda::stream and return without synchronising.
#pragma once
#include "backend.h"
#include "common.cuh"

namespace mt_cuda {
// gemm.cu: cuBLAS / cuBLASLt
void gemm_init(void);
void gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
          int ldb, float beta, float *C, int ldc);
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, const float *residual,
                    int N, int IC, int OC);
// `batch` products at once, operands `stride` floats apart (cuBLAS strided batched)
void gemm_batched(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, int64_t sA,
                  const float *B, int ldb, int64_t sB, float beta, float *C, int ldc, int64_t sC, int batch);
extern int use_tf32;
int gemm_precision(void);  // MT_PRECISION_* of backend_cuda.h
// the memory plan's share of gemm.cu: the 16-bit operand copies for shape s (0 unless bf16 or fp16;
// generic[] the sizes of workspace.c) and cuBLASLt's fixed workspace
size_t half_operand_bytes(const mt_workspace_shape *s, const size_t *generic);
size_t lt_workspace_size(void);

// attention.cu: attention as batched products on the tensor cores
void attention_forward(float *out, float *att, const float *qkv, const int32_t *offsets,
                       const int64_t *att_offsets, int B, int max_len, int C, int NH);
void attention_forward_dropout(float *out, float *att, const float *qkv, const int32_t *offsets,
                               const int64_t *att_offsets, int B, int max_len, int C, int NH,
                               const mt_dropout_key *drop);
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, const int32_t *offsets,
                        const int64_t *att_offsets, int B, int max_len, int C, int NH, const mt_dropout_key *drop);

// attention.cu: MTBERT_ATTENTION=batched|fused, read once at start-up
void attention_init(void);
// flash.cu: fused attention on the tensor cores for bf16 / fp16 (MTBERT_ATTENTION=fused). att holds
// each row's log-sum-exp (NH * L_b floats at att_offsets[b]) instead of the probabilities.
bool attention_flash_applies(int C, int NH);  // bf16 / fp16 precision, hs 32 or 64
void attention_forward_flash(float *out, float *att, const float *qkv, const int32_t *offsets,
                             const int64_t *att_offsets, int B, int max_len, int C, int NH, const mt_dropout_key *drop);
void attention_backward_flash(float *dqkv, const float *dout, const float *qkv, const float *att,
                              const int32_t *offsets, const int64_t *att_offsets, int B, int max_len, int C, int NH,
                              const mt_dropout_key *drop);

// ops.cu: custom kernels
void embeddings_forward(float *out, const int32_t *ids, const int32_t *types, const int32_t *pos,
                        const float *wte, const float *wpe, const float *wtt, int N, int C);
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C, float eps);
void gelu_forward(float *out, const float *inp, int64_t n);
void tanh_forward(float *out, const float *inp, int64_t n);
void pool_forward(float *out, const float *inp, const int32_t *offsets, int B, int C, int mode);
void unpack_forward(float *out, const float *inp, const int32_t *offsets, int B, int T, int C);
// out[N,OC] = bias[OC] (+ residual[N,OC]); either may be NULL (then 0). For matmul_forward.
void bias_residual_forward(float *out, const float *bias, const float *residual, int N, int OC);
// C[M,N] *= beta (beta == 0 writes zeros, ignoring NaNs), leading dimension ldc.
void scale_matrix(float *C, int M, int N, int ldc, float beta);

// backward.cu: dropout and the backward ops (accumulate +=), deterministic: no float atomics,
// every sum in an order fixed by the shapes alone
void dropout_forward(float *out, const float *inp, const float *residual, int64_t n, const mt_dropout_key *drop);
void dropout_backward(float *dinp, const float *dout, int64_t n, const mt_dropout_key *drop);
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int IC, int OC);
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C);
void gelu_backward(float *dinp, const float *inp, const float *out, const float *dout, int64_t n);
void embeddings_backward(float *dwte, float *dwpe, float *dwtt, const float *dout, const int32_t *ids,
                         const int32_t *types, const int32_t *pos, int N, int C);
// The backward scratch workspace, at least `bytes` (reserved by the plan; more dies). One user at a
// time: valid until the next scratch() call.
void *scratch(size_t bytes);
// CUB's temporary storage for embeddings_backward's sort of N keys (the plan's share of it)
size_t embeddings_sort_temp(int N);

// sentence.cu: the sentence model's ops (pooling backward, CNN and LSTM pieces)
void pool_backward(float *dinp, const float *dout, const int32_t *offsets, int B, int C, int mode);
void copy_2d(float *dst, int ldd, const float *src, int lds, int rows, int cols);
void add_bias_forward(float *out, int ldo, const float *b1, const float *b2, int N, int F);
void add_bias_backward(float *db1, float *db2, const float *dout, int ldo, int N, int F);
void im2col_same(float *col, const float *inp, const int32_t *offsets, int B, int N, int C, int w);
void col2im_same(float *dinp, const float *dcol, const int32_t *offsets, int B, int N, int C, int w);
void relu_dropout_forward(float *x, int N, int D, const mt_dropout_key *drop);
void relu_dropout_backward(float *dx, const float *dy, const float *y, int N, int D, const mt_dropout_key *drop);
void max_pool_forward(float *out, int32_t *argmax, const float *inp, const int32_t *offsets, int B, int D);
void max_pool_backward(float *dinp, const float *dout, const int32_t *argmax, int B, int D);
void lstm_cell_forward(float *gates, float *cell, float *hidden, float *step_h, float *hfinal, const float *step_g,
                       const int32_t *list, const int32_t *next, const int32_t *offsets, int nact, int s, int H,
                       int reverse);
void lstm_cell_backward(float *dgates, float *hprev, float *step_g, float *dc, const float *step_h,
                        const float *dhfinal, const float *gates, const float *cell, const float *hidden,
                        const int32_t *list, const int32_t *next, const int32_t *offsets, int nact, int s, int H,
                        int reverse);

// optim.cu: the optimizer ops
void adamw_update_multi(float *p, const float *g, float *m, float *v, const mt_adamw_chunk *list, int count);
void gram(double *gram, const float *const *g, int k, size_t n);
void combine(float *out, const float *const *g, const double *w, int k, size_t n);
void scale(float *x, float s, size_t n);
}  // namespace mt_cuda
