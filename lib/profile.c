// profile.c — see profile.h. One wrapper per op of lib/backend.h, generated from one list.
#include "profile.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "device.h"

// X(op, waits, flops, (params), (args)) for every op that computes or moves data. waits: 1 for
// the ops that return only when the device is done (the CUDA backend's synchronize, copies to
// the host, and gram, which reads its k*k sums back; uploads go through a pinned staging ring
// and wait only when larger than it: weights at start-up). flops: the products' floating-point
// operations (0: not a product); attention counts its padded [max_len, max_len] products, as
// the CUDA kernels compute them (the CPU skips the padding: its rate there is understated).
#define MT_PROFILED_OPS(X)                                                                                   \
    X(copy_to_device, 0, 0, (void *dst, const void *src, size_t bytes), (dst, src, bytes))                   \
    X(copy_to_host, 1, 0, (void *dst, const void *src, size_t bytes), (dst, src, bytes))                     \
    X(synchronize, 1, 0, (void), ())                                                                         \
    X(gemm, 0, 2.0 * M * N * K,                                                                              \
      (int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,   \
       float beta, float *C, int ldc),                                                                       \
      (ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))                                                \
    X(matmul_forward, 0, 2.0 * N * IC * OC,                                                                  \
      (float *out, const float *inp, const float *weight, const float *bias, const float *residual, int N,   \
       int IC, int OC),                                                                                      \
      (out, inp, weight, bias, residual, N, IC, OC))                                                         \
    X(embeddings_forward, 0, 0,                                                                              \
      (float *out, const int32_t *ids, const int32_t *types, const int32_t *pos, const float *wte,           \
       const float *wpe, const float *wtt, int N, int C),                                                    \
      (out, ids, types, pos, wte, wpe, wtt, N, C))                                                           \
    X(layernorm_forward, 0, 0,                                                                               \
      (float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias, int N, \
       int C, float eps),                                                                                    \
      (out, mean, rstd, inp, weight, bias, N, C, eps))                                                       \
    X(attention_forward, 0, 4.0 * B * max_len * max_len * C,                                                 \
      (float *out, float *att, const float *qkv, const int32_t *offsets, const int64_t *att_offsets, int B,  \
       int max_len, int C, int NH),                                                                          \
      (out, att, qkv, offsets, att_offsets, B, max_len, C, NH))                                              \
    X(gelu_forward, 0, 0, (float *out, const float *inp, int64_t n), (out, inp, n))                          \
    X(tanh_forward, 0, 0, (float *out, const float *inp, int64_t n), (out, inp, n))                          \
    X(pool_forward, 0, 0, (float *out, const float *inp, const int32_t *offsets, int B, int C, int mode),    \
      (out, inp, offsets, B, C, mode))                                                                       \
    X(unpack_forward, 0, 0, (float *out, const float *inp, const int32_t *offsets, int B, int T, int C),     \
      (out, inp, offsets, B, T, C))                                                                          \
    X(zero, 0, 0, (void *p, size_t bytes), (p, bytes))                                                       \
    X(attention_forward_dropout, 0, 4.0 * B * max_len * max_len * C,                                         \
      (float *out, float *att, const float *qkv, const int32_t *offsets, const int64_t *att_offsets, int B,  \
       int max_len, int C, int NH, const mt_dropout_key *drop),                                              \
      (out, att, qkv, offsets, att_offsets, B, max_len, C, NH, drop))                                        \
    X(dropout_forward, 0, 0,                                                                                 \
      (float *out, const float *inp, const float *residual, int64_t n, const mt_dropout_key *drop),          \
      (out, inp, residual, n, drop))                                                                         \
    X(dropout_backward, 0, 0, (float *dinp, const float *dout, int64_t n, const mt_dropout_key *drop),       \
      (dinp, dout, n, drop))                                                                                 \
    X(matmul_backward, 0, 2.0 * N * IC * OC * ((dinp != NULL) + (dweight != NULL)),                          \
      (float *dinp, float *dweight, float *dbias, const float *dout, const float *inp, const float *weight,   \
       int N, int IC, int OC),                                                                               \
      (dinp, dweight, dbias, dout, inp, weight, N, IC, OC))                                                  \
    X(layernorm_backward, 0, 0,                                                                              \
      (float *dinp, float *dweight, float *dbias, const float *dout, const float *inp, const float *weight,  \
       const float *mean, const float *rstd, int N, int C),                                                  \
      (dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C))                                           \
    X(attention_backward, 0, 8.0 * B * max_len * max_len * C,                                                \
      (float *dqkv, const float *dout, const float *qkv, const float *att, const int32_t *offsets,            \
       const int64_t *att_offsets, int B, int max_len, int C, int NH, const mt_dropout_key *drop),           \
      (dqkv, dout, qkv, att, offsets, att_offsets, B, max_len, C, NH, drop))                                 \
    X(gelu_backward, 0, 0, (float *dinp, const float *inp, const float *out, const float *dout, int64_t n),  \
      (dinp, inp, out, dout, n))                                                                             \
    X(embeddings_backward, 0, 0,                                                                             \
      (float *dwte, float *dwpe, float *dwtt, const float *dout, const int32_t *ids, const int32_t *types,   \
       const int32_t *pos, int N, int C),                                                                    \
      (dwte, dwpe, dwtt, dout, ids, types, pos, N, C))                                                       \
    X(pool_backward, 0, 0, (float *dinp, const float *dout, const int32_t *offsets, int B, int C, int mode), \
      (dinp, dout, offsets, B, C, mode))                                                                     \
    X(copy_2d, 0, 0, (float *dst, int ldd, const float *src, int lds, int rows, int cols),                   \
      (dst, ldd, src, lds, rows, cols))                                                                      \
    X(add_bias_forward, 0, 0, (float *out, int ldo, const float *b1, const float *b2, int N, int F),         \
      (out, ldo, b1, b2, N, F))                                                                              \
    X(add_bias_backward, 0, 0, (float *db1, float *db2, const float *dout, int ldo, int N, int F),           \
      (db1, db2, dout, ldo, N, F))                                                                           \
    X(im2col_same, 0, 0, (float *col, const float *inp, const int32_t *offsets, int B, int N, int C, int w), \
      (col, inp, offsets, B, N, C, w))                                                                       \
    X(col2im_same, 0, 0,                                                                                     \
      (float *dinp, const float *dcol, const int32_t *offsets, int B, int N, int C, int w),                  \
      (dinp, dcol, offsets, B, N, C, w))                                                                     \
    X(relu_dropout_forward, 0, 0, (float *x, int N, int D, const mt_dropout_key *drop), (x, N, D, drop))     \
    X(relu_dropout_backward, 0, 0,                                                                           \
      (float *dx, const float *dy, const float *y, int N, int D, const mt_dropout_key *drop),                \
      (dx, dy, y, N, D, drop))                                                                               \
    X(max_pool_forward, 0, 0,                                                                                \
      (float *out, int32_t *argmax, const float *inp, const int32_t *offsets, int B, int D),                 \
      (out, argmax, inp, offsets, B, D))                                                                     \
    X(max_pool_backward, 0, 0, (float *dinp, const float *dout, const int32_t *argmax, int B, int D),        \
      (dinp, dout, argmax, B, D))                                                                            \
    X(lstm_cell_forward, 0, 0,                                                                               \
      (float *gates, float *cell, float *hidden, float *step_h, float *hfinal, const float *step_g,          \
       const int32_t *list, const int32_t *next, const int32_t *offsets, int nact, int s, int H, int reverse), \
      (gates, cell, hidden, step_h, hfinal, step_g, list, next, offsets, nact, s, H, reverse))               \
    X(lstm_cell_backward, 0, 0,                                                                              \
      (float *dgates, float *hprev, float *step_g, float *dc, const float *step_h, const float *dhfinal,     \
       const float *gates, const float *cell, const float *hidden, const int32_t *list, const int32_t *next, \
       const int32_t *offsets, int nact, int s, int H, int reverse),                                         \
      (dgates, hprev, step_g, dc, step_h, dhfinal, gates, cell, hidden, list, next, offsets, nact, s, H,     \
       reverse))                                                                                             \
    X(adamw_update_multi, 0, 0,                                                                              \
      (float *p, const float *g, float *m, float *v, const mt_adamw_chunk *list, int count),                 \
      (p, g, m, v, list, count))                                                                             \
    X(gram, 1, 0, (double *gram, const float *const *g, int k, size_t n), (gram, g, k, n))                   \
    X(combine, 0, 0, (float *out, const float *const *g, const double *w, int k, size_t n),                  \
      (out, g, w, k, n))                                                                                     \
    X(scale, 0, 0, (float *x, float s, size_t n), (x, s, n))

#define MT_PROF_ENUM(op, waits, flops, params, args) OP_##op,
enum { MT_PROFILED_OPS(MT_PROF_ENUM) OP_COUNT };
#define MT_PROF_NAME(op, waits, flops, params, args) #op,
static const char *const op_name[OP_COUNT] = {MT_PROFILED_OPS(MT_PROF_NAME)};
#define MT_PROF_WAITS(op, waits, flops, params, args) waits,
static const int op_waits[OP_COUNT] = {MT_PROFILED_OPS(MT_PROF_WAITS)};

typedef struct {
    uint64_t calls, launches;
    double total_s, host_s, flops;  // total: synchronize to synchronize (OPS), host: inside the call
} op_stat;

static mt_backend inner, wrapper;  // a copy of the profiled backend's table, and its timing table
static const mt_backend *inner_of; // the profiled backend's own table
static int mode;                   // MT_PROFILE_OFF until the first wrap
static int inner_is_cuda;
static op_stat stat[OP_COUNT];
static double idle_since;          // HOST: when the last wait returned (< 0: a launch came after it)
static double idle_s, wall_t0;     // HOST: the idle bound; wall clock at the wrap or reset
static int slow_host;              // HOST: each launching call takes twice its time

static uint64_t launch_count(void) {
    return inner_is_cuda ? mt_backend_launch_count(inner_of) : 0;
}

// Around each call: in OPS mode the device is idle at the start and done at the end, so the
// op's time is its own; in HOST mode nothing waits that would not have.
static double op_begin(uint64_t *l0) {
    if (mode == MT_PROFILE_OPS) inner.synchronize();
    *l0 = launch_count();
    return mt_now();
}

static void op_end(int op, double t0, uint64_t l0, double flops) {
    double t1 = mt_now(), t2 = t1;
    op_stat *s = &stat[op];
    s->launches += launch_count() - l0;
    if (mode == MT_PROFILE_OPS) {
        inner.synchronize();
        t2 = mt_now();
    } else {  // the device, drained by the last wait, has work again at the latest now; a wait's
              // own copies count as idle time (nothing else runs then), so it is an upper bound
        if (idle_since >= 0) idle_s += t1 - idle_since;
        idle_since = op_waits[op] ? t1 : -1;
    }
    s->calls++, s->total_s += t2 - t0, s->host_s += t1 - t0, s->flops += flops;
    if (slow_host && mode == MT_PROFILE_HOST && !op_waits[op])
        while (mt_now() < t1 + (t1 - t0)) {}  // spin: a sleep's wake-up would overshoot
}

#define MT_PROF_WRAP(op, waits, flops, params, args)   \
    static void prof_##op params {                       \
        uint64_t l0;                                     \
        double t0 = op_begin(&l0);                       \
        inner.op args;                                   \
        op_end(OP_##op, t0, l0, flops);                  \
    }
MT_PROFILED_OPS(MT_PROF_WRAP)

int mt_profile_parse(const char *s) {
    if (!s || !*s) return MT_PROFILE_OFF;
    if (!strcmp(s, "ops")) return MT_PROFILE_OPS;
    if (!strcmp(s, "host")) return MT_PROFILE_HOST;
    return -1;
}

const mt_backend *mt_profile_wrap(const mt_backend *be, int m) {
    if (be == &wrapper || be == inner_of) return mode ? &wrapper : be;
    if (mode || (m != MT_PROFILE_OPS && m != MT_PROFILE_HOST)) return be;  // one backend per process
    inner = *be, wrapper = *be, inner_of = be, mode = m;
    inner_is_cuda = !strcmp(be->name, "cuda");
#define MT_PROF_SET(op, waits, flops, params, args) wrapper.op = be->op ? prof_##op : NULL;
    MT_PROFILED_OPS(MT_PROF_SET)
    mt_profile_reset();
    return &wrapper;
}

void mt_profile_slow_host(int on) { slow_host = on; }

int mt_profile_mode(const mt_backend *be) { return mode && be == &wrapper ? mode : MT_PROFILE_OFF; }

void mt_profile_reset(void) {
    memset(stat, 0, sizeof stat);
    wall_t0 = idle_since = mt_now();
    idle_s = 0;
}

void mt_profile_get(mt_profile_totals *t) {
    memset(t, 0, sizeof *t);
    for (int i = 0; i < OP_COUNT; i++) {
        t->calls += stat[i].calls, t->launches += stat[i].launches, t->device_s += stat[i].total_s;
        if (op_waits[i]) t->waits += stat[i].calls, t->wait_s += stat[i].host_s;
        else t->launch_s += stat[i].host_s;
    }
    if (mode != MT_PROFILE_OPS) t->device_s = 0;
    t->idle_s = idle_s;
}

static int by_time(const void *a, const void *b) {
    double x = stat[*(const int *)a].total_s, y = stat[*(const int *)b].total_s;
    return (x < y) - (x > y);
}

void mt_profile_print(FILE *f) {
    mt_profile_totals t;
    mt_profile_get(&t);
    if (!mode || !t.calls) return;
    int order[OP_COUNT], ops = mode == MT_PROFILE_OPS;
    for (int i = 0; i < OP_COUNT; i++) order[i] = i;
    qsort(order, OP_COUNT, sizeof *order, by_time);
    double sum = ops ? t.device_s : t.launch_s + t.wait_s;
    fprintf(f, "%s: profile (MTBERT_PROFILE=%s, %s backend): %s\n", mt_prog, ops ? "ops" : "host", inner.name,
            ops ? "each op timed between synchronize calls, host us = time inside the call"
                : "no synchronize added: host time inside each call");
    fprintf(f, "%-26s %8s %11s %7s %10s %10s %9s %8s\n", "op", "calls", ops ? "total ms" : "host ms", "%",
            "mean us", "host us", "launches", "TFLOP/s");
    for (int k = 0; k < OP_COUNT; k++) {
        const op_stat *s = &stat[order[k]];
        if (!s->calls) continue;
        char launches[32] = "-", rate[32] = "-";
        if (inner_is_cuda) snprintf(launches, sizeof launches, "%.1f", (double)s->launches / s->calls);
        if (s->flops > 0 && s->total_s > 0) snprintf(rate, sizeof rate, "%.3f", s->flops / s->total_s / 1e12);
        fprintf(f, "%-26s %8llu %11.3f %7.1f %10.1f %10.1f %9s %8s\n", op_name[order[k]],
                (unsigned long long)s->calls, s->total_s * 1e3, sum > 0 ? 100 * s->total_s / sum : 0.0,
                s->total_s / s->calls * 1e6, s->host_s / s->calls * 1e6, launches, rate);
    }
    fprintf(f, "%s: profile: %.3f ms in %llu op calls of %.3f ms wall; host %.3f ms inside the calls that launch "
            "work, %.3f ms inside the %llu that wait for the device (synchronize, readbacks, gram)", mt_prog, sum * 1e3,
            (unsigned long long)t.calls, (mt_now() - wall_t0) * 1e3, t.launch_s * 1e3, t.wait_s * 1e3,
            (unsigned long long)t.waits);
    if (inner_is_cuda) fprintf(f, "; %llu launches", (unsigned long long)t.launches);
    if (!ops) fprintf(f, "; device idle after the waits at most %.3f ms", t.idle_s * 1e3);
    fputc('\n', f);
}

void mt_profile_report(void) {
    fflush(stdout);
    mt_profile_print(stderr);
}
