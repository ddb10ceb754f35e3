// rng.h — counter-based random numbers (Philox4x32-10) for deterministic training.
//
// Philox4x32-10 (Salmon et al. 2011, Random123; the generator behind cuRAND's Philox and
// JAX) maps a 128-bit counter and a 64-bit key to 128 random bits with no state, so any
// value can be computed on its own, on CPU or GPU, bit for bit.
//
// Every random number in mtbert is named by (seed, stream, position):
//   key     = seed                         (64 bits: key[0] = low word, key[1] = high word)
//   counter = { pos/4 low, pos/4 high, stream low, stream high }, value = output[pos % 4]
// The stream is two 32-bit words (a, b): by convention a = the step (or epoch) and b = a
// *site* id saying what the numbers are for — a dropout site of one layer, the data
// shuffle, task sampling, PCGrad's order. So nothing but the seed and the step count has
// to be saved to resume a run, and element i of a dropout mask is one Philox call away.
#ifndef MT_RNG_H
#define MT_RNG_H

#include <stddef.h>
#include <stdint.h>

// One Philox4x32-10 block: out[4] = philox(ctr[4], key[2]).
void mt_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

// ---- site ids (the high word of a stream) ----------------------------------------------
// Dropout sites are packed from (pass, layer, kind) and stay below MT_SITE_RESERVED;
// `pass` tells apart several forward passes in one step (the task in PCGrad, the two
// views of SimCSE). Sites at and above MT_SITE_RESERVED serve the sequential streams.
#define MT_SITE_RESERVED 0xFF000000u
#define MT_SITE_SHUFFLE 0xFF000001u      // data order; stream (epoch, site)
#define MT_SITE_TASK_SAMPLE 0xFF000002u  // tasks sampled with replacement; (step, site)
#define MT_SITE_PCGRAD 0xFF000003u       // PCGrad's random projection order; (step, site)
#define MT_SITE_INIT 0xFF000004u         // weight initialisation of new heads; (0, site)
// pass < 255 (255 would reach the reserved sites), layer < 65536, kind < 256.
static inline uint32_t mt_dropout_site(uint32_t pass, uint32_t layer, uint32_t kind) {
    return (pass & 0xFFu) << 24 | (layer & 0xFFFFu) << 8 | (kind & 0xFFu);
}

// ---- a sequential stream ------------------------------------------------------------------
// State is three integers; copy the struct to checkpoint it. Values are the stream's
// 32-bit words in order, so mt_rng_u32 at position p equals the keyed value (seed,
// stream, p): the sequential and the keyed views never disagree.
typedef struct {
    uint64_t seed;
    uint32_t stream_lo, stream_hi;  // stream = (step or epoch, site)
    uint64_t pos;                   // index of the next 32-bit word
} mt_rng;

void mt_rng_init(mt_rng *r, uint64_t seed, uint32_t stream_lo, uint32_t stream_hi);
uint32_t mt_rng_u32(mt_rng *r);
// Uniform in [0, 1): the top 24 bits of one word times 2^-24 (exact in float, never 1).
float mt_rng_uniform(mt_rng *r);
// Unbiased integer in [0, n), n >= 1 (Lemire's multiply-and-reject; may use several words).
uint32_t mt_rng_below(mt_rng *r, uint32_t n);
// Fisher–Yates: for i = n-1 down to 1 swap a[i] with a[mt_rng_below(i + 1)].
void mt_rng_shuffle(mt_rng *r, uint32_t *a, size_t n);
// perm[0..n) = a uniformly random permutation of 0..n-1 (identity, then shuffled).
void mt_rng_permutation(mt_rng *r, uint32_t *perm, size_t n);
// out[0..k) = k indices drawn uniformly from [0, n) with replacement.
void mt_rng_sample_with_replacement(mt_rng *r, uint32_t n, uint32_t *out, size_t k);

// ---- keyed values: any element on its own --------------------------------------------------
// Word `pos` of stream (stream_lo, stream_hi) under `seed`.
uint32_t mt_rng_at(uint64_t seed, uint32_t stream_lo, uint32_t stream_hi, uint64_t pos);
static inline float mt_u32_to_uniform(uint32_t x) { return (float)(x >> 8) * 0x1p-24f; }

// splitmix64: a tiny sequential generator for host-side shuffles and resampling (evaluate's
// bootstrap, heads' data split), where a seed must fully determine the order.
static inline uint64_t mt_splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// ---- dropout masks ----------------------------------------------------------------------------
// Element i of the mask of (seed, step, site) is dropped iff word i of stream (step, site)
// is below mt_dropout_threshold(p) — an integer comparison, so a CUDA kernel that computes
// the same word agrees exactly. The drop probability is thr / 2^32 (p to within 2^-32).
uint32_t mt_dropout_threshold(float p);  // p in [0, 1); dies outside
static inline int mt_dropout_keep(uint64_t seed, uint32_t step, uint32_t site, uint64_t i,
                                  uint32_t threshold) {
    return mt_rng_at(seed, step, site, i) >= threshold;
}
// keep[j] = mt_dropout_keep(seed, step, site, first + j, threshold) for j in [0, n);
// one Philox block serves four elements.
void mt_dropout_mask(uint8_t *keep, size_t n, uint64_t first, uint64_t seed, uint32_t step,
                     uint32_t site, uint32_t threshold);

#endif
