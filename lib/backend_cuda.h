// backend_cuda.h — the CUDA backend (kernels/*.cu), for C callers. Exists only in builds
// with MT_HAVE_CUDA (the Makefile defines it when nvcc is found); lib/device.h is the
// portable way to pick a backend. The code is build/libmtbert_cuda.so, which lib/device.c
// opens with dlopen when a run asks for a GPU: lib/ calls these only through its table.
#ifndef MT_BACKEND_CUDA_H
#define MT_BACKEND_CUDA_H
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

// The table, on device 0 (choose with CUDA_VISIBLE_DEVICES). Creates the cuBLAS handles on
// the first call; dies when no usable GPU is present (call mt_cuda_probe first).
const mt_backend *mt_backend_cuda(void);

// 1 when a GPU is present that the kernels of this build can run on; desc then describes
// it ("NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB"). 0 otherwise, desc saying why.
// Never dies: safe on a machine with the CUDA runtime and no driver or GPU.
int mt_cuda_probe(char *desc, size_t desc_len);

// Precision of every matrix product (gemm, matmul_forward; activations, weights and the other
// ops stay fp32):
//   fp32  exact fp32 (the default: fp32 runs match the CPU)
//   tf32  TF32 tensor cores on fp32 operands (10-bit mantissa inputs, fp32 accumulation)
//   bf16  operands rounded to bf16 in device scratch, tensor cores, fp32 accumulation and
//         output: the numerics of PyTorch's bf16 autocast for linear layers
//   fp16  the same with IEEE fp16 operands (11-bit significand, range +-65504: larger values
//         become inf, 2^-25 or less zero), as fp16 autocast; the trainers scale the loss
//         (lib/lossscale.h) so gradients stay in range
// The environment variable MTBERT_PRECISION (or MTBERT_TF32=1) sets it at start-up.
// mt_cuda_set_precision returns 0, or -1 for an unknown name (nothing changed).
enum { MT_PRECISION_FP32, MT_PRECISION_TF32, MT_PRECISION_BF16, MT_PRECISION_FP16 };
int mt_cuda_set_precision(const char *name);
const char *mt_cuda_precision(void);
void mt_cuda_set_tf32(int on);  // tf32 or fp32
int mt_cuda_tf32(void);

// Work the backend has enqueued on its stream since start-up: each kernel launch, CUB sort,
// cuBLAS / cuBLASLt product and async memset or copy counts one (a cuBLAS call or a CUB sort
// may run more than one kernel). lib/profile.c counts an op's launches with it.
uint64_t mt_cuda_launch_count(void);

// How attention computes at bf16 / fp16 (fp32 and tf32 always take the batched path, which
// matches the CPU to 1e-6):
//   batched  (the default) Q K^T and P V as cuBLAS strided-batched products over [Lmax, Lmax]
//            fp32 scores and probabilities in HBM (kernels/attention.cu)
//   fused    flash-style kernels on the tensor cores (kernels/flash.cu): scores stay on chip;
//            head sizes 32 and 64 (others take the batched path)
// The environment variable MTBERT_ATTENTION sets it at start-up (an unknown value dies).
// mt_cuda_set_attention returns 0, or -1 for an unknown name (nothing changed). Never change it
// (or the precision) between a forward and its backward: what att holds depends on both.
int mt_cuda_set_attention(const char *name);
const char *mt_cuda_attention(void);

// ---- 16-bit paths, for the mixed-precision model to come ---------------------------------
typedef uint16_t mt_bf16;  // raw bfloat16 bits (the upper half of an IEEE float)
typedef uint16_t mt_f16;   // raw IEEE binary16 bits
// out[n] = bf16(inp[n]) / fp16(inp[n]), round to nearest even (fp16: inf past 65504,
// subnormals kept); and back (exact). The conversions of the bf16 / fp16 precisions.
void mt_cuda_f32_to_bf16(mt_bf16 *out, const float *inp, int64_t n);
void mt_cuda_bf16_to_f32(float *out, const mt_bf16 *inp, int64_t n);
void mt_cuda_f32_to_f16(mt_f16 *out, const float *inp, int64_t n);
void mt_cuda_f16_to_f32(float *out, const mt_f16 *inp, int64_t n);
// As mt_backend.gemm with bf16 A and B, fp32 accumulation and fp32 C.
void mt_cuda_gemm_bf16(int trans_a, int trans_b, int M, int N, int K, float alpha, const mt_bf16 *A, int lda,
                       const mt_bf16 *B, int ldb, float beta, float *C, int ldc);

#ifdef __cplusplus
}
#endif
#endif
