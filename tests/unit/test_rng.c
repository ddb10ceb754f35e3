// test_rng.c — Philox4x32-10 against Random123's known answers, the key/counter layout,
// resume, and the statistics of uniforms, dropout masks, shuffles and sampling.
#include "check.h"
#include "rng.h"

#include <stdint.h>

// Random123 tests/kat_vectors, the three "philox4x32 10" lines: ctr[4] key[2] -> out[4].
static const uint32_t kat[3][10] = {
    {0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
     0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
    {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
     0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
    {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
     0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
};

TEST(philox_known_answers) {
    for (int t = 0; t < 3; t++) {
        uint32_t out[4];
        mt_philox4x32_10(&kat[t][0], &kat[t][4], out);
        for (int i = 0; i < 4; i++) CHECK(out[i] == kat[t][6 + i]);
    }
}

// Word pos of stream (a, b) under seed is lane pos%4 of the block with counter
// {pos/4 low, pos/4 high, a, b} and key {seed low, seed high}.
TEST(stream_layout_matches_counter) {
    uint64_t seed = 0x299f31d0a4093822ull;
    uint64_t block = (uint64_t)0x05a308d3 << 32 | 0x243f6a88;  // < 2^62: block*4 fits
    const uint32_t ctr[4] = {0x243f6a88, 0x05a308d3, 0x13198a2e, 0x03707344};
    const uint32_t key[2] = {0xa4093822, 0x299f31d0};
    uint32_t out[4];
    mt_philox4x32_10(ctr, key, out);
    for (int lane = 0; lane < 4; lane++)
        CHECK(mt_rng_at(seed, 0x13198a2e, 0x03707344, block * 4 + lane) == out[lane]);
    CHECK(mt_rng_at(0, 0, 0, 3) == 0x9b00dbd8);  // KAT line 1, lane 3
}

TEST(sequential_equals_keyed_and_resumes) {
    mt_rng a, b;
    mt_rng_init(&a, 42, 7, MT_SITE_SHUFFLE);
    for (uint64_t i = 0; i < 10; i++) CHECK(mt_rng_u32(&a) == mt_rng_at(42, 7, MT_SITE_SHUFFLE, i));
    b = a;  // a checkpoint is a copy of the struct
    uint32_t want[10];
    for (int i = 0; i < 10; i++) want[i] = mt_rng_u32(&a);
    for (int i = 0; i < 10; i++) CHECK(mt_rng_u32(&b) == want[i]);
    mt_rng c;  // another seed, stream or site gives other numbers
    mt_rng_init(&c, 43, 7, MT_SITE_SHUFFLE);
    CHECK(mt_rng_u32(&c) != mt_rng_at(42, 7, MT_SITE_SHUFFLE, 0));
    CHECK(mt_rng_at(42, 8, MT_SITE_SHUFFLE, 0) != mt_rng_at(42, 7, MT_SITE_SHUFFLE, 0));
}

TEST(uniform_range_and_moments) {
    mt_rng r;
    mt_rng_init(&r, 1, 0, 0);
    const int n = 1000000;
    double sum = 0, sum2 = 0;
    float lo = 1, hi = 0;
    for (int i = 0; i < n; i++) {
        float u = mt_rng_uniform(&r);
        sum += u, sum2 += (double)u * u;
        lo = u < lo ? u : lo, hi = u > hi ? u : hi;
    }
    CHECK(lo >= 0.0f && hi < 1.0f);
    CHECK(lo < 1e-4f && hi > 1.0f - 1e-4f);
    CHECK_NEAR(sum / n, 0.5, 5 * 0.2887 / 1000.0);  // 5 sigma of the mean
    CHECK_NEAR(sum2 / n - (sum / n) * (sum / n), 1.0 / 12, 1e-3);
    CHECK(mt_u32_to_uniform(0xFFFFFFFFu) < 1.0f && mt_u32_to_uniform(0) == 0.0f);
}

TEST(dropout_rate_and_independent_elements) {
    const size_t n = 1000003;  // not a multiple of 4
    uint8_t *keep = malloc(n), *other = malloc(n);
    uint32_t thr = mt_dropout_threshold(0.1f);
    mt_dropout_mask(keep, n, 0, 5, 100, mt_dropout_site(0, 3, 1), thr);
    size_t kept = 0, same = 0;
    for (size_t i = 0; i < n; i++) kept += keep[i];
    CHECK_NEAR((double)(n - kept) / n, 0.1, 5 * 0.3 / 1000.0);
    // Any element alone, and a mask started mid-block, agree with the bulk mask.
    int agree = 1;
    for (size_t i = 0; i < n; i += 9973)
        agree &= keep[i] == mt_dropout_keep(5, 100, mt_dropout_site(0, 3, 1), i, thr);
    CHECK(agree);
    mt_dropout_mask(other, 11, 6, 5, 100, mt_dropout_site(0, 3, 1), thr);
    CHECK(memcmp(other, keep + 6, 11) == 0);
    // Every start within a block and lengths around the 8-block batches (rows of attention).
    for (size_t first = 0; first < 8; first++)
        for (size_t len = 1; len < 80; len++) {
            mt_dropout_mask(other, len, first, 5, 100, mt_dropout_site(0, 3, 1), thr);
            agree &= memcmp(other, keep + first, len) == 0;
        }
    CHECK(agree);
    // Counters past 2^32 blocks carry into the counter's high word.
    uint64_t far = (1ULL << 34) - 13;
    mt_dropout_mask(other, 64, far, 5, 100, mt_dropout_site(0, 3, 1), thr);
    for (size_t i = 0; i < 64; i++) agree &= other[i] == mt_dropout_keep(5, 100, mt_dropout_site(0, 3, 1), far + i, thr);
    CHECK(agree);
    // Another step gives another mask: agreement near 0.9^2 + 0.1^2 = 0.82, not 1.
    mt_dropout_mask(other, n, 0, 5, 101, mt_dropout_site(0, 3, 1), thr);
    for (size_t i = 0; i < n; i++) same += keep[i] == other[i];
    CHECK_NEAR((double)same / n, 0.82, 0.005);
    CHECK(mt_dropout_threshold(0.0f) == 0);
    CHECK(mt_dropout_threshold(0.5f) == 0x80000000u);
    free(keep);
    free(other);
}

// All 6 orders of 3 items come out equally often; all k values in sampling too.
TEST(shuffle_is_uniform_permutation) {
    mt_rng r;
    mt_rng_init(&r, 9, 0, MT_SITE_SHUFFLE);
    int count[3][3][3] = {{{0}}};
    const int trials = 60000;
    for (int t = 0; t < trials; t++) {
        uint32_t p[3];
        mt_rng_permutation(&r, p, 3);
        CHECK(p[0] < 3 && p[1] < 3 && p[2] < 3);
        count[p[0] % 3][p[1] % 3][p[2] % 3]++;
    }
    int perms = 0;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++) {
                if (a == b || b == c || a == c) {
                    CHECK(count[a][b][c] == 0);
                    continue;
                }
                perms++;
                CHECK_NEAR(count[a][b][c], trials / 6.0, 5 * 91.3);  // 5 sigma
            }
    CHECK(perms == 6);
}

TEST(permutation_of_many_is_complete) {
    enum { N = 1000 };
    uint32_t p[N];
    uint8_t seen[N] = {0};
    mt_rng r;
    mt_rng_init(&r, 3, 1, MT_SITE_SHUFFLE);
    mt_rng_permutation(&r, p, N);
    int fixed = 0;
    for (int i = 0; i < N; i++) {
        CHECK(p[i] < N);
        if (p[i] < N) seen[p[i]]++;
        fixed += p[i] == (uint32_t)i;
    }
    for (int i = 0; i < N; i++) CHECK(seen[i] == 1);
    CHECK(fixed < 10);  // a shuffle leaves about one element in place
}

TEST(sampling_with_replacement) {
    enum { K = 300000, N = 3 };
    static uint32_t s[K];
    mt_rng r;
    mt_rng_init(&r, 11, 0, MT_SITE_TASK_SAMPLE);
    mt_rng_sample_with_replacement(&r, N, s, K);
    int count[N] = {0};
    for (int i = 0; i < K; i++) {
        CHECK(s[i] < N);
        if (s[i] < N) count[s[i]]++;
    }
    for (int i = 0; i < N; i++) CHECK_NEAR(count[i], K / 3.0, 5 * 258.2);
    // below(n) for a large n that forces rejections stays in range and covers both halves
    int high = 0;
    uint32_t big = 0xC0000001u;
    for (int i = 0; i < 10000; i++) {
        uint32_t x = mt_rng_below(&r, big);
        CHECK(x < big);
        high += x >= big / 2;
    }
    CHECK_NEAR(high, 5000, 5 * 50);
    CHECK(mt_rng_below(&r, 1) == 0);
}

int main(void) {
    RUN(philox_known_answers);
    RUN(stream_layout_matches_counter);
    RUN(sequential_equals_keyed_and_resumes);
    RUN(uniform_range_and_moments);
    RUN(dropout_rate_and_independent_elements);
    RUN(shuffle_is_uniform_permutation);
    RUN(permutation_of_many_is_complete);
    RUN(sampling_with_replacement);
    return check_summary();
}
