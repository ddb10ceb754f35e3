// test_bert_parity.c — the encoder against transformers' BertModel on real sentences
// (tests/ref/encoder_minilm.bin.gz, written by tests/make_encoder_refs.py): hidden states,
// mean pooling and the pooler, max abs diff <= 1e-4 in fp32; a padded batch of mixed
// lengths equals the sentences run alone; a too-long sequence and bad ids are refused.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "bert.h"
#include "check.h"
#ifdef _OPENMP
#include <omp.h>
static int omp_threads(void) { return omp_get_max_threads(); }
#else
static int omp_threads(void) { return 1; }
#endif

#define TOL 1e-4

typedef struct {
    int L, kind, npos;
    int32_t *ids, *types, *pos;
    float *rows, *mean, *pooled;  // [npos][H], [H], [H]
} ref_sentence;

static mt_bert *model;
static ref_sentence *refs;
static int nrefs, H, has_pooler;
static char err[1024];
// Unbatched outputs of the first KEEP sentences, reused by the batched test.
#define KEEP 64
static float *alone_hidden[KEEP], *alone_mean[KEEP];

static void read_exact(gzFile f, void *p, size_t n) {
    if (gzread(f, p, (unsigned)n) != (int)n) { printf("# reference file truncated\n"); exit(1); }
}
static uint32_t read_u32(gzFile f) { uint32_t v; read_exact(f, &v, 4); return v; }
static void *read_array(gzFile f, size_t n, size_t size) { void *p = malloc(n * size + 1); read_exact(f, p, n * size); return p; }

static int load_refs(const char *path) {
    gzFile f = gzopen(path, "rb");
    if (!f) return -1;
    char magic[8];
    read_exact(f, magic, 8);
    if (memcmp(magic, "MTREF1\0\0", 8) != 0) { gzclose(f); return -1; }
    nrefs = (int)read_u32(f);
    H = (int)read_u32(f);
    has_pooler = (int)read_u32(f);
    refs = calloc(nrefs, sizeof *refs);
    for (int i = 0; i < nrefs; i++) {
        ref_sentence *r = &refs[i];
        r->L = (int)read_u32(f);
        r->kind = (int)read_u32(f);
        r->ids = read_array(f, r->L, 4);
        r->types = read_array(f, r->L, 4);
        r->npos = (int)read_u32(f);
        r->pos = read_array(f, r->npos, 4);
        r->rows = read_array(f, (size_t)r->npos * H, 4);
        r->mean = read_array(f, H, 4);
        r->pooled = has_pooler ? read_array(f, H, 4) : NULL;
    }
    gzclose(f);
    return 0;
}

static int threads;  // the OpenMP default, before the test pins itself to one thread

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

// Compares one sentence's outputs (hidden [T,H] padded row, mean [H], pooled [H]) with its reference.
static double compare(const ref_sentence *r, const float *hidden, const float *mean, const float *pooled) {
    double d = 0;
    for (int p = 0; p < r->npos; p++) d = fmax(d, max_diff(hidden + (size_t)r->pos[p] * H, r->rows + (size_t)p * H, H));
    d = fmax(d, max_diff(mean, r->mean, H));
    if (pooled && r->pooled) d = fmax(d, max_diff(pooled, r->pooled, H));
    return d;
}

TEST(model_metadata) {
    CHECK(model->cfg.hidden_size == H && H == 384);
    CHECK(model->cfg.num_hidden_layers == 6 && model->cfg.vocab_size == 30522);
    CHECK(model->has_pooler == has_pooler);
    CHECK(strlen(model->fingerprint) == 16);
    const mt_bert_param *p = mt_bert_find_param(model, "encoder.layer.5.intermediate.dense.weight");
    CHECK(p && p->ndim == 2 && p->shape[0] == 1536 && p->shape[1] == 384);
    // query, key, value are adjacent: one [3C, C] matrix
    const mt_bert_param *q = mt_bert_find_param(model, "encoder.layer.2.attention.self.query.weight"),
                        *v = mt_bert_find_param(model, "encoder.layer.2.attention.self.value.weight");
    CHECK(q && v && v->offset == q->offset + 2 * (size_t)H * H);
    CHECK(q && model->layers[2].qkv_w == model->params + q->offset);
}

TEST(unbatched_matches_pytorch) {
    double worst = 0, worst_single = 0, worst_pair = 0;
    float *hidden = malloc(sizeof(float) * 512 * H), mean[1024], pooled[1024];
    int pairs = 0;
    for (int i = 0; i < nrefs; i++) {
        const ref_sentence *r = &refs[i];
        int rc = mt_bert_forward(model, r->ids, r->types, &r->L, 1, r->L, hidden, has_pooler ? pooled : NULL);
        CHECK(rc == 0);
        if (rc) { printf("# %s\n", mt_bert_error(model)); break; }
        mt_bert_pool(model, MT_POOL_MEAN, mean);
        double d = compare(r, hidden, mean, has_pooler ? pooled : NULL);
        if (i < KEEP) {
            alone_hidden[i] = malloc(sizeof(float) * r->L * H);
            memcpy(alone_hidden[i], hidden, sizeof(float) * r->L * H);
            alone_mean[i] = malloc(sizeof(float) * H);
            memcpy(alone_mean[i], mean, sizeof(float) * H);
        }
        if (r->kind) { worst_pair = fmax(worst_pair, d); pairs++; }
        else worst_single = fmax(worst_single, d);
        worst = fmax(worst, d);
    }
    printf("# %d sentences (%d joint pairs): max abs diff %.3g (single %.3g, pairs %.3g), tolerance %g\n", nrefs,
           pairs, worst, worst_single, worst_pair, TOL);
    CHECK(nrefs >= 200 && pairs > 0);
    CHECK(worst <= TOL);
    free(hidden);
}

// Groups of 16 sentences of mixed lengths, padded to the longest (pad ids 0): each sentence's
// outputs equal the reference and its own unbatched run. Runs on every thread (the
// unbatched runs used one), so it also checks that threading does not change results.
TEST(batched_with_padding_equals_unbatched) {
    enum { G = 16 };
    int T = 0;
    for (int i = 0; i < nrefs; i++) T = refs[i].L > T ? refs[i].L : T;
    int32_t *ids = malloc(sizeof(int32_t) * G * T), *types = malloc(sizeof(int32_t) * G * T), lengths[G];
    float *hidden = malloc(sizeof(float) * G * T * H);
    float *pooled = malloc(sizeof(float) * G * H), *mean = malloc(sizeof(float) * G * H);
    double worst_ref = 0, worst_alone = 0;
    int pad_nonzero = 0;
    mt_bert_set_threads(model, threads);
    for (int g0 = 0; g0 + G <= nrefs && g0 + G <= KEEP; g0 += G) {
        memset(ids, 0, sizeof(int32_t) * G * T);
        memset(types, 0, sizeof(int32_t) * G * T);
        for (int b = 0; b < G; b++) {
            lengths[b] = refs[g0 + b].L;
            memcpy(ids + b * T, refs[g0 + b].ids, sizeof(int32_t) * lengths[b]);
            memcpy(types + b * T, refs[g0 + b].types, sizeof(int32_t) * lengths[b]);
        }
        int rc = mt_bert_forward(model, ids, types, lengths, G, T, hidden, has_pooler ? pooled : NULL);
        CHECK(rc == 0);
        if (rc) { printf("# %s\n", mt_bert_error(model)); break; }
        mt_bert_pool(model, MT_POOL_MEAN, mean);
        for (int b = 0; b < G; b++) {
            const ref_sentence *r = &refs[g0 + b];
            float *h = hidden + (size_t)b * T * H;
            worst_ref = fmax(worst_ref, compare(r, h, mean + b * H, has_pooler ? pooled + b * H : NULL));
            for (size_t k = (size_t)r->L * H; k < (size_t)T * H; k++) pad_nonzero += h[k] != 0.0f;
            worst_alone = fmax(worst_alone, max_diff(h, alone_hidden[g0 + b], (size_t)r->L * H));
            worst_alone = fmax(worst_alone, max_diff(mean + b * H, alone_mean[g0 + b], H));
        }
    }
    printf("# batched: max abs diff %.3g vs PyTorch, %.3g vs unbatched\n", worst_ref, worst_alone);
    CHECK(worst_ref <= TOL);
    CHECK(worst_alone <= 1e-5);
    CHECK(pad_nonzero == 0);
    mt_bert_set_threads(model, 1);
    free(ids); free(types); free(hidden); free(pooled); free(mean);
}

TEST(training_layout_gives_the_same_outputs) {
    const ref_sentence *r = &refs[5];
    float *a = malloc(sizeof(float) * r->L * H), *b = malloc(sizeof(float) * r->L * H);
    mt_bert_forward(model, r->ids, r->types, &r->L, 1, r->L, a, NULL);
    mt_bert_reserve(model, 256, 4, 128, 1, 0);  // keep every layer's activations
    int rc = mt_bert_forward(model, r->ids, r->types, &r->L, 1, r->L, b, NULL);
    CHECK(rc == 0);
    CHECK(max_diff(a, b, (size_t)r->L * H) == 0);
    // saved attention probabilities of the last layer: each row sums to 1
    int NH = model->cfg.num_attention_heads, L = r->L;
    const float *att = model->acts.att + (size_t)(model->cfg.num_hidden_layers - 1) * NH * L * model->max_len;
    double worst = 0;
    for (int row = 0; row < NH * L; row++) {
        double s = 0;
        for (int j = 0; j < L; j++) s += att[(size_t)row * L + j];
        worst = fmax(worst, fabs(s - 1));
    }
    CHECK(worst < 1e-5);
    mt_bert_reserve(model, 256, 4, 128, 0, 0);
    free(a); free(b);
}

TEST(refuses_bad_batches) {
    int32_t *ids = calloc(600, sizeof(int32_t)), len = 513;
    ids[0] = 101;
    CHECK(mt_bert_forward(model, ids, NULL, &len, 1, 600, NULL, NULL) != 0);
    CHECK(strstr(mt_bert_error(model), "513 tokens") && strstr(mt_bert_error(model), "max_position_embeddings"));
    len = 3;
    ids[1] = 30522;
    CHECK(mt_bert_forward(model, ids, NULL, &len, 1, 3, NULL, NULL) != 0);
    CHECK(strstr(mt_bert_error(model), "token id 30522 outside the vocabulary"));
    ids[1] = 7;
    int32_t types[3] = {0, 2, 0};
    CHECK(mt_bert_forward(model, ids, types, &len, 1, 3, NULL, NULL) != 0);
    CHECK(strstr(mt_bert_error(model), "token type 2"));
    len = 0;
    CHECK(mt_bert_forward(model, ids, NULL, &len, 1, 3, NULL, NULL) != 0);
    CHECK(strstr(mt_bert_error(model), "length 0"));
    len = 3;
    CHECK(mt_bert_forward(model, ids, NULL, &len, 1, 3, NULL, NULL) == 0);  // and it still works
    free(ids);
}

// A plan's bound on sequences x longest (embed's batcher, mt_bert_reserve's max_padded) is kept:
// a batch within the other bounds but past it is refused, as any batch outside the plan.
TEST(a_plan_bounds_sequences_x_longest) {
    char err[512];
    mt_bert *m = mt_bert_load(getenv("MTBERT_MODEL") ? getenv("MTBERT_MODEL") : "models/all-MiniLM-L6-v2",
                              mt_backend_cpu_staged(), err, sizeof err);
    CHECK(m != NULL);
    if (!m) return;
    mt_bert_reserve(m, 64, 4, 32, 0, 40);  // up to 4 sequences of up to 32, but 4 x 32 > 40
    int32_t ids[3 * 20] = {0}, len[3] = {20, 20, 20};
    for (int b = 0; b < 3; b++) ids[b * 20] = 101, ids[b * 20 + 1] = 2023, ids[b * 20 + 19] = 102;
    CHECK(mt_bert_forward(m, ids, NULL, len, 2, 20, NULL, NULL) == 0);  // 2 x 20
    CHECK(mt_bert_forward(m, ids, NULL, len, 3, 20, NULL, NULL) != 0);  // 3 x 20 > 40
    CHECK(strstr(mt_bert_error(m), "sequences x longest 40") != NULL);
    mt_bert_free(m);
}

int main(void) {
    const char *dir = getenv("MTBERT_MODEL") ? getenv("MTBERT_MODEL") : "models/all-MiniLM-L6-v2";
    if (load_refs("tests/ref/encoder_minilm.bin.gz")) {
        printf("not ok 1 - cannot read tests/ref/encoder_minilm.bin.gz (run from the repository root)\n");
        return 1;
    }
    model = mt_bert_load(dir, mt_backend_cpu(), err, sizeof err);
    if (!model) {
        printf("not ok 1 - load %s: %s\n", dir, err);
        return 1;
    }
    // one thread for the many small unbatched forwards: on shared cores, thread barriers
    // would dominate their run time (the batched test uses every thread)
    threads = omp_threads();
    mt_bert_set_threads(model, 1);
    RUN(model_metadata);
    RUN(unbatched_matches_pytorch);
    RUN(batched_with_padding_equals_unbatched);
    RUN(training_layout_gives_the_same_outputs);
    RUN(refuses_bad_batches);
    RUN(a_plan_bounds_sequences_x_longest);
    mt_bert_free(model);
    for (int i = 0; i < nrefs; i++) {
        free(refs[i].ids); free(refs[i].types); free(refs[i].pos);
        free(refs[i].rows); free(refs[i].mean); free(refs[i].pooled);
    }
    for (int i = 0; i < KEEP; i++) { free(alone_hidden[i]); free(alone_mean[i]); }
    free(refs);
    return check_summary();
}
