// ops.cu — custom CUDA kernels for the forward ops; each launcher computes what its CPU twin
// in lib/cpu/ops.c computes (shapes in lib/backend.h), in the same order of operations where
// that is cheap, so fp32 results agree to rounding. Activations are packed token rows.
#include <math.h>

#include "backend.h"
#include "ops.cuh"
#include "philox.cuh"

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
    if (N <= 0) return;
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

// ---- attention -----------------------------------------------------------------------------

// Sequence of packed token n: the largest b with offsets[b] <= n (offsets[B] = N > n).
__device__ __forceinline__ int sequence_of(const int32_t *offsets, int B, int n) {
    int lo = 0, hi = B - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (offsets[mid] <= n) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// One warp per (token n, head h): the query row of n against the L keys of its own sequence,
// with an online softmax (running max m and sum l) so no [L] scratch is needed. Lane owns
// head dimensions d = lane + 32 e (e < DPL, DPL = ceil(hs / 32)). When att is given, raw
// scores go there first and are normalised in place at the end.
// qkv[N,3C] (q | k | v), out[N,C], att: see backend.h. Persistent grid: N is on the device
// (offsets[B]), so warps stride over the N*NH items instead of the host sizing the grid.
// DROP: dropout on the probabilities (att required): keys are taken 32 at a time, lane t
// drawing the mask bit of key j0 + t (index att_offsets[b] + (h L + i) L + j, as the CPU),
// a ballot sharing the 32 bits; the kept terms enter the sum scaled by 1/(1-p), the softmax
// normaliser l sums every term, so out = dropout(P) V.
// TODO(speed): flash-style tiles on tensor cores (K/V blocks in shared memory, wgmma);
// this kernel reads each key row once per query row.
template <int DPL, bool DROP>
__global__ void attention_forward_kernel(float *out, float *att, const float *qkv, const int32_t *offsets,
                                         const int64_t *att_offsets, int B, int C, int NH, dropout_params dp) {
    const int hs = C / NH, lane = threadIdx.x % 32;
    const float scale = 1.0f / sqrtf((float)hs);
    const int64_t stride = 3 * (int64_t)C, items = (int64_t)offsets[B] * NH;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
    for (int64_t w = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32; w < items; w += warps) {
        int n = (int)(w / NH), h = (int)(w % NH);
        int b = sequence_of(offsets, B, n), first = offsets[b], L = offsets[b + 1] - first;
        const float *q = qkv + n * stride + h * hs;
        const float *k0 = qkv + first * stride + C + h * hs, *v0 = k0 + C;
        float *p = att ? att + att_offsets[b] + ((int64_t)h * L + (n - first)) * L : nullptr;
        // mask index of this row's first probability (DROP implies att)
        const uint64_t mask0 = DROP ? (uint64_t)(att_offsets[b] + ((int64_t)h * L + (n - first)) * L) : 0;
        float qr[DPL], acc[DPL];
#pragma unroll
        for (int e = 0; e < DPL; e++) {
            int d = lane + 32 * e;
            qr[e] = d < hs ? q[d] : 0.0f;
            acc[e] = 0.0f;
        }
        float m = -INFINITY, l = 0.0f;
        for (int j0 = 0; j0 < L; j0 += 32) {
            unsigned keep = 0xffffffffu;
            if (DROP) keep = __ballot_sync(0xffffffffu, j0 + lane < L && dropout_keep(dp, mask0 + j0 + lane));
            const int j1 = min(j0 + 32, L);
            for (int j = j0; j < j1; j++) {
                const float *k = k0 + j * stride, *v = v0 + j * stride;
                float s = 0.0f;
#pragma unroll
                for (int e = 0; e < DPL; e++)
                    if (lane + 32 * e < hs) s += qr[e] * k[lane + 32 * e];
                s = warp_sum(s) * scale;
                if (p && lane == 0) p[j] = s;
                float m_new = fmaxf(m, s), corr = expf(m - m_new), e_s = expf(s - m_new);
                l = l * corr + e_s;
                float wgt = e_s;
                if (DROP) wgt = (keep >> (j - j0)) & 1u ? e_s * dp.scale : 0.0f;
#pragma unroll
                for (int e = 0; e < DPL; e++)
                    if (lane + 32 * e < hs) acc[e] = acc[e] * corr + wgt * v[lane + 32 * e];
                m = m_new;
            }
        }
        float inv = 1.0f / l;
        float *o = out + (int64_t)n * C + h * hs;
#pragma unroll
        for (int e = 0; e < DPL; e++)
            if (lane + 32 * e < hs) o[lane + 32 * e] = acc[e] * inv;
        if (p) {
            __syncwarp();  // lane 0's raw scores visible to the whole warp
            for (int j = lane; j < L; j += 32) p[j] = expf(p[j] - m) * inv;
        }
    }
}

template <bool DROP>
static void attention_forward_launch(float *out, float *att, const float *qkv, const int32_t *offsets,
                                     const int64_t *att_offsets, int B, int C, int NH, dropout_params dp) {
    int hs = C / NH, grid = num_sms * 8, block = 128;  // 32 resident warps per SM at 40-46 registers
    if (hs <= 32)
        attention_forward_kernel<1, DROP><<<grid, block, 0, stream>>>(out, att, qkv, offsets, att_offsets, B, C, NH, dp);
    else if (hs <= 64)
        attention_forward_kernel<2, DROP><<<grid, block, 0, stream>>>(out, att, qkv, offsets, att_offsets, B, C, NH, dp);
    else if (hs <= 128)
        attention_forward_kernel<4, DROP><<<grid, block, 0, stream>>>(out, att, qkv, offsets, att_offsets, B, C, NH, dp);
    else mt_die("attention_forward: head size %d > 128 is not supported by the CUDA kernel", hs);
    LAUNCH_CHECK();
}

// As the CPU: dropout only when the probabilities are kept (att given) and p > 0.
void attention_forward_dropout_direct(float *out, float *att, const float *qkv, const int32_t *offsets,
                               const int64_t *att_offsets, int B, int C, int NH, const mt_dropout_key *drop) {
    if (B <= 0) return;
    dropout_params dp = dropout_params_of(att ? drop : nullptr);
    if (dp.on) attention_forward_launch<true>(out, att, qkv, offsets, att_offsets, B, C, NH, dp);
    else attention_forward_launch<false>(out, att, qkv, offsets, att_offsets, B, C, NH, dp);
}

// ---- element-wise --------------------------------------------------------------------------

__global__ void gelu_forward_kernel(float *out, const float *inp, int64_t n) {
    const float inv_sqrt2 = 0.70710678118654752f;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = 0.5f * inp[i] * (1.0f + erff(inp[i] * inv_sqrt2));
}

__global__ void tanh_forward_kernel(float *out, const float *inp, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = tanhf(inp[i]);
}

// Grid-stride loops: at most a few waves of blocks however large n is.
static int elementwise_grid(int64_t n) {
    int64_t blocks = (n + 255) / 256, cap = (int64_t)num_sms * 32;
    return (int)(blocks < cap ? blocks : cap);
}

void gelu_forward(float *out, const float *inp, int64_t n) {
    if (n <= 0) return;
    gelu_forward_kernel<<<elementwise_grid(n), 256, 0, stream>>>(out, inp, n);
    LAUNCH_CHECK();
}

void tanh_forward(float *out, const float *inp, int64_t n) {
    if (n <= 0) return;
    tanh_forward_kernel<<<elementwise_grid(n), 256, 0, stream>>>(out, inp, n);
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
    if (B <= 0) return;
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
    if (B <= 0 || T <= 0) return;
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
