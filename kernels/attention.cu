// attention.cu — multi-head self-attention over packed variable-length sequences as batched
// matrix products on the tensor cores (the llm.c recipe, with packing):
//
//   forward   qkv[N,3C] -> Q, K, V [B*NH, Lmax, hs] (padded, zero rows past each L_b)
//             S = scale Q K^T [B*NH, Lmax, Lmax]          cuBLAS strided batched
//             P = softmax over the L_b real keys, saved to att (packed layout of backend.h),
//             P' = dropout(P) in place of S               one warp per row
//             O = P' V -> out[N,C] (real rows only)       cuBLAS strided batched
//   backward  dO, V, P' from att and the same mask; dV = P'^T dO, dP' = dO V^T,
//             dS = P (D dP' - rowsum(P D dP')) scale; dQ = dS K, dK = dS^T Q; dqkv += (dQ|dK|dV)
//
// The matrix products run in the precision of gemm.cu (fp32 | tf32 | bf16 | fp16); softmax, masks and
// the sums stay fp32. Every sum has a fixed order: results are the same run to run.
// The host sizes the products by the longest sequence (Lmax), which the caller passes as
// max_len (lib/bert.c knows it when packing the batch): no readback of offsets, no sync. A
// sequence longer than max_len (a caller's bug; the CPU twin dies naming it) traps in the softmax
// kernels, so the next CUDA_CHECK dies instead of the rows overrunning the padded workspaces.
// Scratch: the six padded workspaces of lib/workspace.h, reserved once from the run's memory plan.
// MTBERT_ATTENTION=fused sends bf16 / fp16 attention to flash.cu instead (off by default until a
// GPU has run its parity rows: kernels/README.md).
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"

#include "ops.cuh"
#include "philox.cuh"

namespace mt_cuda {

static bool fused;  // MTBERT_ATTENTION=fused: flash.cu for bf16 / fp16 (attention_flash_applies)

void attention_init(void) {
    const char *a = getenv("MTBERT_ATTENTION");
    if (a && *a && mt_cuda_set_attention(a) != 0) mt_die("MTBERT_ATTENTION=%s: expected batched or fused", a);
    if (fused) mt_log("attention: fused (kernels/flash.cu) at bf16 / fp16, head sizes 32 and 64 (MTBERT_ATTENTION)");
}

static bool use_flash(int C, int NH) { return fused && attention_flash_applies(C, NH); }

static float *ws_attention(int which, int64_t floats) {
    return (float *)workspace(which, (size_t)floats * sizeof(float));
}

// ---- layout kernels ---------------------------------------------------------------------------

// Element (bh, i, d) of the padded [B*NH, Lmax, hs] layout and its packed row: thread per element.
struct padded_index {
    int b, h, i, d, L, row;  // row: the packed token index (valid when i < L)
};
__device__ __forceinline__ padded_index padded_at(int64_t idx, const int32_t *offsets, int NH, int Lmax, int hs) {
    padded_index p;
    p.d = (int)(idx % hs);
    int64_t r = idx / hs;
    p.i = (int)(r % Lmax);
    int bh = (int)(r / Lmax);
    p.b = bh / NH, p.h = bh % NH;
    int first = offsets[p.b];
    p.L = offsets[p.b + 1] - first;
    p.row = first + p.i;
    return p;
}

// Q, K, V (each [B*NH, Lmax, hs]) from qkv[N, 3C]; zeros past each sequence's end.
__global__ void unpack_qkv_kernel(float *Q, float *K, float *V, const float *qkv, const int32_t *offsets, int NH,
                                  int Lmax, int hs, int64_t total) {
    const int C = NH * hs;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (int64_t)gridDim.x * blockDim.x) {
        padded_index p = padded_at(idx, offsets, NH, Lmax, hs);
        float q = 0.0f, k = 0.0f, v = 0.0f;
        if (p.i < p.L) {
            const float *src = qkv + (int64_t)p.row * 3 * C + p.h * hs + p.d;
            q = src[0], k = src[C], v = src[2 * C];
        }
        Q[idx] = q, K[idx] = k, V[idx] = v;
    }
}

// X [B*NH, Lmax, hs] from rows of width C (one head's columns each), zeros past the end.
__global__ void unpack_heads_kernel(float *X, const float *src, const int32_t *offsets, int NH, int Lmax, int hs,
                                    int64_t total) {
    const int C = NH * hs;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (int64_t)gridDim.x * blockDim.x) {
        padded_index p = padded_at(idx, offsets, NH, Lmax, hs);
        X[idx] = p.i < p.L ? src[(int64_t)p.row * C + p.h * hs + p.d] : 0.0f;
    }
}

// out[N, C] (real rows) from O [B*NH, Lmax, hs].
__global__ void pack_heads_kernel(float *out, const float *O, const int32_t *offsets, int NH, int Lmax, int hs,
                                  int64_t total) {
    const int C = NH * hs;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (int64_t)gridDim.x * blockDim.x) {
        padded_index p = padded_at(idx, offsets, NH, Lmax, hs);
        if (p.i < p.L) out[(int64_t)p.row * C + p.h * hs + p.d] = O[idx];
    }
}

// dqkv[N, 3C] += dQ | dK | dV (real rows): each element has one writer, so no atomics.
__global__ void pack_qkv_add_kernel(float *dqkv, const float *dQ, const float *dK, const float *dV,
                                    const int32_t *offsets, int NH, int Lmax, int hs, int64_t total) {
    const int C = NH * hs;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (int64_t)gridDim.x * blockDim.x) {
        padded_index p = padded_at(idx, offsets, NH, Lmax, hs);
        if (p.i >= p.L) continue;
        float *dst = dqkv + (int64_t)p.row * 3 * C + p.h * hs + p.d;
        dst[0] += dQ[idx], dst[C] += dK[idx], dst[2 * C] += dV[idx];
    }
}

// ---- softmax rows -------------------------------------------------------------------------------

// One warp per padded row (bh, i) of S [B*NH, Lmax, Lmax] (already scaled): the softmax over the
// row's L real keys, saved to att (when given) at the packed index of backend.h, and P' =
// dropout(P) written back over S (zeros past L and in rows past L, so P' V reads no garbage).
template <bool DROP>
__global__ void softmax_rows_kernel(float *S, float *att, const int32_t *offsets, const int64_t *att_offsets, int NH,
                                    int Lmax, int64_t rows, dropout_params dp) {
    const int lane = threadIdx.x % 32;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
    for (int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; r < rows; r += warps) {
        const int i = (int)(r % Lmax), bh = (int)(r / Lmax), b = bh / NH, h = bh % NH;
        const int L = offsets[b + 1] - offsets[b];
        if (L > Lmax) __trap();  // a max_len below the batch's longest: die at the next check, never write past the row
        float *s = S + r * Lmax;
        if (i >= L) {
            for (int j = lane; j < Lmax; j += 32) s[j] = 0.0f;
            continue;
        }
        float mx = -FLT_MAX;
        for (int j = lane; j < L; j += 32) mx = fmaxf(mx, s[j]);
        mx = warp_max(mx);
        float sum = 0.0f;
        for (int j = lane; j < L; j += 32) {
            float e = expf(s[j] - mx);
            s[j] = e;
            sum += e;
        }
        const float inv = 1.0f / warp_sum(sum);
        const int64_t head = att_offsets ? att_offsets[b] + ((int64_t)h * L + i) * L : 0;  // P[i][0]'s index
        for (int j = lane; j < Lmax; j += 32) {
            float p = j < L ? s[j] * inv : 0.0f;
            if (j < L && att) att[head + j] = p;
            if (DROP && j < L) p = dropout_keep(dp, (uint64_t)(head + j)) ? p * dp.scale : 0.0f;
            s[j] = p;
        }
    }
}

// Backward of softmax_rows, warp per padded row. In: dPd (= dO V^T, the gradient of P'),
// att (P). Out, over dPd: dS = P (D dPd - sum_j P_j D_j dPd_j) scale (zeros outside the real
// block). Also writes Pd = P' into S for dV = P'^T dO.
template <bool DROP>
__global__ void softmax_rows_backward_kernel(float *dPd, float *Pd, const float *att, const int32_t *offsets,
                                             const int64_t *att_offsets, int NH, int Lmax, int64_t rows, float scale,
                                             dropout_params dp) {
    const int lane = threadIdx.x % 32;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
    for (int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; r < rows; r += warps) {
        const int i = (int)(r % Lmax), bh = (int)(r / Lmax), b = bh / NH, h = bh % NH;
        const int L = offsets[b + 1] - offsets[b];
        if (L > Lmax) __trap();  // as in the forward (the CPU twin dies naming both lengths)
        float *g = dPd + r * Lmax, *pd = Pd + r * Lmax;
        if (i >= L) {
            for (int j = lane; j < Lmax; j += 32) g[j] = 0.0f, pd[j] = 0.0f;
            continue;
        }
        const int64_t head = att_offsets[b] + ((int64_t)h * L + i) * L;
        const float *p = att + head;
        float dot = 0.0f;
        for (int j = lane; j < L; j += 32) {
            float f = DROP ? (dropout_keep(dp, (uint64_t)(head + j)) ? dp.scale : 0.0f) : 1.0f;
            float dP = g[j] * f;  // the gradient of P itself
            g[j] = dP;
            pd[j] = p[j] * f;
            dot += p[j] * dP;
        }
        dot = warp_sum(dot);
        for (int j = lane; j < Lmax; j += 32) {
            if (j < L) g[j] = p[j] * (g[j] - dot) * scale;
            else g[j] = 0.0f, pd[j] = 0.0f;
        }
    }
}

// ---- the ops ------------------------------------------------------------------------------------

void attention_forward_dropout(float *out, float *att, const float *qkv, const int32_t *offsets,
                               const int64_t *att_offsets, int B, int max_len, int C, int NH,
                               const mt_dropout_key *drop) {
    if (B <= 0 || max_len <= 0) return;
    if (use_flash(C, NH)) return attention_forward_flash(out, att, qkv, offsets, att_offsets, B, max_len, C, NH, drop);
    const int hs = C / NH, Lmax = max_len;
    const int64_t BH = (int64_t)B * NH, elems = BH * Lmax * hs, rows = BH * Lmax;
    float *Q = ws_attention(MT_WS_ATT_Q, elems), *K = ws_attention(MT_WS_ATT_K, elems);
    float *V = ws_attention(MT_WS_ATT_V, elems), *O = ws_attention(MT_WS_ATT_O, elems);
    float *S = ws_attention(MT_WS_ATT_S, rows * Lmax);
    unpack_qkv_kernel<<<grid_for(elems, 256), 256, 0, stream>>>(Q, K, V, qkv, offsets, NH, Lmax, hs, elems);
    LAUNCH_CHECK();
    const float scale = 1.0f / sqrtf((float)hs);
    gemm_batched(0, 1, Lmax, Lmax, hs, scale, Q, hs, (int64_t)Lmax * hs, K, hs, (int64_t)Lmax * hs, 0.0f, S, Lmax,
                 (int64_t)Lmax * Lmax, (int)BH);
    dropout_params dp = dropout_params_of(att ? drop : nullptr);  // as the CPU: no att, no dropout
    if (dp.on)
        softmax_rows_kernel<true><<<grid_for(rows, 8), 256, 0, stream>>>(S, att, offsets, att_offsets, NH, Lmax, rows, dp);
    else
        softmax_rows_kernel<false><<<grid_for(rows, 8), 256, 0, stream>>>(S, att, offsets, att ? att_offsets : nullptr,
                                                                          NH, Lmax, rows, dp);
    LAUNCH_CHECK();
    gemm_batched(0, 0, Lmax, hs, Lmax, 1.0f, S, Lmax, (int64_t)Lmax * Lmax, V, hs, (int64_t)Lmax * hs, 0.0f, O, hs,
                 (int64_t)Lmax * hs, (int)BH);
    pack_heads_kernel<<<grid_for(elems, 256), 256, 0, stream>>>(out, O, offsets, NH, Lmax, hs, elems);
    LAUNCH_CHECK();
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, const int32_t *offsets,
                        const int64_t *att_offsets, int B, int max_len, int C, int NH, const mt_dropout_key *drop) {
    if (B <= 0 || max_len <= 0) return;
    if (use_flash(C, NH))
        return attention_backward_flash(dqkv, dout, qkv, att, offsets, att_offsets, B, max_len, C, NH, drop);
    const int hs = C / NH, Lmax = max_len;
    const int64_t BH = (int64_t)B * NH, elems = BH * Lmax * hs, rows = BH * Lmax, sq = (int64_t)Lmax * Lmax,
                  sh = (int64_t)Lmax * hs;
    float *Q = ws_attention(MT_WS_ATT_Q, elems), *K = ws_attention(MT_WS_ATT_K, elems);
    float *V = ws_attention(MT_WS_ATT_V, elems), *dO = ws_attention(MT_WS_ATT_O, elems);
    float *Pd = ws_attention(MT_WS_ATT_S, rows * Lmax), *dS = ws_attention(MT_WS_ATT_DS, rows * Lmax);
    unpack_qkv_kernel<<<grid_for(elems, 256), 256, 0, stream>>>(Q, K, V, qkv, offsets, NH, Lmax, hs, elems);
    LAUNCH_CHECK();
    unpack_heads_kernel<<<grid_for(elems, 256), 256, 0, stream>>>(dO, dout, offsets, NH, Lmax, hs, elems);
    LAUNCH_CHECK();
    // dPd = dO V^T, then dS (over dPd) and Pd = P' from att
    gemm_batched(0, 1, Lmax, Lmax, hs, 1.0f, dO, hs, sh, V, hs, sh, 0.0f, dS, Lmax, sq, (int)BH);
    dropout_params dp = dropout_params_of(drop);
    const float scale = 1.0f / sqrtf((float)hs);
    if (dp.on)
        softmax_rows_backward_kernel<true><<<grid_for(rows, 8), 256, 0, stream>>>(dS, Pd, att, offsets, att_offsets, NH,
                                                                                 Lmax, rows, scale, dp);
    else
        softmax_rows_backward_kernel<false><<<grid_for(rows, 8), 256, 0, stream>>>(dS, Pd, att, offsets, att_offsets,
                                                                                  NH, Lmax, rows, scale, dp);
    LAUNCH_CHECK();
    // In stream order each product overwrites an input that no later product reads:
    // dQ = dS K over V (spent by dPd), dK = dS^T Q over K (spent by dQ), dV = Pd^T dO over Q.
    float *dQ = V, *dK = K, *dV = Q;
    gemm_batched(0, 0, Lmax, hs, Lmax, 1.0f, dS, Lmax, sq, K, hs, sh, 0.0f, dQ, hs, sh, (int)BH);
    gemm_batched(1, 0, Lmax, hs, Lmax, 1.0f, dS, Lmax, sq, Q, hs, sh, 0.0f, dK, hs, sh, (int)BH);
    gemm_batched(1, 0, Lmax, hs, Lmax, 1.0f, Pd, Lmax, sq, dO, hs, sh, 0.0f, dV, hs, sh, (int)BH);
    pack_qkv_add_kernel<<<grid_for(elems, 256), 256, 0, stream>>>(dqkv, dQ, dK, dV, offsets, NH, Lmax, hs, elems);
    LAUNCH_CHECK();
}

// attention_forward is the dropout version without a key (the CPU does the same)

void attention_forward(float *out, float *att, const float *qkv, const int32_t *offsets, const int64_t *att_offsets,
                       int B, int max_len, int C, int NH) {
    attention_forward_dropout(out, att, qkv, offsets, att_offsets, B, max_len, C, NH, nullptr);
}

}  // namespace mt_cuda

extern "C" int mt_cuda_set_attention(const char *name) {
    if (strcmp(name, "batched") && strcmp(name, "fused")) return -1;
    mt_cuda::fused = !strcmp(name, "fused");
    return 0;
}
extern "C" const char *mt_cuda_attention(void) { return mt_cuda::fused ? "fused" : "batched"; }
