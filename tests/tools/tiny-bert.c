// tiny-bert — writes a small randomly initialised BERT directory (config.json, vocab.txt,
// model.safetensors) that shares a real model's vocabulary, so token shards of that model
// fit it. The training tests use it: a step takes milliseconds, a checkpoint a few MB.
//
//   build/tests/tools/tiny-bert VOCAB.txt OUTDIR [hidden layers heads intermediate seed]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "common.h"
#include "rng.h"
#include "safetensors.h"

typedef struct { char name[96]; int d0, d1; float *data; } tensor;

static tensor *tensors;
static int n_tensors;

// Weights uniform(-0.05, 0.05), biases 0, LayerNorm weights 1 (kind 0, 1, 2).
static void add(const char *name, int d0, int d1, int kind, uint64_t seed) {
    tensors = mt_realloc(tensors, (size_t)(n_tensors + 1) * sizeof *tensors);
    tensor *t = &tensors[n_tensors];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->d0 = d0, t->d1 = d1;
    size_t n = (size_t)d0 * (d1 ? d1 : 1);
    t->data = mt_malloc(n * sizeof(float));
    mt_rng r;
    mt_rng_init(&r, seed, (uint32_t)n_tensors, MT_SITE_INIT);
    for (size_t i = 0; i < n; i++) t->data[i] = kind == 0 ? 0.1f * (mt_rng_uniform(&r) - 0.5f) : kind == 2 ? 1.0f : 0.0f;
    n_tensors++;
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) mt_die("%s: cannot open", path);
    int n = 0, c;
    while ((c = fgetc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

static void add_layer(int l, int C, int F, uint64_t seed) {
    char n[96];
    static const char *const qkv[3] = {"query", "key", "value"};
    for (int i = 0; i < 3; i++) {
        snprintf(n, sizeof n, "encoder.layer.%d.attention.self.%s.weight", l, qkv[i]), add(n, C, C, 0, seed);
        snprintf(n, sizeof n, "encoder.layer.%d.attention.self.%s.bias", l, qkv[i]), add(n, C, 0, 1, seed);
    }
    snprintf(n, sizeof n, "encoder.layer.%d.attention.output.dense.weight", l), add(n, C, C, 0, seed);
    snprintf(n, sizeof n, "encoder.layer.%d.attention.output.dense.bias", l), add(n, C, 0, 1, seed);
    snprintf(n, sizeof n, "encoder.layer.%d.attention.output.LayerNorm.weight", l), add(n, C, 0, 2, seed);
    snprintf(n, sizeof n, "encoder.layer.%d.attention.output.LayerNorm.bias", l), add(n, C, 0, 1, seed);
    snprintf(n, sizeof n, "encoder.layer.%d.intermediate.dense.weight", l), add(n, F, C, 0, seed);
    snprintf(n, sizeof n, "encoder.layer.%d.intermediate.dense.bias", l), add(n, F, 0, 1, seed);
    snprintf(n, sizeof n, "encoder.layer.%d.output.dense.weight", l), add(n, C, F, 0, seed);
    snprintf(n, sizeof n, "encoder.layer.%d.output.dense.bias", l), add(n, C, 0, 1, seed);
    snprintf(n, sizeof n, "encoder.layer.%d.output.LayerNorm.weight", l), add(n, C, 0, 2, seed);
    snprintf(n, sizeof n, "encoder.layer.%d.output.LayerNorm.bias", l), add(n, C, 0, 1, seed);
}

int main(int argc, char **argv) {
    mt_set_prog(argv[0]);
    if (argc != 3 && argc != 8) mt_die("usage: tiny-bert VOCAB.txt OUTDIR [hidden layers heads intermediate seed]");
    int C = argc > 3 ? atoi(argv[3]) : 32, L = argc > 3 ? atoi(argv[4]) : 2, NH = argc > 3 ? atoi(argv[5]) : 2;
    int F = argc > 3 ? atoi(argv[6]) : 64;
    uint64_t seed = argc > 3 ? strtoull(argv[7], NULL, 10) : 1;
    int V = count_lines(argv[1]), P = 512;
    char mkerr[4300];
    if (mt_mkdirs(argv[2], mkerr, sizeof mkerr) != 0) mt_die("%s", mkerr);
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/vocab.txt", argv[2]);
    if (mt_copy_file(argv[1], path, err, sizeof err)) mt_die("%s", err);
    snprintf(path, sizeof path, "%s/config.json", argv[2]);
    FILE *f = fopen(path, "w");
    if (!f) mt_die("cannot write %s", path);
    fprintf(f, "{\"architectures\": [\"BertModel\"], \"model_type\": \"bert\", \"hidden_act\": \"gelu\", "
               "\"hidden_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
               "\"intermediate_size\": %d, \"vocab_size\": %d, \"max_position_embeddings\": %d, "
               "\"type_vocab_size\": 2, \"pad_token_id\": 0, \"layer_norm_eps\": 1e-12, "
               "\"position_embedding_type\": \"absolute\", \"hidden_dropout_prob\": 0.1, "
               "\"attention_probs_dropout_prob\": 0.1, \"initializer_range\": 0.02}\n", C, L, NH, F, V, P);
    fclose(f);
    add("embeddings.word_embeddings.weight", V, C, 0, seed);
    add("embeddings.position_embeddings.weight", P, C, 0, seed);
    add("embeddings.token_type_embeddings.weight", 2, C, 0, seed);
    add("embeddings.LayerNorm.weight", C, 0, 2, seed);
    add("embeddings.LayerNorm.bias", C, 0, 1, seed);
    for (int l = 0; l < L; l++) add_layer(l, C, F, seed);
    add("pooler.dense.weight", C, C, 0, seed);
    add("pooler.dense.bias", C, 0, 1, seed);
    mt_st_write_tensor *w = mt_calloc((size_t)n_tensors, sizeof *w);
    for (int i = 0; i < n_tensors; i++) {
        w[i] = (mt_st_write_tensor){.name = tensors[i].name, .ndim = tensors[i].d1 ? 2 : 1, .data = tensors[i].data};
        w[i].shape[0] = tensors[i].d0, w[i].shape[1] = tensors[i].d1;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", argv[2]);
    if (mt_safetensors_write(path, w, n_tensors, err, sizeof err)) mt_die("%s", err);
    for (int i = 0; i < n_tensors; i++) free(tensors[i].data);
    free(tensors), free(w);
    return 0;
}
