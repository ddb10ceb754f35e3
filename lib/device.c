// device.c — --device auto|cpu|cuda. The CUDA query lives in kernels/ (mt_cuda_probe) so
// this file needs no CUDA headers, and builds without nvcc (then "cuda" is an error).
#include "device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "profile.h"
#ifdef MT_HAVE_CUDA
#include "backend_cuda.h"
#endif

int mt_gpu_available(char *desc, size_t desc_len) {
#ifdef MT_HAVE_CUDA
    return mt_cuda_probe(desc, desc_len);
#else
    snprintf(desc, desc_len, "this build has no CUDA backend (nvcc was not found when it was built)");
    return 0;
#endif
}

// MTBERT_PROFILE=ops|host (lib/profile.h), read once: the selected backend comes wrapped in
// the profiler's timing table, whose report goes to stderr at exit (mt_die's too).
static const mt_backend *profiled(const mt_backend *be, char *err, size_t err_len) {
    static int mode = -2;  // not read yet
    const char *env = getenv("MTBERT_PROFILE");
    if (mode == -2 && (mode = mt_profile_parse(env)) > 0) atexit(mt_profile_report);
    if (mode < 0) {
        snprintf(err, err_len, "MTBERT_PROFILE=%s: expected ops (each op timed between synchronize calls) or host "
                 "(host time in each op, no synchronize added)", env);
        return NULL;
    }
    if (!mode) return be;
    const mt_backend *w = mt_profile_wrap(be, mode);
    if (!mt_profile_mode(w)) mt_log("MTBERT_PROFILE: only the first backend selected is profiled, not %s", be->name);
    return w;
}

static const mt_backend *select_unprofiled(const char *device, char *err, size_t err_len) {
    if (!device) device = "auto";
    if (!strcmp(device, "cpu")) return mt_backend_cpu();
    if (!strcmp(device, "cpu-staged")) return mt_backend_cpu_staged();  // tests only
    int want_cuda = !strcmp(device, "cuda");
    if (!want_cuda && strcmp(device, "auto") != 0) {
        snprintf(err, err_len, "unknown device '%s' (expected auto, cpu or cuda)", device);
        return NULL;
    }
    char desc[256];
    if (mt_gpu_available(desc, sizeof desc)) {
#ifdef MT_HAVE_CUDA
        mt_log("device: CUDA, %s", desc);
        return mt_backend_cuda();
#endif
    }
    if (want_cuda) {
        snprintf(err, err_len, "--device cuda: no usable GPU: %s", desc);
        return NULL;
    }
    mt_log("device: CPU (no usable CUDA GPU: %s)", desc);
    return mt_backend_cpu();
}

const mt_backend *mt_backend_try_select(const char *device, char *err, size_t err_len) {
    const mt_backend *be = select_unprofiled(device, err, err_len);
    return be ? profiled(be, err, err_len) : NULL;
}

void mt_backend_require_training(const mt_backend *be, const char *who) {
#define NEED(op) if (!be->op) mt_die("%s: the %s backend lacks the " #op " op that training needs", who, be->name)
    NEED(zero); NEED(attention_forward_dropout); NEED(dropout_forward); NEED(dropout_backward);
    NEED(matmul_backward); NEED(layernorm_backward); NEED(attention_backward); NEED(gelu_backward);
    NEED(embeddings_backward); NEED(adamw_update); NEED(gram); NEED(combine); NEED(scale);
#undef NEED
}

const mt_backend *mt_backend_select(const char *device) {
    char err[512];
    const mt_backend *be = mt_backend_try_select(device, err, sizeof err);
    if (!be) mt_die("%s", err);
    return be;
}

void mt_backend_set_precision(const mt_backend *be, const char *precision) {
    if (!precision) return;
    if (strcmp(precision, "fp32") && strcmp(precision, "tf32") && strcmp(precision, "bf16") && strcmp(precision, "fp16"))
        mt_die("--precision %s: expected fp32, tf32, bf16 or fp16", precision);
    if (strcmp(be->name, "cuda") != 0) {
        if (strcmp(precision, "fp32")) mt_die("--precision %s: the CPU backend computes in fp32 only (use --device cuda)", precision);
        return;
    }
#ifdef MT_HAVE_CUDA
    mt_cuda_set_precision(precision);
    mt_log("precision: %s matrix products", precision);
#endif
}

const char *mt_backend_precision(const mt_backend *be) {
#ifdef MT_HAVE_CUDA
    if (!strcmp(be->name, "cuda")) return mt_cuda_precision();
#endif
    (void)be;
    return "fp32";
}
