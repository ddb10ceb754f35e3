// test_ops_backward.c — every backward op of the CPU backend against central finite
// differences, and the dropout masks against lib/rng.
//
// Each check: loss = sum(out * R) for a fixed random R, accumulated in double; the op's
// backward with dout = R gives the analytic gradient of every input; each input element is
// moved by ±EPS (fp32 inputs, so EPS is not tiny) and (loss+ - loss-) / 2 EPS compared.
// Tolerance: |fd - analytic| <= ATOL + RTOL * |fd| for every element. Outputs a perturbation
// does not touch cancel exactly in loss+ - loss-, so the noise is only that of the few outputs
// it moves (~3e-5 at most here); truncation error is O(EPS^2) (~1e-5 for these smooth ops).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "check.h"
#define RAND_SEED 0x2545F4914F6CDD1DULL  // this suite's stream
#include "rand.h"
#include "rng.h"

#define EPS 1e-2f
#define ATOL 2e-4
#define RTOL 2e-3

static const mt_backend *be;
static float *zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

// Recomputes out from the inputs the context points to.
typedef void forward_fn(void *ctx, float *out);

static double loss_of(forward_fn *f, void *ctx, float *out, const float *R, size_t nout) {
    f(ctx, out);
    double s = 0;
    for (size_t i = 0; i < nout; i++) s += (double)out[i] * R[i];
    return s;
}

// Compares grad[n] with central differences of the loss in x[n]; returns the worst
// |fd - grad| / (ATOL + RTOL |fd|) (<= 1 passes) and prints it with what.
static double fd_check(const char *what, forward_fn *f, void *ctx, float *x, size_t n, const float *grad,
                       size_t nout, const float *R) {
    float *out = zeros(nout);
    double worst = 0, worst_abs = 0;
    for (size_t i = 0; i < n; i++) {
        float saved = x[i];
        x[i] = saved + EPS;
        double up = loss_of(f, ctx, out, R, nout);
        x[i] = saved - EPS;
        double down = loss_of(f, ctx, out, R, nout);
        x[i] = saved;
        double fd = (up - down) / (2.0 * EPS), d = fabs(fd - grad[i]);
        worst = fmax(worst, d / (ATOL + RTOL * fabs(fd)));
        worst_abs = fmax(worst_abs, d);
    }
    printf("# %-28s %5zu elements: max |fd - analytic| %.2e, worst ratio to tolerance %.3f\n", what, n, worst_abs,
           worst);
    free(out);
    return worst;
}

// ---- matmul ----------------------------------------------------------------------------------

typedef struct { float *inp, *w, *b; int N, IC, OC; } matmul_ctx;
static void matmul_fwd(void *c, float *out) {
    matmul_ctx *m = c;
    be->matmul_forward(out, m->inp, m->w, m->b, NULL, m->N, m->IC, m->OC);
}

TEST(matmul_backward_matches_finite_differences) {
    matmul_ctx m = {NULL, NULL, NULL, 7, 13, 11};
    m.inp = rand_vec(m.N * m.IC, 1), m.w = rand_vec(m.OC * m.IC, 1), m.b = rand_vec(m.OC, 1);
    size_t nout = (size_t)m.N * m.OC;
    float *R = rand_vec(nout, 1), *dinp = rand_vec(m.N * m.IC, 1), *dw = rand_vec(m.OC * m.IC, 1),
          *db = rand_vec(m.OC, 1);
    // accumulation: start from random gradients and subtract them afterwards
    float *dinp0 = malloc(sizeof(float) * m.N * m.IC), *dw0 = malloc(sizeof(float) * m.OC * m.IC), db0[11];
    memcpy(dinp0, dinp, sizeof(float) * m.N * m.IC);
    memcpy(dw0, dw, sizeof(float) * m.OC * m.IC);
    memcpy(db0, db, sizeof db0);
    be->matmul_backward(dinp, dw, db, R, m.inp, m.w, m.N, m.IC, m.OC);
    for (int i = 0; i < m.N * m.IC; i++) dinp[i] -= dinp0[i];
    for (int i = 0; i < m.OC * m.IC; i++) dw[i] -= dw0[i];
    for (int i = 0; i < m.OC; i++) db[i] -= db0[i];
    CHECK(fd_check("matmul dinp", matmul_fwd, &m, m.inp, m.N * m.IC, dinp, nout, R) <= 1);
    CHECK(fd_check("matmul dweight", matmul_fwd, &m, m.w, m.OC * m.IC, dw, nout, R) <= 1);
    CHECK(fd_check("matmul dbias", matmul_fwd, &m, m.b, m.OC, db, nout, R) <= 1);
    // NULL outputs are skipped, the others still computed
    float *db2 = zeros(m.OC);
    be->matmul_backward(NULL, NULL, db2, R, m.inp, m.w, m.N, m.IC, m.OC);
    CHECK(fd_check("matmul dbias alone", matmul_fwd, &m, m.b, m.OC, db2, nout, R) <= 1);
    free(m.inp); free(m.w); free(m.b); free(R); free(dinp); free(dw); free(db); free(dinp0); free(dw0); free(db2);
}

// ---- LayerNorm -------------------------------------------------------------------------------

typedef struct { float *inp, *w, *b, *mean, *rstd; int N, C; } ln_ctx;
static void ln_fwd(void *c, float *out) {
    ln_ctx *l = c;
    be->layernorm_forward(out, l->mean, l->rstd, l->inp, l->w, l->b, l->N, l->C, 1e-5f);
}

TEST(layernorm_backward_matches_finite_differences) {
    ln_ctx l = {NULL, NULL, NULL, NULL, NULL, 6, 37};  // C past one column block
    size_t n = (size_t)l.N * l.C;
    l.inp = rand_vec(n, 2), l.w = rand_vec(l.C, 1), l.b = rand_vec(l.C, 1);
    for (size_t i = 0; i < n; i++) l.inp[i] += 0.5f;  // a non-zero mean
    l.mean = zeros(l.N), l.rstd = zeros(l.N);
    float *R = rand_vec(n, 1), *dinp = zeros(n), *dw = zeros(l.C), *db = zeros(l.C), *out = zeros(n);
    ln_fwd(&l, out);
    be->layernorm_backward(dinp, dw, db, R, l.inp, l.w, l.mean, l.rstd, l.N, l.C);
    CHECK(fd_check("layernorm dinp", ln_fwd, &l, l.inp, n, dinp, n, R) <= 1);
    CHECK(fd_check("layernorm dweight", ln_fwd, &l, l.w, l.C, dw, n, R) <= 1);
    CHECK(fd_check("layernorm dbias", ln_fwd, &l, l.b, l.C, db, n, R) <= 1);
    free(l.inp); free(l.w); free(l.b); free(l.mean); free(l.rstd); free(R); free(dinp); free(dw); free(db);
    free(out);
}

// ---- attention -------------------------------------------------------------------------------

typedef struct {
    float *qkv, *att;
    int32_t offsets[4];
    int64_t att_offsets[3];
    int B, C, NH;
    const mt_dropout_key *drop;
} att_ctx;
static void att_fwd(void *c, float *out) {
    att_ctx *a = c;
    be->attention_forward_dropout(out, a->att, a->qkv, a->offsets, a->att_offsets, a->B, 7, a->C, a->NH, a->drop);  // longest: 7
}

static void attention_case(const mt_dropout_key *drop, const char *what) {
    att_ctx a = {.offsets = {0, 1, 5, 12}, .B = 3, .C = 8, .NH = 2, .drop = drop};  // lengths 1, 4, 7
    int N = a.offsets[a.B];
    int64_t total = 0;
    for (int b = 0; b < a.B; b++) {
        int L = a.offsets[b + 1] - a.offsets[b];
        a.att_offsets[b] = total;
        total += (int64_t)a.NH * L * L;
    }
    a.qkv = rand_vec((size_t)N * 3 * a.C, 1.5f), a.att = zeros(total);
    float *R = rand_vec((size_t)N * a.C, 1), *dqkv = zeros((size_t)N * 3 * a.C), *out = zeros((size_t)N * a.C);
    att_fwd(&a, out);
    be->attention_backward(dqkv, R, a.qkv, a.att, a.offsets, a.att_offsets, a.B, 7, a.C, a.NH, drop);
    CHECK(fd_check(what, att_fwd, &a, a.qkv, (size_t)N * 3 * a.C, dqkv, (size_t)N * a.C, R) <= 1);
    free(a.qkv); free(a.att); free(R); free(dqkv); free(out);
}

TEST(attention_backward_matches_finite_differences) {
    attention_case(NULL, "attention dqkv");
    mt_dropout_key drop = {0.3f, 42, 7, mt_dropout_site(1, 2, 3)};
    attention_case(&drop, "attention dqkv, dropout 0.3");
}

// ---- GELU, dropout, embeddings ---------------------------------------------------------------

typedef struct { float *inp; int64_t n; } gelu_ctx;
static void gelu_fwd(void *c, float *out) {
    gelu_ctx *g = c;
    be->gelu_forward(out, g->inp, g->n);
}

TEST(gelu_backward_matches_finite_differences) {
    gelu_ctx g = {rand_vec(200, 4), 200};  // [-4, 4): both tails and the bend
    g.inp[0] = 0.0f, g.inp[1] = 5e-4f, g.inp[2] = -2e-3f, g.inp[3] = -9.0f;  // around the switch to the series
    float *R = rand_vec(200, 1), *dinp = zeros(200), *dinp_out = zeros(200), *out = zeros(200);
    be->gelu_backward(dinp, g.inp, NULL, R, g.n);
    CHECK(fd_check("gelu dinp", gelu_fwd, &g, g.inp, 200, dinp, 200, R) <= 1);
    gelu_fwd(&g, out);  // Phi from the forward's output: the same gradient to float rounding
    be->gelu_backward(dinp_out, g.inp, out, R, g.n);
    double d = 0;
    for (int i = 0; i < 200; i++) d = fmax(d, fabs(dinp_out[i] - dinp[i]) / (1e-6 + fabs(dinp[i])));
    printf("# gelu from the output: max relative diff %.2e to the erf form\n", d);
    CHECK(d <= 1e-5);
    free(g.inp); free(R); free(dinp); free(dinp_out); free(out);
}

typedef struct { float *inp, *residual; int64_t n; const mt_dropout_key *drop; } drop_ctx;
static void drop_fwd(void *c, float *out) {
    drop_ctx *d = c;
    be->dropout_forward(out, d->inp, d->residual, d->n, d->drop);
}

TEST(dropout_backward_matches_finite_differences_and_rng) {
    enum { n = 3000 };  // several mask blocks, one partial
    mt_dropout_key key = {0.25f, 1234, 5, mt_dropout_site(0, 3, 2)};
    drop_ctx d = {rand_vec(n, 1), rand_vec(n, 1), n, &key};
    float *R = rand_vec(n, 1), *dinp = zeros(n), *out = zeros(n);
    be->dropout_backward(dinp, R, n, &key);
    CHECK(fd_check("dropout dinp", drop_fwd, &d, d.inp, n, dinp, n, R) <= 1);
    // element i kept iff the lib/rng mask says so; kept values scaled by 1/(1-p), plus residual
    drop_fwd(&d, out);
    uint32_t thr = mt_dropout_threshold(key.p);
    int wrong = 0, dropped = 0;
    for (int i = 0; i < n; i++) {
        int keep = mt_dropout_keep(key.seed, key.step, key.site, (uint64_t)i, thr);
        float want = (keep ? d.inp[i] / (1.0f - key.p) : 0.0f) + d.residual[i];
        wrong += fabsf(out[i] - want) > 1e-6f;
        dropped += !keep;
    }
    CHECK(wrong == 0);
    CHECK(dropped > n * 0.2 && dropped < n * 0.3);
    // p = 0 and a NULL key: the identity (plus residual)
    key.p = 0.0f;
    drop_fwd(&d, out);
    int same = 1;
    for (int i = 0; i < n; i++) same &= out[i] == d.inp[i] + d.residual[i];
    CHECK(same);
    free(d.inp); free(d.residual); free(R); free(dinp); free(out);
}

typedef struct { float *wte, *wpe, *wtt; const int32_t *ids, *types, *pos; int N, C; } emb_ctx;
static void emb_fwd(void *c, float *out) {
    emb_ctx *e = c;
    be->embeddings_forward(out, e->ids, e->types, e->pos, e->wte, e->wpe, e->wtt, e->N, e->C);
}

TEST(embeddings_backward_matches_finite_differences) {
    // repeated words, positions and types: the scatter-add must sum them
    static const int32_t ids[7] = {3, 1, 3, 0, 5, 3, 1}, types[7] = {0, 0, 1, 1, 0, 1, 1}, pos[7] = {0, 1, 2, 0, 1, 2, 3};
    emb_ctx e = {rand_vec(6 * 40, 1), rand_vec(4 * 40, 1), rand_vec(2 * 40, 1), ids, types, pos, 7, 40};
    float *R = rand_vec(7 * 40, 1), *dwte = zeros(6 * 40), *dwpe = zeros(4 * 40), *dwtt = zeros(2 * 40);
    be->embeddings_backward(dwte, dwpe, dwtt, R, ids, types, pos, e.N, e.C);
    CHECK(fd_check("embeddings dwte", emb_fwd, &e, e.wte, 6 * 40, dwte, 7 * 40, R) <= 1);
    CHECK(fd_check("embeddings dwpe", emb_fwd, &e, e.wpe, 4 * 40, dwpe, 7 * 40, R) <= 1);
    CHECK(fd_check("embeddings dwtt", emb_fwd, &e, e.wtt, 2 * 40, dwtt, 7 * 40, R) <= 1);
    int untouched = 1;  // word 2 and 4 never occur: their rows stay zero
    for (int c = 0; c < 40; c++) untouched &= dwte[2 * 40 + c] == 0.0f && dwte[4 * 40 + c] == 0.0f;
    CHECK(untouched);
    free(e.wte); free(e.wpe); free(e.wtt); free(R); free(dwte); free(dwpe); free(dwtt);
}

// Row sums are split over columns, not rows, so the thread count never changes a bit.
static int set_threads(int n) {  // returns the previous count
#ifdef _OPENMP
    int before = omp_get_max_threads();
    omp_set_num_threads(n);
    return before;
#else
    (void)n;
    return 1;
#endif
}

TEST(reductions_do_not_depend_on_the_thread_count) {
    int N = 700, C = 96, V = 50;  // past PAR_MIN, so the loops really run in parallel
    size_t n = (size_t)N * C;
    float *x = rand_vec(n, 1), *dy = rand_vec(n, 1), *w = rand_vec(C, 1), *mean = zeros(N), *rstd = zeros(N);
    float *y = zeros(n);
    int32_t *ids = malloc(sizeof(int32_t) * N), *zero_ids = calloc(N, sizeof(int32_t));
    for (int i = 0; i < N; i++) ids[i] = (int32_t)(i * 7 % V);
    be->layernorm_forward(y, mean, rstd, x, w, w, N, C, 1e-5f);
    float *out[2];
    int threads = set_threads(1);
    size_t m = n + 2 * C + C + (size_t)V * C;
    for (int t = 0; t < 2; t++) {
        set_threads(t + 1);
        float *o = out[t] = zeros(m);
        be->layernorm_backward(o, o + n, o + n + C, dy, x, w, mean, rstd, N, C);
        be->matmul_backward(NULL, NULL, o + n + 2 * C, dy, x, w, N, C, C);
        be->embeddings_backward(o + n + 3 * C, NULL, NULL, dy, ids, zero_ids, zero_ids, N, C);
    }
    set_threads(threads);
    CHECK(memcmp(out[0], out[1], m * sizeof(float)) == 0);
    free(x); free(dy); free(w); free(mean); free(rstd); free(y); free(ids); free(zero_ids); free(out[0]); free(out[1]);
}

int main(void) {
    be = mt_backend_cpu();
    RUN(matmul_backward_matches_finite_differences);
    RUN(layernorm_backward_matches_finite_differences);
    RUN(attention_backward_matches_finite_differences);
    RUN(gelu_backward_matches_finite_differences);
    RUN(dropout_backward_matches_finite_differences_and_rng);
    RUN(embeddings_backward_matches_finite_differences);
    RUN(reductions_do_not_depend_on_the_thread_count);
    return check_summary();
}
