// test_bert_backward.c — the whole encoder's backward on a tiny random BERT (2 layers, C = 32,
// 4 heads, F = 64) written with the safetensors writer: gradients of loss = sum(hidden * R)
// against central finite differences for a sample of elements of EVERY parameter tensor,
// without and with dropout; the training forward with p = 0 equals the inference forward bit
// for bit; gradients accumulate; dropout masks replay from their key; checkpoints round-trip;
// the optimizer's tensor information.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bert.h"
#include "check.h"
#include "rand.h"
#include "safetensors.h"

// fp32 forward, double loss: EPS 1e-2 keeps rounding noise (~1e-4 after dividing by 2 EPS)
// and truncation error (O(EPS^2)) both well below the tolerance |fd - g| <= ATOL + RTOL |fd|.
#define EPS 1e-2f
#define ATOL 2e-3
#define RTOL 1e-2
#define SAMPLES 5  // elements checked per tensor

enum { V = 30, C = 32, NL = 2, NH = 4, F = 64, P = 20, TV = 2, B = 3 };
static const int32_t offsets[B + 1] = {0, 5, 6, 14};  // lengths 5, 1, 8
enum { N = 14 };
static int32_t ids[N], types[N];
static float R[N * C];
static char dir[] = "/tmp/mt_bert_bwd_XXXXXX", err[1024];
static mt_bert *m;
// Random weights for every tensor of the tiny config: LayerNorm weights near 1, the rest small.
static int write_tiny_model(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "{\"vocab_size\": %d, \"hidden_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d,"
               " \"intermediate_size\": %d, \"max_position_embeddings\": %d, \"type_vocab_size\": %d,"
               " \"layer_norm_eps\": 1e-12, \"hidden_act\": \"gelu\", \"model_type\": \"bert\"}\n",
            V, C, NL, NH, F, P, TV);
    fclose(f);
    static const struct { const char *suffix; int d0, d1; } per_layer[] = {
        {"attention.self.query.weight", C, C}, {"attention.self.query.bias", C, 0},
        {"attention.self.key.weight", C, C}, {"attention.self.key.bias", C, 0},
        {"attention.self.value.weight", C, C}, {"attention.self.value.bias", C, 0},
        {"attention.output.dense.weight", C, C}, {"attention.output.dense.bias", C, 0},
        {"attention.output.LayerNorm.weight", C, 0}, {"attention.output.LayerNorm.bias", C, 0},
        {"intermediate.dense.weight", F, C}, {"intermediate.dense.bias", F, 0},
        {"output.dense.weight", C, F}, {"output.dense.bias", C, 0},
        {"output.LayerNorm.weight", C, 0}, {"output.LayerNorm.bias", C, 0},
    };
    static char names[64][96];
    static float data[64][F * C];
    mt_st_write_tensor ts[64];
    int n = 0;
    struct { const char *name; int d0, d1; } top[] = {
        {"embeddings.word_embeddings.weight", V, C}, {"embeddings.position_embeddings.weight", P, C},
        {"embeddings.token_type_embeddings.weight", TV, C}, {"embeddings.LayerNorm.weight", C, 0},
        {"embeddings.LayerNorm.bias", C, 0}, {"pooler.dense.weight", C, C}, {"pooler.dense.bias", C, 0}};
    for (int i = 0; i < 7 + NL * 16; i++) {
        if (i < 7) {
            snprintf(names[n], sizeof names[n], "%s", top[i].name);
            ts[n] = (mt_st_write_tensor){names[n], top[i].d1 ? 2 : 1, {top[i].d0, top[i].d1}, data[n]};
        } else {
            int l = (i - 7) / 16, k = (i - 7) % 16;
            snprintf(names[n], sizeof names[n], "encoder.layer.%d.%s", l, per_layer[k].suffix);
            ts[n] = (mt_st_write_tensor){names[n], per_layer[k].d1 ? 2 : 1, {per_layer[k].d0, per_layer[k].d1},
                                         data[n]};
        }
        int is_ln_w = strstr(names[n], "LayerNorm.weight") != NULL, is_emb = strstr(names[n], "embeddings.") &&
                      !strstr(names[n], "LayerNorm");
        int64_t count = ts[n].shape[0] * (ts[n].ndim == 2 ? ts[n].shape[1] : 1);
        for (int64_t j = 0; j < count; j++)
            data[n][j] = is_ln_w ? 1.0f + 0.2f * frand() : is_emb ? frand() : 0.3f * frand();
        n++;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    return mt_safetensors_write(path, ts, n, err, sizeof err);
}

static double loss_now(void) {
    const float *h = mt_bert_forward_train(m, ids, types, offsets, B, &m->drop);
    double s = 0;
    for (int i = 0; i < N * C; i++) s += (double)h[i] * R[i];
    return s;
}

// Gradients of the current forward (dropout drop) by backward, into a fresh buffer.
static float *backward_grads(const mt_bert_dropout *drop) {
    float *grads = calloc(m->num_params, sizeof(float)), dh[N * C];
    CHECK(mt_bert_forward_train(m, ids, types, offsets, B, drop) != NULL);
    memcpy(dh, R, sizeof dh);
    mt_bert_backward(m, dh, grads);
    return grads;
}

// For SAMPLES elements of every tensor but the pooler's: word rows that occur (and one that
// does not) for the word embeddings, real positions for the position embeddings.
static double fd_every_tensor(const float *grads, const char *what) {
    double worst = 0, worst_abs = 0;
    int checked = 0;
    for (int t = 0; t < m->num_param_tensors; t++) {
        const mt_bert_param *p = &m->param_table[t];
        if (strncmp(p->name, "pooler.", 7) == 0) continue;
        for (int s = 0; s < SAMPLES; s++) {
            size_t i = (size_t)((frand() + 1.0f) * 0.5f * (float)p->numel) % p->numel;
            if (t == 0) i = (size_t)(s < SAMPLES - 1 ? ids[(s * 5) % N] : 29) * C + (size_t)s * 7 % C;  // word 29 unused
            if (t == 1) i = (size_t)(s % 8) * C + (size_t)s * 5 % C;
            float *x = m->params + p->offset + i, saved = *x;
            *x = saved + EPS;
            double up = loss_now();
            *x = saved - EPS;
            double down = loss_now();
            *x = saved;
            double fd = (up - down) / (2.0 * EPS), g = grads[p->offset + i], d = fabs(fd - g);
            if (d > ATOL + RTOL * fabs(fd)) printf("# %s[%zu]: fd %.6g, backward %.6g\n", p->name, i, fd, g);
            worst = fmax(worst, d / (ATOL + RTOL * fabs(fd)));
            worst_abs = fmax(worst_abs, d);
            checked++;
        }
    }
    printf("# %s: %d elements of %d tensors, max |fd - backward| %.2e, worst ratio to tolerance %.3f\n", what,
           checked, m->num_param_tensors - 2, worst_abs, worst);
    return worst;
}

TEST(training_forward_without_dropout_is_the_inference_forward) {
    enum { T = 8 };
    int32_t pid[B * T] = {0}, pty[B * T] = {0}, lengths[B];
    for (int b = 0; b < B; b++) {
        lengths[b] = offsets[b + 1] - offsets[b];
        memcpy(pid + b * T, ids + offsets[b], sizeof(int32_t) * lengths[b]);
        memcpy(pty + b * T, types + offsets[b], sizeof(int32_t) * lengths[b]);
    }
    float padded[B * T * C];
    CHECK(mt_bert_forward(m, pid, pty, lengths, B, T, padded, NULL) == 0);
    mt_bert_dropout off = {0.0f, 7, 3, 1};
    const float *h = mt_bert_forward_train(m, ids, types, offsets, B, &off);
    CHECK(h != NULL);
    int same = 1;
    for (int b = 0; b < B; b++)
        same &= memcmp(padded + b * T * C, h + offsets[b] * C, sizeof(float) * lengths[b] * C) == 0;
    CHECK(same);
    CHECK(mt_bert_forward_train(m, ids, types, offsets, B, NULL) == h);  // NULL: no dropout either
}

TEST(encoder_backward_matches_finite_differences) {
    mt_bert_dropout off = {0};
    float *grads = backward_grads(&off);
    CHECK(fd_every_tensor(grads, "no dropout") <= 1);
    int pooler_zero = 1, unused_word_zero = 1;
    for (size_t i = m->param_table[m->num_param_tensors - 2].offset; i < m->num_params; i++) pooler_zero &= grads[i] == 0;
    for (int c = 0; c < C; c++) unused_word_zero &= grads[29 * C + c] == 0;
    CHECK(pooler_zero);
    CHECK(unused_word_zero);
    free(grads);
}

TEST(encoder_backward_with_dropout_matches_finite_differences) {
    mt_bert_dropout drop = {0.1f, 99, 4, 2};  // fixed masks: the loss is a function of the weights
    float *grads = backward_grads(&drop);
    CHECK(fd_every_tensor(grads, "dropout 0.1") <= 1);
    free(grads);
}

TEST(gradients_accumulate_and_masks_replay) {
    mt_bert_dropout drop = {0.1f, 5, 11, 0};
    float *once = backward_grads(&drop), *twice = backward_grads(&drop), dh[N * C];
    memcpy(dh, R, sizeof dh);
    mt_bert_backward(m, dh, twice);  // the same forward's gradients again, added
    // not bit-exact: sgemm adds its K blocks into the existing values one by one
    double worst = 0, largest = 0;
    for (size_t i = 0; i < m->num_params; i++) {
        worst = fmax(worst, fabs(twice[i] - 2.0 * once[i]));
        largest = fmax(largest, fabs(once[i]));
    }
    CHECK(largest > 0 && worst <= 1e-5 * largest);
    // same key → same bits; another step or pass → other masks; p = 0.1 really drops
    float a[N * C], b[N * C];
    memcpy(a, mt_bert_forward_train(m, ids, types, offsets, B, &drop), sizeof a);
    memcpy(b, mt_bert_forward_train(m, ids, types, offsets, B, &drop), sizeof b);
    CHECK(memcmp(a, b, sizeof a) == 0);
    mt_bert_dropout other = drop;
    other.step++;
    memcpy(b, mt_bert_forward_train(m, ids, types, offsets, B, &other), sizeof b);
    CHECK(memcmp(a, b, sizeof a) != 0);
    other = drop;
    other.pass++;
    memcpy(b, mt_bert_forward_train(m, ids, types, offsets, B, &other), sizeof b);
    CHECK(memcmp(a, b, sizeof a) != 0);
    memcpy(b, mt_bert_forward_train(m, ids, types, offsets, B, NULL), sizeof b);
    CHECK(memcmp(a, b, sizeof a) != 0);
    free(once); free(twice);
}

TEST(training_forward_refuses_bad_input) {
    int32_t bad_offsets[3] = {0, 3, 3};
    CHECK(mt_bert_forward_train(m, ids, types, bad_offsets, 2, NULL) == NULL);
    CHECK(strstr(mt_bert_error(m), "sequence 1 has length 0") != NULL);
    mt_bert_dropout p1 = {1.0f, 0, 0, 0};
    CHECK(mt_bert_forward_train(m, ids, types, offsets, B, &p1) == NULL);
    CHECK(strstr(mt_bert_error(m), "outside [0, 1)") != NULL);
    int32_t bad_ids[N];
    memcpy(bad_ids, ids, sizeof bad_ids);
    bad_ids[6] = V;
    CHECK(mt_bert_forward_train(m, bad_ids, types, offsets, B, NULL) == NULL);
    CHECK(strstr(mt_bert_error(m), "sequence 2, position 0: token id 30") != NULL);
    CHECK(mt_bert_forward_train(m, ids, types, offsets, B, NULL) != NULL);
}

TEST(save_round_trips) {
    char out[400], path[500];
    snprintf(out, sizeof out, "%s/saved/nested", dir);  // parents created too
    CHECK(mt_bert_save(m, out, err, sizeof err) == 0);
    mt_bert *r = mt_bert_load(out, mt_backend_cpu(), err, sizeof err);
    CHECK(r != NULL);
    if (!r) { printf("# %s\n", err); return; }
    CHECK(r->num_params == m->num_params && r->has_pooler == m->has_pooler);
    CHECK(memcmp(r->params, m->params, m->num_params * sizeof(float)) == 0);
    CHECK(strcmp(r->config_json, m->config_json) == 0);
    mt_bert_free(r);
    snprintf(path, sizeof path, "%s/model.safetensors.tmp.%ld", out, (long)getpid());
    CHECK(access(path, F_OK) != 0);  // no temporary left behind
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK(mt_bert_save(m, path, err, sizeof err) != 0);  // a file where the directory should be
    CHECK(strstr(err, "config.json") != NULL);
}

TEST(tensor_info_for_the_optimizer) {
    struct mt_bert_tensor_info info[64];
    int n = mt_bert_tensor_info(m, info, 64);
    CHECK(n == 5 + 16 * NL + 2 && mt_bert_tensor_info(m, NULL, 0) == n);
    size_t covered = 0;
    int ok = 1;
    for (int i = 0; i < n; i++) {
        ok &= info[i].offset == covered;  // contiguous, in params order
        covered += info[i].size;
    }
    CHECK(ok && covered == m->num_params);
    CHECK(info[0].layer == -1 && info[0].decay == 1);  // word embeddings decay, as in HF
    CHECK(info[3].layer == -1 && info[3].decay == 0 && strcmp(info[3].name, "embeddings.LayerNorm.weight") == 0);
    CHECK(info[5].layer == 0 && info[5].decay == 1 && strstr(info[5].name, "query.weight"));
    CHECK(info[8].decay == 0 && strstr(info[8].name, "query.bias"));
    CHECK(info[5 + 16].layer == 1);
    CHECK(info[n - 2].layer == NL && info[n - 2].decay == 1 && info[n - 1].decay == 0);
    struct mt_bert_tensor_info two[2];
    CHECK(mt_bert_tensor_info(m, two, 2) == n && two[1].offset == info[1].offset);
}

int main(void) {
    if (!mkdtemp(dir) || write_tiny_model()) {
        printf("not ok 1 - cannot write the tiny model in %s: %s\n", dir, err);
        return 1;
    }
    m = mt_bert_load(dir, mt_backend_cpu(), err, sizeof err);
    if (!m) {
        printf("not ok 1 - load: %s\n", err);
        return 1;
    }
    for (int i = 0; i < N; i++) ids[i] = (int32_t)((frand() + 1.0f) * 14.0f), types[i] = i % 3 == 2;  // words < 29
    for (int i = 0; i < N * C; i++) R[i] = frand();
    mt_bert_reserve(m, N, B, 8, 1, 0);
    RUN(training_forward_without_dropout_is_the_inference_forward);
    RUN(encoder_backward_matches_finite_differences);
    RUN(encoder_backward_with_dropout_matches_finite_differences);
    RUN(gradients_accumulate_and_masks_replay);
    RUN(training_forward_refuses_bad_input);
    RUN(save_round_trips);
    RUN(tensor_info_for_the_optimizer);
    mt_bert_free(m);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    return check_summary();
}
