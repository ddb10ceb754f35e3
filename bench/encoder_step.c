// encoder_step.c — one encoder training step (mt_bert_forward_train + mt_bert_backward, dropout
// 0.1) of a model on B sequences of L tokens, REPS timed steps after one warm-up. Prints one
// line "cpu_ms=BEST wall_ms=BEST cpu_mean_ms=MEAN rss_kib=PEAK": process CPU time (on shared
// cores other processes' load would otherwise dominate), wall time, and the peak resident
// memory of the whole process. Built and compared with PyTorch by bench/encoder_step.sh.
//   encoder_step MODEL_DIR B L REPS
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bert.h"
#include "common.h"

static double now(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: encoder_step MODEL_DIR B L REPS\n"); return 2; }
    int B = atoi(argv[2]), L = atoi(argv[3]), reps = atoi(argv[4]);
    char err[1024];
    mt_bert *m = mt_bert_load(argv[1], mt_backend_cpu(), err, sizeof err);
    if (!m) { fprintf(stderr, "%s\n", err); return 1; }
    int N = B * L, C = m->cfg.hidden_size;
    int32_t *ids = malloc(N * 4), *types = calloc(N, 4), *off = malloc((B + 1) * 4);
    for (int i = 0; i < N; i++) ids[i] = 1000 + (i * 7919) % 20000;  // as encoder_step_torch.py
    for (int b = 0; b <= B; b++) off[b] = b * L;
    float *grads = calloc(m->num_params, 4), *dh = malloc((size_t)N * C * 4);
    mt_bert_reserve(m, N, B, L, 1, 0);
    mt_bert_dropout d = {0.1f, 1, 0, 0};
    double best_cpu = 1e9, best_wall = 1e9, total = 0;
    for (int r = 0; r < reps + 1; r++) {
        d.step = r;
        double c0 = now(CLOCK_PROCESS_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
        const float *h = mt_bert_forward_train(m, ids, types, off, B, &d);
        for (int i = 0; i < N * C; i++) dh[i] = 2e-3f * h[i];  // d/dh of 1e-3 sum(h^2), as the torch side
        mt_bert_backward(m, dh, grads);
        double c = now(CLOCK_PROCESS_CPUTIME_ID) - c0, w = now(CLOCK_MONOTONIC) - w0;
        if (!r) continue;  // warm-up
        total += c;
        if (c < best_cpu) best_cpu = c;
        if (w < best_wall) best_wall = w;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("cpu_ms=%.1f wall_ms=%.1f cpu_mean_ms=%.1f rss_kib=%ld\n", best_cpu * 1e3, best_wall * 1e3,
           total / reps * 1e3, ru.ru_maxrss);
    return 0;
}
