// flash.cu — fused ("flash") attention for the bf16 / fp16 precisions: the [L, L] scores and
// probabilities never leave shared memory (attention.cu's batched path writes them to HBM in
// fp32, which made our bf16 attention at L = 512 0.40x PyTorch's).
//
//   forward   one block per (64 query rows, head, sequence), loop over 64-key tiles:
//             Q, K, V read from the fp32 qkv[N,3C] and rounded to 16 bits in shared memory,
//             S = Q K^T and O += P V on the tensor cores (fp32 accumulation), online softmax in
//             fp32 (running max m and sum l per row), P dropped by the CPU's Philox mask;
//             out = O * (1/(1-p)) / l, and lse = m + log l saved in att for backward.
//   backward  D_i = dO_i . O_i by the forward kernel again (O recomputed: out is not an input of
//             attention_backward), into the ATT_O workspace as [B, NH, Lmax];
//             dK, dV: one block per 64-key tile, looping over query tiles;
//             dQ:     one block per 64-query tile, looping over key tiles;
//             both recompute P = exp(scale S - lse) and the mask; dqkv += (each element has one
//             writer: no atomics, and every sum's order is fixed by the shapes).
//
// nvcuda::wmma 16x16x16 rather than mma.sync: its fragments' register layout is opaque, so the
// softmax and the masks work on tiles stored to shared memory; that costs shared-memory traffic
// but leaves no hand-written fragment indexing to get wrong in code first written without a GPU
// to run it. Each warp owns 16 rows of the block's 64 for the whole kernel (its softmax rows, its
// accumulators), so only the tile loads need the whole block to synchronise.
//
// The index arithmetic is written out serially in tests/unit/test_flash_math.c, checked there
// against the CPU attention; keep the two in step.
#include <limits.h>
#include <math.h>
#include <mma.h>

#include "backend_cuda.h"
#include "ops.cuh"
#include "philox.cuh"

namespace mt_cuda {
using namespace nvcuda;

namespace {

constexpr int TILE = 64;           // query rows of a block, keys of a tile
constexpr int WARPS = 4;           // warp w owns rows 16 w .. 16 w + 15 of the block's tile
constexpr int THREADS = WARPS * 32;
constexpr int WR = 16;             // rows per warp: the wmma tile

using acc_frag = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Shared-memory layout: 16-bit [64][HS] tiles (row stride LDH), fp32 and 16-bit [64][64] score
// tiles (LDS, LDP), the forward's fp32 [64][HS] output (LDO), per-row floats. The paddings keep
// wmma's rules (ldm a multiple of 8 elements for 16-bit, 4 for fp32; 32-byte aligned tiles: every
// section is a multiple of 128 bytes) and spread rows over the banks.
template <int HS> struct layout {
    static constexpr int LDH = HS + 8, LDS = TILE + 4, LDP = TILE + 8, LDO = HS + 4;
    static constexpr size_t HALF_TILE = (size_t)TILE * LDH * 2, SCORES = (size_t)TILE * LDS * 4,
                            HALF_SCORES = (size_t)TILE * LDP * 2, OUT = (size_t)TILE * LDO * 4, ROWS = TILE * 4;
    // forward: Q K V | S | P | O | m l
    static constexpr size_t FWD = 3 * HALF_TILE + SCORES + HALF_SCORES + OUT + 2 * ROWS;
    // backward (both kernels): four 16-bit tiles | S, dP (fp32) | P', dS (16-bit) | lse, D
    static constexpr size_t BWD = 4 * HALF_TILE + 2 * SCORES + 2 * HALF_SCORES + 2 * ROWS;
    // The rules above, checked where nothing can run them: every fragment pointer is a section
    // start + a warp's 16 rows + a 16-column step, so those three must be 32-byte multiples.
    static_assert(HS % 16 == 0 && WARPS * WR == TILE, "tiles of whole 16x16 fragments, a warp per 16 rows");
    static_assert(LDH % 8 == 0 && LDP % 8 == 0 && LDS % 4 == 0 && LDO % 4 == 0, "wmma ldm: 8 (16-bit), 4 (fp32)");
    static_assert(HALF_TILE % 128 == 0 && SCORES % 128 == 0 && HALF_SCORES % 128 == 0 && OUT % 128 == 0 &&
                      ROWS % 128 == 0, "sections of whole 128-byte lines");
    static_assert(WR * LDH * 2 % 32 == 0 && WR * LDP * 2 % 32 == 0 && WR * LDS * 4 % 32 == 0 && WR * LDO * 4 % 32 == 0,
                  "a warp's first row 32-byte aligned");
    static_assert(FWD <= 227 * 1024 && BWD <= 227 * 1024, "sm_90 opts a block into at most 227 KB of shared memory");
};

// rows row0 .. row0+63 of one head's columns (HS wide, from src) of a packed fp32 matrix with
// row stride ld, sequence rows from `first`, into dst[64][LDH] rounded to T; rows >= L are zeros
// (so masked products read no garbage: 0 * NaN would not be 0).
template <typename T, int HS>
__device__ void load_tile(T *dst, const float *src, int64_t ld, int64_t first, int row0, int L) {
    for (int e = threadIdx.x; e < TILE * HS; e += THREADS) {
        const int r = e / HS, d = e % HS;
        round_to(dst + r * layout<HS>::LDH + d, row0 + r < L ? src[(first + row0 + r) * ld + d] : 0.0f);
    }
}

// The warp's [16, 64] block of A B^T: A [16, HS] (row-major, lda), B [64, HS] (row-major, ldb,
// read as B^T through a column-major fragment); stored fp32 to dst (row-major, ldd).
template <typename T, int HS>
__device__ void warp_abt(float *dst, int ldd, const T *A, int lda, const T *B, int ldb) {
    acc_frag acc[TILE / 16];
#pragma unroll
    for (int n = 0; n < TILE / 16; n++) wmma::fill_fragment(acc[n], 0.0f);
#pragma unroll
    for (int k = 0; k < HS; k += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, A + k, lda);
#pragma unroll
        for (int n = 0; n < TILE / 16; n++) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
            wmma::load_matrix_sync(b, B + n * 16 * ldb + k, ldb);
            wmma::mma_sync(acc[n], a, b, acc[n]);
        }
    }
#pragma unroll
    for (int n = 0; n < TILE / 16; n++) wmma::store_matrix_sync(dst + n * 16, acc[n], ldd, wmma::mem_row_major);
}

// acc[16, HS] += A B: A the warp's [16, 64] (row-major, lda), B [64, HS] (row-major, ldb).
template <typename T, int HS>
__device__ void warp_ab(acc_frag (&acc)[HS / 16], const T *A, int lda, const T *B, int ldb) {
#pragma unroll
    for (int k = 0; k < TILE; k += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, A + k, lda);
#pragma unroll
        for (int n = 0; n < HS / 16; n++) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
            wmma::load_matrix_sync(b, B + k * ldb + n * 16, ldb);
            wmma::mma_sync(acc[n], a, b, acc[n]);
        }
    }
}

// dst[r, n*16 + c] += factor * acc[n][r, c] for the warp's rows r < rows (dst row stride ld),
// through the warp's 16x16 fp32 scratch (32-byte aligned).
template <int HS>
__device__ void warp_add_out(float *dst, int64_t ld, int rows, float factor, acc_frag (&acc)[HS / 16], float *scratch) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int n = 0; n < HS / 16; n++) {
        wmma::store_matrix_sync(scratch, acc[n], 16, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
            const int r = e / 16, c = e % 16;
            if (r < rows) dst[r * ld + n * 16 + c] += factor * scratch[e];
        }
        __syncwarp();
    }
}

// Mask index of P[i][j] of head h of a sequence of L tokens whose block starts at att0.
__device__ __forceinline__ uint64_t mask_index(int64_t att0, int h, int L, int i, int j) {
    return (uint64_t)(att0 + ((int64_t)h * L + i) * L + j);
}

// The grid of every kernel here: (tiles B, NH), tiles = ceil(Lmax / 64); block x is tile x % tiles
// of sequence x / tiles. B rides in x because gridDim.z stops at 65535 sequences; (b, h) of
// neighbouring blocks stay together, so a sequence's K, V tiles are read from L2 by its tiles.
__device__ __forceinline__ void block_of(int Lmax, int &b, int &row0) {
    const int tiles = (Lmax + TILE - 1) / TILE;
    b = blockIdx.x / tiles, row0 = blockIdx.x % tiles * TILE;
}

// ---- forward --------------------------------------------------------------------------------

// Grid of block_of, THREADS threads, layout<HS>::FWD bytes of shared memory.
// DELTA false: out[N,C] rows of the tile (real rows only), and lse (att, may be NULL) at
// att_offsets[b] + h L + i. DELTA true (backward's pre-pass): O is not written; instead
// delta[(b NH + h) Lmax + i] = dO_i . O_i with dO from dout[N,C]. Dropout (dp.on) needs att_offsets.
template <typename T, int HS, bool DELTA>
__global__ void __launch_bounds__(THREADS)
flash_forward_kernel(float *out, float *lse, float *delta, const float *dout, const float *qkv, const int32_t *offsets,
                     const int64_t *att_offsets, int NH, int Lmax, float scale, dropout_params dp) {
    using SM = layout<HS>;
    extern __shared__ __align__(128) unsigned char smem[];
    T *Qs = (T *)smem, *Ks = (T *)(smem + SM::HALF_TILE), *Vs = (T *)(smem + 2 * SM::HALF_TILE);
    float *Ss = (float *)(smem + 3 * SM::HALF_TILE);
    T *Ps = (T *)(smem + 3 * SM::HALF_TILE + SM::SCORES);
    float *Os = (float *)(smem + 3 * SM::HALF_TILE + SM::SCORES + SM::HALF_SCORES);
    float *M = (float *)(smem + 3 * SM::HALF_TILE + SM::SCORES + SM::HALF_SCORES + SM::OUT), *Lsum = M + TILE;

    int b, q0;
    block_of(Lmax, b, q0);
    const int h = blockIdx.y, first = offsets[b], L = offsets[b + 1] - first;
    if (L > Lmax) __trap();  // max_len below the batch's longest: die at the next check (as attention.cu)
    if (q0 >= L) return;
    const int C = NH * HS, lane = threadIdx.x % 32, wr = threadIdx.x / 32 * WR;  // wr: the warp's first row
    const int64_t ld = 3 * (int64_t)C;
    const float *qh = qkv + h * HS;
    const int64_t att0 = dp.on ? att_offsets[b] : 0;

    load_tile<T, HS>(Qs, qh, ld, first, q0, L);
    for (int e = lane; e < WR * HS; e += 32) Os[(wr + e / HS) * SM::LDO + e % HS] = 0.0f;
    if (lane < WR) M[wr + lane] = -INFINITY, Lsum[wr + lane] = 0.0f;
    for (int k0 = 0; k0 < L; k0 += TILE) {  // every tile holds a real key: each row's max is finite
        __syncthreads();                     // the last tile's K, V are spent (and Q is in)
        load_tile<T, HS>(Ks, qh + C, ld, first, k0, L);
        load_tile<T, HS>(Vs, qh + 2 * C, ld, first, k0, L);
        __syncthreads();
        warp_abt<T, HS>(Ss + wr * SM::LDS, SM::LDS, Qs + wr * SM::LDH, SM::LDH, Ks, SM::LDH);
        __syncwarp();
        for (int r = 0; r < WR; r++) {  // online softmax of row i, lane owning keys lane, lane + 32
            const int i = wr + r;
            const float *s = Ss + i * SM::LDS;
            const int j0 = lane, j1 = lane + 32;
            const float s0 = k0 + j0 < L ? s[j0] * scale : -INFINITY, s1 = k0 + j1 < L ? s[j1] * scale : -INFINITY;
            const float m_old = M[i], m_new = fmaxf(m_old, warp_max(fmaxf(s0, s1)));
            float e0 = expf(s0 - m_new), e1 = expf(s1 - m_new);  // masked keys: exp(-inf) = 0
            const float sum = warp_sum(e0 + e1), alpha = expf(m_old - m_new);  // first tile: alpha = 0
            if (dp.on) {  // the sum l keeps every key (softmax before dropout); P V only the kept
                if (k0 + j0 < L && !dropout_keep(dp, mask_index(att0, h, L, q0 + i, k0 + j0))) e0 = 0.0f;
                if (k0 + j1 < L && !dropout_keep(dp, mask_index(att0, h, L, q0 + i, k0 + j1))) e1 = 0.0f;
            }
            round_to(Ps + i * SM::LDP + j0, e0);
            round_to(Ps + i * SM::LDP + j1, e1);
            for (int d = lane; d < HS; d += 32) Os[i * SM::LDO + d] *= alpha;
            __syncwarp();  // every lane has read M[i] before it changes
            if (lane == 0) M[i] = m_new, Lsum[i] = Lsum[i] * alpha + sum;
        }
        __syncwarp();
        acc_frag o[HS / 16];
#pragma unroll
        for (int n = 0; n < HS / 16; n++)
            wmma::load_matrix_sync(o[n], Os + wr * SM::LDO + n * 16, SM::LDO, wmma::mem_row_major);
        warp_ab<T, HS>(o, Ps + wr * SM::LDP, SM::LDP, Vs, SM::LDH);
#pragma unroll
        for (int n = 0; n < HS / 16; n++)
            wmma::store_matrix_sync(Os + wr * SM::LDO + n * 16, o[n], SM::LDO, wmma::mem_row_major);
        __syncwarp();
    }
    for (int r = 0; r < WR && q0 + wr + r < L; r++) {  // the warp's real rows
        const int i = wr + r;
        const int64_t row = first + q0 + i;
        const float inv = dp.scale / Lsum[i];  // dp.scale: 1/(1-p), or 1 without dropout
        if (DELTA) {
            float dot = 0.0f;
            for (int d = lane; d < HS; d += 32) dot += dout[row * C + h * HS + d] * (Os[i * SM::LDO + d] * inv);
            dot = warp_sum(dot);
            if (lane == 0) delta[((int64_t)b * NH + h) * Lmax + q0 + i] = dot;
        } else {
            for (int d = lane; d < HS; d += 32) out[row * C + h * HS + d] = Os[i * SM::LDO + d] * inv;
            if (lse && lane == 0) lse[att_offsets[b] + (int64_t)h * L + q0 + i] = M[i] + logf(Lsum[i]);
        }
    }
}

// ---- backward -------------------------------------------------------------------------------

// The backward kernels' shared memory: the block's fixed tile X, Y (dK/dV: K, V; dQ: Q, dO),
// the streamed tiles U, W (dK/dV: Q, dO; dQ: K, V), the warp's S and dP rows (fp32), P' and dS
// rows (16-bit), and the lse and D of the block's query rows (dQ) or of the streamed ones (dK/dV).
template <typename T, int HS> struct bwd_smem {
    T *X, *Y, *U, *W, *P, *dS;
    float *S, *dP, *lse, *D;
    __device__ explicit bwd_smem(unsigned char *s) {
        using SM = layout<HS>;
        X = (T *)s, Y = (T *)(s + SM::HALF_TILE), U = (T *)(s + 2 * SM::HALF_TILE), W = (T *)(s + 3 * SM::HALF_TILE);
        S = (float *)(s + 4 * SM::HALF_TILE), dP = (float *)(s + 4 * SM::HALF_TILE + SM::SCORES);
        P = (T *)(s + 4 * SM::HALF_TILE + 2 * SM::SCORES);
        dS = (T *)(s + 4 * SM::HALF_TILE + 2 * SM::SCORES + SM::HALF_SCORES);
        lse = (float *)(s + 4 * SM::HALF_TILE + 2 * SM::SCORES + 2 * SM::HALF_SCORES), D = lse + TILE;
    }
};

// lse and D of query rows q0 .. q0+63 into shared memory (0 past L: those rows' P is 0 anyway).
__device__ void load_rows(float *lse_s, float *D_s, const float *lse, const float *delta, int q0, int L) {
    for (int t = threadIdx.x; t < TILE; t += THREADS) {
        const bool in = q0 + t < L;
        lse_s[t] = in ? lse[q0 + t] : 0.0f;
        D_s[t] = in ? delta[q0 + t] : 0.0f;
    }
}

// P, P' and dS of one element (query q, key k; s = the unscaled score, dp' = dO_q . V_k):
// P = exp(scale s - lse_q), P' = keep ? P : 0 (1/(1-p) applied to dV at the end),
// dS = P (keep/(1-p) dp' - D_q) scale; all 0 outside the sequence. scale goes in before dS is
// rounded to 16 bits, as in attention.cu's dS, so at fp16 both paths reach 65504 (inf) at the
// same gradients.
__device__ __forceinline__ void grad_element(float &pk, float &ds, float s, float dpd, float lse_q, float D_q, int q,
                                             int k, int L, int h, int64_t att0, float scale, const dropout_params &dp) {
    pk = 0.0f, ds = 0.0f;
    if (q >= L || k >= L) return;
    const float p = expf(s * scale - lse_q);
    const bool keep = !dp.on || dropout_keep(dp, mask_index(att0, h, L, q, k));
    pk = keep ? p : 0.0f;
    ds = p * ((keep ? dp.scale : 0.0f) * dpd - D_q) * scale;
}

// What both backward kernels know of their block: sequence b (L tokens from row `first`), head h,
// the block's 64 rows from row0 (keys for dK/dV, queries for dQ), the warp's first row wr, the
// head's columns of qkv (qh, row stride ld) and its log-sum-exps and D (lse, D).
struct bwd_block {
    int b, h, first, L, row0, C, wr, lane;
    int64_t ld, att0;
    const float *qh, *lse, *D;
};

// Fills k for this block; false when its rows lie past its sequence (nothing to do).
template <int HS>
__device__ bool bwd_block_of(bwd_block &k, const float *qkv, const float *att, const float *delta,
                             const int32_t *offsets, const int64_t *att_offsets, int NH, int Lmax) {
    block_of(Lmax, k.b, k.row0);
    k.h = blockIdx.y, k.first = offsets[k.b], k.L = offsets[k.b + 1] - k.first;
    if (k.L > Lmax) __trap();  // as the forward
    if (k.row0 >= k.L) return false;
    k.C = NH * HS, k.wr = threadIdx.x / 32 * WR, k.lane = threadIdx.x % 32;
    k.ld = 3 * (int64_t)k.C, k.att0 = att_offsets[k.b];
    k.qh = qkv + k.h * HS, k.lse = att + k.att0 + (int64_t)k.h * k.L, k.D = delta + ((int64_t)k.b * NH + k.h) * Lmax;
    return true;
}

// The warp's rows of S = X U^T and dP' = Y W^T (fp32, sh.S and sh.dP), readable by every lane.
template <typename T, int HS>
__device__ void warp_scores(const bwd_smem<T, HS> &sh, int wr) {
    using SM = layout<HS>;
    warp_abt<T, HS>(sh.S + wr * SM::LDS, SM::LDS, sh.X + wr * SM::LDH, SM::LDH, sh.U, SM::LDH);
    warp_abt<T, HS>(sh.dP + wr * SM::LDS, SM::LDS, sh.Y + wr * SM::LDH, SM::LDH, sh.W, SM::LDH);
    __syncwarp();
}

// Grid of block_of: the block owns keys k0 .. k0+63 of (b, h) and loops over query
// tiles; warp rows are keys. dqkv's K and V columns += dK, dV / (1-p).
template <typename T, int HS>
__global__ void __launch_bounds__(THREADS)
flash_backward_dkdv_kernel(float *dqkv, const float *dout, const float *qkv, const float *att, const float *delta,
                           const int32_t *offsets, const int64_t *att_offsets, int NH, int Lmax, float scale,
                           dropout_params dp) {
    using SM = layout<HS>;
    extern __shared__ __align__(128) unsigned char smem[];
    bwd_smem<T, HS> sh(smem);
    bwd_block k;
    if (!bwd_block_of<HS>(k, qkv, att, delta, offsets, att_offsets, NH, Lmax)) return;
    const int k0 = k.row0, wr = k.wr;
    load_tile<T, HS>(sh.X, k.qh + k.C, k.ld, k.first, k0, k.L);      // K
    load_tile<T, HS>(sh.Y, k.qh + 2 * k.C, k.ld, k.first, k0, k.L);  // V
    acc_frag dK[HS / 16], dV[HS / 16];
#pragma unroll
    for (int n = 0; n < HS / 16; n++) wmma::fill_fragment(dK[n], 0.0f), wmma::fill_fragment(dV[n], 0.0f);
    for (int q0 = 0; q0 < k.L; q0 += TILE) {
        __syncthreads();  // the last query tile is spent
        load_tile<T, HS>(sh.U, k.qh, k.ld, k.first, q0, k.L);                  // Q
        load_tile<T, HS>(sh.W, dout + k.h * HS, k.C, k.first, q0, k.L);        // dO
        load_rows(sh.lse, sh.D, k.lse, k.D, q0, k.L);
        __syncthreads();
        warp_scores<T, HS>(sh, wr);  // S^T = K Q^T, dP'^T = V dO^T
        for (int e = k.lane; e < WR * TILE; e += 32) {
            const int r = wr + e / TILE, c = e % TILE;  // key k0 + r, query q0 + c
            float pk, ds;
            grad_element(pk, ds, sh.S[r * SM::LDS + c], sh.dP[r * SM::LDS + c], sh.lse[c], sh.D[c], q0 + c, k0 + r,
                         k.L, k.h, k.att0, scale, dp);
            round_to(sh.P + r * SM::LDP + c, pk);
            round_to(sh.dS + r * SM::LDP + c, ds);
        }
        __syncwarp();
        warp_ab<T, HS>(dV, sh.P + wr * SM::LDP, SM::LDP, sh.W, SM::LDH);   // dV += P'^T dO
        warp_ab<T, HS>(dK, sh.dS + wr * SM::LDP, SM::LDP, sh.U, SM::LDH);  // dK += dS^T Q
    }
    const int rows = k.L - k0 - wr;  // the warp's real keys (may be <= 0)
    float *dk = dqkv + (k.first + k0 + wr) * k.ld + k.C + k.h * HS, *scratch = sh.S + wr * SM::LDS;
    warp_add_out<HS>(dk, k.ld, rows, 1.0f, dK, scratch);
    warp_add_out<HS>(dk + k.C, k.ld, rows, dp.scale, dV, scratch);
}

// Grid of block_of: the block owns queries q0 .. q0+63 of (b, h) and loops over key
// tiles; warp rows are queries. dqkv's Q columns += dQ.
template <typename T, int HS>
__global__ void __launch_bounds__(THREADS)
flash_backward_dq_kernel(float *dqkv, const float *dout, const float *qkv, const float *att, const float *delta,
                         const int32_t *offsets, const int64_t *att_offsets, int NH, int Lmax, float scale,
                         dropout_params dp) {
    using SM = layout<HS>;
    extern __shared__ __align__(128) unsigned char smem[];
    bwd_smem<T, HS> sh(smem);
    bwd_block k;
    if (!bwd_block_of<HS>(k, qkv, att, delta, offsets, att_offsets, NH, Lmax)) return;
    const int q0 = k.row0, wr = k.wr;
    load_tile<T, HS>(sh.X, k.qh, k.ld, k.first, q0, k.L);            // Q
    load_tile<T, HS>(sh.Y, dout + k.h * HS, k.C, k.first, q0, k.L);  // dO
    load_rows(sh.lse, sh.D, k.lse, k.D, q0, k.L);
    acc_frag dQ[HS / 16];
#pragma unroll
    for (int n = 0; n < HS / 16; n++) wmma::fill_fragment(dQ[n], 0.0f);
    for (int k0 = 0; k0 < k.L; k0 += TILE) {
        __syncthreads();  // the last key tile is spent (and Q, dO, lse, D are in)
        load_tile<T, HS>(sh.U, k.qh + k.C, k.ld, k.first, k0, k.L);      // K
        load_tile<T, HS>(sh.W, k.qh + 2 * k.C, k.ld, k.first, k0, k.L);  // V
        __syncthreads();
        warp_scores<T, HS>(sh, wr);  // S = Q K^T, dP' = dO V^T
        for (int e = k.lane; e < WR * TILE; e += 32) {
            const int r = wr + e / TILE, c = e % TILE;  // query q0 + r, key k0 + c
            float pk, ds;
            grad_element(pk, ds, sh.S[r * SM::LDS + c], sh.dP[r * SM::LDS + c], sh.lse[r], sh.D[r], q0 + r, k0 + c,
                         k.L, k.h, k.att0, scale, dp);
            round_to(sh.dS + r * SM::LDP + c, ds);
        }
        __syncwarp();
        warp_ab<T, HS>(dQ, sh.dS + wr * SM::LDP, SM::LDP, sh.U, SM::LDH);  // dQ += dS K
    }
    float *dq = dqkv + (k.first + q0 + wr) * k.ld + k.h * HS;
    warp_add_out<HS>(dq, k.ld, k.L - q0 - wr, 1.0f, dQ, sh.S + wr * SM::LDS);
}

// ---- launchers ------------------------------------------------------------------------------

// Opts a kernel into more than 48 KB of dynamic shared memory, once per instantiation.
template <typename K> void allow_smem(K kernel, size_t bytes, bool &done) {
    if (done) return;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    done = true;
}

// block_of's grid; dies where it would pass gridDim's limits (x 2^31 - 1, y 65535).
dim3 flash_grid(int B, int Lmax, int NH) {
    const int64_t x = (int64_t)ceil_div(Lmax, TILE) * B;
    if (x > INT_MAX || NH > 65535)
        mt_die("fused attention: %d sequences of up to %d tokens, %d heads: past the grid's limits", B, Lmax, NH);
    return dim3((unsigned)x, NH);
}

template <typename T, int HS>
void forward_as(float *out, float *lse, float *delta, const float *dout, const float *qkv, const int32_t *offsets,
                const int64_t *att_offsets, int B, int Lmax, int NH, const dropout_params &dp) {
    static bool ready[2];
    const dim3 grid = flash_grid(B, Lmax, NH);
    const float scale = 1.0f / sqrtf((float)HS);
    const size_t bytes = layout<HS>::FWD;
    if (delta) {
        allow_smem(flash_forward_kernel<T, HS, true>, bytes, ready[1]);
        flash_forward_kernel<T, HS, true><<<grid, THREADS, bytes, stream>>>(out, lse, delta, dout, qkv, offsets,
                                                                           att_offsets, NH, Lmax, scale, dp);
    } else {
        allow_smem(flash_forward_kernel<T, HS, false>, bytes, ready[0]);
        flash_forward_kernel<T, HS, false><<<grid, THREADS, bytes, stream>>>(out, lse, delta, dout, qkv, offsets,
                                                                            att_offsets, NH, Lmax, scale, dp);
    }
    LAUNCH_CHECK();
}

template <typename T, int HS>
void backward_as(float *dqkv, const float *dout, const float *qkv, const float *att, float *delta,
                 const int32_t *offsets, const int64_t *att_offsets, int B, int Lmax, int NH, const dropout_params &dp) {
    static bool ready[2];
    forward_as<T, HS>(nullptr, nullptr, delta, dout, qkv, offsets, att_offsets, B, Lmax, NH, dp);
    const dim3 grid = flash_grid(B, Lmax, NH);
    const float scale = 1.0f / sqrtf((float)HS);
    const size_t bytes = layout<HS>::BWD;
    allow_smem(flash_backward_dkdv_kernel<T, HS>, bytes, ready[0]);
    flash_backward_dkdv_kernel<T, HS><<<grid, THREADS, bytes, stream>>>(dqkv, dout, qkv, att, delta, offsets,
                                                                       att_offsets, NH, Lmax, scale, dp);
    LAUNCH_CHECK();
    allow_smem(flash_backward_dq_kernel<T, HS>, bytes, ready[1]);
    flash_backward_dq_kernel<T, HS><<<grid, THREADS, bytes, stream>>>(dqkv, dout, qkv, att, delta, offsets,
                                                                     att_offsets, NH, Lmax, scale, dp);
    LAUNCH_CHECK();
}

// The instantiation for the precision (bf16 / fp16) and head size (32 / 64) of the call.
#define MT_FLASH_DISPATCH(fn, hs, ...)                                                               \
    do {                                                                                             \
        const bool f16_ = gemm_precision() == MT_PRECISION_FP16;                                     \
        switch (hs) {                                                                                \
        case 32: f16_ ? fn<__half, 32>(__VA_ARGS__) : fn<__nv_bfloat16, 32>(__VA_ARGS__); break;     \
        default: f16_ ? fn<__half, 64>(__VA_ARGS__) : fn<__nv_bfloat16, 64>(__VA_ARGS__); break;     \
        }                                                                                            \
    } while (0)

}  // namespace

bool attention_flash_applies(int C, int NH) {
    const int p = gemm_precision(), hs = C / NH;
    // hs 128 would need the dK, dV accumulators (128 registers) to move to shared memory: at
    // 255 registers the bf16 dK/dV kernel spilled, so it takes the batched path for now
    return (p == MT_PRECISION_BF16 || p == MT_PRECISION_FP16) && C == NH * hs && (hs == 32 || hs == 64);
}

void attention_forward_flash(float *out, float *att, const float *qkv, const int32_t *offsets,
                             const int64_t *att_offsets, int B, int max_len, int C, int NH, const mt_dropout_key *drop) {
    if (B <= 0 || max_len <= 0) return;
    const dropout_params dp = dropout_params_of(att ? drop : nullptr);  // as the CPU: no att, no dropout
    MT_FLASH_DISPATCH(forward_as, C / NH, out, att, nullptr, nullptr, qkv, offsets, att_offsets, B, max_len, NH, dp);
}

void attention_backward_flash(float *dqkv, const float *dout, const float *qkv, const float *att,
                              const int32_t *offsets, const int64_t *att_offsets, int B, int max_len, int C, int NH,
                              const mt_dropout_key *drop) {
    if (B <= 0 || max_len <= 0) return;
    float *delta = (float *)workspace(MT_WS_ATT_O, mt_ws_att_rows(B, max_len, NH));  // D [B, NH, Lmax]
    const dropout_params dp = dropout_params_of(drop);
    MT_FLASH_DISPATCH(backward_as, C / NH, dqkv, dout, qkv, att, delta, offsets, att_offsets, B, max_len, NH, dp);
}

}  // namespace mt_cuda
