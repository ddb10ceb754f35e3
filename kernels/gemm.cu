// gemm.cu — matrix products through cuBLAS (gemm, bf16 / fp16 gemm) and cuBLASLt (matmul_forward
// with the bias in the epilogue and the residual as the C operand: one pass over out).
//
// cuBLAS is column-major and our matrices are row-major. A row-major X[r,c] with leading
// dimension ld is, read column-major, X^T[c,r] with the same ld, so the row-major product
// C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T: swap the operands
// and keep each one's transpose flag.
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "ops.cuh"

namespace mt_cuda {

int use_tf32;  // kept in step with precision: 1 exactly when precision == MT_PRECISION_TF32
static int precision = MT_PRECISION_FP32;
static cublasHandle_t cublas;
static cublasLtHandle_t cublaslt;
static void *lt_workspace;
static const size_t lt_workspace_bytes = 32u << 20;  // cuBLASLt's Hopper kernels like 32 MiB

void gemm_init(void) {
    CUBLAS_CHECK(cublasCreate(&cublas));
    CUBLAS_CHECK(cublasSetStream(cublas, stream));
    CUBLAS_CHECK(cublasLtCreate(&cublaslt));
    CUDA_CHECK(cudaMalloc(&lt_workspace, lt_workspace_bytes));
    const char *p = getenv("MTBERT_PRECISION"), *t = getenv("MTBERT_TF32");
    if (p && *p) {
        if (mt_cuda_set_precision(p) != 0) mt_die("MTBERT_PRECISION=%s: expected fp32, tf32, bf16 or fp16", p);
    } else if (t && *t && strcmp(t, "0") != 0) {
        mt_cuda_set_precision("tf32");
    }
}

static cublasComputeType_t fp32_compute(void) {
    return precision == MT_PRECISION_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}
static cublasOperation_t op(int trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; }

// ---- 16-bit operands (bf16 or fp16): fp32 matrices rounded into reserved device workspace ----

static bool half_operands(void) { return precision == MT_PRECISION_BF16 || precision == MT_PRECISION_FP16; }
int gemm_precision(void) { return precision; }
static cudaDataType_t half_type(void) { return precision == MT_PRECISION_FP16 ? CUDA_R_16F : CUDA_R_16BF; }

template <typename T> __global__ void f32_to_half_kernel(T *out, const float *inp, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        round_to(out + i, inp[i]);
}
template <typename T> __global__ void half_to_f32_kernel(float *out, const T *inp, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = widen(inp[i]);
}

// `count` matrices of rows x cols at X (leading dimension ld, `stride` apart) in the 16-bit
// type of the precision (bf16 or fp16), same layout, in workspace slot: the whole span is
// converted, padding between rows included.
static const void *as_half(int slot, const float *X, int rows, int cols, int ld, int64_t stride = 0, int count = 1) {
    int64_t n = (int64_t)mt_ws_half_span(rows, cols, ld, stride, count);
    void *out = workspace(MT_WS_BF16_A + slot, (size_t)n * 2);  // both types are 2 bytes
    if (precision == MT_PRECISION_FP16) f32_to_half_kernel<<<grid_for(n, 256), 256, 0, stream>>>((__half *)out, X, n);
    else f32_to_half_kernel<<<grid_for(n, 256), 256, 0, stream>>>((__nv_bfloat16 *)out, X, n);
    LAUNCH_CHECK();
    return out;
}

// As gemm on 16-bit A and B of type `type` (tensor cores), fp32 accumulation and fp32 C.
static void gemm_half(int ta, int tb, int M, int N, int K, float alpha, const void *A, int lda, const void *B, int ldb,
                      float beta, float *C, int ldc, cudaDataType_t type) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) return scale_matrix(C, M, N, ldc, beta);
    CUBLAS_LAUNCH(cublasGemmEx(cublas, op(tb), op(ta), N, M, K, &alpha, B, type, ldb, A, type, lda, &beta, C,
                               CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// The largest operand span as_half converts for any batch of shape s (lib/workspace.h).
size_t half_operand_bytes(const mt_workspace_shape *s, const size_t *generic) {
    return half_operands() ? mt_ws_half_operands(s, generic) * 2 : 0;  // bf16 and fp16 alike
}

size_t lt_workspace_size(void) { return lt_workspace_bytes; }

// C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C, all row-major fp32.
void gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
          float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) return scale_matrix(C, M, N, ldc, beta);  // cuBLAS rejects lda 0
    if (half_operands()) {  // tensor cores on rounded copies, fp32 accumulate and C
        const void *a = as_half(0, A, ta ? K : M, ta ? M : K, lda), *b = as_half(1, B, tb ? N : K, tb ? K : N, ldb);
        return gemm_half(ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, C, ldc, half_type());
    }
    CUBLAS_LAUNCH(cublasGemmEx(cublas, op(tb), op(ta), N, M, K, &alpha, B, CUDA_R_32F, ldb, A, CUDA_R_32F, lda,
                               &beta, C, CUDA_R_32F, ldc, fp32_compute(), CUBLAS_GEMM_DEFAULT));
}

// gemm for `batch` independent products, A, B, C each `stride` floats apart (cuBLAS strided
// batched): the attention's per-(sequence, head) products in one launch.
void gemm_batched(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, int64_t sA,
                  const float *B, int ldb, int64_t sB, float beta, float *C, int ldc, int64_t sC, int batch) {
    if (M <= 0 || N <= 0 || batch <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        for (int b = 0; b < batch; b++) scale_matrix(C + (int64_t)b * sC, M, N, ldc, beta);
        return;
    }
    if (half_operands()) {
        const void *a = as_half(0, A, ta ? K : M, ta ? M : K, lda, sA, batch);
        const void *b = as_half(1, B, tb ? N : K, tb ? K : N, ldb, sB, batch);
        CUBLAS_LAUNCH(cublasGemmStridedBatchedEx(cublas, op(tb), op(ta), N, M, K, &alpha, b, half_type(), ldb, sB, a,
                                                 half_type(), lda, sA, &beta, C, CUDA_R_32F, ldc, sC, batch,
                                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        return;
    }
    CUBLAS_LAUNCH(cublasGemmStridedBatchedEx(cublas, op(tb), op(ta), N, M, K, &alpha, B, CUDA_R_32F, ldb, sB, A,
                                             CUDA_R_32F, lda, sA, &beta, C, CUDA_R_32F, ldc, sC, batch, fp32_compute(),
                                             CUBLAS_GEMM_DEFAULT));
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

// One cuBLASLt plan per shape: descriptors and the heuristic's algorithm, built on the first
// call (the heuristic query costs far more host time than the product of a small batch).
typedef struct {
    int N, IC, OC, bias, residual, precision;
    bool ok;  // false: Lt offered no algorithm, use the fallback
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} lt_plan;
static lt_plan plans[128];
static int n_plans;

static lt_plan *plan_for(int N, int IC, int OC, bool bias, bool residual) {
    for (int i = 0; i < n_plans; i++) {
        lt_plan *p = &plans[i];
        if (p->N == N && p->IC == IC && p->OC == OC && p->bias == bias && p->residual == residual &&
            p->precision == precision)
            return p;
    }
    if (n_plans == (int)(sizeof plans / sizeof plans[0])) {  // bucketed shapes keep this small; else recycle
        lt_plan *old = &plans[--n_plans];
        cublasLtMatrixLayoutDestroy(old->c), cublasLtMatrixLayoutDestroy(old->b), cublasLtMatrixLayoutDestroy(old->a);
        cublasLtMatmulDescDestroy(old->desc);
    }
    lt_plan *p = &plans[n_plans++];
    *p = (lt_plan){N, IC, OC, bias, residual, precision, false, NULL, NULL, NULL, NULL, {}};
    cudaDataType_t ab = half_operands() ? half_type() : CUDA_R_32F;
    cublasComputeType_t compute = half_operands() ? CUBLAS_COMPUTE_32F : fp32_compute();
    cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
    cublasLtEpilogue_t epilogue = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, compute, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof opT));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof opN));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    if (bias) {
        cudaDataType_t bias_type = CUDA_R_32F;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                    sizeof bias_type));
    }
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, ab, IC, OC, IC));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, ab, IC, N, IC));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, OC, N, OC));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &lt_workspace_bytes, sizeof lt_workspace_bytes));
    // Views into the parameter arena are only 16-byte aligned (matmul_forward checks that much);
    // the heuristic's default assumes 256, so say what is promised.
    const uint32_t align = 16;
    const cublasLtMatmulPreferenceAttributes_t aligns[] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++)
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, aligns[i], &align, sizeof align));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(cublaslt, p->desc, p->a, p->b, p->c, p->c, pref, 1, &heur, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    p->ok = st == CUBLAS_STATUS_SUCCESS && found > 0;
    if (p->ok) p->algo = heur.algo;
    return p;
}

// Column-major: out^T[OC,N] = (weight^T[IC,OC])^T @ inp^T[IC,N] + bias[OC] (+ residual^T).
// Returns false, having done nothing, when cuBLASLt offers no algorithm for this case.
static bool lt_matmul(float *out, const float *inp, const float *weight, const float *bias, const float *residual,
                      int N, int IC, int OC) {
    lt_plan *p = plan_for(N, IC, OC, bias != NULL, residual != NULL);
    if (!p->ok) return false;
    if (bias)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    const void *w = weight, *x = inp;
    if (half_operands()) w = as_half(0, weight, OC, IC, IC), x = as_half(1, inp, N, IC, IC);
    float alpha = 1.0f, beta = residual ? 1.0f : 0.0f;
    CUBLAS_LAUNCH(cublasLtMatmul(cublaslt, p->desc, &alpha, w, p->a, x, p->b, &beta, residual ? residual : out, p->c,
                                 out, p->c, &p->algo, lt_workspace, lt_workspace_bytes, stream));
    return true;
}

// out[N,OC] = inp[N,IC] @ weight[OC,IC]^T + bias[OC] (+ residual[N,OC]). cuBLASLt when every
// pointer and row is 16-byte aligned (its kernels require it); otherwise, as the CPU does,
// bias + residual written first and one gemm with beta = 1.
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, const float *residual,
                    int N, int IC, int OC) {
    if (N <= 0 || OC <= 0) return;
    bool lt = IC > 0 && IC % 4 == 0 && OC % 4 == 0 && aligned16(out) && aligned16(inp) && aligned16(weight) &&
              (!bias || aligned16(bias)) && (!residual || aligned16(residual));
    if (lt && lt_matmul(out, inp, weight, bias, residual, N, IC, OC)) return;
    if (bias || residual) bias_residual_forward(out, bias, residual, N, OC);
    gemm(0, 1, N, OC, IC, 1.0f, inp, IC, weight, IC, bias || residual ? 1.0f : 0.0f, out, OC);
}

}  // namespace mt_cuda

using namespace mt_cuda;

extern "C" int mt_cuda_set_precision(const char *name) {
    int p = !strcmp(name, "fp32") ? MT_PRECISION_FP32 : !strcmp(name, "tf32") ? MT_PRECISION_TF32
          : !strcmp(name, "bf16") ? MT_PRECISION_BF16 : !strcmp(name, "fp16") ? MT_PRECISION_FP16 : -1;
    if (p < 0) return -1;
    precision = p, use_tf32 = p == MT_PRECISION_TF32;
    workspaces_follow_precision();
    return 0;
}
extern "C" const char *mt_cuda_precision(void) {
    static const char *names[] = {"fp32", "tf32", "bf16", "fp16"};  // in enum order
    return names[precision];
}
extern "C" void mt_cuda_set_tf32(int on) { mt_cuda_set_precision(on ? "tf32" : "fp32"); }
extern "C" int mt_cuda_tf32(void) { return use_tf32; }

extern "C" void mt_cuda_f32_to_bf16(mt_bf16 *out, const float *inp, int64_t n) {
    if (n <= 0) return;
    f32_to_half_kernel<<<grid_for(n, 256), 256, 0, stream>>>(reinterpret_cast<__nv_bfloat16 *>(out), inp, n);
    LAUNCH_CHECK();
}

extern "C" void mt_cuda_bf16_to_f32(float *out, const mt_bf16 *inp, int64_t n) {
    if (n <= 0) return;
    half_to_f32_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, reinterpret_cast<const __nv_bfloat16 *>(inp), n);
    LAUNCH_CHECK();
}

extern "C" void mt_cuda_f32_to_f16(mt_f16 *out, const float *inp, int64_t n) {
    if (n <= 0) return;
    f32_to_half_kernel<<<grid_for(n, 256), 256, 0, stream>>>(reinterpret_cast<__half *>(out), inp, n);
    LAUNCH_CHECK();
}

extern "C" void mt_cuda_f16_to_f32(float *out, const mt_f16 *inp, int64_t n) {
    if (n <= 0) return;
    half_to_f32_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, reinterpret_cast<const __half *>(inp), n);
    LAUNCH_CHECK();
}

// As gemm, with bf16 A and B (tensor cores), fp32 accumulation and fp32 C.
extern "C" void mt_cuda_gemm_bf16(int ta, int tb, int M, int N, int K, float alpha, const mt_bf16 *A, int lda,
                                  const mt_bf16 *B, int ldb, float beta, float *C, int ldc) {
    gemm_half(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, CUDA_R_16BF);
}
