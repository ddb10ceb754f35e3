// cpu.h — pieces of the CPU backend shared between lib/cpu/*.c.
#ifndef MT_CPU_H
#define MT_CPU_H
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

// Below this many floats of work a loop runs on one thread: a barrier costs more than it saves
// (and much more on a machine whose cores are shared with other processes).
#define PAR_MIN 32768

// Whether a dropout key drops anything (NULL or p == 0: evaluation).
static inline int dropout_on(const mt_dropout_key *drop) { return drop && drop->p > 0.0f; }

// C[M,N] = alpha * op(A) @ op(B) + beta * C (row-major); see mt_backend.gemm.
void mt_cpu_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);
// The plain-C blocked GEMM, always compiled so tests can compare it with BLAS.
void mt_cpu_gemm_plain(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc);

// C[i][n] = (accumulate ? C[i][n] : 0) + sum_k A[i a_row + k a_col] B[k ldb + n], for the small
// per-head products of attention (A may be read transposed through its two strides).
void mt_cpu_small_gemm(int M, int N, int K, const float *A, size_t a_row, size_t a_col, const float *B, size_t ldb,
                       float *C, size_t ldc, int accumulate);

// The training ops of lib/cpu/backward.c (shapes and semantics in backend.h).
// Row i of a head's attention-dropout factors: factors[L] = keep ? 1/(1-p) : 0, element j keyed
// by first + j (its index in att); the forward and the backward draw the same mask with it.
void mt_cpu_attention_dropout_row(float *factors, const mt_dropout_key *drop, uint32_t threshold, uint64_t first,
                                  int L);
void mt_cpu_dropout_forward(float *out, const float *inp, const float *residual, int64_t n,
                            const mt_dropout_key *drop);
void mt_cpu_dropout_backward(float *dinp, const float *dout, int64_t n, const mt_dropout_key *drop);
void mt_cpu_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, int N, int IC, int OC);
void mt_cpu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                               const float *weight, const float *mean, const float *rstd, int N, int C);
void mt_cpu_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                               const int32_t *offsets, const int64_t *att_offsets, int B, int max_len, int C,
                               int NH, const mt_dropout_key *drop);
// The longest of the B sequences of offsets[B+1]; dies naming op when it exceeds max_len (the
// caller's promise, which device backends size their work by).
int mt_cpu_longest(const int32_t *offsets, int B, int max_len, const char *op);
void mt_cpu_gelu_backward(float *dinp, const float *inp, const float *out, const float *dout, int64_t n);
void mt_cpu_embeddings_backward(float *dwte, float *dwpe, float *dwtt, const float *dout, const int32_t *ids,
                                const int32_t *types, const int32_t *pos, int N, int C);

// The optimizer ops of lib/cpu/optim.c (contracts in backend.h).
void mt_cpu_adamw_update_multi(float *p, const float *g, float *m, float *v, const mt_adamw_chunk *list,
                               int count);
void mt_cpu_gram(double *gram, const float *const *g, int k, size_t n);
void mt_cpu_combine(float *out, const float *const *g, const double *w, int k, size_t n);
void mt_cpu_scale(float *x, float s, size_t n);

// The sentence model's ops of lib/cpu/sentence.c (contracts in backend.h).
void mt_cpu_pool_backward(float *dinp, const float *dout, const int32_t *offsets, int B, int C, int mode);
void mt_cpu_copy_2d(float *dst, int ldd, const float *src, int lds, int rows, int cols);
void mt_cpu_add_bias_forward(float *out, int ldo, const float *b1, const float *b2, int N, int F);
void mt_cpu_add_bias_backward(float *db1, float *db2, const float *dout, int ldo, int N, int F);
void mt_cpu_im2col_same(float *col, const float *inp, const int32_t *offsets, int B, int N, int C, int w);
void mt_cpu_col2im_same(float *dinp, const float *dcol, const int32_t *offsets, int B, int N, int C, int w);
void mt_cpu_relu_dropout_forward(float *x, int N, int D, const mt_dropout_key *drop);
void mt_cpu_relu_dropout_backward(float *dx, const float *dy, const float *y, int N, int D, const mt_dropout_key *drop);
void mt_cpu_max_pool_forward(float *out, int32_t *argmax, const float *inp, const int32_t *offsets, int B, int D);
void mt_cpu_max_pool_backward(float *dinp, const float *dout, const int32_t *argmax, int B, int D);
void mt_cpu_lstm_cell_forward(float *gates, float *cell, float *hidden, float *step_h, float *hfinal,
                              const float *step_g, const int32_t *list, const int32_t *next,
                              const int32_t *offsets, int nact, int s, int H, int reverse);
void mt_cpu_lstm_cell_backward(float *dgates, float *hprev, float *step_g, float *dc, const float *step_h,
                               const float *dhfinal, const float *gates, const float *cell, const float *hidden,
                               const int32_t *list, const int32_t *next, const int32_t *offsets, int nact,
                               int s, int H, int reverse);
#endif
