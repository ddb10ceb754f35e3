// rand.h — the tests' one random source: xorshift64*, uniform floats in [-1, 1).
//
// Each suite has its own stream (one state per translation unit); a suite that wants
// another seed defines RAND_SEED before including this. The tests' tolerances were set on
// these exact streams, so the generator, seeds and call order must not change.
#ifndef MT_TEST_RAND_H
#define MT_TEST_RAND_H
#include <stdint.h>
#include <stdlib.h>

#ifndef RAND_SEED
#define RAND_SEED 0x9E3779B97F4A7C15ULL
#endif

static uint64_t rng_state = RAND_SEED;

static inline float frand(void) {  // uniform in [-1, 1), xorshift64*
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return (float)((rng_state * 0x2545F4914F6CDD1DULL) >> 40) / (float)(1 << 23) - 1.0f;
}
// n floats scale * frand() (one float allocated for n = 0, so free() is always fine)
static inline float *rand_vec(size_t n, float scale) {
    float *v = (float *)malloc((n ? n : 1) * sizeof *v);  // the cast: C++ tests include this too
    for (size_t i = 0; i < n; i++) v[i] = scale * frand();
    return v;
}
#endif
