// rng.c — Philox4x32-10 and what training draws from it (see rng.h for the key layout).
#include "rng.h"

#include <math.h>

#include "common.h"

// Constants of Random123's philox4x32: round multipliers and Weyl key increments.
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void philox_round(uint32_t c[4], const uint32_t k[2]) {
    uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c[1] ^ k[0], n2 = hi0 ^ c[3] ^ k[1];
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
}

void mt_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int round = 0; round < 10; round++) {
        if (round > 0) {  // the key is bumped between rounds, not before the first
            k[0] += PHILOX_W0;
            k[1] += PHILOX_W1;
        }
        philox_round(c, k);
    }
    for (int i = 0; i < 4; i++) out[i] = c[i];
}

// The block of four words holding word `pos` of a stream.
static void stream_block(uint64_t seed, uint32_t s_lo, uint32_t s_hi, uint64_t block,
                         uint32_t out[4]) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), s_lo, s_hi};
    mt_philox4x32_10(ctr, key, out);
}

uint32_t mt_rng_at(uint64_t seed, uint32_t stream_lo, uint32_t stream_hi, uint64_t pos) {
    uint32_t out[4];
    stream_block(seed, stream_lo, stream_hi, pos >> 2, out);
    return out[pos & 3];
}

void mt_rng_init(mt_rng *r, uint64_t seed, uint32_t stream_lo, uint32_t stream_hi) {
    r->seed = seed;
    r->stream_lo = stream_lo;
    r->stream_hi = stream_hi;
    r->pos = 0;
}

// One block per word: three of four words are recomputed, which costs nothing next to
// a training step and keeps the state a plain position that a checkpoint can hold.
uint32_t mt_rng_u32(mt_rng *r) {
    return mt_rng_at(r->seed, r->stream_lo, r->stream_hi, r->pos++);
}

float mt_rng_uniform(mt_rng *r) { return mt_u32_to_uniform(mt_rng_u32(r)); }

uint32_t mt_rng_below(mt_rng *r, uint32_t n) {
    if (n == 0) mt_die("mt_rng_below: empty range");
    uint64_t m = (uint64_t)mt_rng_u32(r) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {  // reject the few values that would over-represent small results
        uint32_t limit = (uint32_t)(-n) % n;  // 2^32 mod n
        while (low < limit) {
            m = (uint64_t)mt_rng_u32(r) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void mt_rng_shuffle(mt_rng *r, uint32_t *a, size_t n) {
    if (n > UINT32_MAX) mt_die("mt_rng_shuffle: %zu elements is more than 2^32-1", n);
    for (size_t i = n; i > 1; i--) {
        uint32_t j = mt_rng_below(r, (uint32_t)i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

void mt_rng_permutation(mt_rng *r, uint32_t *perm, size_t n) {
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    mt_rng_shuffle(r, perm, n);
}

void mt_rng_sample_with_replacement(mt_rng *r, uint32_t n, uint32_t *out, size_t k) {
    for (size_t i = 0; i < k; i++) out[i] = mt_rng_below(r, n);
}

uint32_t mt_dropout_threshold(float p) {
    if (!(p >= 0.0f && p < 1.0f)) mt_die("dropout probability %g is outside [0, 1)", p);
    return (uint32_t)llround((double)p * 4294967296.0);  // p < 1 keeps this below 2^32
}

// Eight consecutive blocks (the first is `block`): words[4k + i] = word i of block block + k.
// With AVX2 four blocks share a vector, a 32-bit word zero-extended in each 64-bit lane, so
// vpmuludq gives the round's 32x32 -> 64-bit products directly: ~4x the scalar rate, same bits.
#define PHILOX_LANES 8
#ifdef __AVX2__
#include <immintrin.h>
static void philox_blocks8(uint64_t seed, uint32_t s_lo, uint32_t s_hi, uint64_t block, uint32_t *words) {
    const __m256i m0 = _mm256_set1_epi64x(PHILOX_M0), m1 = _mm256_set1_epi64x(PHILOX_M1);
    const __m256i low = _mm256_set1_epi64x(0xFFFFFFFF);
    __m256i c[2][4];
    for (int h = 0; h < 2; h++) {
        uint64_t b = block + 4 * (uint64_t)h;
        __m256i ctr = _mm256_add_epi64(_mm256_set1_epi64x((long long)b), _mm256_setr_epi64x(0, 1, 2, 3));
        c[h][0] = _mm256_and_si256(ctr, low), c[h][1] = _mm256_srli_epi64(ctr, 32);
        c[h][2] = _mm256_set1_epi64x(s_lo), c[h][3] = _mm256_set1_epi64x(s_hi);
    }
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; round++) {
        if (round > 0) k0 += PHILOX_W0, k1 += PHILOX_W1;
        __m256i key0 = _mm256_set1_epi64x(k0), key1 = _mm256_set1_epi64x(k1);
        for (int h = 0; h < 2; h++) {
            __m256i p0 = _mm256_mul_epu32(c[h][0], m0), p1 = _mm256_mul_epu32(c[h][2], m1);
            __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), c[h][1]), key0);
            __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), c[h][3]), key1);
            c[h][0] = n0, c[h][1] = _mm256_and_si256(p1, low), c[h][2] = n2, c[h][3] = _mm256_and_si256(p0, low);
        }
    }
    for (int h = 0; h < 2; h++) {
        uint64_t w[4][4];
        for (int i = 0; i < 4; i++) _mm256_storeu_si256((__m256i *)w[i], c[h][i]);
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < 4; i++) words[4 * (4 * h + k) + i] = (uint32_t)w[i][k];
    }
}
#else
static void philox_blocks8(uint64_t seed, uint32_t s_lo, uint32_t s_hi, uint64_t block, uint32_t *words) {
    for (int k = 0; k < PHILOX_LANES; k++) stream_block(seed, s_lo, s_hi, block + (uint64_t)k, words + 4 * k);
}
#endif

void mt_dropout_mask(uint8_t *keep, size_t n, uint64_t first, uint64_t seed, uint32_t step,
                     uint32_t site, uint32_t threshold) {
    uint32_t w[4 * PHILOX_LANES];
    size_t j = 0;
    while (j < n) {  // word `pos` is word pos % 4 of block pos / 4
        uint64_t pos = first + j, block = pos >> 2;
        size_t from = (size_t)(pos & 3), left = n - j, blocks = (from + left + 3) / 4;
        if (blocks >= 3) philox_blocks8(seed, step, site, block, w);  // 8 cost less than 3 alone
        else stream_block(seed, step, site, block, w);
        size_t take = (blocks >= 3 ? 4 * PHILOX_LANES : 4) - from;
        if (take > left) take = left;
        for (size_t i = 0; i < take; i++) keep[j + i] = w[from + i] >= threshold;
        j += take;
    }
}
