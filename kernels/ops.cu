// ops.cu — custom CUDA kernels for the forward ops; each launcher computes what its CPU twin
// in lib/cpu/ops.c computes (shapes in lib/backend.h), in the same order of operations where
// that is cheap, so fp32 results agree to rounding. Activations are packed token rows.
#include <math.h>

#include "backend.h"
#include "ops.cuh"

namespace mt_cuda {

// ---- embeddings ------------------------------------------------------------------------

// out[N,C]; one thread per element. Sum in Hugging Face's order: (word + type) + position.
__global__ void embeddings_forward_kernel(float *out, const int32_t *ids, const int32_t *types, const int32_t *pos,
                                          const float *wte, const float *wpe, const float *wtt, int N, int C) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)N * C) return;
    int64_t n = i / C, c = i % C;
    out[i] = (wte[(int64_t)ids[n] * C + c] + wtt[(int64_t)types[n] * C + c]) + wpe[(int64_t)pos[n] * C + c];
}

void embeddings_forward(float *out, const int32_t *ids, const int32_t *types, const int32_t *pos,
                        const float *wte, const float *wpe, const float *wtt, int N, int C) {
    if (N <= 0 || C <= 0) return;  // an empty grid is a launch error, not a no-op
    embeddings_forward_kernel<<<ceil_div((int64_t)N * C, 256), 256, 0, stream>>>(out, ids, types, pos, wte, wpe,
                                                                                 wtt, N, C);
    LAUNCH_CHECK();
}

// ---- LayerNorm -----------------------------------------------------------------------------

// One warp per row of inp[N,C]. Two passes (mean, then squared deviations) like the CPU:
// no cancellation when the mean is large. out may equal inp (each lane owns its columns).
__global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *inp,
                                         const float *weight, const float *bias, int N, int C, float eps) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const float *x = inp + (int64_t)row * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += x[c];
    float m = warp_sum(s) / C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) v += (x[c] - m) * (x[c] - m);
    float r = 1.0f / sqrtf(warp_sum(v) / C + eps);  // IEEE sqrt and divide, as the CPU
    float *o = out + (int64_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = (x[c] - m) * r * weight[c] + bias[c];
    if (lane == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = r;
    }
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C, float eps) {
    if (N <= 0) return;
    const int rows_per_block = 8;
    layernorm_forward_kernel<<<ceil_div(N, rows_per_block), 32 * rows_per_block, 0, stream>>>(
        out, mean, rstd, inp, weight, bias, N, C, eps);
    LAUNCH_CHECK();
}

// ---- element-wise --------------------------------------------------------------------------

// x Phi(x) in double with Phi by erfc, rounded once: the CPU's formula (lib/cpu/ops.c), so the
// two agree to an ulp. 0.5 x (1 + erff(x / sqrt 2)) in float cancels in the lower tail (4% off
// at x = -5, -0 from x = -6 on).
__global__ void gelu_forward_kernel(float *out, const float *inp, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const double x = inp[i];
        out[i] = (float)(x * (0.5 * erfc(-x * 0.70710678118654752440)));
    }
}

__global__ void tanh_forward_kernel(float *out, const float *inp, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = tanhf(inp[i]);
}

void gelu_forward(float *out, const float *inp, int64_t n) {
    if (n <= 0) return;
    gelu_forward_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, inp, n);
    LAUNCH_CHECK();
}

void tanh_forward(float *out, const float *inp, int64_t n) {
    if (n <= 0) return;
    tanh_forward_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, inp, n);
    LAUNCH_CHECK();
}

// ---- pooling and unpacking ------------------------------------------------------------------

// out[B,C] from inp[N,C]; block (b, column tile), thread per column, tokens in order as the
// CPU loop (so mean is the same sum). An empty sequence gives zeros.
__global__ void pool_forward_kernel(float *out, const float *inp, const int32_t *offsets, int C, int mode) {
    int b = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int first = offsets[b], L = offsets[b + 1] - first;
    const float *x = inp + (int64_t)first * C + c;
    float o = L > 0 ? x[0] : 0.0f;
    if (mode != MT_POOL_CLS) {
        for (int t = 1; t < L; t++) {
            float v = x[(int64_t)t * C];
            o = mode == MT_POOL_MAX ? (v > o ? v : o) : o + v;
        }
        if (mode == MT_POOL_MEAN && L > 0) o /= (float)L;
    }
    out[(int64_t)b * C + c] = o;
}

void pool_forward(float *out, const float *inp, const int32_t *offsets, int B, int C, int mode) {
    if (B <= 0 || C <= 0) return;
    dim3 grid(B, ceil_div(C, 128));
    pool_forward_kernel<<<grid, 128, 0, stream>>>(out, inp, offsets, C, mode);
    LAUNCH_CHECK();
}

// out[B,T,C] from inp[N,C]: one thread per output element; rows t >= L_b are zero.
__global__ void unpack_forward_kernel(float *out, const float *inp, const int32_t *offsets, int B, int T, int C) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)B * T * C) return;
    int64_t c = i % C, bt = i / C, t = bt % T, b = bt / T;
    int first = offsets[b], L = offsets[b + 1] - first;
    out[i] = t < L ? inp[(first + t) * C + c] : 0.0f;
}

void unpack_forward(float *out, const float *inp, const int32_t *offsets, int B, int T, int C) {
    if (B <= 0 || T <= 0 || C <= 0) return;
    unpack_forward_kernel<<<ceil_div((int64_t)B * T * C, 256), 256, 0, stream>>>(out, inp, offsets, B, T, C);
    LAUNCH_CHECK();
}

// ---- helpers for the GEMM paths --------------------------------------------------------------

__global__ void bias_residual_kernel(float *out, const float *bias, const float *residual, int N, int OC) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)N * OC) return;
    out[i] = (bias ? bias[i % OC] : 0.0f) + (residual ? residual[i] : 0.0f);
}

void bias_residual_forward(float *out, const float *bias, const float *residual, int N, int OC) {
    if (N <= 0 || OC <= 0) return;
    bias_residual_kernel<<<ceil_div((int64_t)N * OC, 256), 256, 0, stream>>>(out, bias, residual, N, OC);
    LAUNCH_CHECK();
}

__global__ void scale_matrix_kernel(float *C, int M, int N, int ldc, float beta) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)M * N) return;
    float *c = C + (i / N) * ldc + i % N;
    *c = beta == 0.0f ? 0.0f : beta * *c;
}

void scale_matrix(float *C, int M, int N, int ldc, float beta) {
    if (M <= 0 || N <= 0 || beta == 1.0f) return;
    scale_matrix_kernel<<<ceil_div((int64_t)M * N, 256), 256, 0, stream>>>(C, M, N, ldc, beta);
    LAUNCH_CHECK();
}

}  // namespace mt_cuda
