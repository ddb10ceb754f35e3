// test_bert_grad_parity.c — the encoder's backward against transformers' BertModel (train mode,
// dropout off, fp32) on a real batch of 4 sentences and 2 joint pairs
// (tests/ref/encoder_grads_minilm.bin.gz, written by tests/make_encoder_grad_refs.py):
// loss = sum(last_hidden * R), and the gradient of every parameter tensor.
//
// Tolerances: the loss to 1e-5 relative; per tensor, every stored element within
// GRAD_TOL * max|g| of the tensor (both fp32, summed in other orders), the whole gradient's
// L2 norm within NORM_TOL relative; the word embedding rows of words not in the batch exactly 0;
// the pooler's gradient untouched (0). Observed (x86-64, OpenBLAS): loss 6e-7, elements 6e-6,
// norms 7e-7. Exception: the key biases' true gradient is 0 (a key bias adds q·b_k to every
// logit of a softmax row, which the softmax ignores), so both sides are rounding noise
// (~4e-7 against gradients of ~10-250 elsewhere): they must stay below ZERO_TOL * the largest
// |g| of the model.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "bert.h"
#include "check.h"

#define GRAD_TOL 5e-5
#define NORM_TOL 1e-5
#define ZERO_TOL 1e-6

typedef struct {
    char name[128];
    uint32_t numel, nsample;
    double norm;
    float max_abs;
    uint32_t *idx;  // NULL: the whole tensor
    float *grad;
} ref_grad;

static int B, N, C, ntensors;
static int32_t *offsets, *ids, *types;
static double ref_loss;
static ref_grad *refs;
static mt_bert *model;
static char err[1024];

static int read_exact(gzFile f, void *p, size_t n) { return gzread(f, p, (unsigned)n) == (int)n; }
static uint32_t read_u32(gzFile f) { uint32_t v = 0; read_exact(f, &v, 4); return v; }
static void *read_array(gzFile f, size_t n, size_t size) {
    void *p = malloc(n * size + 1);
    if (!read_exact(f, p, n * size)) memset(p, 0, n * size);
    return p;
}

static int load_refs(const char *path) {
    gzFile f = gzopen(path, "rb");
    char magic[8];
    if (!f || !read_exact(f, magic, 8) || memcmp(magic, "MTGRAD1\0", 8) != 0) { if (f) gzclose(f); return -1; }
    B = (int)read_u32(f), N = (int)read_u32(f), C = (int)read_u32(f), ntensors = (int)read_u32(f);
    offsets = read_array(f, B + 1, 4), ids = read_array(f, N, 4), types = read_array(f, N, 4);
    read_exact(f, &ref_loss, 8);
    refs = calloc(ntensors, sizeof *refs);
    int ok = 1;
    for (int i = 0; i < ntensors && ok; i++) {
        ref_grad *r = &refs[i];
        uint32_t len = read_u32(f);
        ok = len < sizeof r->name && read_exact(f, r->name, len);
        r->numel = read_u32(f);
        ok = ok && read_exact(f, &r->norm, 8) && read_exact(f, &r->max_abs, 4);
        r->nsample = read_u32(f);
        if (r->nsample != r->numel) r->idx = read_array(f, r->nsample, 4);
        r->grad = read_array(f, r->nsample, 4);
    }
    ok = ok && gzgetc(f) == -1;  // nothing left over
    gzclose(f);
    return ok ? 0 : -1;
}

// R[i] = 2 * (splitmix64(i) >> 40) / 2^24 - 1, as the script.
static float r_at(uint64_t i) {
    uint64_t z = i + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return 2.0f * (float)(z >> 40) / 16777216.0f - 1.0f;
}

TEST(encoder_gradients_match_pytorch) {
    float *R = malloc(sizeof(float) * N * C), *dh = malloc(sizeof(float) * N * C);
    float *grads = calloc(model->num_params, sizeof(float));
    for (int i = 0; i < N * C; i++) R[i] = r_at((uint64_t)i);
    mt_bert_reserve(model, N, B, 64, 1, 0);
    const float *h = mt_bert_forward_train(model, ids, types, offsets, B, NULL);
    CHECK(h != NULL);
    if (!h) { printf("# %s\n", mt_bert_error(model)); return; }
    double loss = 0;
    for (int i = 0; i < N * C; i++) loss += (double)h[i] * R[i];
    printf("# loss %.9g, PyTorch %.9g (relative diff %.2g)\n", loss, ref_loss, fabs(loss - ref_loss) / fabs(ref_loss));
    CHECK(fabs(loss - ref_loss) <= 1e-5 * fabs(ref_loss));
    memcpy(dh, R, sizeof(float) * N * C);
    mt_bert_backward(model, dh, grads);

    double worst = 0, worst_norm = 0, largest = 0, key_bias = 0;
    for (int t = 0; t < ntensors; t++) largest = fmax(largest, refs[t].max_abs);
    const char *worst_name = "", *worst_norm_name = "";
    int found = 0, sparse_ok = 1;
    for (int t = 0; t < ntensors; t++) {
        const ref_grad *r = &refs[t];
        const mt_bert_param *p = mt_bert_find_param(model, r->name);
        if (!p || p->numel != r->numel) { printf("# %s: missing or mis-sized\n", r->name); CHECK(0); continue; }
        found++;
        const float *g = grads + p->offset;
        if (strstr(r->name, "attention.self.key.bias")) {  // gradient 0 in exact arithmetic
            for (uint32_t i = 0; i < p->numel; i++) key_bias = fmax(key_bias, fabs(g[i]));
            key_bias = fmax(key_bias, r->max_abs);
            continue;
        }
        double d = 0, sq = 0;
        for (uint32_t s = 0; s < r->nsample; s++) d = fmax(d, fabs(g[r->idx ? r->idx[s] : s] - r->grad[s]));
        for (uint32_t i = 0; i < p->numel; i++) sq += (double)g[i] * g[i];
        d /= r->max_abs;
        double dn = fabs(sqrt(sq) - r->norm) / r->norm;
        if (d > worst) worst = d, worst_name = r->name;
        if (dn > worst_norm) worst_norm = dn, worst_norm_name = r->name;
        if (r->idx)  // reference zeros (rows of words not in the batch) must be exact zeros
            for (uint32_t s = 0; s < r->nsample; s++) sparse_ok &= r->grad[s] != 0.0f || g[r->idx[s]] == 0.0f;
    }
    printf("# %d tensors: max |g - ref| / max|ref| %.2e (%s), tolerance %g; norm relative diff %.2e (%s), "
           "tolerance %g\n", found, worst, worst_name, GRAD_TOL, worst_norm, worst_norm_name, NORM_TOL);
    printf("# key biases (exactly 0 in exact arithmetic): max |g| %.2g, %.2g of the largest |g|, tolerance %g\n",
           key_bias, key_bias / largest, ZERO_TOL);
    CHECK(key_bias <= ZERO_TOL * largest);
    CHECK(found == ntensors && ntensors == model->num_param_tensors - 2 * model->has_pooler);
    CHECK(worst <= GRAD_TOL);
    CHECK(worst_norm <= NORM_TOL);
    CHECK(sparse_ok);
    int pooler_zero = 1;
    for (size_t i = model->has_pooler ? (size_t)(model->pool_w - model->params) : model->num_params;
         i < model->num_params; i++)
        pooler_zero &= grads[i] == 0.0f;
    CHECK(pooler_zero);
    free(R); free(dh); free(grads);
}

int main(void) {
    const char *dir = getenv("MTBERT_MODEL") ? getenv("MTBERT_MODEL") : "models/all-MiniLM-L6-v2";
    if (load_refs("tests/ref/encoder_grads_minilm.bin.gz")) {
        printf("not ok 1 - cannot read tests/ref/encoder_grads_minilm.bin.gz (run from the repository root)\n");
        return 1;
    }
    model = mt_bert_load(dir, mt_backend_cpu(), err, sizeof err);
    if (!model) {
        printf("not ok 1 - load %s: %s\n", dir, err);
        return 1;
    }
    RUN(encoder_gradients_match_pytorch);
    mt_bert_free(model);
    for (int i = 0; i < ntensors; i++) { free(refs[i].idx); free(refs[i].grad); }
    free(refs); free(offsets); free(ids); free(types);
    return check_summary();
}
