// sentence.cu — the sentence model's ops (lib/backend.h; the model is lib/sentence.c), twins of
// lib/cpu/sentence.c. Deterministic: no atomics; every output element has one writer, and each
// sum (bias gradients, col2im) runs in the CPU's order, so those results are the CPU's bits.
// The LSTM cell uses CUDA's expf/tanhf (an ulp or two from libm): parity within tolerance; its
// other operations are rounded one by one as the CPU's (__fmul_rn / __fadd_rn: nvcc would
// contract a * b + c into an FMA, the C11 build does not), so the libm difference is the only one.
#include "ops.cuh"
#include "philox.cuh"

namespace mt_cuda {

// The sequence holding packed row n: offsets[b] <= n < offsets[b+1] (binary search, B >= 1).
__device__ __forceinline__ int seq_of(const int32_t *offsets, int B, int64_t n) {
    int lo = 0, hi = B;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (offsets[mid] <= n) lo = mid;
        else hi = mid;
    }
    return lo;
}

#define GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

// ---- pooling, copies, bias -------------------------------------------------------------------

// Block (b, column tile): thread c walks sequence b's rows (cls: the first only).
__global__ void pool_backward_kernel(float *dinp, const float *dout, const int32_t *offsets, int C, int mode) {
    const int b = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int first = offsets[b], L = offsets[b + 1] - first;
    const float g = dout[(int64_t)b * C + c];
    if (mode == MT_POOL_CLS) {
        dinp[(int64_t)first * C + c] += g;
        return;
    }
    const float v = __fmul_rn(g, 1.0f / (float)L);
    for (int t = 0; t < L; t++) dinp[(int64_t)(first + t) * C + c] += v;
}

void pool_backward(float *dinp, const float *dout, const int32_t *offsets, int B, int C, int mode) {
    if (B <= 0 || C <= 0) return;
    pool_backward_kernel<<<dim3(B, ceil_div(C, 128)), 128, 0, stream>>>(dinp, dout, offsets, C, mode);
    LAUNCH_CHECK();
}

void copy_2d(float *dst, int ldd, const float *src, int lds, int rows, int cols) {
    if (rows <= 0 || cols <= 0) return;
    CUDA_ENQUEUE(cudaMemcpy2DAsync(dst, (size_t)ldd * sizeof(float), src, (size_t)lds * sizeof(float),
                                   (size_t)cols * sizeof(float), rows, cudaMemcpyDeviceToDevice, stream));
}

__global__ void add_bias_forward_kernel(float *out, int ldo, const float *b1, const float *b2, int N, int F) {
    GRID_STRIDE(i, (int64_t)N * F) {
        const int64_t n = i / F;
        const int f = (int)(i % F);
        const float bias = b2 ? __fadd_rn(b1[f], b2[f]) : b1[f];
        float *o = out + n * ldo + f;
        *o = __fadd_rn(*o, bias);
    }
}

void add_bias_forward(float *out, int ldo, const float *b1, const float *b2, int N, int F) {
    if (N <= 0 || F <= 0) return;
    add_bias_forward_kernel<<<grid_for((int64_t)N * F, 256), 256, 0, stream>>>(out, ldo, b1, b2, N, F);
    LAUNCH_CHECK();
}

// One thread per column, adding the rows in order in float: the CPU's sum, bit for bit
// (neighbouring threads read neighbouring columns, so each row is read coalesced).
__global__ void add_bias_backward_kernel(float *db1, float *db2, const float *dout, int ldo, int N, int F) {
    const int f = blockIdx.x * blockDim.x + threadIdx.x;
    if (f >= F) return;
    float s = 0.0f;
    for (int n = 0; n < N; n++) s = __fadd_rn(s, dout[(int64_t)n * ldo + f]);
    db1[f] += s;
    if (db2) db2[f] += s;
}

void add_bias_backward(float *db1, float *db2, const float *dout, int ldo, int N, int F) {
    if (F <= 0) return;
    add_bias_backward_kernel<<<ceil_div(F, 128), 128, 0, stream>>>(db1, db2, dout, ldo, N, F);
    LAUNCH_CHECK();
}

// ---- 'same' convolution: im2col and its transpose ---------------------------------------------

// One thread per element of col[N, C*w].
__global__ void im2col_same_kernel(float *col, const float *inp, const int32_t *offsets, int B, int N, int C, int w) {
    const int left = (w - 1) / 2, Cw = C * w;
    GRID_STRIDE(i, (int64_t)N * Cw) {
        const int64_t n = i / Cw;
        const int r = (int)(i % Cw), c = r / w, k = r % w;
        const int b = seq_of(offsets, B, n), first = offsets[b], L = offsets[b + 1] - first;
        const int s = (int)(n - first) - left + k;
        col[i] = s >= 0 && s < L ? inp[(int64_t)(first + s) * C + c] : 0.0f;
    }
}

void im2col_same(float *col, const float *inp, const int32_t *offsets, int B, int N, int C, int w) {
    if (B <= 0 || N <= 0 || C <= 0 || w <= 0) return;  // grid_for(0) would be an invalid launch
    im2col_same_kernel<<<grid_for((int64_t)N * C * w, 256), 256, 0, stream>>>(col, inp, offsets, B, N, C, w);
    LAUNCH_CHECK();
}

// One thread per dinp[n, c]: adds dcol[row t', c*w + k] over the rows t' whose window covers
// token t (k = t - t' + left), t' ascending: the CPU's order.
__global__ void col2im_same_kernel(float *dinp, const float *dcol, const int32_t *offsets, int B, int N, int C, int w) {
    const int left = (w - 1) / 2;
    GRID_STRIDE(i, (int64_t)N * C) {
        const int64_t n = i / C;
        const int c = (int)(i % C);
        const int b = seq_of(offsets, B, n), first = offsets[b], L = offsets[b + 1] - first, t = (int)(n - first);
        const int lo = max(0, t + left - w + 1), hi = min(L - 1, t + left);
        float v = dinp[i];
        for (int tp = lo; tp <= hi; tp++)
            v = __fadd_rn(v, dcol[(int64_t)(first + tp) * C * w + (int64_t)c * w + (t - tp + left)]);
        dinp[i] = v;
    }
}

void col2im_same(float *dinp, const float *dcol, const int32_t *offsets, int B, int N, int C, int w) {
    if (B <= 0 || N <= 0 || C <= 0 || w <= 0) return;
    col2im_same_kernel<<<grid_for((int64_t)N * C, 256), 256, 0, stream>>>(dinp, dcol, offsets, B, N, C, w);
    LAUNCH_CHECK();
}

// ---- ReLU + dropout, max-pool ----------------------------------------------------------------

// One thread per 4 elements = one Philox block; element index = the linear index n*D + d.
__global__ void relu_dropout_forward_kernel(float *x, int64_t n, dropout_params dp) {
    GRID_STRIDE(t, (n + 3) / 4) {
        const uint4 w = dp.on ? philox_block(dp.seed, dp.step, dp.site, (uint64_t)t) : make_uint4(0, 0, 0, 0);
        const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int64_t i = 4 * t + r;
            if (i >= n) break;
            const float v = x[i] > 0.0f ? x[i] : 0.0f;
            x[i] = dp.on ? (words[r] >= dp.threshold ? __fmul_rn(v, dp.scale) : 0.0f) : v;
        }
    }
}

void relu_dropout_forward(float *x, int N, int D, const mt_dropout_key *drop) {
    const int64_t n = (int64_t)N * D;
    if (n <= 0) return;
    relu_dropout_forward_kernel<<<grid_for((n + 3) / 4, 256), 256, 0, stream>>>(x, n, dropout_params_of(drop));
    LAUNCH_CHECK();
}

__global__ void relu_dropout_backward_kernel(float *dx, const float *dy, const float *y, int64_t n, float scale) {
    GRID_STRIDE(i, n) dx[i] = y[i] > 0.0f ? __fmul_rn(dy[i], scale) : 0.0f;
}

void relu_dropout_backward(float *dx, const float *dy, const float *y, int N, int D, const mt_dropout_key *drop) {
    const int64_t n = (int64_t)N * D;
    if (n <= 0) return;
    relu_dropout_backward_kernel<<<grid_for(n, 256), 256, 0, stream>>>(dx, dy, y, n, dropout_params_of(drop).scale);
    LAUNCH_CHECK();
}

// Block (b, column tile): thread d walks sequence b's rows; strict > keeps the first maximum.
__global__ void max_pool_forward_kernel(float *out, int32_t *argmax, const float *inp, const int32_t *offsets, int D) {
    const int b = blockIdx.x, d = blockIdx.y * blockDim.x + threadIdx.x;
    if (d >= D) return;
    int best = offsets[b];
    float m = inp[(int64_t)best * D + d];
    for (int n = best + 1; n < offsets[b + 1]; n++) {
        const float v = inp[(int64_t)n * D + d];
        if (v > m) m = v, best = n;
    }
    out[(int64_t)b * D + d] = m;
    argmax[(int64_t)b * D + d] = best;
}

void max_pool_forward(float *out, int32_t *argmax, const float *inp, const int32_t *offsets, int B, int D) {
    if (B <= 0 || D <= 0) return;
    max_pool_forward_kernel<<<dim3(B, ceil_div(D, 128)), 128, 0, stream>>>(out, argmax, inp, offsets, D);
    LAUNCH_CHECK();
}

// (b, d) owns dinp[argmax[b,d], d]: argmax rows lie in sequence b's own rows.
__global__ void max_pool_backward_kernel(float *dinp, const float *dout, const int32_t *argmax, int64_t n, int D) {
    GRID_STRIDE(i, n) {
        float *d = dinp + (int64_t)argmax[i] * D + i % D;
        *d = __fadd_rn(*d, dout[i]);
    }
}

void max_pool_backward(float *dinp, const float *dout, const int32_t *argmax, int B, int D) {
    const int64_t n = (int64_t)B * D;
    if (n <= 0) return;
    max_pool_backward_kernel<<<grid_for(n, 256), 256, 0, stream>>>(dinp, dout, argmax, n, D);
    LAUNCH_CHECK();
}

// ---- LSTM cell -------------------------------------------------------------------------------

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / __fadd_rn(1.0f, expf(-x)); }
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }

// The row read at step s of sequence b, in reading order.
__device__ __forceinline__ int step_row(const int32_t *offsets, int b, int s, int reverse) {
    return reverse ? offsets[b + 1] - 1 - s : offsets[b] + s;
}

// One thread per (entry j, unit k): all four gates of unit k, so every element has one writer.
__global__ void lstm_cell_forward_kernel(float *gates, float *cell, float *hidden, float *step_h, float *hfinal,
                                         const float *step_g, const int32_t *list, const int32_t *next,
                                         const int32_t *offsets, int nact, int s, int H, int reverse) {
    GRID_STRIDE(i, (int64_t)nact * H) {
        const int j = (int)(i / H), k = (int)(i % H), b = list[j];
        const int64_t row = step_row(offsets, b, s, reverse), prev = reverse ? row + 1 : row - 1;
        float *g = gates + row * 4 * H;
        const float *hh = step_g + (int64_t)j * 4 * H;
        const float ig = sigmoid(add(g[k], hh[k])), fg = sigmoid(add(g[H + k], hh[H + k]));
        const float gg = tanhf(add(g[2 * H + k], hh[2 * H + k])), og = sigmoid(add(g[3 * H + k], hh[3 * H + k]));
        const float cprev = s > 0 ? cell[prev * H + k] : 0.0f;
        const float c = add(mul(fg, cprev), mul(ig, gg)), h = mul(og, tanhf(c));
        cell[row * H + k] = c;
        hidden[row * H + k] = h;
        g[k] = ig, g[H + k] = fg, g[2 * H + k] = gg, g[3 * H + k] = og;
        if (next[j] >= 0) step_h[(int64_t)next[j] * H + k] = h;
        else hfinal[(int64_t)b * H + k] = h;
    }
}

void lstm_cell_forward(float *gates, float *cell, float *hidden, float *step_h, float *hfinal, const float *step_g,
                       const int32_t *list, const int32_t *next, const int32_t *offsets, int nact, int s, int H,
                       int reverse) {
    if (nact <= 0 || H <= 0) return;
    lstm_cell_forward_kernel<<<grid_for((int64_t)nact * H, 256), 256, 0, stream>>>(
        gates, cell, hidden, step_h, hfinal, step_g, list, next, offsets, nact, s, H, reverse);
    LAUNCH_CHECK();
}

__global__ void lstm_cell_backward_kernel(float *dgates, float *hprev, float *step_g, float *dc, const float *step_h,
                                          const float *dhfinal, const float *gates, const float *cell,
                                          const float *hidden, const int32_t *list, const int32_t *next,
                                          const int32_t *offsets, int nact, int s, int H, int reverse) {
    GRID_STRIDE(i, (int64_t)nact * H) {
        const int j = (int)(i / H), k = (int)(i % H), b = list[j];
        const int64_t row = step_row(offsets, b, s, reverse), prev = reverse ? row + 1 : row - 1;
        const float *g = gates + row * 4 * H;
        const float ig = g[k], fg = g[H + k], gg = g[2 * H + k], og = g[3 * H + k];
        const float dh = next[j] >= 0 ? step_h[(int64_t)next[j] * H + k] : dhfinal[(int64_t)b * H + k];
        const float tc = tanhf(cell[row * H + k]);
        const float cprev = s > 0 ? cell[prev * H + k] : 0.0f;
        float *dcb = dc + (int64_t)b * H + k;
        // the CPU's expressions, left to right: ((a * b) * c) * (1 - d * e)
        const float dct = add(*dcb, mul(mul(dh, og), add(1.0f, -mul(tc, tc))));
        const float d[4] = {mul(mul(mul(dct, gg), ig), add(1.0f, -ig)), mul(mul(mul(dct, cprev), fg), add(1.0f, -fg)),
                            mul(mul(dct, ig), add(1.0f, -mul(gg, gg))), mul(mul(mul(dh, tc), og), add(1.0f, -og))};
        float *dg = step_g + (int64_t)j * 4 * H, *dgr = dgates + row * 4 * H;
#pragma unroll
        for (int q = 0; q < 4; q++) dg[q * H + k] = d[q], dgr[q * H + k] = d[q];
        *dcb = mul(dct, fg);
        hprev[row * H + k] = s > 0 ? hidden[prev * H + k] : 0.0f;
    }
}

void lstm_cell_backward(float *dgates, float *hprev, float *step_g, float *dc, const float *step_h,
                        const float *dhfinal, const float *gates, const float *cell, const float *hidden,
                        const int32_t *list, const int32_t *next, const int32_t *offsets, int nact, int s, int H,
                        int reverse) {
    if (nact <= 0 || H <= 0) return;
    lstm_cell_backward_kernel<<<grid_for((int64_t)nact * H, 256), 256, 0, stream>>>(
        dgates, hprev, step_g, dc, step_h, dhfinal, gates, cell, hidden, list, next, offsets, nact, s, H, reverse);
    LAUNCH_CHECK();
}

}  // namespace mt_cuda
