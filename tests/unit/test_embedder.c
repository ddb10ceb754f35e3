// test_embedder.c — embed's sentence-model path (lib/embedder.c) on the MiniLM encoder and a
// random sbert-cnn-bilstm sentence model, through a cpu-staged table that counts its copies:
// the single sentences of pairs are gathered from the packed states in one launch per batch,
// however many there are, and the embeddings are the CPU backend's bits.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common.h"
#include "embedder.h"
#include "rng.h"
#include "stream.h"
#include "taskmodel.h"

static char dir[256];  // a checkpoint: MiniLM's files (linked) and a random heads.safetensors
static long copies;    // copy_2d and embeddings_forward calls on the counted table

static void count_copy_2d(float *dst, int ldd, const float *src, int lds, int rows, int cols) {
    copies++;
    mt_backend_cpu_staged()->copy_2d(dst, ldd, src, lds, rows, cols);
}
static void count_embeddings(float *out, const int32_t *ids, const int32_t *types, const int32_t *pos,
                             const float *wte, const float *wpe, const float *wtt, int N, int C) {
    copies++;
    mt_backend_cpu_staged()->embeddings_forward(out, ids, types, pos, wte, wpe, wtt, N, C);
}

static void make_checkpoint(void) {
    const char *root = getenv("MTBERT_ROOT") ? getenv("MTBERT_ROOT") : ".";
    snprintf(dir, sizeof dir, "/tmp/mt_test_embedder_XXXXXX");
    if (!mkdtemp(dir)) mt_die("mkdtemp failed");
    const char *files[] = {"config.json", "vocab.txt", "model.safetensors"};
    char src[4096], dst[4096], err[512];
    for (int i = 0; i < 3; i++) {
        snprintf(src, sizeof src, "%s/models/all-MiniLM-L6-v2/%s", root, files[i]);
        if (src[0] != '/') {
            char cwd[2048];
            snprintf(src, sizeof src, "%s/%s/models/all-MiniLM-L6-v2/%s", getcwd(cwd, sizeof cwd), root, files[i]);
        }
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        if (symlink(src, dst)) mt_die("symlink %s failed", dst);
    }
    mt_sentence_config sc = mt_sentence_default_config(MT_SENT_SBERT_CNN_BILSTM, 384, 8, 8);
    mt_taskmodel tm;
    mt_taskmodel_init(&tm, &sc, MT_PAIR_ENSEMBLE, 5);
    snprintf(dst, sizeof dst, "%s/heads.safetensors", dir);
    if (mt_taskmodel_save(&tm, dst, err, sizeof err)) mt_die("%s", err);
    mt_taskmodel_free(&tm);
}

// A token stream of n pairs (ids_a, ids_b, ids_ab with types_ab) of 3..10 word pieces each.
static void write_pairs(const char *path, int n) {
    char vocab[300], fp[17];
    snprintf(vocab, sizeof vocab, "%s/vocab.txt", dir);
    mt_file_fingerprint(vocab, fp);
    mt_meta meta = {0};
    mt_meta_set(&meta, "kind", "tokens");
    mt_meta_set(&meta, "vocab_fp", fp);
    mt_writer *w = mt_writer_open(path, &meta);
    mt_rng r;
    mt_rng_init(&r, 11, 0, 0);
    mt_record rec = {0};
    for (int i = 0; i < n; i++) {
        mt_record_clear(&rec);
        char id[16];
        snprintf(id, sizeof id, "p%d", i);
        mt_record_set_id(&rec, id);
        int la = 3 + (int)mt_rng_below(&r, 8), lb = 3 + (int)mt_rng_below(&r, 8);
        int32_t *a = mt_record_add1(&rec, "ids_a", MT_I32, la)->data;
        int32_t *b = mt_record_add1(&rec, "ids_b", MT_I32, lb)->data;
        int32_t *ab = mt_record_add1(&rec, "ids_ab", MT_I32, la + lb - 1)->data;
        int32_t *ty = mt_record_add1(&rec, "types_ab", MT_I32, la + lb - 1)->data;
        for (int t = 0; t < la; t++) a[t] = t == 0 ? 101 : t == la - 1 ? 102 : 2000 + (int32_t)mt_rng_below(&r, 5000);
        for (int t = 0; t < lb; t++) b[t] = t == 0 ? 101 : t == lb - 1 ? 102 : 2000 + (int32_t)mt_rng_below(&r, 5000);
        memcpy(ab, a, (size_t)la * sizeof *ab), memcpy(ab + la, b + 1, (size_t)(lb - 1) * sizeof *ab);
        for (int t = 0; t < la + lb - 1; t++) ty[t] = t >= la;
        mt_writer_put(w, &rec);
    }
    mt_writer_close(w);
    mt_record_free(&rec), mt_meta_free(&meta);
}

static void embed_file(const mt_backend *be, const char *in, const char *out) {
    mt_embed_options o = mt_embed_defaults();
    o.pool = MT_EMBED_POOL_SBERT_CNN_BILSTM;
    mt_embedder *e = mt_embedder_open(dir, be, 2, &o);
    mt_embed_stream(e, in, out);
    mt_embedder_close(e);
}

// 2 pairs and 12 pairs (one batch each: 6 and 36 sequences, a few hundred tokens): the copies
// per batch do not grow with the sentences; cpu-staged gives the CPU's bytes.
TEST(pairs_gather_in_one_launch) {
    mt_backend counted = *mt_backend_cpu_staged();
    counted.copy_2d = count_copy_2d, counted.embeddings_forward = count_embeddings;
    long per_batch[2];
    int sizes[2] = {2, 12};
    char in[300], out[300], ref[300];
    for (int i = 0; i < 2; i++) {
        snprintf(in, sizeof in, "%s/pairs%d.tok", dir, i);
        snprintf(out, sizeof out, "%s/staged%d.emb", dir, i);
        snprintf(ref, sizeof ref, "%s/cpu%d.emb", dir, i);
        write_pairs(in, sizes[i]);
        copies = 0;
        embed_file(&counted, in, out);
        per_batch[i] = copies;
        embed_file(mt_backend_cpu(), in, ref);
        CHECK(same_file(out, ref));
    }
    CHECK(per_batch[0] == per_batch[1]);
    if (per_batch[0] != per_batch[1]) printf("# copies: %ld for 2 pairs, %ld for 12\n", per_batch[0], per_batch[1]);
}

int main(void) {
    mt_quiet = 1;
    make_checkpoint();
    RUN(pairs_gather_in_one_launch);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) printf("# could not remove %s\n", dir);
    return check_summary();
}
