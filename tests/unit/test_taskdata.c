// test_taskdata.c — token shards in memory, the per-pass batch order (every example exactly
// once, deterministic, limits respected) and packing for the encoder.
#include <unistd.h>

#include "check.h"
#include "common.h"
#include "rng.h"
#include "stream.h"
#include "taskdata.h"

static char shard_path[64];

// A pair shard of n examples with lengths 3..12 (ids_a), 3..8 (ids_b); ids encode (example, seq).
static void write_pair_shard(int n) {
    snprintf(shard_path, sizeof shard_path, "/tmp/test_taskdata_%ld.tok", (long)getpid());
    mt_meta meta = {0};
    mt_meta_set(&meta, "kind", "tokens");
    mt_meta_set(&meta, "vocab_fp", "00000000000000aa");
    mt_writer *w = mt_writer_open(shard_path, &meta);
    mt_record r = {0};
    for (int i = 0; i < n; i++) {
        mt_record_clear(&r);
        char id[16];
        snprintf(id, sizeof id, "ex%d", i);
        mt_record_set_id(&r, id);
        mt_record_add_label(&r, "similarity", (float)(i % 6) * 0.9f);
        int la = 3 + i % 10, lb = 3 + i % 6;
        int32_t *a = mt_record_add1(&r, "ids_a", MT_I32, la)->data;
        for (int k = 0; k < la; k++) a[k] = 1000 * i + k;
        int32_t *b = mt_record_add1(&r, "ids_b", MT_I32, lb)->data;
        for (int k = 0; k < lb; k++) b[k] = 1000 * i + 100 + k;
        int32_t *ab = mt_record_add1(&r, "ids_ab", MT_I32, la + lb - 1)->data;
        int32_t *ty = mt_record_add1(&r, "types_ab", MT_I32, la + lb - 1)->data;
        for (int k = 0; k < la + lb - 1; k++) ab[k] = 1000 * i + 500 + k, ty[k] = k >= la;
        mt_writer_put(w, &r);
    }
    mt_writer_close(w);
    mt_record_free(&r);
    mt_meta_free(&meta);
}

static mt_taskmodel model(int pair) {
    mt_sentence_config sc = mt_sentence_default_config(MT_SENT_MEAN, 4, 1, 1);
    mt_taskmodel tm;
    mt_taskmodel_init(&tm, &sc, (mt_pair_model)pair, 1);
    return tm;
}

TEST(load_shard) {
    write_pair_shard(50);
    mt_taskdata d;
    mt_taskdata_load(&d, MT_TASK_STS, shard_path, "00000000000000aa", 0);
    CHECK(d.n == 50);
    CHECK_NEAR(d.label[7], 0.9f, 1e-6);
    CHECK(d.len[7 * MT_N_SEQ + MT_SEQ_A] == 10 && d.len[7 * MT_N_SEQ + MT_SEQ_AB] == 10 + 4 - 1);
    CHECK(d.tokens[d.start[7 * MT_N_SEQ + MT_SEQ_B]] == 7100);
    CHECK(d.types[d.start[7 * MT_N_SEQ + MT_SEQ_AB] + 10] == 1);
    mt_taskdata_free(&d);
    mt_taskdata_load(&d, MT_TASK_STS, shard_path, NULL, 20);  // --limit
    CHECK(d.n == 20 && d.max_len == 17);
    mt_taskdata_free(&d);
}

// Every example exactly once per pass, whatever the limits; batches within them.
TEST(batches_cover_each_example_once) {
    mt_taskdata d;
    mt_taskdata_load(&d, MT_TASK_STS, shard_path, NULL, 0);
    mt_taskmodel tm = model(MT_PAIR_ENSEMBLE);
    mt_taskdata_set_cost(&d, &tm);
    CHECK(d.cost[7] == 10 + 4 + 13);
    const int sizes[][3] = {{16, 1 << 20, 1024}, {4, 1 << 20, 8}, {16, 60, 16}, {1, 1, 1}};
    for (int c = 0; c < 4; c++) {
        mt_batches bt;
        mt_batches_make(&bt, &d, 42, 3, sizes[c][0], sizes[c][1], sizes[c][2]);
        int seen[50] = {0}, bad = 0;
        for (int b = 0; b < bt.n_batches; b++) {
            int n = bt.first[b + 1] - bt.first[b], tokens = 0;
            bad += n < 1 || n > sizes[c][0];
            for (int i = bt.first[b]; i < bt.first[b + 1]; i++) seen[bt.order[i]]++, tokens += d.cost[bt.order[i]];
            bad += n > 1 && tokens > sizes[c][1];
        }
        for (int i = 0; i < 50; i++) bad += seen[i] != 1;
        CHECK(bt.first[bt.n_batches] == 50);
        CHECK(bad == 0);
        mt_batches_free(&bt);
    }
    mt_taskmodel_free(&tm);
    mt_taskdata_free(&d);
}

static int same_order(const mt_batches *x, const mt_batches *y) {
    return x->n_batches == y->n_batches && !memcmp(x->order, y->order, (size_t)x->n * sizeof(int32_t)) &&
           !memcmp(x->first, y->first, ((size_t)x->n_batches + 1) * sizeof(int32_t));
}

// Deterministic in (seed, pass); another pass or seed gives another order; a window sorts.
TEST(batches_deterministic) {
    mt_taskdata d;
    mt_taskdata_load(&d, MT_TASK_STS, shard_path, NULL, 0);
    mt_taskmodel tm = model(MT_PAIR_BI);
    mt_taskdata_set_cost(&d, &tm);
    mt_batches a, b, c, e;
    mt_batches_make(&a, &d, 42, 3, 8, 1 << 20, 16);
    mt_batches_make(&b, &d, 42, 3, 8, 1 << 20, 16);
    mt_batches_make(&c, &d, 42, 4, 8, 1 << 20, 16);
    mt_batches_make(&e, &d, 43, 3, 8, 1 << 20, 16);
    CHECK(same_order(&a, &b));
    CHECK(!same_order(&a, &c));
    CHECK(!same_order(&a, &e));
    int unsorted = 0;  // inside a batch costs ascend (one window, sorted)
    for (int k = 0; k < a.n_batches; k++)
        for (int i = a.first[k] + 1; i < a.first[k + 1]; i++) unsorted += d.cost[a.order[i]] < d.cost[a.order[i - 1]];
    CHECK(unsorted == 0);
    mt_batches_free(&a), mt_batches_free(&b), mt_batches_free(&c), mt_batches_free(&e);
    mt_taskmodel_free(&tm);
    mt_taskdata_free(&d);
}

// Packing follows taskmodel.h: a's, b's, then the joint sequences.
TEST(pack_layout) {
    mt_taskdata d;
    mt_taskdata_load(&d, MT_TASK_STS, shard_path, NULL, 0);
    mt_taskmodel tm = model(MT_PAIR_ENSEMBLE);
    mt_taskdata_set_cost(&d, &tm);
    mt_packed p = {0};
    int32_t ex[2] = {7, 2};
    mt_pack(&p, &d, &tm, ex, 2);
    CHECK(p.nseq == 6 && p.B == 2);
    CHECK(p.N == d.cost[7] + d.cost[2]);
    CHECK(p.ids[p.offsets[0]] == 7000 && p.ids[p.offsets[1]] == 2000);
    CHECK(p.ids[p.offsets[2]] == 7100 && p.ids[p.offsets[3]] == 2100);
    CHECK(p.ids[p.offsets[4]] == 7500 && p.types[p.offsets[4] + 10] == 1 && p.types[p.offsets[4]] == 0);
    CHECK(p.offsets[6] == p.N && p.max_len == 13);
    CHECK_NEAR(p.labels[1], 1.8f, 1e-6);
    mt_taskmodel_free(&tm);
    tm = model(MT_PAIR_CROSS);
    mt_taskdata_set_cost(&d, &tm);
    mt_pack(&p, &d, &tm, ex, 2);
    CHECK(p.nseq == 2 && p.ids[0] == 7500 && p.N == 13 + 9);
    mt_packed_free(&p);
    mt_taskmodel_free(&tm);
    mt_taskdata_free(&d);
    unlink(shard_path);
}

int main(void) {
    RUN(load_shard);
    RUN(batches_cover_each_example_once);
    RUN(batches_deterministic);
    RUN(pack_layout);
    return check_summary();
}
