// encoder_step.c — one encoder training step (mt_bert_forward_train + mt_bert_backward, dropout
// 0.1) of a model on B sequences of L tokens; prints the best and mean process CPU time per
// step over REPS steps (CPU time, not wall time: on shared cores other processes' load would
// otherwise dominate). Built and compared with PyTorch by bench/encoder_step.sh.
//   encoder_step MODEL_DIR B L REPS
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bert.h"
#include "common.h"
#include <time.h>
static double cpu_now(void) { struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char **argv) {
    int B = atoi(argv[2]), L = atoi(argv[3]), reps = atoi(argv[4]);
    char err[1024];
    mt_bert *m = mt_bert_load(argv[1], mt_backend_cpu(), err, sizeof err);
    if (!m) { fprintf(stderr, "%s\n", err); return 1; }
    int N = B * L, C = m->cfg.hidden_size;
    int32_t *ids = malloc(N * 4), *types = calloc(N, 4), *off = malloc((B + 1) * 4);
    for (int i = 0; i < N; i++) ids[i] = 1000 + (i * 7919) % 20000;
    for (int b = 0; b <= B; b++) off[b] = b * L;
    float *grads = calloc(m->num_params, 4), *dh = malloc((size_t)N * C * 4);
    mt_bert_reserve(m, N, B, L, 1);
    mt_bert_dropout d = {0.1f, 1, 0, 0};
    double best = 1e9, total = 0;
    for (int r = 0; r < reps + 1; r++) {
        d.step = r;
        double t0 = cpu_now();
        const float *h = mt_bert_forward_train(m, ids, types, off, B, &d);
        for (int i = 0; i < N * C; i++) dh[i] = h[i] * 1e-3f;
        mt_bert_backward(m, dh, grads);
        double t = cpu_now() - t0;
        if (r) { total += t; if (t < best) best = t; }
    }
    printf("C: B=%d L=%d CPU time per step best %.1f ms, mean %.1f ms\n", B, L, best * 1e3, total / reps * 1e3);
    return 0;
}
