// test_bert_load.c — model directories, good and bad: a tiny BERT written with the
// safetensors writer loads and runs; a missing tensor, a mis-shaped tensor, half a pooler,
// a truncated or garbage weights file and a bad config.json each fail with a message that
// names the problem.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bert.h"
#include "check.h"
#include "safetensors.h"

enum { V = 10, C = 8, NL = 1, F = 16, P = 16, TV = 2 };
static char dir[] = "/tmp/mt_bert_XXXXXX", path[300], err[1024];
static const char *config_json =
    "{\"vocab_size\": 10, \"hidden_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
    " \"intermediate_size\": 16, \"max_position_embeddings\": 16, \"type_vocab_size\": 2,"
    " \"layer_norm_eps\": 1e-12, \"hidden_act\": \"gelu\"}";

static void write_text(const char *name, const char *text) {
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

// Writes the tiny model's weights; skip names one tensor to leave out, reshape one to give
// the wrong shape; prefix is prepended to every name.
static void write_weights(const char *prefix, const char *skip, const char *reshape, int pooler) {
    static float data[V * C * 4];
    for (size_t i = 0; i < sizeof data / sizeof data[0]; i++) data[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
    static const struct { const char *name; int d0, d1; } base[] = {
        {"embeddings.word_embeddings.weight", V, C}, {"embeddings.position_embeddings.weight", P, C},
        {"embeddings.token_type_embeddings.weight", TV, C}, {"embeddings.LayerNorm.weight", C, 0},
        {"embeddings.LayerNorm.bias", C, 0},
        {"encoder.layer.0.attention.self.query.weight", C, C}, {"encoder.layer.0.attention.self.query.bias", C, 0},
        {"encoder.layer.0.attention.self.key.weight", C, C}, {"encoder.layer.0.attention.self.key.bias", C, 0},
        {"encoder.layer.0.attention.self.value.weight", C, C}, {"encoder.layer.0.attention.self.value.bias", C, 0},
        {"encoder.layer.0.attention.output.dense.weight", C, C}, {"encoder.layer.0.attention.output.dense.bias", C, 0},
        {"encoder.layer.0.attention.output.LayerNorm.weight", C, 0},
        {"encoder.layer.0.attention.output.LayerNorm.bias", C, 0},
        {"encoder.layer.0.intermediate.dense.weight", F, C}, {"encoder.layer.0.intermediate.dense.bias", F, 0},
        {"encoder.layer.0.output.dense.weight", C, F}, {"encoder.layer.0.output.dense.bias", C, 0},
        {"encoder.layer.0.output.LayerNorm.weight", C, 0}, {"encoder.layer.0.output.LayerNorm.bias", C, 0},
        {"pooler.dense.weight", C, C}, {"pooler.dense.bias", C, 0},
    };
    int n_base = sizeof base / sizeof base[0] - (pooler == 2 ? 0 : pooler == 1 ? 1 : 2);
    mt_st_write_tensor ts[32];
    static char names[32][128];
    int n = 0;
    for (int i = 0; i < n_base; i++) {
        if (skip && strcmp(skip, base[i].name) == 0) continue;
        snprintf(names[n], sizeof names[n], "%s%s", prefix, base[i].name);
        mt_st_write_tensor t = {names[n], base[i].d1 ? 2 : 1, {base[i].d0, base[i].d1}, data};
        if (reshape && strcmp(reshape, base[i].name) == 0) t.shape[0] += 1;
        ts[n++] = t;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (mt_safetensors_write(path, ts, n, err, sizeof err)) printf("# write: %s\n", err);
}

// Loading must fail with a message containing want.
static int load_fails(const char *want) {
    mt_bert *m = mt_bert_load(dir, mt_backend_cpu(), err, sizeof err);
    if (m) { mt_bert_free(m); printf("# loaded a bad model (wanted '%s')\n", want); return 0; }
    if (!strstr(err, want)) { printf("# message '%s' lacks '%s'\n", err, want); return 0; }
    return 1;
}

TEST(tiny_model_loads_and_runs) {
    write_text("config.json", config_json);
    for (int variant = 0; variant < 2; variant++) {
        write_weights(variant ? "bert." : "", NULL, NULL, 2);  // BertModel and BertFor* naming
        mt_bert *m = mt_bert_load(dir, mt_backend_cpu(), err, sizeof err);
        CHECK(m != NULL);
        if (!m) { printf("# %s\n", err); return; }
        CHECK(m->has_pooler && m->num_param_tensors == 23);
        int32_t ids[6] = {2, 5, 3, 2, 9, 0}, lens[2] = {3, 2};
        float hidden[2 * 3 * C], pooled[2 * C];
        CHECK(mt_bert_forward(m, ids, NULL, lens, 2, 3, hidden, pooled) == 0);
        double norm = 0;  // LayerNorm output with unit-ish weights: not all zero
        for (int i = 0; i < 3 * C; i++) norm += hidden[i] * hidden[i];
        CHECK(norm > 0.1);
        CHECK(pooled[0] > -1 && pooled[0] < 1);
        snprintf(path, sizeof path, "%s/config.json", dir);  // a file: no checkpoint goes into it
        CHECK(mt_bert_save(m, path, err, sizeof err) != 0 && strstr(err, "not a directory"));
        mt_bert_free(m);
    }
}

TEST(checkpoint_without_pooler) {
    write_text("config.json", config_json);
    write_weights("", NULL, NULL, 0);
    mt_bert *m = mt_bert_load(dir, mt_backend_cpu(), err, sizeof err);
    CHECK(m && !m->has_pooler && m->pool_w == NULL);
    if (!m) return;
    int32_t ids[2] = {1, 2}, len = 2;
    float hidden[2 * C], pooled[C];
    CHECK(mt_bert_forward(m, ids, NULL, &len, 1, 2, hidden, NULL) == 0);
    CHECK(mt_bert_forward(m, ids, NULL, &len, 1, 2, hidden, pooled) != 0 && strstr(mt_bert_error(m), "no pooler"));
    mt_bert_free(m);
    write_weights("", NULL, NULL, 1);  // weight without bias
    CHECK(load_fails("missing tensor 'pooler.dense.bias'"));
}

TEST(missing_and_misshaped_tensors) {
    write_text("config.json", config_json);
    write_weights("", "encoder.layer.0.output.dense.weight", NULL, 2);
    CHECK(load_fails("model.safetensors: missing tensor 'encoder.layer.0.output.dense.weight'"));
    write_weights("", NULL, "encoder.layer.0.intermediate.dense.weight", 2);
    CHECK(load_fails("tensor 'encoder.layer.0.intermediate.dense.weight' has shape [17, 8], config.json implies [16, 8]"));
    write_weights("", NULL, "embeddings.LayerNorm.bias", 2);
    CHECK(load_fails("tensor 'embeddings.LayerNorm.bias' has shape [9], config.json implies [8]"));
    write_weights("bert.", "encoder.layer.0.attention.self.key.bias", NULL, 2);
    CHECK(load_fails("missing tensor 'bert.encoder.layer.0.attention.self.key.bias'"));
}

TEST(broken_files) {
    write_text("config.json", config_json);
    write_weights("", NULL, NULL, 2);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(truncate(path, 2000) == 0);
    CHECK(load_fails("(truncated file?)"));
    FILE *f = fopen(path, "wb");  // header length 16, then 16 bytes of garbage
    fwrite("\x10\0\0\0\0\0\0\0{not json at all", 1, 24, f);
    fclose(f);
    CHECK(load_fails("header is not valid JSON"));
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    CHECK(load_fails("model.safetensors: cannot open"));
    write_weights("", NULL, NULL, 2);
    write_text("config.json", "{\"vocab_size\": 10, \"hidden_size\": 8, \"num_hidden_layers\": 1, "
                              "\"num_attention_heads\": 3, \"intermediate_size\": 16}");
    CHECK(load_fails("config.json: num_attention_heads (3) does not divide hidden_size (8)"));
    write_text("config.json", "{\"vocab_size\": 10, \"hidden_size\": 8, \"num_hidden_layers\": 0, "
                              "\"num_attention_heads\": 2, \"intermediate_size\": 16}");
    CHECK(load_fails("\"num_hidden_layers\" must be an integer"));
    write_text("config.json", "{\"vocab_size\": 10,");
    CHECK(load_fails("config.json: not valid JSON"));
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    CHECK(load_fails("config.json: cannot open"));
    // a config that disagrees with the weights: the first mis-shaped tensor is named
    write_text("config.json", "{\"vocab_size\": 11, \"hidden_size\": 8, \"num_hidden_layers\": 1, "
                              "\"num_attention_heads\": 2, \"intermediate_size\": 16, \"max_position_embeddings\": 16}");
    CHECK(load_fails("tensor 'embeddings.word_embeddings.weight' has shape [10, 8], config.json implies [11, 8]"));
}

int main(void) {
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    RUN(tiny_model_loads_and_runs);
    RUN(checkpoint_without_pooler);
    RUN(missing_and_misshaped_tensors);
    RUN(broken_files);
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    rmdir(dir);
    return check_summary();
}
