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

static mt_bert *load(const char *dir, const mt_backend *be) {
    char err[1024];
    mt_bert *m = mt_bert_load(dir, be, err, sizeof err);
    if (!m) mt_die("%s", err);
    return m;
}

// One encoder and what training it needs, in its backend's memory.
typedef struct {
    mt_bert *m;
    const mt_backend *be;
    float *grads, *dh;
    mt_adamw opt;  // lib/adamw.c: torch's AdamW, the pooler (untrained) without decay
} trainee;

static trainee trainee_new(const char *dir, const mt_backend *be, int max_tokens, int max_batch, int max_len) {
    trainee t = {load(dir, be), be, NULL, NULL, {0}};
    t.grads = be->alloc(t.m->num_params * sizeof(float));
    t.dh = be->alloc((size_t)max_tokens * t.m->cfg.hidden_size * sizeof(float));
    mt_adamw_hparams hp = mt_adamw_defaults();
    mt_bert_adamw_init(&t.opt, t.m, &hp, 0);
    mt_bert_reserve(t.m, max_tokens, max_batch, max_len, 1, 0);
    return t;
}

// One step: loss = 1e-3 sum(h^2) (returned), gradients, AdamW at lr 1e-4.
static double train_step(trainee *t, const int32_t *ids, const int32_t *offsets, int B, uint32_t step, int update) {
    const mt_backend *be = t->be;
    mt_bert *m = t->m;
    mt_bert_dropout drop = {0.1f, 1234, step, 0};
    const float *h = mt_bert_forward_train(m, ids, NULL, offsets, B, &drop);
    if (!h) mt_die("%s", mt_bert_error(m));
    size_t n = (size_t)offsets[B] * m->cfg.hidden_size;
    const float *const hs[1] = {h};
    double sumsq, w = 2e-3;
    be->gram(&sumsq, hs, 1, n);
    be->combine(t->dh, hs, &w, 1, n);  // d loss / dh
    be->zero(t->grads, m->num_params * sizeof(float));
    mt_bert_backward(m, t->dh, t->grads);
    if (update) mt_adamw_step(&t->opt, m->params, t->grads, 1e-4);
    return 1e-3 * sumsq;
}

static float *to_host(const mt_backend *be, const float *p, size_t n) {
    float *h = mt_malloc(n * sizeof(float));
    be->copy_to_host(h, p, n * sizeof(float));
    return h;
}

// ||a - b|| / ||b|| and max |a - b|.
static double rel_diff(const float *a, const float *b, size_t n, double *max_abs) {
    double num = 0, den = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d, den += (double)b[i] * b[i];
        if (fabs(d) > mx || d != d) mx = d != d ? INFINITY : fabs(d);
    }
    *max_abs = mx;
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

// Global and per-tensor relative differences of got against ref (both [P], host): a small
// tensor gone wrong cannot hide in the global norm. A tensor whose reference gradient is below
// 1e-6 of the whole's is rounding noise: the key biases (their exact gradient is 0, a row's
// softmax ignores a shift; the noise differs between devices, and Adam turns it into full steps
// of either sign) and the pooler (no gradient here). Those are judged within the global norm
// only, from the gradients' call on (`noise`, one flag per tensor, filled when find_noise), and
// anything else that small fails. Prints one line; 1 if past either tolerance.
static int compare_tensors(const char *what, const mt_bert *m, const float *got, const float *ref, double tol_global,
                           double tol_tensor, char *noise, int find_noise) {
    double mx, r = rel_diff(got, ref, m->num_params, &mx), worst = 0, unused, whole = 0;
    const char *worst_name = "-";
    int n = mt_bert_tensor_info(m, NULL, 0), bad = 0, skipped = 0;
    struct mt_bert_tensor_info *info = mt_malloc((size_t)n * sizeof *info);
    mt_bert_tensor_info(m, info, n);
    for (size_t i = 0; i < m->num_params; i++) whole += (double)ref[i] * ref[i];
    for (int i = 0; i < n; i++) {
        if (find_noise) {
            double t = 0;
            for (size_t k = 0; k < info[i].size; k++) t += (double)ref[info[i].offset + k] * ref[info[i].offset + k];
            noise[i] = sqrt(t) < 1e-6 * sqrt(whole);
            if (noise[i] && !strstr(info[i].name, "attention.self.key.bias") && !strstr(info[i].name, "pooler.")) {
                printf("%s: %s has a gradient at rounding level (%.2e of the whole)\n", what, info[i].name,
                       sqrt(t / whole));
                bad = 1;
            }
        }
        if (noise[i]) {
            skipped++;
            continue;
        }
        double rt = rel_diff(got + info[i].offset, ref + info[i].offset, info[i].size, &unused);
        if (!(rt <= worst)) worst = rt, worst_name = info[i].name;  // NaN wins
    }
    bad |= !(r <= tol_global) || !(worst <= tol_tensor);
    printf("%s: ||cuda - cpu|| / ||cpu|| = %.2e (tolerance %.0e), max |diff| %.2e; worst tensor %s %.2e "
           "(tolerance %.0e; %d rounding-noise tensors in the global norm only)\n",
           what, r, tol_global, mx, worst_name, worst, tol_tensor, skipped);
    free(info);
    return bad;
}

// Packed batch: B sequences of lengths spread over [L/4, L], ids from a fixed generator.
static int32_t *make_batch(int B, int L, int varied, int32_t *offsets, uint64_t seed) {
    offsets[0] = 0;
    for (int b = 0; b < B; b++) offsets[b + 1] = offsets[b] + (varied ? L / 4 + (int)((b * 7919u + seed) % (3 * L / 4 + 1)) : L);
    int32_t *ids = mt_malloc((size_t)offsets[B] * sizeof *ids);
    for (int i = 0; i < offsets[B]; i++) ids[i] = 1000 + (int32_t)((i * 7919u + seed * 104729u) % 20000);
    for (int b = 0; b < B; b++) ids[offsets[b]] = 101, ids[offsets[b + 1] - 1] = 102;  // [CLS] ... [SEP]
    return ids;
}

// The device under test: cuda, or MTBERT_CHECK_DEVICE (cpu-staged tests the harness here).
static const mt_backend *device_under_test(void) {
    const char *d = getenv("MTBERT_CHECK_DEVICE");
    return mt_backend_select(d && *d ? d : "cuda");
}

static int parity(const char *dir, int steps) {
    const mt_backend *cpu = mt_backend_cpu(), *gpu = device_under_test();
    mt_backend_set_precision(gpu, "fp32");
    int B = 8, L = 128;
    trainee a = trainee_new(dir, cpu, B * L, B, L), g = trainee_new(dir, gpu, B * L, B, L);
    size_t P = a.m->num_params;
    int32_t offsets[9];
    int bad = 0;
    char *noise = mt_calloc((size_t)mt_bert_tensor_info(a.m, NULL, 0), 1);  // by the gradients' call
    printf("%-6s %16s %16s %10s\n", "step", "loss cpu", "loss cuda", "rel diff");
    for (int s = 0; s < steps; s++) {
        int32_t *ids = make_batch(B, L, 1, offsets, (uint64_t)s + 1);
        double la = train_step(&a, ids, offsets, B, (uint32_t)s, 1), lg = train_step(&g, ids, offsets, B, (uint32_t)s, 1);
        double rd = fabs(la - lg) / fabs(la);
        printf("%-6d %16.9g %16.9g %10.2e\n", s + 1, la, lg, rd);
        bad |= !(rd <= 1e-5);
        if (s == 0) {
            float *ga = to_host(cpu, a.grads, P), *gg = to_host(gpu, g.grads, P);
            bad |= compare_tensors("gradients after step 1", a.m, gg, ga, 1e-4, 1e-3, noise, 1);
            free(ga), free(gg);
        }
        free(ids);
    }
    float *pa = to_host(cpu, a.m->params, P), *pg = to_host(gpu, g.m->params, P);
    // 1e-4: Adam's first steps move every weight by about lr * sign(g), so the few gradient
    // elements at rounding level whose sign differs move 2 lr apart (per tensor: 1e-3)
    char what[64];
    snprintf(what, sizeof what, "parameters after %d steps", steps);
    bad |= compare_tensors(what, a.m, pg, pa, 1e-4, 1e-3, noise, 0);
    printf("training parity: %s\n", bad ? "FAIL" : "PASS");
    free(pa), free(pg), free(noise);
    return bad;
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
