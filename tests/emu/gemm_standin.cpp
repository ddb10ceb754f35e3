// gemm_standin.cpp — kernels/gemm.cu's symbols for the emulated CUDA backend
// (tests/emu/test_backend_emu): cuBLAS and cuBLASLt are not emulated, so each product is the CPU
// table's gemm or matmul_forward (the same row-major contracts), enqueued on cuda_emu.h's stream
// like the cuBLAS call it stands for, at fp32 only: tf32, bf16 and fp16 die here rather than be
// faked (their rounding is gemm.cu's, tested by tests/gpu/check.sh). gemm_init allocates
// cuBLASLt's workspace as gemm.cu does, so the memory plan's accounting is the GPU's.
// Compiled with cuda_emu.h included first (the Makefile's -include).
extern "C" {
#include "backend.h"  // before ops.cuh, so mt_backend_cpu keeps C linkage
}
#include <string.h>

#include "backend_cuda.h"
#include "ops.cuh"

namespace mt_cuda {

int use_tf32;  // always 0: fp32 is the only precision here
static void *lt_workspace;
static const size_t lt_workspace_bytes = 32u << 20;  // gemm.cu's

static const mt_backend *cpu(void) { return mt_backend_cpu(); }

void gemm_init(void) {
    CUDA_CHECK(cudaMalloc(&lt_workspace, lt_workspace_bytes));
    const char *p = getenv("MTBERT_PRECISION"), *t = getenv("MTBERT_TF32");
    if (p && *p && mt_cuda_set_precision(p) != 0) mt_die("MTBERT_PRECISION=%s: expected fp32, tf32, bf16 or fp16", p);
    if (t && *t && strcmp(t, "0") != 0) mt_cuda_set_precision("tf32");
}

int gemm_precision(void) { return MT_PRECISION_FP32; }
size_t half_operand_bytes(const mt_workspace_shape *, const size_t *) { return 0; }  // no 16-bit copies at fp32
size_t lt_workspace_size(void) { return lt_workspace_bytes; }

void gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
          float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    mt_emu::enqueue([=] { cpu()->gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); });
    launches++;
}

void gemm_batched(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, int64_t sA,
                  const float *B, int ldb, int64_t sB, float beta, float *C, int ldc, int64_t sC, int batch) {
    if (M <= 0 || N <= 0 || batch <= 0) return;
    mt_emu::enqueue([=] {
        for (int b = 0; b < batch; b++)
            cpu()->gemm(ta, tb, M, N, K, alpha, A + b * sA, lda, B + b * sB, ldb, beta, C + b * sC, ldc);
    });
    launches++;
}

// cuBLASLt's fused bias (and residual as C) stands as the CPU's matmul_forward.
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, const float *residual,
                    int N, int IC, int OC) {
    if (N <= 0 || OC <= 0) return;
    mt_emu::enqueue([=] { cpu()->matmul_forward(out, inp, weight, bias, residual, N, IC, OC); });
    launches++;
}

}  // namespace mt_cuda

using namespace mt_cuda;

// fp32 only: another known precision dies naming what is missing; an unknown name is -1, as gemm.cu.
extern "C" int mt_cuda_set_precision(const char *name) {
    if (strcmp(name, "fp32") && strcmp(name, "tf32") && strcmp(name, "bf16") && strcmp(name, "fp16")) return -1;
    if (strcmp(name, "fp32"))
        mt_die("precision %s: the emulated CUDA backend's products are the CPU's fp32 gemm (cuBLAS is not "
               "emulated); test it on a GPU (tests/gpu/check.sh)", name);
    workspaces_follow_precision();
    return 0;
}
extern "C" const char *mt_cuda_precision(void) { return "fp32"; }
extern "C" void mt_cuda_set_tf32(int on) { mt_cuda_set_precision(on ? "tf32" : "fp32"); }
extern "C" int mt_cuda_tf32(void) { return 0; }
