// train_check.c — the encoder on the GPU against the CPU, and its speed (tests/gpu/check.sh).
//
//   train_check parity MODEL_DIR [STEPS]
//       STEPS (default 3) training steps on the CPU backend and on the CUDA backend (fp32), same
//       packed variable-length batches, dropout 0.1 (the masks are the same Philox numbers on
//       both), loss 1e-3 * sum(h^2) over the last hidden state, AdamW (lr 1e-4, lib/adamw.c
//       through the backend's adamw_update_multi). Prints the loss of each step on both, the gradient's relative difference
//       after step 1 and the parameters' after the last step; exit status 1 past tolerance
//       (loss 1e-5, gradients and parameters 1e-4 relative).
//   train_check speed MODEL_DIR B L STEPS PRECISION
//       median milliseconds of an inference forward (mean-pooled output copied back) and of a
//       training step (forward + backward + AdamW) on B sequences of L tokens, PRECISION
//       fp32 | tf32 | bf16 | fp16 for the matrix products; with tokens/s, TFLOP/s and MFU (against the
//       H100 SXM's dense bf16 peak, 989 TFLOP/s). One line "speed ..." per mode; an optional
//       last argument names the modes (default forward,train). The train mode adds the step's
//       host side (lib/profile.h's HOST counters: no synchronize added): "speed-host ..." with
//       the host's enqueue time, its time inside launching calls and inside mid-step waits, op
//       calls and CUDA launches per step, the step with the host's launch time doubled (half
//       as many steps again), then "host enqueue X ms of Y ms step: graphs could save at most
//       ~Z ms" (print_host_side says why Z bounds it). Under MTBERT_PROFILE=ops the
//       speed lines say "speed-profiled", the host side is left out, and the op table at exit
//       is the last step's.
//       The speed and speed-host lines name the attention path (MTBERT_ATTENTION=batched | fused,
//       lib/backend_cuda.h; fused applies to bf16 / fp16 only).
// Needs a GPU; built by `make` wherever nvcc is, run only by tests/gpu/check.sh.
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "bert.h"
#include "common.h"
#include "device.h"
#include "profile.h"

#define PEAK_BF16_TFLOPS 989.4  // H100 SXM5 dense bf16, the datasheet figure MFU is quoted against

#include "train_parity.h"

// The device under test: cuda, or MTBERT_CHECK_DEVICE (cpu-staged tests the harness here).
static const mt_backend *device_under_test(void) {
    const char *d = getenv("MTBERT_CHECK_DEVICE");
    return mt_backend_select(d && *d ? d : "cuda");
}

static int parity(const char *dir, int steps) {
    const mt_backend *gpu = device_under_test();
    mt_backend_set_precision(gpu, "fp32");
    return training_parity(dir, mt_backend_cpu(), gpu, 8, 128, steps);
}

// One training step's host side, from the profiler's HOST counters (lib/profile.h).
typedef struct {
    double step, enqueue, launch, wait, idle;  // ms: the step; its start to the last op call's return; inside
                                               // the launching calls; inside the mid-step waits; idle bound
    uint64_t calls, waits, launches;
} host_side;

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

// The median of v[n] (sorts v).
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

// The median over n records of the double at byte offset off.
static double median_of(const host_side *h, int n, size_t off) {
    double *v = mt_malloc((size_t)n * sizeof *v);
    for (int i = 0; i < n; i++) v[i] = *(const double *)((const char *)&h[i] + off);
    double m = median(v, n);
    free(v);
    return m;
}

// Can CUDA graphs pay here (issue #6)? A graph replays the step's launches for the cost of one,
// so all it can save is time the GPU spent waiting for the host to enqueue work. Before the
// final synchronize the host spent `enqueue` ms: `launch` inside the calls that enqueue,
// `wait` blocked in mid-step waits (uploads, readbacks), the rest on its own work (losses,
// AdamW's scalars), which a graph does not remove. Two bounds on the saving:
//  - `launch` itself: the GPU can have starved for launches at most that long;
//  - `slowed - step`: the same steps with every launching call taking twice its host time
//    (mt_profile_slow_host). The step's time is a max over paths of sums of host and device
//    times, so it is convex in the launch times: the second h of launch time costs at least
//    what the first did, i.e. at least what launches costing nothing would save. Where the GPU
//    is the bottleneck this is near zero however large `launch` is.
// A graph cannot span a wait (a host readback), so each wait splits the step into separate
// graphs, and the GPU's idle time after the waits (`idle`: the host's time from a wait's
// return to the next op's return) stays; only removing the waits saves it.
static void print_host_side(const host_side *h, int n, double slowed, int B, int L, const char *precision,
                            const char *attention) {
#define MED(f) median_of(h, n, offsetof(host_side, f))
    double step = MED(step), enq = MED(enqueue), launch = MED(launch), wait = MED(wait), idle = MED(idle);
#undef MED
    const host_side *last = &h[n - 1];  // the counts are the same every step
    double grow = slowed - step, save = grow < launch ? (grow > 0 ? grow : 0) : launch;
    printf("speed-host mode=train precision=%s attention=%s B=%d L=%d step_ms=%.3f enqueue_ms=%.3f launch_ms=%.3f "
           "slowed_ms=%.3f graphs_ms=%.3f wait_ms=%.3f waits=%llu idle_ms=%.3f op_calls=%llu launches=%llu\n",
           precision, attention, B, L, step, enq, launch, slowed, save, wait, (unsigned long long)last->waits, idle,
           (unsigned long long)last->calls, (unsigned long long)last->launches);
    printf("host enqueue %.2f ms of %.2f ms step: graphs could save at most ~%.2f ms (%.2f ms inside %llu op calls, "
           "%llu launches; twice that made the step %+.2f ms; %llu waits in the step took %.2f ms, GPU idle after "
           "them <= %.2f ms)\n", enq, step, save, launch, (unsigned long long)last->calls,
           (unsigned long long)last->launches, grow, (unsigned long long)last->waits, wait, idle);
}

// The median of n training steps with the host's launch time doubled (print_host_side).
static double slowed_steps(trainee *t, const int32_t *ids, const int32_t *offsets, int B, int n, double *ms) {
    mt_profile_slow_host(1);
    for (int s = 0; s < n; s++) {
        t->be->synchronize();
        double t0 = mt_now();
        train_step(t, ids, offsets, B, (uint32_t)s, 1);
        t->be->synchronize();
        ms[s] = (mt_now() - t0) * 1e3;
    }
    mt_profile_slow_host(0);
    return median(ms, n);
}

static int speed(const char *dir, int B, int L, int steps, const char *precision, const char *modes) {
    const mt_backend *gpu = device_under_test();
    mt_backend_set_precision(gpu, precision);
    const char *attention = mt_backend_attention(gpu);
    // the profiler's HOST counters give the step's host side: two clock reads per op call, no
    // synchronize added; under MTBERT_PROFILE=ops (device.c) the ops table instead
    // (check.sh's ratios read only the "speed" lines, so a profiled run is tagged apart)
    int profiled = mt_profile_mode(gpu) == MT_PROFILE_OPS;
    if (!profiled) gpu = mt_profile_wrap(gpu, MT_PROFILE_HOST);
    trainee t = trainee_new(dir, gpu, B * L, B, L);
    const mt_bert_config *c = &t.m->cfg;
    int32_t *offsets = mt_malloc((size_t)(B + 1) * sizeof *offsets), *lengths = mt_malloc((size_t)B * sizeof *lengths);
    int32_t *ids = make_batch(B, L, 0, offsets, 7);
    for (int b = 0; b < B; b++) lengths[b] = L;
    float *pooled = mt_malloc((size_t)B * c->hidden_size * sizeof(float));
    double *ms = mt_malloc((size_t)steps * sizeof *ms);
    host_side *hs = mt_calloc((size_t)steps, sizeof *hs);
    // FLOPs per step: the linear layers 2 * tokens * weights forward, attention's two products
    // 4 * B * L^2 * C per layer forward; backward twice the forward.
    double C = c->hidden_size, F = c->intermediate_size, layers = c->num_hidden_layers, tokens = (double)B * L;
    double fwd = layers * (2.0 * tokens * (4 * C * C + 2 * C * F) + 4.0 * B * (double)L * L * C);
    for (int mode = 0; mode < 2; mode++) {
        if (!strstr(modes, mode ? "train" : "forward")) continue;
        for (int s = -3; s < steps; s++) {  // three warm-up steps
            gpu->synchronize();
            mt_profile_reset();  // this step's counters alone (so the ops table shows the last step)
            double t0 = mt_now();
            if (mode == 0) {
                if (mt_bert_forward(t.m, ids, NULL, lengths, B, L, NULL, NULL)) mt_die("%s", mt_bert_error(t.m));
                mt_bert_pool(t.m, MT_POOL_MEAN, pooled);  // copies to the host: synchronises
            } else {
                train_step(&t, ids, offsets, B, (uint32_t)s + 3, 1);
                double tq = mt_now();
                mt_profile_totals in;  // before the final synchronize: the step's own waits
                mt_profile_get(&in);
                gpu->synchronize();
                if (s >= 0)
                    hs[s] = (host_side){(mt_now() - t0) * 1e3, (tq - t0) * 1e3, in.launch_s * 1e3, in.wait_s * 1e3,
                                        in.idle_s * 1e3, in.calls, in.waits, in.launches};
            }
            if (s >= 0) ms[s] = (mt_now() - t0) * 1e3;
        }
        double med = median(ms, steps), flops = mode ? 3 * fwd : fwd, tflops = flops / (med * 1e-3) / 1e12;
        printf("%s mode=%s precision=%s attention=%s B=%d L=%d layers=%d hidden=%d ms=%.3f tokens_per_s=%.0f "
               "tflops=%.1f mfu=%.3f\n", profiled ? "speed-profiled" : "speed", mode ? "train" : "forward", precision,
               attention, B, L, c->num_hidden_layers, c->hidden_size, med, tokens / (med * 1e-3), tflops,
               tflops / PEAK_BF16_TFLOPS);
        if (mode && !profiled) {  // (profiled: the op table at exit is the last step's)
            double slowed = slowed_steps(&t, ids, offsets, B, steps > 6 ? steps / 2 : steps, ms);
            print_host_side(hs, steps, slowed, B, L, precision, attention);
        }
    }
    free(offsets), free(lengths), free(ids), free(pooled), free(ms), free(hs);
    return 0;
}

int main(int argc, char **argv) {
    mt_set_prog(argv[0]);
    if (argc >= 3 && !strcmp(argv[1], "parity"))
        return parity(argv[2], argc > 3 ? (int)mt_parse_long("STEPS", argv[3], 1, 1000) : 3);
    if ((argc == 7 || argc == 8) && !strcmp(argv[1], "speed"))
        return speed(argv[2], (int)mt_parse_long("B", argv[3], 1, 1 << 16), (int)mt_parse_long("L", argv[4], 2, 512),
                     (int)mt_parse_long("STEPS", argv[5], 1, 100000), argv[6], argc == 8 ? argv[7] : "forward,train");
    fprintf(stderr, "usage: train_check parity MODEL_DIR [STEPS]\n"
                    "       train_check speed MODEL_DIR B L STEPS fp32|tf32|bf16|fp16 [forward,train]\n");
    return 2;
}
