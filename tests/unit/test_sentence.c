// test_sentence.c — the sentence model's ops against plain double-precision references,
// and every backward against central finite differences of those references.
//
// Why double: the CNN has ReLU and max-pool kinks, so fp32 differences with a step large
// enough to beat rounding would cross kinks. The reference below is a direct transcription
// of the semantics in sentence.h in double; it is checked against the fp32 forward
// (|diff| <= 1e-5), and its central differences (step 1e-6) against the fp32 backward
// (|diff| <= 1e-5 + 1e-4 |g|; observed max 2e-7). PyTorch parity is test_sentence_parity.c's job.
#include "check.h"
#include "rng.h"
#include "sentence.h"
#include "workspace.h"

#define CPU mt_backend_cpu()  // host memory: the ops of the table on plain arrays

#define FWD_TOL 1e-5
#define FD_STEP 1e-6
#define FD_ATOL 1e-5
#define FD_RTOL 1e-4

// A packed batch with a length-1 sequence (shorter than every kernel but width 1) and one
// shorter than the widest kernel.
static const int32_t OFF[] = {0, 1, 5, 7, 13, 16};
enum { NB = 5, NT = 16, CH = 5, HID = 3 };

static void fill_uniform(float *x, size_t n, float bound, uint32_t stream) {
    mt_rng r;
    mt_rng_init(&r, 42, stream, 7);
    for (size_t i = 0; i < n; i++) x[i] = (2.0f * mt_rng_uniform(&r) - 1.0f) * bound;
}
static void to_double(double *d, const float *f, size_t n) { for (size_t i = 0; i < n; i++) d[i] = f[i]; }
static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }
static int len_of(const int32_t *off, int b) { return off[b + 1] - off[b]; }

// ---- double references ---------------------------------------------------------------------

static void ref_mean(double *out, const double *x, const int32_t *off, int B, int C) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int n = off[b]; n < off[b + 1]; n++) s += x[n * C + c];
            out[b * C + c] = s / len_of(off, b);
        }
}

// out[n, f] (row stride ldo) = bias + sum_{c,k} W[f,c,k] x[t - (w-1)/2 + k, c]
static void ref_conv(double *out, int ldo, const double *x, const double *W, const double *bias,
                     const int32_t *off, int B, int C, int F, int w) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < len_of(off, b); t++)
            for (int f = 0; f < F; f++) {
                double s = bias[f];
                for (int k = 0; k < w; k++) {
                    int src = t - (w - 1) / 2 + k;
                    if (src < 0 || src >= len_of(off, b)) continue;
                    for (int c = 0; c < C; c++) s += W[(f * C + c) * w + k] * x[(off[b] + src) * C + c];
                }
                out[(off[b] + t) * ldo + f] = s;
            }
}

static void ref_relu_dropout(double *x, int N, int D, const mt_dropout *drop) {
    int on = drop && drop->p > 0;
    uint32_t thr = on ? mt_dropout_threshold(drop->p) : 0;
    double scale = on ? 1.0f / (1.0f - drop->p) : 1.0;  // the float scale the C code uses
    for (int i = 0; i < N * D; i++) {
        double v = x[i] > 0 ? x[i] : 0;
        x[i] = on && !mt_dropout_keep(drop->seed, drop->step, drop->site, (uint64_t)i, thr) ? 0 : v * scale;
    }
}

static void ref_maxpool(double *out, const double *x, const int32_t *off, int B, int D) {
    for (int b = 0; b < B; b++)
        for (int d = 0; d < D; d++) {
            double m = x[off[b] * D + d];
            for (int n = off[b] + 1; n < off[b + 1]; n++) m = x[n * D + d] > m ? x[n * D + d] : m;
            out[b * D + d] = m;
        }
}

// torch.nn.LSTM, one direction, each sequence alone. hfin[B,H].
static void ref_lstm(double *hfin, const double *x, const double *wih, const double *whh,
                     const double *bih, const double *bhh, const int32_t *off, int B, int In, int H,
                     int reverse) {
    double h[16], c[16], g[64];
    for (int b = 0; b < B; b++) {
        for (int k = 0; k < H; k++) h[k] = c[k] = 0;
        int L = len_of(off, b);
        for (int s = 0; s < L; s++) {
            const double *xt = x + (off[b] + (reverse ? L - 1 - s : s)) * In;
            for (int r = 0; r < 4 * H; r++) {
                g[r] = bih[r] + bhh[r];
                for (int i = 0; i < In; i++) g[r] += wih[r * In + i] * xt[i];
                for (int j = 0; j < H; j++) g[r] += whh[r * H + j] * h[j];
            }
            for (int k = 0; k < H; k++) {
                c[k] = sigm(g[H + k]) * c[k] + sigm(g[k]) * tanh(g[2 * H + k]);
                h[k] = sigm(g[3 * H + k]) * tanh(c[k]);
            }
        }
        for (int k = 0; k < H; k++) hfin[b * H + k] = h[k];
    }
}

// The whole model: p is the flat parameter buffer (as double), out[B, D].
static void ref_model(double *out, const double *x, const double *p, const mt_sentence_layout *L,
                      const int32_t *off, int B, const mt_dropout *drop) {
    const mt_sentence_config *cfg = &L->cfg;
    int C = cfg->C, N = off[B], D = L->D, F = L->F, H = cfg->lstm_hidden;
    double *tmp = calloc((size_t)B * (C + F + 2 * H) + (size_t)N * F, sizeof *tmp);
    double *fmap = tmp + (size_t)B * (C + F + 2 * H);
    ref_mean(tmp, x, off, B, C);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) out[b * D + c] = tmp[b * C + c];
    if (cfg->kind == MT_SENT_SBERT_CNN_BILSTM) {
        const mt_sentence_tensor *t = L->tensors;
        for (int i = 0, f0 = 0; i < cfg->n_widths; f0 += cfg->filters[i], i++, t += 2)
            ref_conv(fmap + f0, F, x, p + t[0].offset, p + t[1].offset, off, B, C, cfg->filters[i], cfg->width[i]);
        mt_dropout d = drop ? *drop : (mt_dropout){0};
        d.p = drop ? cfg->cnn_dropout : 0;
        ref_relu_dropout(fmap, N, F, &d);
        ref_maxpool(tmp, fmap, off, B, F);
        for (int b = 0; b < B; b++)
            for (int f = 0; f < F; f++) out[b * D + C + f] = tmp[b * F + f];
        const double *xin = cfg->lstm_over_cnn ? fmap : x;
        for (int dir = 0; dir < 2; dir++, t += 4) {
            ref_lstm(tmp, xin, p + t[0].offset, p + t[1].offset, p + t[2].offset, p + t[3].offset, off, B,
                     L->lstm_in, H, dir);
            for (int b = 0; b < B; b++)
                for (int k = 0; k < H; k++) out[b * D + C + F + dir * H + k] = tmp[b * H + k];
        }
    }
    free(tmp);
}

// ---- finite differences ---------------------------------------------------------------------

// loss = sum out * R over an evaluation that reads the double arrays ctx points into.
typedef double (*loss_fn)(void *ctx);

// Central differences of loss w.r.t. vals[0..n) against analytic[0..n); returns max |diff|.
static double fd_check(const char *what, const float *analytic, double *vals, size_t n,
                       loss_fn loss, void *ctx) {
    double worst = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double keep = vals[i];
        vals[i] = keep + FD_STEP;
        double up = loss(ctx);
        vals[i] = keep - FD_STEP;
        double down = loss(ctx);
        vals[i] = keep;
        double num = (up - down) / (2 * FD_STEP), diff = fabs(num - analytic[i]);
        worst = diff > worst ? diff : worst;
        if (diff > FD_ATOL + FD_RTOL * fabs(num) && bad++ < 5)
            printf("# %s[%zu]: analytic %.8g, numeric %.8g\n", what, i, analytic[i], num);
    }
    CHECK(bad == 0);
    return worst;
}

static double dot_r(const double *out, const float *R, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += out[i] * R[i];
    return s;
}

static double max_diff(const float *a, const double *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(a[i] - b[i]) > m ? fabs(a[i] - b[i]) : m;
    return m;
}

// ---- pooling ---------------------------------------------------------------------------------

TEST(cls_pool_picks_first_token_and_routes_gradient) {
    float x[NT * CH], out[NB * CH], dout[NB * CH], dinp[NT * CH];
    fill_uniform(x, NT * CH, 1, 1), fill_uniform(dout, NB * CH, 1, 2);
    CPU->pool_forward(out, x, OFF, NB, CH, MT_POOL_CLS);
    for (int b = 0; b < NB; b++) CHECK(memcmp(out + b * CH, x + OFF[b] * CH, sizeof(float) * CH) == 0);
    for (int i = 0; i < NT * CH; i++) dinp[i] = 1;
    CPU->pool_backward(dinp, dout, OFF, NB, CH, MT_POOL_CLS);
    for (int b = 0, n = 0; n < NT; n++) {
        int first = n == OFF[b];
        for (int c = 0; c < CH; c++) CHECK(dinp[n * CH + c] == (first ? 1 + dout[b * CH + c] : 1));
        if (first) b++;
    }
}

typedef struct {
    double *x, *w[4], *out;  // op inputs (double) and an output scratch
    const float *R;          // upstream gradient
    size_t nout;
    int width, F, reverse, B, N, C, H;
    const int32_t *off;
    const mt_dropout *drop;
    const mt_sentence_layout *L;
} fd_ctx;

static double mean_loss(void *p) {
    fd_ctx *c = p;
    ref_mean(c->out, c->x, c->off, c->B, c->C);
    return dot_r(c->out, c->R, c->nout);
}

TEST(mean_pool_forward_and_gradient) {
    float x[NT * CH], out[NB * CH], R[NB * CH], dinp[NT * CH] = {0};
    double xd[NT * CH], ref[NB * CH];
    fill_uniform(x, NT * CH, 1, 1), fill_uniform(R, NB * CH, 1, 2);
    to_double(xd, x, NT * CH);
    CPU->pool_forward(out, x, OFF, NB, CH, MT_POOL_MEAN);
    ref_mean(ref, xd, OFF, NB, CH);
    CHECK(max_diff(out, ref, NB * CH) <= FWD_TOL);
    CPU->pool_backward(dinp, R, OFF, NB, CH, MT_POOL_MEAN);
    fd_ctx c = {.x = xd, .out = ref, .R = R, .nout = NB * CH, .B = NB, .C = CH, .off = OFF};
    fd_check("mean dinp", dinp, xd, NT * CH, mean_loss, &c);
}

// ---- CNN: conv 'same' -> ReLU + dropout -> max-pool, one width at a time --------------------

static double cnn_loss(void *p) {
    fd_ctx *c = p;
    double *fmap = malloc(sizeof(double) * c->N * c->F);
    ref_conv(fmap, c->F, c->x, c->w[0], c->w[1], c->off, c->B, c->C, c->F, c->width);
    ref_relu_dropout(fmap, c->N, c->F, c->drop);
    ref_maxpool(c->out, fmap, c->off, c->B, c->F);
    free(fmap);
    return dot_r(c->out, c->R, c->nout);
}

static void check_cnn(int w, const mt_dropout *drop) {
    enum { F = 4 };
    float x[NT * CH], W[F * CH * 4], bias[F], R[NB * F], fmap[NT * F], pool[NB * F], col[NT * CH * 4];
    float dx[NT * CH] = {0}, dW[F * CH * 4] = {0}, db[F] = {0}, dfmap[NT * F] = {0};
    int32_t argmax[NB * F];
    double xd[NT * CH], Wd[F * CH * 4], bd[F], ref[NB * F], fref[NT * F];
    fill_uniform(x, NT * CH, 1, 1), fill_uniform(R, NB * F, 1, 2);
    fill_uniform(W, F * CH * w, 0.5f, 3), fill_uniform(bias, F, 0.5f, 4);
    to_double(xd, x, NT * CH), to_double(Wd, W, F * CH * w), to_double(bd, bias, F);

    mt_conv_same_forward(CPU, fmap, F, col, x, W, bias, OFF, NB, NT, CH, F, w);
    ref_conv(fref, F, xd, Wd, bd, OFF, NB, CH, F, w);
    CHECK(max_diff(fmap, fref, NT * F) <= FWD_TOL);
    CPU->relu_dropout_forward(fmap, NT, F, drop);
    CPU->max_pool_forward(pool, argmax, fmap, OFF, NB, F);
    fd_ctx c = {.x = xd, .w = {Wd, bd}, .out = ref, .R = R, .nout = NB * F, .width = w, .F = F,
                .B = NB, .N = NT, .C = CH, .off = OFF, .drop = drop};
    cnn_loss(&c);
    CHECK(max_diff(pool, ref, NB * F) <= FWD_TOL);

    CPU->max_pool_backward(dfmap, R, argmax, NB, F);
    CPU->relu_dropout_backward(dfmap, dfmap, fmap, NT, F, drop);
    mt_conv_same_backward(CPU, dx, dW, db, col, dfmap, F, x, W, OFF, NB, NT, CH, F, w);
    fd_check("cnn dx", dx, xd, NT * CH, cnn_loss, &c);
    fd_check("cnn dW", dW, Wd, F * CH * w, cnn_loss, &c);
    fd_check("cnn db", db, bd, F, cnn_loss, &c);
}

TEST(cnn_widths_1_to_4_gradients_incl_sequences_shorter_than_kernel) {
    for (int w = 1; w <= 4; w++) check_cnn(w, NULL);
}

TEST(cnn_gradients_with_dropout) {
    mt_dropout drop = {.p = 0.3f, .seed = 9, .step = 3, .site = mt_dropout_site(1, 2, 3)};
    for (int w = 1; w <= 4; w++) check_cnn(w, &drop);
}

// A column whose maximum is reached twice: the first row takes the gradient, alone.
TEST(max_pool_ties_go_to_first_row) {
    const int32_t off[] = {0, 4};
    float x[4 * 2] = {1, 0.5f, 3, 0.5f, 3, -1, 2, 0.5f}, out[2], dinp[8] = {0}, dout[2] = {10, 20};
    int32_t argmax[2];
    CPU->max_pool_forward(out, argmax, x, off, 1, 2);
    CHECK(out[0] == 3 && argmax[0] == 1);
    CHECK(out[1] == 0.5f && argmax[1] == 0);
    CPU->max_pool_backward(dinp, dout, argmax, 1, 2);
    const float want[8] = {0, 20, 10, 0, 0, 0, 0, 0};
    CHECK(memcmp(dinp, want, sizeof want) == 0);
}

// The mask is the keyed Philox mask: reproducible, element (n, d) = key n*D + d, changed by
// seed/step/site, p of the elements dropped, and backward passes gradient only where kept.
TEST(dropout_mask_reproducible_and_shared_with_backward) {
    enum { N = 64, D = 50 };
    static float a[N * D], b[N * D], dx[N * D], dy[N * D];
    mt_dropout drop = {.p = 0.25f, .seed = 5, .step = 11, .site = mt_dropout_site(0, 7, 1)};
    for (int i = 0; i < N * D; i++) a[i] = b[i] = 1.0f + (float)(i % 7), dy[i] = 1;
    CPU->relu_dropout_forward(a, N, D, &drop);
    CPU->relu_dropout_forward(b, N, D, &drop);
    CHECK(memcmp(a, b, sizeof a) == 0);
    uint32_t thr = mt_dropout_threshold(drop.p);
    int dropped = 0, agree = 1;
    for (int i = 0; i < N * D; i++) {
        int keep = mt_dropout_keep(drop.seed, drop.step, drop.site, (uint64_t)i, thr);
        agree &= keep ? a[i] == (1.0f + (float)(i % 7)) * (1.0f / 0.75f) : a[i] == 0;
        dropped += !keep;
    }
    CHECK(agree);
    CHECK(dropped > N * D * 0.2 && dropped < N * D * 0.3);
    CPU->relu_dropout_backward(dx, dy, a, N, D, &drop);
    for (int i = 0; i < N * D; i++) agree &= dx[i] == (a[i] > 0 ? 1.0f / 0.75f : 0);
    CHECK(agree);
    drop.seed = 6;
    for (int i = 0; i < N * D; i++) b[i] = 1.0f + (float)(i % 7);
    CPU->relu_dropout_forward(b, N, D, &drop);
    CHECK(memcmp(a, b, sizeof a) != 0);
}

// ---- LSTM, each direction ------------------------------------------------------------------

static double lstm_loss(void *p) {
    fd_ctx *c = p;
    ref_lstm(c->out, c->x, c->w[0], c->w[1], c->w[2], c->w[3], c->off, c->B, c->C, c->H, c->reverse);
    return dot_r(c->out, c->R, c->nout);
}

static void check_lstm(int reverse) {
    enum { G = 4 * HID };
    float x[NT * CH], wih[G * CH], whh[G * HID], bih[G], bhh[G], R[NB * HID], hfin[NB * HID];
    float dx[NT * CH] = {0}, dwih[G * CH] = {0}, dwhh[G * HID] = {0}, dbih[G] = {0}, dbhh[G] = {0};
    double xd[NT * CH], wihd[G * CH], whhd[G * HID], bihd[G], bhhd[G], ref[NB * HID];
    fill_uniform(x, NT * CH, 1, 1), fill_uniform(R, NB * HID, 1, 2);
    fill_uniform(wih, G * CH, 0.6f, 3), fill_uniform(whh, G * HID, 0.6f, 4);
    fill_uniform(bih, G, 0.6f, 5), fill_uniform(bhh, G, 0.6f, 6);
    to_double(xd, x, NT * CH), to_double(wihd, wih, G * CH), to_double(whhd, whh, G * HID);
    to_double(bihd, bih, G), to_double(bhhd, bhh, G);

    mt_lstm_acts a;
    mt_seq_steps st;
    mt_lstm_acts_alloc(CPU, &a, NT, NB, HID);
    mt_seq_steps_alloc(CPU, &st, NT, NB);
    mt_seq_steps_set(CPU, &st, OFF, NB);
    mt_lstm_forward(CPU, hfin, &a, &st, x, wih, whh, bih, bhh, CH, HID, reverse);
    fd_ctx c = {.x = xd, .w = {wihd, whhd, bihd, bhhd}, .out = ref, .R = R, .nout = NB * HID,
                .reverse = reverse, .B = NB, .C = CH, .H = HID, .off = OFF};
    lstm_loss(&c);
    CHECK(max_diff(hfin, ref, NB * HID) <= FWD_TOL);
    mt_lstm_backward(CPU, dx, dwih, dwhh, dbih, dbhh, R, &a, &st, x, wih, whh, CH, HID, reverse);
    fd_check("lstm dx", dx, xd, NT * CH, lstm_loss, &c);
    fd_check("lstm dw_ih", dwih, wihd, G * CH, lstm_loss, &c);
    fd_check("lstm dw_hh", dwhh, whhd, G * HID, lstm_loss, &c);
    fd_check("lstm db_ih", dbih, bihd, G, lstm_loss, &c);
    fd_check("lstm db_hh", dbhh, bhhd, G, lstm_loss, &c);
    mt_lstm_acts_free(CPU, &a);
    mt_seq_steps_free(CPU, &st);
}

TEST(lstm_forward_direction_variable_lengths) { check_lstm(0); }
TEST(lstm_reverse_direction_variable_lengths) { check_lstm(1); }

// ---- the whole sentence model ----------------------------------------------------------------

static mt_sentence_config small_config(mt_sentence_kind kind, int over_cnn) {
    mt_sentence_config cfg = mt_sentence_default_config(kind, CH, 2, HID);
    cfg.filters[1] = 3, cfg.filters[2] = 1;
    cfg.lstm_over_cnn = over_cnn;
    cfg.cnn_dropout = 0.2f;
    return cfg;
}

static double model_loss(void *p) {
    fd_ctx *c = p;
    ref_model(c->out, c->x, c->w[0], c->L, c->off, c->B, c->drop);
    return dot_r(c->out, c->R, c->nout);
}

// Forward against the reference, backward against its differences, for every input and
// every parameter; the gradients accumulate (+=) on top of what the buffers held.
static void check_model(mt_sentence_kind kind, int over_cnn, const mt_dropout *drop) {
    mt_sentence_config cfg = small_config(kind, over_cnn);
    mt_sentence_layout L;
    mt_sentence_layout_init(&L, &cfg);
    size_t np = L.n_params, nout = (size_t)NB * L.D;
    float *params = calloc(np + 1, 4), *grads = calloc(np + 1, 4), *out = calloc(nout, 4), *R = calloc(nout, 4);
    float x[NT * CH], dx[NT * CH];
    double *pd = calloc(np + 1, 8), *ref = calloc(nout, 8), xd[NT * CH];
    mt_sentence_init_params(&L, params, 17);
    fill_uniform(x, NT * CH, 1, 1), fill_uniform(R, nout, 1, 2);
    for (size_t i = 0; i < np; i++) grads[i] = 0.5f;  // to see += rather than =
    for (int i = 0; i < NT * CH; i++) dx[i] = 0.5f;
    to_double(xd, x, NT * CH), to_double(pd, params, np);

    mt_sentence_weights w, dw;
    mt_sentence_weights_point(&w, &L, params);
    mt_sentence_weights_point(&dw, &L, grads);
    mt_sentence_acts a;
    mt_sentence_acts_alloc(CPU, &a, &L, NT, NB);
    mt_sentence_forward(CPU, out, &a, &L, &w, x, OFF, NB, NT, drop);
    fd_ctx c = {.x = xd, .w = {pd}, .out = ref, .R = R, .nout = nout, .B = NB, .off = OFF, .drop = drop, .L = &L};
    model_loss(&c);
    CHECK(max_diff(out, ref, nout) <= FWD_TOL);
    mt_sentence_backward(CPU, dx, &dw, R, &a, &L, &w, x);
    for (size_t i = 0; i < np; i++) grads[i] -= 0.5f;
    for (int i = 0; i < NT * CH; i++) dx[i] -= 0.5f;
    fd_check("model dinp", dx, xd, NT * CH, model_loss, &c);
    for (int t = 0; t < L.n_tensors; t++)
        fd_check(L.tensors[t].name, grads + L.tensors[t].offset, pd + L.tensors[t].offset,
                 L.tensors[t].size, model_loss, &c);
    mt_sentence_acts_free(CPU, &a);
    free(params), free(grads), free(out), free(R), free(pd), free(ref);
}

TEST(model_cls_and_mean) {
    check_model(MT_SENT_MEAN, 0, NULL);
    // cls through the module: out = first rows, gradient to the first rows only
    mt_sentence_config cfg = small_config(MT_SENT_CLS, 0);
    mt_sentence_layout L;
    mt_sentence_layout_init(&L, &cfg);
    CHECK(L.D == CH && L.n_params == 0 && L.n_tensors == 0);
    mt_sentence_acts a;
    mt_sentence_acts_alloc(CPU, &a, &L, NT, NB);
    mt_sentence_weights w;
    mt_sentence_weights_point(&w, &L, NULL);
    float x[NT * CH], out[NB * CH], dx[NT * CH] = {0};
    fill_uniform(x, NT * CH, 1, 1);
    mt_sentence_forward(CPU, out, &a, &L, &w, x, OFF, NB, NT, NULL);
    mt_sentence_backward(CPU, dx, &w, out, &a, &L, &w, x);
    for (int b = 0; b < NB; b++)
        for (int c = 0; c < CH; c++) {
            CHECK(out[b * CH + c] == x[OFF[b] * CH + c]);
            CHECK(dx[OFF[b] * CH + c] == x[OFF[b] * CH + c]);
        }
    mt_sentence_acts_free(CPU, &a);
}

TEST(model_sbert_cnn_bilstm_over_token_states) { check_model(MT_SENT_SBERT_CNN_BILSTM, 0, NULL); }
TEST(model_sbert_cnn_bilstm_over_cnn_features) { check_model(MT_SENT_SBERT_CNN_BILSTM, 1, NULL); }
TEST(model_sbert_cnn_bilstm_with_dropout) {
    mt_dropout drop = {.seed = 3, .step = 100, .site = mt_dropout_site(2, 50, 4)};
    check_model(MT_SENT_SBERT_CNN_BILSTM, 0, &drop);
    check_model(MT_SENT_SBERT_CNN_BILSTM, 1, &drop);
}

// Names, shapes and offsets as a torch module would have them; init within PyTorch's bounds,
// reproducible by seed.
TEST(parameter_table_and_init) {
    mt_sentence_config cfg = mt_sentence_default_config(MT_SENT_SBERT_CNN_BILSTM, 384, 64, 128);
    mt_sentence_layout L;
    mt_sentence_layout_init(&L, &cfg);
    CHECK(L.F == 256 && L.lstm_in == 384 && L.D == 384 + 256 + 256);
    CHECK(L.n_tensors == 16);
    int i = mt_sentence_tensor_find(&L, "cnn.convs.3.weight");
    CHECK(i == 6 && L.tensors[i].shape[0] == 64 && L.tensors[i].shape[1] == 384 && L.tensors[i].shape[2] == 4);
    i = mt_sentence_tensor_find(&L, "lstm.weight_hh_l0_reverse");
    CHECK(i == 13 && L.tensors[i].shape[0] == 512 && L.tensors[i].shape[1] == 128 && L.tensors[i].decay);
    i = mt_sentence_tensor_find(&L, "lstm.bias_ih_l0");
    CHECK(i >= 0 && !L.tensors[i].decay && L.tensors[i].ndim == 1);
    CHECK(mt_sentence_tensor_find(&L, "lstm.weight") == -1);
    size_t next = 0;
    for (int t = 0; t < L.n_tensors; t++) {
        CHECK(L.tensors[t].offset == next);
        next += L.tensors[t].size;
    }
    CHECK(next == L.n_params);
    CHECK(L.n_params == 4 * 64 + 64 * 384 * 10 + 2 * (512 * 384 + 512 * 128 + 2 * 512));

    float *p = malloc(L.n_params * 4), *q = malloc(L.n_params * 4);
    mt_sentence_init_params(&L, p, 1);
    mt_sentence_init_params(&L, q, 1);
    CHECK(memcmp(p, q, L.n_params * 4) == 0);
    int in_bounds = 1;
    for (int t = 0; t < L.n_tensors; t++) {
        const mt_sentence_tensor *T = &L.tensors[t];
        double sum = 0, maxabs = 0;
        for (size_t j = 0; j < T->size; j++) {
            float v = p[T->offset + j];
            in_bounds &= fabsf(v) <= T->init_bound;
            sum += v, maxabs = fabs(v) > maxabs ? fabs(v) : maxabs;
        }
        in_bounds &= maxabs > 0.9 * T->init_bound && fabs(sum / T->size) < 0.2 * T->init_bound;
    }
    CHECK(in_bounds);
    CHECK_NEAR(L.tensors[0].init_bound, 1 / sqrt(384.0), 1e-7);
    CHECK_NEAR(L.tensors[6].init_bound, 1 / sqrt(384.0 * 4), 1e-7);
    CHECK_NEAR(L.tensors[8].init_bound, 1 / sqrt(128.0), 1e-7);
    mt_sentence_init_params(&L, q, 2);
    CHECK(memcmp(p, q, L.n_params * 4) != 0);
    free(p), free(q);
    CHECK(mt_sentence_kind_parse("sbert-cnn-bilstm") == MT_SENT_SBERT_CNN_BILSTM);
    CHECK(mt_sentence_kind_parse("cls") == MT_SENT_CLS && mt_sentence_kind_parse("max") == -1);
}

// The same batch twice gives the same bits (fixed reduction order).
TEST(forward_backward_deterministic) {
    mt_sentence_config cfg = small_config(MT_SENT_SBERT_CNN_BILSTM, 1);
    mt_sentence_layout L;
    mt_sentence_layout_init(&L, &cfg);
    float *p = malloc(L.n_params * 4), *g1 = calloc(L.n_params, 4), *g2 = calloc(L.n_params, 4);
    float x[NT * CH], o1[NB * 64], o2[NB * 64], d1[NT * CH] = {0}, d2[NT * CH] = {0};
    mt_sentence_init_params(&L, p, 4);
    fill_uniform(x, NT * CH, 1, 1);
    mt_sentence_weights w, dw1, dw2;
    mt_sentence_weights_point(&w, &L, p), mt_sentence_weights_point(&dw1, &L, g1), mt_sentence_weights_point(&dw2, &L, g2);
    mt_sentence_acts a;
    mt_sentence_acts_alloc(CPU, &a, &L, NT, NB);
    mt_dropout drop = {.seed = 1, .step = 2, .site = 3};
    mt_sentence_forward(CPU, o1, &a, &L, &w, x, OFF, NB, NT, &drop);
    mt_sentence_backward(CPU, d1, &dw1, o1, &a, &L, &w, x);
    mt_sentence_forward(CPU, o2, &a, &L, &w, x, OFF, NB, NT, &drop);
    mt_sentence_backward(CPU, d2, &dw2, o1, &a, &L, &w, x);
    CHECK(memcmp(o1, o2, sizeof(float) * NB * L.D) == 0);
    CHECK(memcmp(d1, d2, sizeof d1) == 0 && memcmp(g1, g2, L.n_params * 4) == 0);
    mt_sentence_acts_free(CPU, &a);
    free(p), free(g1), free(g2);
}

// The device code path (backend memory, explicit copies) on the cpu-staged table gives the
// CPU run's bits: forward, input gradient and parameter gradients, with dropout.
TEST(cpu_staged_equals_cpu_bit_for_bit) {
    mt_sentence_config cfg = small_config(MT_SENT_SBERT_CNN_BILSTM, 1);
    mt_sentence_layout L;
    mt_sentence_layout_init(&L, &cfg);
    size_t np = L.n_params, nout = (size_t)NB * L.D, nx = (size_t)NT * CH;
    float *p = malloc(np * 4), x[NT * CH], R[NB * 64];
    mt_sentence_init_params(&L, p, 4);
    fill_uniform(x, nx, 1, 1), fill_uniform(R, nout, 1, 2);
    mt_dropout drop = {.seed = 1, .step = 2, .site = 3};
    const mt_backend *side[2] = {mt_backend_cpu(), mt_backend_cpu_staged()};
    float *got[2][3];  // [side][out, dx, grads] copied to the host
    for (int s = 0; s < 2; s++) {
        const mt_backend *be = side[s];
        float *dp = be->alloc(np * 4), *dg = be->alloc(np * 4), *dx = be->alloc(nx * 4), *ddx = be->alloc(nx * 4);
        float *dout = be->alloc(nout * 4), *dR = be->alloc(nout * 4);
        be->copy_to_device(dp, p, np * 4), be->copy_to_device(dx, x, nx * 4), be->copy_to_device(dR, R, nout * 4);
        mt_sentence_weights w, dw;
        mt_sentence_weights_point(&w, &L, dp), mt_sentence_weights_point(&dw, &L, dg);
        mt_sentence_acts a;
        mt_sentence_acts_alloc(be, &a, &L, NT, NB);
        mt_sentence_forward(be, dout, &a, &L, &w, dx, OFF, NB, NT, &drop);
        mt_sentence_backward(be, ddx, &dw, dR, &a, &L, &w, dx);
        got[s][0] = malloc(nout * 4), got[s][1] = malloc(nx * 4), got[s][2] = malloc(np * 4);
        be->copy_to_host(got[s][0], dout, nout * 4);
        be->copy_to_host(got[s][1], ddx, nx * 4);
        be->copy_to_host(got[s][2], dg, np * 4);
        mt_sentence_acts_free(be, &a);
        be->free(dp), be->free(dg), be->free(dx), be->free(ddx), be->free(dout), be->free(dR);
    }
    CHECK(memcmp(got[0][0], got[1][0], nout * 4) == 0);
    CHECK(memcmp(got[0][1], got[1][1], nx * 4) == 0);
    CHECK(memcmp(got[0][2], got[1][2], np * 4) == 0);
    for (int s = 0; s < 2; s++) free(got[s][0]), free(got[s][1]), free(got[s][2]);
    free(p);
}

// The CPU table with a gemm that records its operands' largest span (mt_ws_half_span: what
// CUDA's bf16 / fp16 copies hold) and a reserve that records the operand floats asked for.
static size_t widest_span, operands_reserved;
static void gemm_recording(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                           int ldb, float beta, float *C, int ldc) {
    size_t a = mt_ws_half_span(ta ? K : M, ta ? M : K, lda, 0, 1), b = mt_ws_half_span(tb ? N : K, tb ? K : N, ldb, 0, 1);
    if (M > 0 && N > 0 && K > 0) {
        widest_span = a > widest_span ? a : widest_span;
        widest_span = b > widest_span ? b : widest_span;
    }
    mt_backend_cpu()->gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
static void reserve_recording(const mt_workspace_shape *s) {
    operands_reserved = s->operand_floats > operands_reserved ? s->operand_floats : operands_reserved;
}

// Every product's operands fit the 16-bit operand workspaces that mt_sentence_acts_alloc
// reserves (--precision bf16 / fp16 on CUDA), for LSTM widths past the encoder's 3C and F
// (4H = 64 > 3 * CH), wide CNN filters, over token states and over the CNN map.
TEST(products_fit_the_operand_reservation) {
    mt_backend rec = *mt_backend_cpu();
    rec.gemm = gemm_recording, rec.reserve = reserve_recording;
    for (int over_cnn = 0; over_cnn < 2; over_cnn++) {
        mt_sentence_config cfg = mt_sentence_default_config(MT_SENT_SBERT_CNN_BILSTM, CH, 9, 16);
        cfg.lstm_over_cnn = over_cnn;
        mt_sentence_layout L;
        mt_sentence_layout_init(&L, &cfg);
        size_t np = L.n_params, nout = (size_t)NB * L.D;
        float *params = calloc(np, 4), *grads = calloc(np, 4), *out = calloc(nout, 4), *R = calloc(nout, 4);
        float x[NT * CH], dx[NT * CH] = {0};
        mt_sentence_init_params(&L, params, 3);
        fill_uniform(x, NT * CH, 1, 1), fill_uniform(R, nout, 1, 2);
        mt_sentence_weights w, dw;
        mt_sentence_weights_point(&w, &L, params), mt_sentence_weights_point(&dw, &L, grads);
        mt_sentence_acts a;
        widest_span = operands_reserved = 0;
        mt_sentence_acts_alloc(&rec, &a, &L, NT, NB);
        mt_sentence_forward(&rec, out, &a, &L, &w, x, OFF, NB, NT, NULL);
        mt_sentence_backward(&rec, dx, &dw, R, &a, &L, &w, x);
        CHECK(widest_span > 0 && operands_reserved == mt_sentence_operand_floats(&L, NT, NB));
        CHECK(widest_span <= operands_reserved);
        if (widest_span > operands_reserved) printf("# over_cnn %d: span %zu > %zu\n", over_cnn, widest_span, operands_reserved);
        mt_sentence_acts_free(&rec, &a);
        free(params), free(grads), free(out), free(R);
    }
}

int main(void) {
    RUN(cls_pool_picks_first_token_and_routes_gradient);
    RUN(mean_pool_forward_and_gradient);
    RUN(cnn_widths_1_to_4_gradients_incl_sequences_shorter_than_kernel);
    RUN(cnn_gradients_with_dropout);
    RUN(max_pool_ties_go_to_first_row);
    RUN(dropout_mask_reproducible_and_shared_with_backward);
    RUN(lstm_forward_direction_variable_lengths);
    RUN(lstm_reverse_direction_variable_lengths);
    RUN(model_cls_and_mean);
    RUN(model_sbert_cnn_bilstm_over_token_states);
    RUN(model_sbert_cnn_bilstm_over_cnn_features);
    RUN(model_sbert_cnn_bilstm_with_dropout);
    RUN(parameter_table_and_init);
    RUN(forward_backward_deterministic);
    RUN(cpu_staged_equals_cpu_bit_for_bit);
    RUN(products_fit_the_operand_reservation);
    return check_summary();
}
