// synth-emb — writes a synthetic embedding stream, shaped like embed's output, for tests of
// heads and evaluate while no encoder is at hand. The data carry real signal, so a fitted
// head must score well on them and a broken one cannot:
//   sst: 5 Gaussian clusters (class means N(0, 1) per dim, noise sd --noise), label 0..4
//   qqp: u, w random unit vectors; duplicates v = unit(u + noise·w), others v = w; is_duplicate
//   sts: similarity s ~ U{0, 0.2, ..., 5}; v = a·u + sqrt(1 − a²)·w with a = s / 5, so
//        cos(u, v) ≈ s / 5 (unit-length u, w in high dimension); emb_b, cls_ab too
//
//   synth-emb --task sst|qqp|sts [--n N] [--hidden H] [--seed S] [--noise X]
//             [--model-fp HEX] [--pool NAME] [--no-labels] [--kind K] [-o OUT]
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "stream.h"

static uint64_t state;
static double uniform(void) {  // splitmix64 -> (0, 1)
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return ((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0) + 1e-12;
}
static double gauss(void) { return sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform()); }

static void unit_gauss(float *v, int h) {
    double s = 0;
    for (int j = 0; j < h; j++) {
        v[j] = (float)gauss();
        s += (double)v[j] * v[j];
    }
    for (int j = 0; j < h; j++) v[j] = (float)(v[j] / sqrt(s));
}

int main(int argc, char **argv) {
    mt_set_prog(argv[0]);
    const char *task = NULL, *out = "-", *fp = "0123456789abcdef", *pool = "mean", *kind = "embeddings";
    long n = 500, h = 32, seed = 1, labels = 1;
    double noise = 1.0;
    static const struct option opts[] = {
        {"task", 1, 0, 't'}, {"n", 1, 0, 'n'}, {"hidden", 1, 0, 'H'}, {"seed", 1, 0, 's'},
        {"noise", 1, 0, 'z'}, {"model-fp", 1, 0, 'f'}, {"pool", 1, 0, 'p'}, {"kind", 1, 0, 'k'},
        {"no-labels", 0, 0, 'L'}, {"output", 1, 0, 'o'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case 't': task = optarg; break;
        case 'n': n = mt_parse_long("--n", optarg, 1, 10000000); break;
        case 'H': h = mt_parse_long("--hidden", optarg, 1, 4096); break;
        case 's': seed = mt_parse_long("--seed", optarg, 0, 1L << 40); break;
        case 'z': noise = mt_parse_double("--noise", optarg); break;
        case 'f': fp = optarg; break;
        case 'p': pool = optarg; break;
        case 'k': kind = optarg; break;
        case 'L': labels = 0; break;
        case 'o': out = optarg; break;
        default: return 2;
        }
    }
    if (!task || (strcmp(task, "sst") && strcmp(task, "qqp") && strcmp(task, "sts")))
        mt_die("--task sst|qqp|sts is required");
    int sst = !strcmp(task, "sst"), qqp = !strcmp(task, "qqp");
    state = (uint64_t)seed * 7919 + 17;
    mt_meta meta = {0};
    char hs[16];
    snprintf(hs, sizeof hs, "%ld", h);
    mt_meta_set(&meta, "kind", kind);
    mt_meta_set(&meta, "producer", "synth-emb (test data)");
    mt_meta_set(&meta, "model_fp", fp);
    mt_meta_set(&meta, "hidden", hs);
    mt_meta_set(&meta, "pool", pool);
    mt_meta_set(&meta, "mode", sst ? "single" : "pair");
    // class means are drawn from a fixed seed so train and test streams share them
    uint64_t keep = state;
    state = 12345;
    float *mu = mt_malloc(sizeof(float) * 5 * h);
    for (long j = 0; j < 5 * h; j++) mu[j] = (float)gauss();
    state = keep;
    mt_writer *w = mt_writer_open(out, &meta);
    mt_record r = {0};
    for (long i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "%s-%ld", task, i + 1);
        mt_record_clear(&r);
        mt_record_set_id(&r, id);
        float *a = mt_record_add1(&r, "emb_a", MT_F32, (int32_t)h)->data;
        if (sst) {
            int y = (int)(uniform() * 5);
            for (long j = 0; j < h; j++) a[j] = mu[y * h + j] + (float)(noise * gauss());
            if (labels) mt_record_add_label(&r, "label", (float)y);
        } else {
            float *b = mt_record_add1(&r, "emb_b", MT_F32, (int32_t)h)->data;
            float *cls = mt_record_add1(&r, "cls_ab", MT_F32, (int32_t)h)->data;
            unit_gauss(a, (int)h);
            unit_gauss(b, (int)h);  // independent by default
            float y;
            if (qqp) {
                y = uniform() < 0.4;
                if (y) {  // v = unit(u + noise·w): cos(u, v) ≈ 1 / sqrt(1 + noise²)
                    double s = 0;
                    for (long j = 0; j < h; j++) {
                        b[j] = a[j] + (float)noise * b[j];
                        s += (double)b[j] * b[j];
                    }
                    for (long j = 0; j < h; j++) b[j] = (float)(b[j] / sqrt(s));
                }
            } else {
                y = (float)((int)(uniform() * 26) / 5.0);
                double al = y / 5;
                for (long j = 0; j < h; j++) b[j] = (float)(al * a[j] + sqrt(1 - al * al) * b[j]);
            }
            for (long j = 0; j < h; j++) cls[j] = a[j] + b[j];
            if (labels) mt_record_add_label(&r, qqp ? "is_duplicate" : "similarity", y);
        }
        mt_writer_put(w, &r);
    }
    mt_writer_close(w);
    mt_record_free(&r);
    mt_meta_free(&meta);
    free(mu);
    return 0;
}
