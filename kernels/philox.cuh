// philox.cuh — Philox4x32-10 on the device, bit for bit the generator of lib/rng.c, and the
// dropout keys of lib/backend.h turned into kernel arguments. Word `pos` of stream (lo, hi)
// under `seed` is word pos % 4 of the block with counter {pos/4 low, pos/4 high, lo, hi} and
// key {seed low, seed high}; element i of a dropout mask is kept iff word i >= threshold.
#pragma once
#include "common.cuh"

extern "C" {
#include "rng.h"  // mt_dropout_threshold (host), the site / key conventions
}

namespace mt_cuda {

// Four consecutive words 4 blk .. 4 blk + 3 of a stream: one Philox call.
__device__ __forceinline__ uint4 philox_block(uint64_t seed, uint32_t s_lo, uint32_t s_hi, uint64_t blk) {
    uint32_t c0 = (uint32_t)blk, c1 = (uint32_t)(blk >> 32), c2 = s_lo, c3 = s_hi;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
#pragma unroll
    for (int round = 0; round < 10; round++) {
        if (round > 0) {  // the key is bumped between rounds, not before the first
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    return make_uint4(c0, c1, c2, c3);
}

// Word `pos` of a stream (mt_rng_at of lib/rng.c).
__device__ __forceinline__ uint32_t philox_word(uint64_t seed, uint32_t s_lo, uint32_t s_hi, uint64_t pos) {
    const uint4 w = philox_block(seed, s_lo, s_hi, pos >> 2);
    const uint32_t r = (uint32_t)(pos & 3);  // selects, not an indexed array: no local memory
    return r == 0 ? w.x : r == 1 ? w.y : r == 2 ? w.z : w.w;
}

// A dropout key as a kernel argument. on == 0: no dropout (scale 1, every element kept).
struct dropout_params {
    uint64_t seed;
    uint32_t step, site, threshold;
    float scale;  // 1 / (1 - p), in float as the CPU computes it
    int on;
};

// drop NULL or p == 0: off. The threshold comes from lib/rng.c (dies for p outside [0, 1)).
static inline dropout_params dropout_params_of(const mt_dropout_key *drop) {
    dropout_params d = {0, 0, 0, 0, 1.0f, 0};
    if (drop && drop->p > 0.0f) {
        d.seed = drop->seed;
        d.step = drop->step;
        d.site = drop->site;
        d.threshold = mt_dropout_threshold(drop->p);
        d.scale = 1.0f / (1.0f - drop->p);
        d.on = 1;
    }
    return d;
}

// mt_dropout_keep of lib/rng.h: element i of the mask.
__device__ __forceinline__ bool dropout_keep(dropout_params d, uint64_t i) {
    return philox_word(d.seed, d.step, d.site, i) >= d.threshold;
}

}  // namespace mt_cuda
