// test_contrastive.c — mining of contrastive examples (QQP/STS thresholds, SST same-label
// pairing, NLI premise grouping) and the batch plan, on hand-made records.
#include "check.h"
#include "contrastive.h"

// A record with ids_a = a[0..na), ids_b = b[0..nb) (nb = 0: none) and one label.
static void make(mt_record *r, const char *id, const char *label, float v, const int32_t *a, int na,
                 const int32_t *b, int nb) {
    mt_record_clear(r);
    mt_record_set_id(r, id);
    mt_record_add_label(r, label, v);
    memcpy(mt_record_add1(r, "ids_a", MT_I32, na)->data, a, (size_t)na * 4);
    if (nb) memcpy(mt_record_add1(r, "ids_b", MT_I32, nb)->data, b, (size_t)nb * 4);
}

static int seq_is(const mt_cl_data *d, int seq, const int32_t *ids, int n) {
    return d->seqs.len[seq] == n && !memcmp(d->seqs.tok + d->seqs.start[seq], ids, (size_t)n * 4);
}

static int first_token(const mt_cl_data *d, int seq) { return d->seqs.tok[d->seqs.start[seq] + 1]; }

// Feeds records (a token 100+i, b token 200+i, label values v[i]) to a miner of src.
static void mine(mt_cl_data *d, mt_cl_source src, const char *label, const float *v, int n,
                 const mt_cl_mine_options *o, mt_cl_mine_stats *st) {
    mt_cl_miner *m = mt_cl_miner_new(src, o, d);
    mt_record r = {0};
    char err[256];
    for (int i = 0; i < n; i++) {
        int32_t a[3] = {101, 100 + i, 102}, b[3] = {101, 200 + i, 102};
        make(&r, "x", label, v[i], a, 3, b, 3);
        CHECK(mt_cl_miner_add(m, &r, err, sizeof err) == 0);
    }
    mt_cl_miner_finish(m, st);
    mt_cl_miner_free(m);
    mt_record_free(&r);
}

TEST(qqp_duplicates_only) {
    mt_cl_data d = {0};
    mt_cl_mine_options o = mt_cl_mine_defaults();
    mt_cl_mine_stats st;
    float v[5] = {0, 1, 0, 1, 1};
    mine(&d, MT_CL_QQP, "is_duplicate", v, 5, &o, &st);
    CHECK(st.records == 5 && st.positives == 3 && d.n_ex == 3);
    CHECK(first_token(&d, d.ex[0].anchor) == 101 && first_token(&d, d.ex[0].positive) == 201);
    CHECK(first_token(&d, d.ex[2].anchor) == 104 && first_token(&d, d.ex[2].positive) == 204);
    CHECK(d.ex[1].negative == -1);
    CHECK(mt_cl_example_tokens(&d, 0) == 6);
    mt_cl_data_free(&d);
}

TEST(sts_strictly_above_threshold) {
    mt_cl_data d = {0};
    mt_cl_mine_options o = mt_cl_mine_defaults();
    mt_cl_mine_stats st;
    float v[6] = {4.0f, 4.2f, 5.0f, 3.9f, 0.0f, 4.01f};
    mine(&d, MT_CL_STS, "similarity", v, 6, &o, &st);
    CHECK(st.positives == 3);  // 4.2, 5.0, 4.01; exactly 4 is not "> 4"
    CHECK(first_token(&d, d.ex[0].anchor) == 101 && first_token(&d, d.ex[1].anchor) == 102);
    CHECK(first_token(&d, d.ex[2].anchor) == 105);
    mt_cl_data_free(&d);
    o.min_score = 3.5;
    mine(&d, MT_CL_STS, "similarity", v, 6, &o, &st);
    CHECK(st.positives == 5);
    mt_cl_data_free(&d);
}

TEST(missing_label_or_tensor_is_an_error) {
    mt_cl_data d = {0};
    mt_cl_mine_options o = mt_cl_mine_defaults();
    mt_cl_miner *m = mt_cl_miner_new(MT_CL_QQP, &o, &d);
    mt_record r = {0};
    char err[256] = "";
    int32_t a[2] = {101, 102};
    make(&r, "r7", "similarity", 1, a, 2, a, 2);
    CHECK(mt_cl_miner_add(m, &r, err, sizeof err) == -1);
    CHECK(strstr(err, "r7") && strstr(err, "is_duplicate") && strstr(err, "similarity"));
    make(&r, "r8", "is_duplicate", 1, a, 2, NULL, 0);
    CHECK(mt_cl_miner_add(m, &r, err, sizeof err) == -1 && strstr(err, "ids_b"));
    mt_cl_miner_free(m);
    mt_record_free(&r);
    mt_cl_data_free(&d);
}

// Sentence i has label lab[i] and token 100 + i (sentences 6 and 7 repeat sentence 0).
static void mine_sst(mt_cl_data *d, uint64_t seed, mt_cl_mine_stats *st) {
    static const float lab[10] = {0, 0, 1, 1, 1, 0, 0, 0, 4, 2};
    mt_cl_mine_options o = mt_cl_mine_defaults();
    o.seed = seed;
    mt_cl_miner *m = mt_cl_miner_new(MT_CL_SST, &o, d);
    mt_record r = {0};
    char err[64];
    for (int i = 0; i < 10; i++) {
        int32_t a[3] = {101, i == 6 || i == 7 ? 100 : 100 + i, 102};
        make(&r, "s", "label", lab[i], a, 3, NULL, 0);
        CHECK(mt_cl_miner_add(m, &r, err, sizeof err) == 0);
    }
    mt_cl_miner_finish(m, st);
    mt_cl_miner_free(m);
    mt_record_free(&r);
}

TEST(sst_same_label_pairs_of_different_sentences) {
    static const int label_of_token[10] = {0, 0, 1, 1, 1, 0, 0, 0, 4, 2};
    for (uint64_t seed = 0; seed < 20; seed++) {
        mt_cl_data d = {0};
        mt_cl_mine_stats st;
        mine_sst(&d, seed, &st);
        // label 0: 5 sentences, 3 of them identical -> at most 2 pairs; label 1: 1 pair
        int sentences = 0;
        for (int i = 0; i < d.n_ex; i++) {
            int a = d.ex[i].anchor, p = d.ex[i].positive;
            CHECK(label_of_token[first_token(&d, a) - 100] == label_of_token[first_token(&d, p) - 100]);
            CHECK(first_token(&d, a) != first_token(&d, p));
            sentences += 2;
        }
        CHECK(d.n_ex >= 2 && d.n_ex <= 3);
        CHECK(sentences + st.unpaired == 10);
        CHECK(st.positives == d.n_ex);
        mt_cl_data_free(&d);
    }
}

TEST(sst_pairing_is_a_function_of_the_seed) {
    mt_cl_data a = {0}, b = {0}, c = {0};
    mt_cl_mine_stats st;
    mine_sst(&a, 7, &st), mine_sst(&b, 7, &st);
    CHECK(a.n_ex == b.n_ex && !memcmp(a.ex, b.ex, (size_t)a.n_ex * sizeof *a.ex));
    int differs = 0;  // some other seed pairs differently
    for (uint64_t s = 0; s < 8 && !differs; s++) {
        mine_sst(&c, s, &st);
        differs = c.n_ex != a.n_ex || memcmp(c.ex, a.ex, (size_t)a.n_ex * sizeof *a.ex);
        mt_cl_data_free(&c);
    }
    CHECK(differs);
    mt_cl_data_free(&a), mt_cl_data_free(&b);
}

// Premises P (token 10), Q (20), R (30); hypotheses token 500 + record index.
TEST(nli_groups_by_premise_ids) {
    static const int premise[9] = {10, 20, 10, 10, 30, 20, 10, 30, 20};
    static const float label[9] = {0, 0, 2, 1, 0, 1, 0, 1, 0};  // entailment 0, contradiction 2
    mt_cl_data d = {0};
    mt_cl_mine_options o = mt_cl_mine_defaults();
    mt_cl_miner *m = mt_cl_miner_new(MT_CL_NLI, &o, &d);
    mt_record r = {0};
    char err[64];
    for (int i = 0; i < 9; i++) {
        int32_t a[4] = {101, premise[i], 7, 102}, b[3] = {101, 500 + i, 102};
        make(&r, "n", "label", label[i], a, 4, b, 3);
        CHECK(mt_cl_miner_add(m, &r, err, sizeof err) == 0);
    }
    mt_cl_mine_stats st;
    mt_cl_miner_finish(m, &st);
    // P has entailments 0, 6 and contradiction 2; Q and R have no contradiction
    CHECK(st.premises == 3 && st.skipped_premises == 2);
    CHECK(st.entailments == 5 && st.contradictions == 1);
    CHECK(d.n_ex == 2 && st.positives == 2 && st.hard_negatives == 2);
    int32_t P[4] = {101, 10, 7, 102};
    for (int i = 0; i < d.n_ex; i++) {
        CHECK(seq_is(&d, d.ex[i].anchor, P, 4));
        CHECK(first_token(&d, d.ex[i].negative) == 502);
    }
    CHECK(first_token(&d, d.ex[0].positive) == 500 && first_token(&d, d.ex[1].positive) == 506);
    CHECK(d.ex[0].anchor == d.ex[1].anchor);  // one stored copy of the premise
    mt_cl_miner_free(m);
    mt_record_free(&r);
    mt_cl_data_free(&d);
}

// Many premises (the hash table grows), each with two entailments and two contradictions:
// entailment k takes contradiction k mod 2.
TEST(nli_many_premises_cycle_contradictions) {
    mt_cl_data d = {0};
    mt_cl_mine_options o = mt_cl_mine_defaults();
    mt_cl_miner *m = mt_cl_miner_new(MT_CL_NLI, &o, &d);
    mt_record r = {0};
    char err[64];
    const int P = 3000;
    for (int rep = 0; rep < 4; rep++)
        for (int p = 0; p < P; p++) {
            int32_t a[3] = {101, 1000 + p, 102}, b[3] = {101, rep, 102};
            make(&r, "n", "label", rep < 2 ? 0.0f : 2.0f, a, 3, b, 3);
            CHECK(mt_cl_miner_add(m, &r, err, sizeof err) == 0);
        }
    mt_cl_mine_stats st;
    mt_cl_miner_finish(m, &st);
    CHECK(st.premises == P && st.skipped_premises == 0 && d.n_ex == 2 * P);
    int ok = 1;
    for (int i = 0; i < d.n_ex; i++) {
        const mt_cl_example *e = &d.ex[i];
        int k = first_token(&d, e->positive);
        ok &= first_token(&d, e->anchor) == 1000 + i / 2 && k == i % 2 && first_token(&d, e->negative) == 2 + k;
    }
    CHECK(ok);
    mt_cl_miner_free(m);
    mt_record_free(&r);
    mt_cl_data_free(&d);
}

TEST(plan_covers_examples_within_budgets) {
    mt_cl_data d = {0};
    for (int i = 0; i < 301; i++) {  // lengths 3..22
        int32_t ids[24] = {0};
        int len = 3 + i % 20;
        int a = mt_seq_pool_add(&d.seqs, ids, len), p = mt_seq_pool_add(&d.seqs, ids, len);
        d.ex = realloc(d.ex, (size_t)(d.n_ex + 1) * sizeof *d.ex);
        d.ex[d.n_ex++] = (mt_cl_example){a, p, -1};
    }
    mt_cl_plan p = {0}, q = {0};
    mt_cl_plan_epoch(&p, &d, 0, 5, 8, 200);
    int seen[301] = {0}, ok = 1;
    for (int b = 0; b < p.n_batches; b++) {
        int n = p.start[b + 1] - p.start[b], tokens = 0;
        ok &= n >= 2 && n <= 8;
        for (int i = p.start[b]; i < p.start[b + 1]; i++) seen[p.ex[i]]++, tokens += mt_cl_example_tokens(&d, p.ex[i]);
        ok &= tokens <= 200;
    }
    CHECK(ok);
    int once = 0, more = 0;
    for (int i = 0; i < 301; i++) once += seen[i] == 1, more += seen[i] > 1;
    CHECK(more == 0);
    CHECK(once >= 301 - 2);  // only a leftover single at the end of a window (2 windows) is dropped
    mt_cl_plan_epoch(&q, &d, 0, 5, 8, 200);
    CHECK(q.n == p.n && !memcmp(q.ex, p.ex, p.n * 4));
    mt_cl_plan_epoch(&q, &d, 1, 5, 8, 200);
    CHECK(q.n != p.n || memcmp(q.ex, p.ex, p.n * 4));  // another epoch, another order
    mt_cl_plan_free(&p), mt_cl_plan_free(&q);
    mt_cl_data_free(&d);
}

int main(void) {
    RUN(qqp_duplicates_only);
    RUN(sts_strictly_above_threshold);
    RUN(missing_label_or_tensor_is_an_error);
    RUN(sst_same_label_pairs_of_different_sentences);
    RUN(sst_pairing_is_a_function_of_the_seed);
    RUN(nli_groups_by_premise_ids);
    RUN(nli_many_premises_cycle_contradictions);
    RUN(plan_covers_examples_within_budgets);
    return check_summary();
}
