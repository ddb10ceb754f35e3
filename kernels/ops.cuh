// ops.cuh — the CUDA launchers, named and shaped like their CPU twins in lib/cpu/ops.c
// (shapes in lib/backend.h). All run on mt_cuda::stream and return without synchronising.
#pragma once
#include "common.cuh"

namespace mt_cuda {
// gemm.cu: cuBLAS / cuBLASLt
void gemm_init(void);
void gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
          int ldb, float beta, float *C, int ldc);
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, const float *residual,
                    int N, int IC, int OC);
extern int use_tf32;

// ops.cu: custom kernels
void embeddings_forward(float *out, const int32_t *ids, const int32_t *types, const int32_t *pos,
                        const float *wte, const float *wpe, const float *wtt, int N, int C);
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C, float eps);
void attention_forward(float *out, float *att, const float *qkv, const int32_t *offsets,
                       const int64_t *att_offsets, int B, int C, int NH);
void gelu_forward(float *out, const float *inp, int64_t n);
void tanh_forward(float *out, const float *inp, int64_t n);
void pool_forward(float *out, const float *inp, const int32_t *offsets, int B, int C, int mode);
void unpack_forward(float *out, const float *inp, const int32_t *offsets, int B, int T, int C);
// out[N,OC] = bias[OC] (+ residual[N,OC]); either may be NULL (then 0). For matmul_forward.
void bias_residual_forward(float *out, const float *bias, const float *residual, int N, int OC);
// C[M,N] *= beta (beta == 0 writes zeros, ignoring NaNs), leading dimension ldc.
void scale_matrix(float *C, int M, int N, int ldc, float beta);
}  // namespace mt_cuda
