// train_parity.h — training steps on a device against the CPU, as tests/gpu/train_check.c's
// `parity` runs them on a GPU and tests/emu/test_backend_emu.cpp on the CPU emulator of the CUDA
// backend: one copy of the loss, the batches and the tolerances. Static functions, C and C++
// (include after adamw.h, bert.h, common.h; C++ callers inside extern "C").
#ifndef MT_TRAIN_PARITY_H
#define MT_TRAIN_PARITY_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    trainee t;
    memset(&t, 0, sizeof t);
    t.m = load(dir, be), t.be = be;
    t.grads = (float *)be->alloc(t.m->num_params * sizeof(float));
    t.dh = (float *)be->alloc((size_t)max_tokens * t.m->cfg.hidden_size * sizeof(float));
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
    float *h = (float *)mt_malloc(n * sizeof(float));
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
    struct mt_bert_tensor_info *info = (struct mt_bert_tensor_info *)mt_malloc((size_t)n * sizeof *info);
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
            double u = 0;  // the device's must be noise too, not a wrong gradient under the global norm
            for (size_t k = 0; k < info[i].size; k++) u += (double)got[info[i].offset + k] * got[info[i].offset + k];
            if (noise[i] && !(sqrt(u) < 1e-5 * sqrt(whole))) {
                printf("%s: %s is %.2e of the whole on the device, at rounding level on the CPU\n", what,
                       info[i].name, sqrt(u / whole));
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
    int32_t *ids = (int32_t *)mt_malloc((size_t)offsets[B] * sizeof *ids);
    for (int i = 0; i < offsets[B]; i++) ids[i] = 1000 + (int32_t)((i * 7919u + seed * 104729u) % 20000);
    for (int b = 0; b < B; b++) ids[offsets[b]] = 101, ids[offsets[b + 1] - 1] = 102;  // [CLS] ... [SEP]
    return ids;
}

// STEPS training steps of the model in dir on the cpu table and on gpu (at fp32, the caller's
// business), B sequences of L/4 to L tokens: the losses, the gradients after step 1 and the
// parameters after the last step, one line each; 1 past tolerance.
static int training_parity(const char *dir, const mt_backend *cpu, const mt_backend *gpu, int B, int L, int steps) {
    trainee a = trainee_new(dir, cpu, B * L, B, L), g = trainee_new(dir, gpu, B * L, B, L);
    size_t P = a.m->num_params;
    int32_t *offsets = (int32_t *)mt_malloc((size_t)(B + 1) * sizeof *offsets);
    int bad = 0;
    char *noise = (char *)mt_calloc((size_t)mt_bert_tensor_info(a.m, NULL, 0), 1);  // by the gradients' call
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
    free(pa), free(pg), free(noise), free(offsets);
    trainee *both[2] = {&a, &g};
    for (int i = 0; i < 2; i++) {
        mt_adamw_free(&both[i]->opt);
        both[i]->be->free(both[i]->grads), both[i]->be->free(both[i]->dh);
        mt_bert_free(both[i]->m);
    }
    return bad;
}

#endif
