// backward.cu — the training ops of the CUDA backend: dropout (Philox masks bit-identical to
// lib/rng.c) and the backward of every encoder op, twins of lib/cpu/backward.c (shapes in
// lib/backend.h). Gradients accumulate with +=. Deterministic: no float atomics anywhere;
// every sum runs in an order fixed by the shapes alone (never by the SM count or timing), so
// two runs give the same bits. Sums over rows (bias, LayerNorm parameters) go through per-chunk
// partial sums in a scratch buffer, reduced in chunk order by a second kernel.
#include <cub/device/device_radix_sort.cuh>
#include <math.h>

#include "ops.cuh"
#include "philox.cuh"

namespace mt_cuda {

// ---- scratch ---------------------------------------------------------------------------------

void *scratch(size_t bytes) { return workspace(MT_WS_SCRATCH, bytes); }

// ---- dropout -----------------------------------------------------------------------------------

// One thread per group of 4 elements 4t .. 4t+3: one Philox block gives their 4 mask words.
// The arithmetic is the CPU's exactly: v = keep ? inp * scale : 0, then v + residual, each
// rounded on its own (__fmul_rn / __fadd_rn: no fused multiply-add), so outputs are equal bits.
__global__ void dropout_forward_kernel(float *out, const float *inp, const float *residual, int64_t n,
                                       dropout_params dp) {
    const int64_t groups = (n + 3) / 4;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < groups; t += (int64_t)gridDim.x * blockDim.x) {
        uint4 w = dp.on ? philox_block(dp.seed, dp.step, dp.site, (uint64_t)t) : make_uint4(0, 0, 0, 0);
        const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int r = 0; r < 4; r++) {
            int64_t i = 4 * t + r;
            if (i >= n) break;
            float x = inp[i];
            float v = dp.on ? (words[r] >= dp.threshold ? __fmul_rn(x, dp.scale) : 0.0f) : x;
            out[i] = residual ? __fadd_rn(v, residual[i]) : v;
        }
    }
}


void dropout_forward(float *out, const float *inp, const float *residual, int64_t n, const mt_dropout_key *drop) {
    if (n <= 0) return;
    dropout_forward_kernel<<<grid_for((n + 3) / 4, 256), 256, 0, stream>>>(out, inp, residual, n,
                                                                          dropout_params_of(drop));
    LAUNCH_CHECK();
}

// dinp += dropout(dout): the forward with dinp as its residual (same mask; __fadd_rn(v, dinp)
// is the CPU's dinp + v, bit for bit).
void dropout_backward(float *dinp, const float *dout, int64_t n, const mt_dropout_key *drop) {
    dropout_forward(dinp, dout, dinp, n, drop);
}

// ---- column sums (bias and LayerNorm parameter gradients) --------------------------------------

#define COLSUM_ROWS MT_WS_COLSUM_ROWS  // rows per partial sum: fixed, so the order depends on N alone
#define COLSUM_TX 32     // columns per block (one warp wide: coalesced rows)
#define COLSUM_TY 8      // row slices per block

// Pass 1: block (column tile, row chunk); thread (tx, ty) sums rows chunk*COLSUM_ROWS + ty,
// + COLSUM_TY, ... of its column in double, then ty = 0 adds the COLSUM_TY slices in order.
// partial[chunk][C] (dbias or LayerNorm's dbias) and, with NORM, partial2[chunk][C] of
// ((x - mean) * rstd) * dout (LayerNorm's dweight; the product in double as the CPU).
template <bool NORM>
__global__ void colsum_partial_kernel(double *partial, double *partial2, const float *dout, const float *inp,
                                      const float *mean, const float *rstd, int N, int C) {
    __shared__ double s1[COLSUM_TY][COLSUM_TX];
    __shared__ double s2[COLSUM_TY][COLSUM_TX];
    const int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * COLSUM_TX + tx, chunk = blockIdx.y;
    const int r0 = chunk * COLSUM_ROWS, r1 = min(r0 + COLSUM_ROWS, N);
    double a1 = 0.0, a2 = 0.0;
    if (c < C)
        for (int r = r0 + ty; r < r1; r += COLSUM_TY) {
            float dy = dout[(int64_t)r * C + c];
            a1 += dy;
            if (NORM) a2 += (double)((inp[(int64_t)r * C + c] - mean[r]) * rstd[r]) * dy;
        }
    s1[ty][tx] = a1;
    if (NORM) s2[ty][tx] = a2;
    __syncthreads();
    if (ty == 0 && c < C) {
        double t1 = 0.0, t2 = 0.0;
        for (int y = 0; y < COLSUM_TY; y++) {
            t1 += s1[y][tx];
            if (NORM) t2 += s2[y][tx];
        }
        partial[(int64_t)chunk * C + c] = t1;
        if (NORM) partial2[(int64_t)chunk * C + c] = t2;
    }
}

// Pass 2: one thread per column adds the chunks' partial sums in chunk order; out += (float)sum.
__global__ void colsum_finish_kernel(float *out, const double *partial, int chunks, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C || !out) return;
    double t = 0.0;
    for (int k = 0; k < chunks; k++) t += partial[(int64_t)k * C + c];
    out[c] += (float)t;
}

// sum_out[C] += column sums of dout[N,C]; norm_out[C] += column sums of norm * dout (NORM).
template <bool NORM>
static void column_sums(float *sum_out, float *norm_out, const float *dout, const float *inp, const float *mean,
                        const float *rstd, int N, int C) {
    if (N <= 0 || C <= 0) return;
    int chunks = ceil_div(N, COLSUM_ROWS);
    if (chunks > 65535) mt_die("column sums: %d rows is more than the grid allows", N);
    double *partial = (double *)scratch(mt_ws_colsums(N, C, NORM ? 2 : 1));  // [sets][chunks][C]
    double *partial2 = NORM ? partial + (size_t)chunks * C : nullptr;
    dim3 grid(ceil_div(C, COLSUM_TX), chunks), block(COLSUM_TX, COLSUM_TY);
    colsum_partial_kernel<NORM><<<grid, block, 0, stream>>>(partial, partial2, dout, inp, mean, rstd, N, C);
    LAUNCH_CHECK();
    if (sum_out) {
        colsum_finish_kernel<<<ceil_div(C, 256), 256, 0, stream>>>(sum_out, partial, chunks, C);
        LAUNCH_CHECK();
    }
    if (NORM && norm_out) {
        colsum_finish_kernel<<<ceil_div(C, 256), 256, 0, stream>>>(norm_out, partial2, chunks, C);
        LAUNCH_CHECK();
    }
}

// ---- linear ------------------------------------------------------------------------------------

// As the CPU: two GEMMs with beta = 1 (mt_cuda::gemm picks the precision), column sums for dbias.
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int IC, int OC) {
    if (dinp) gemm(0, 0, N, IC, OC, 1.0f, dout, OC, weight, IC, 1.0f, dinp, IC);      // dinp += dout @ W
    if (dweight) gemm(1, 0, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC);  // dW += dout^T @ inp
    if (dbias) column_sums<false>(dbias, nullptr, dout, nullptr, nullptr, nullptr, N, OC);
}

// ---- LayerNorm ---------------------------------------------------------------------------------

__device__ __forceinline__ double warp_sum_double(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// One warp per row, the CPU's formula: with norm = (x - mean) * rstd and g = dout * weight,
// dx += rstd * (g - mean(g) - norm * mean(g * norm)), the two means summed in double.
__global__ void layernorm_dinp_kernel(float *dinp, const float *dout, const float *inp, const float *weight,
                                      const float *mean, const float *rstd, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const float *x = inp + (int64_t)row * C, *dy = dout + (int64_t)row * C;
    float *dx = dinp + (int64_t)row * C;
    const float m = mean[row], s = rstd[row];
    double sum_g = 0.0, sum_gn = 0.0;
    for (int c = lane; c < C; c += 32) {
        double g = (double)dy[c] * weight[c];
        sum_g += g;
        sum_gn += g * (double)((x[c] - m) * s);
    }
    sum_g = warp_sum_double(sum_g);
    sum_gn = warp_sum_double(sum_gn);
    const float mean_g = (float)(sum_g / C), mean_gn = (float)(sum_gn / C);
    for (int c = lane; c < C; c += 32) {
        float norm = (x[c] - m) * s;
        dx[c] += s * (dy[c] * weight[c] - mean_g - norm * mean_gn);
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C) {
    if (N <= 0) return;
    if (dinp) {
        const int rows_per_block = 8;
        layernorm_dinp_kernel<<<ceil_div(N, rows_per_block), 32 * rows_per_block, 0, stream>>>(
            dinp, dout, inp, weight, mean, rstd, N, C);
        LAUNCH_CHECK();
    }
    if (dweight || dbias) column_sums<true>(dbias, dweight, dout, inp, mean, rstd, N, C);
}

// ---- GELU --------------------------------------------------------------------------------------

// d/dx [x Phi(x)] = Phi(x) + x phi(x) in double, Phi by erfc (no cancellation in the lower
// tail), and dinp + g added in double and rounded once: the CPU's formula (mathv.h, accurate to
// 5e-10), so results agree to about an ulp. Like the CPU, `out` is not read: erfc in double
// costs less here than the extra 4 bytes per element the division shortcut would load.
__global__ void gelu_backward_kernel(float *dinp, const float *inp, const float *dout, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        double x = inp[i];
        double cdf = 0.5 * erfc(-x * 0.70710678118654752440);
        double pdf = 0.39894228040143267794 * exp(-0.5 * x * x);
        double g = (cdf + x * pdf) * (double)dout[i];
        dinp[i] = (float)((double)dinp[i] + g);
    }
}

void gelu_backward(float *dinp, const float *inp, const float *out, const float *dout, int64_t n) {
    (void)out;
    if (n <= 0) return;
    gelu_backward_kernel<<<grid_for(n, 256), 256, 0, stream>>>(dinp, inp, dout, n);
    LAUNCH_CHECK();
}

// ---- embeddings --------------------------------------------------------------------------------

// order[n] = n.
__global__ void iota_kernel(int32_t *order, int N) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n < N) order[n] = n;
}

// After a stable sort of (row, token) pairs by row: block (i, column tile) works only when
// sorted position i starts a run of equal rows; each thread then adds the run's tokens, in
// token order, into its column of that row, starting from the row's current value. That is the
// CPU's sequence of float additions exactly (rows added in order n = 0..N-1), so the result is
// bit-identical, and distinct rows run in parallel.
__global__ void embed_rows_backward_kernel(float *dw, const int32_t *rows, const int32_t *order, const float *dout,
                                           int N, int C) {
    const int i = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    const int32_t r = rows[i];
    if ((i > 0 && rows[i - 1] == r) || c >= C) return;
    int lo = i + 1, hi = N;  // end of the run: first position past i with another row
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (rows[mid] == r) lo = mid + 1;
        else hi = mid;
    }
    float *w = dw + (int64_t)r * C + c;
    float acc = *w;
#pragma unroll 4
    for (int k = i; k < lo; k++) acc += dout[(int64_t)order[k] * C + c];
    *w = acc;
}

size_t embeddings_sort_temp(int N) {
    size_t temp_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, (const int32_t *)nullptr, (int32_t *)nullptr,
                                               (const int32_t *)nullptr, (int32_t *)nullptr, N, 0, 32, stream));
    return temp_bytes;
}

void embeddings_backward(float *dwte, float *dwpe, float *dwtt, const float *dout, const int32_t *ids,
                         const int32_t *types, const int32_t *pos, int N, int C) {
    if (N <= 0 || C <= 0) return;
    size_t temp_bytes = embeddings_sort_temp(N);
    char *base = (char *)scratch(mt_ws_embed_sort(N, temp_bytes));  // rows_out, order_in, order_out; then CUB's
    int32_t *rows_out = (int32_t *)base, *order_in = rows_out + N, *order_out = order_in + N;
    void *temp = base + mt_ws_embed_sort(N, 0);
    iota_kernel<<<ceil_div(N, 256), 256, 0, stream>>>(order_in, N);
    LAUNCH_CHECK();
    float *tables[3] = {dwte, dwpe, dwtt};
    const int32_t *keys[3] = {ids, pos, types};
    for (int t = 0; t < 3; t++) {
        if (!tables[t]) continue;
        size_t tb = temp_bytes;
        CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, tb, keys[t], rows_out, order_in, order_out, N, 0, 32, stream));
        LAUNCH_CHECK();
        dim3 grid(N, ceil_div(C, 128));
        embed_rows_backward_kernel<<<grid, 128, 0, stream>>>(tables[t], rows_out, order_out, dout, N, C);
        LAUNCH_CHECK();
    }
}

}  // namespace mt_cuda
