// common.cuh — what every kernels/*.cu file shares: error checks that die with file:line and
// the CUDA / cuBLAS error string, launch helpers and warp reductions.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "workspace.h"

// From lib/common.c: "prog: message" on stderr, exit(1). Declared here rather than by
// including common.h, whose C11 _Noreturn is not C++.
extern "C" [[noreturn]] void mt_die(const char *fmt, ...);
extern "C" void mt_log(const char *fmt, ...);  // "prog: message" on stderr unless --quiet

#define CUDA_CHECK(call)                                                                  \
    do {                                                                                  \
        cudaError_t mt_err_ = (call);                                                     \
        if (mt_err_ != cudaSuccess)                                                       \
            mt_die("CUDA error at %s:%d: %s (%s)", __FILE__, __LINE__,                    \
                   cudaGetErrorString(mt_err_), #call);                                   \
    } while (0)

#define CUBLAS_CHECK(call)                                                                \
    do {                                                                                  \
        cublasStatus_t mt_st_ = (call);                                                   \
        if (mt_st_ != CUBLAS_STATUS_SUCCESS)                                              \
            mt_die("cuBLAS error at %s:%d: %s (%s)", __FILE__, __LINE__,                  \
                   cublasGetStatusString(mt_st_), #call);                                 \
    } while (0)

// Work enqueued on the stream so far (mt_cuda_launch_count, for lib/profile.c): every kernel
// and CUB call (LAUNCH_CHECK), cuBLAS / cuBLASLt product (CUBLAS_LAUNCH) and async memset or
// copy (CUDA_ENQUEUE) counts one. One host thread enqueues: a plain counter.
namespace mt_cuda {
extern uint64_t launches;
}

// After every launch: catches bad configurations at once, not at the next sync.
#define LAUNCH_CHECK()                       \
    do {                                     \
        mt_cuda::launches++;                 \
        CUDA_CHECK(cudaGetLastError());      \
    } while (0)
#define CUBLAS_LAUNCH(call)                  \
    do {                                     \
        mt_cuda::launches++;                 \
        CUBLAS_CHECK(call);                  \
    } while (0)
#define CUDA_ENQUEUE(call)                   \
    do {                                     \
        mt_cuda::launches++;                 \
        CUDA_CHECK(call);                    \
    } while (0)

static inline int ceil_div(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// The 16-bit operands of the bf16 / fp16 precisions (gemm.cu's conversions, flash.cu's tiles):
// round to nearest even; fp16 overflows to inf past 65504 (what loss scaling is for).
__device__ __forceinline__ void round_to(__nv_bfloat16 *out, float x) { *out = __float2bfloat16_rn(x); }
__device__ __forceinline__ void round_to(__half *out, float x) { *out = __float2half_rn(x); }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float widen(__half x) { return __half2float(x); }

// ---- shared between backend_cuda.cu (memory, GEMM) and ops.cu (custom kernels) ----------
namespace mt_cuda {
extern cudaStream_t stream;  // every launch and cuBLAS call goes here, in order
extern int num_sms;          // multiprocessors of the device, for persistent grids

// Workspace `which` of lib/workspace.h, holding at least `bytes`: reserved once by the table's
// reserve op from the memory plan; asking for more than was reserved dies naming the workspace.
void *workspace(int which, size_t bytes);
// Re-reserves the last shape after a precision change (bf16 needs its operand copies).
void workspaces_follow_precision(void);

// Blocks for a grid-stride loop over `items`, `per_block` per block: at most 32 blocks per
// SM (a few waves), however large the input.
static inline int grid_for(int64_t items, int per_block) {
    int64_t blocks = (items + per_block - 1) / per_block, cap = (int64_t)num_sms * 32;
    return (int)(blocks < cap ? blocks : cap);
}
}
