// optim.cu — the optimizer ops of the CUDA backend (lib/backend.h): fused multi-tensor AdamW
// (one launch for every tensor of a step), the Gram matrix of k gradient buffers (PCGrad,
// gradient norms), weighted combination and scaling.
// Parameters, gradients and moments stay on the device; only the k*k Gram matrix comes back.
#include <string.h>

#include "ops.cuh"

namespace mt_cuda {

// ---- AdamW -------------------------------------------------------------------------------------

// lib/cpu/optim.c's per-element update exactly: every operation rounded on its own, in the C
// order (__f*_rn: no fused multiply-add, IEEE division and square root), so p, m, v are the CPU's bits.
__device__ __forceinline__ void adamw_element(float *p, const float *g, float *m, float *v, int64_t i,
                                              const mt_adamw_scalars &s) {
    const float gi = g[i], m0 = m[i], v0 = v[i];
    const float pi = s.decay ? __fmul_rn(p[i], s.decay_mul) : p[i];
    const float mi = __fadd_rn(m0, __fmul_rn(s.beta1_w, __fsub_rn(gi, m0)));
    const float vi = __fadd_rn(__fmul_rn(v0, s.beta2), __fmul_rn(__fmul_rn(s.beta2_w, gi), gi));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bc2_sqrt), s.eps);
    m[i] = mi;
    v[i] = vi;
    p[i] = __fadd_rn(pi, __fdiv_rn(__fmul_rn(s.neg_step_size, mi), denom));
}

// The slices of one launch, by value (as gram's pointers): no upload, no device table. Slice e
// covers the fixed-size chunks first[e] .. first[e+1]-1 of the launch's chunk sequence.
#define ADAMW_CHUNK 4096     // elements a block updates per chunk (16 a thread)
#define ADAMW_THREADS 256
#define ADAMW_MAX_LIST 512   // slices a launch carries: 28 KB of its 32,764-byte parameter limit
struct adamw_multi_args {
    int count;                            // non-empty slices, 1..ADAMW_MAX_LIST
    int64_t first[ADAMW_MAX_LIST + 1];    // first[count]: the launch's chunks in all
    mt_adamw_chunk e[ADAMW_MAX_LIST];
};
static_assert(sizeof(adamw_multi_args) <= 32764, "kernel parameters over CUDA 12.1+'s limit");

// Grid-stride over the chunks; a block finds its chunk's slice by binary search over first[]
// (uniform across the block: the parameter reads broadcast). __grid_constant__: the arguments are
// read in place, never copied per thread.
__global__ void __launch_bounds__(ADAMW_THREADS)
    adamw_multi_kernel(float *p, const float *g, float *m, float *v, const __grid_constant__ adamw_multi_args a) {
    const int64_t chunks = a.first[a.count];
    for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
        int lo = 0, hi = a.count - 1;  // the last slice with first[slice] <= c
        while (lo < hi) {
            const int mid = (lo + hi + 1) / 2;
            if (a.first[mid] <= c) lo = mid;
            else hi = mid - 1;
        }
        const mt_adamw_scalars s = a.e[lo].s;
        const int64_t base = (int64_t)a.e[lo].offset, n = (int64_t)a.e[lo].n;
        const int64_t begin = (c - a.first[lo]) * ADAMW_CHUNK;
        const int64_t end = begin + ADAMW_CHUNK < n ? begin + ADAMW_CHUNK : n;
        for (int64_t j = begin + threadIdx.x; j < end; j += ADAMW_THREADS) adamw_element(p, g, m, v, base + j, s);
    }
}

// One launch per ADAMW_MAX_LIST slices (one for every model here: BERT-base has ~200 tensors);
// empty slices are left out, so every slice of a launch owns at least one chunk.
void adamw_update_multi(float *p, const float *g, float *m, float *v, const mt_adamw_chunk *list, int count) {
    static adamw_multi_args a;  // 28 KB: off the stack; copied into the launch, so reusable at once
    int at = 0;
    while (at < count) {
        int64_t chunks = 0;
        a.count = 0;
        for (; at < count && a.count < ADAMW_MAX_LIST; at++) {
            if (list[at].n == 0) continue;
            a.first[a.count] = chunks;
            a.e[a.count++] = list[at];
            chunks += ((int64_t)list[at].n + ADAMW_CHUNK - 1) / ADAMW_CHUNK;
        }
        a.first[a.count] = chunks;
        if (a.count == 0) return;  // only empty slices were left
        adamw_multi_kernel<<<grid_for(chunks, 1), ADAMW_THREADS, 0, stream>>>(p, g, m, v, a);
        LAUNCH_CHECK();
    }
}

// ---- Gram matrix -------------------------------------------------------------------------------

// The k buffers and the upper-triangle pairs (i <= j), by value: no device copy of the table.
struct gram_args {
    const float *g[MT_GRAM_MAX_K];
    uint8_t pi[MT_GRAM_MAX_K * (MT_GRAM_MAX_K + 1) / 2], pj[MT_GRAM_MAX_K * (MT_GRAM_MAX_K + 1) / 2];
};

#define GRAM_THREADS 256

// Block (b, pair): the dot product of pair (i, j) over elements [b, b+1) * MT_GRAM_BLOCK in
// double (float products are exact in double), reduced in a fixed tree; partial[pair][blocks].
__global__ void __launch_bounds__(GRAM_THREADS)
    gram_partial_kernel(double *partial, gram_args a, int64_t blocks, int64_t n) {
    __shared__ double red[GRAM_THREADS];
    const int64_t b = blockIdx.x;
    const int pair = blockIdx.y;
    const float *x = a.g[a.pi[pair]], *y = a.g[a.pj[pair]];
    const int64_t lo = b * MT_GRAM_BLOCK, hi = lo + MT_GRAM_BLOCK < n ? lo + MT_GRAM_BLOCK : n;
    double s = 0.0;
    for (int64_t e = lo + threadIdx.x; e < hi; e += GRAM_THREADS) s += (double)x[e] * (double)y[e];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int w = GRAM_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[(int64_t)pair * blocks + b] = red[0];
}

// One thread per pair: the blocks' partial sums added in block order (as lib/pcgrad.c), the
// result written to both halves of gram[k*k].
__global__ void gram_finish_kernel(double *gram, const double *partial, gram_args a, int pairs, int k,
                                   int64_t blocks) {
    int pair = blockIdx.x * blockDim.x + threadIdx.x;
    if (pair >= pairs) return;
    double t = 0.0;
    for (int64_t b = 0; b < blocks; b++) t += partial[(int64_t)pair * blocks + b];
    int i = a.pi[pair], j = a.pj[pair];
    gram[i * k + j] = t;
    gram[j * k + i] = t;
}

void gram(double *out, const float *const *g, int k, size_t n) {
    if (k <= 0) return;
    if (k > MT_GRAM_MAX_K) mt_die("gram: %d buffers; at most %d are supported", k, MT_GRAM_MAX_K);
    if (n == 0) {
        memset(out, 0, sizeof(double) * (size_t)k * k);
        return;
    }
    gram_args a;
    memset(&a, 0, sizeof a);
    int pairs = 0;
    for (int i = 0; i < k; i++) {
        a.g[i] = g[i];
        for (int j = i; j < k; j++) a.pi[pairs] = (uint8_t)i, a.pj[pairs] = (uint8_t)j, pairs++;
    }
    const int64_t blocks = ((int64_t)n + MT_GRAM_BLOCK - 1) / MT_GRAM_BLOCK;
    if (blocks > 0x7FFFFFFF) mt_die("gram: %zu elements is too many for one grid", n);
    // scratch: the k*k result, then partial[pairs][blocks]
    double *res = (double *)scratch(mt_ws_gram(k, n));  // = (k*k + pairs*blocks) doubles
    double *partial = res + (size_t)k * k;
    gram_partial_kernel<<<dim3((unsigned)blocks, pairs), GRAM_THREADS, 0, stream>>>(partial, a, blocks, (int64_t)n);
    LAUNCH_CHECK();
    gram_finish_kernel<<<1, 160, 0, stream>>>(res, partial, a, pairs, k, blocks);  // pairs <= 136
    LAUNCH_CHECK();
    CUDA_ENQUEUE(cudaMemcpyAsync(out, res, sizeof(double) * (size_t)k * k, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
}

// ---- combine, scale ----------------------------------------------------------------------------

struct combine_args {
    const float *g[MT_GRAM_MAX_K];
    double w[MT_GRAM_MAX_K];
};

// out[x] = sum_j w[j] g[j][x] in double, each product and sum rounded on its own as in
// lib/pcgrad.c's weighted_sum, then rounded once to float: the CPU's bits.
__global__ void combine_kernel(float *out, combine_args a, int k, int64_t n) {
    for (int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; x < n; x += (int64_t)gridDim.x * blockDim.x) {
        double s = 0.0;
        for (int j = 0; j < k; j++) s = __dadd_rn(s, __dmul_rn(a.w[j], (double)a.g[j][x]));
        out[x] = (float)s;
    }
}

void combine(float *out, const float *const *g, const double *w, int k, size_t n) {
    if (n == 0) return;
    if (k < 0 || k > MT_GRAM_MAX_K) mt_die("combine: %d buffers; at most %d are supported", k, MT_GRAM_MAX_K);
    combine_args a;
    memset(&a, 0, sizeof a);
    for (int j = 0; j < k; j++) a.g[j] = g[j], a.w[j] = w[j];
    combine_kernel<<<grid_for((int64_t)n, 256), 256, 0, stream>>>(out, a, k, (int64_t)n);
    LAUNCH_CHECK();
}

__global__ void scale_kernel(float *x, float s, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

void scale(float *x, float s, size_t n) {
    if (n == 0) return;
    scale_kernel<<<grid_for((int64_t)n, 256), 256, 0, stream>>>(x, s, (int64_t)n);
    LAUNCH_CHECK();
}

}  // namespace mt_cuda
