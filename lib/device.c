// device.c — --device auto|cpu|cuda. The CUDA backend (kernels/) is a shared object,
// libmtbert_cuda.so, opened with dlopen only when a run asks for a GPU, so a CPU run never
// loads cudart / cuBLAS (about 0.1 s and 150-220 MB at start-up). This file needs no CUDA
// headers and builds without nvcc (then "cuda" is an error).
#include "device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "profile.h"
#ifdef MT_HAVE_CUDA
#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

#include "backend_cuda.h"
#include "rng.h"
#include "workspace.h"

// The lib/ functions that libmtbert_cuda.so calls back into (kernels/host_symbols.list, which
// the programs export): naming them here links them into every program that can load the .so.
__attribute__((used)) static void (*const host_exports[])(void) = {
    (void (*)(void))mt_die, (void (*)(void))mt_log, (void (*)(void))mt_dropout_threshold,
    (void (*)(void))mt_workspace_check, (void (*)(void))mt_workspace_generic,
};

// The entry points of lib/backend_cuda.h that lib/ calls, resolved from the .so once.
// Typed from the header's declarations, so a changed signature fails to compile here.
static struct {
    __typeof__(mt_cuda_probe) *probe;
    __typeof__(mt_backend_cuda) *backend;
    __typeof__(mt_cuda_set_precision) *set_precision;
    __typeof__(mt_cuda_precision) *precision;
    __typeof__(mt_cuda_launch_count) *launch_count;
    __typeof__(mt_cuda_attention) *attention;
} cuda;

// Is an NVIDIA driver here that sees a GPU? Asks the driver library itself (what cudart
// loads too) before anything of ours is loaded: a machine or container without the driver
// costs one failed dlopen, and one with the driver but no visible GPU (CUDA_VISIBLE_DEVICES=)
// stops here too. libcuda stays open: cudart uses it next.
static int driver_sees_gpu(char *why, size_t why_len) {
    void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (!h) return snprintf(why, why_len, "no NVIDIA driver (%s)", dlerror()), 0;
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(h, "cuInit");
    int (*count)(int *) = (int (*)(int *))dlsym(h, "cuDeviceGetCount");
    int (*name)(int, const char **) = (int (*)(int, const char **))dlsym(h, "cuGetErrorString");
    if (!init || !count || !name)
        return snprintf(why, why_len, "libcuda.so.1 lacks cuInit: not an NVIDIA driver"), 0;
    int n = 0, rc = init(0);
    if (rc == 0) rc = count(&n);
    const char *s = NULL;
    if (rc != 0) return snprintf(why, why_len, "the NVIDIA driver: %s", name(rc, &s) == 0 && s ? s : "error"), 0;
    if (n == 0) return snprintf(why, why_len, "the NVIDIA driver sees no GPU"), 0;
    return 1;
}

// Where libmtbert_cuda.so is: MTBERT_CUDA_LIB, else the first that exists of the program's
// directory (an installed copy), its ../build/ (bin/ of a checkout) and its parent (programs
// inside the build folder: build/tests/, BIN=build-gpu/bin). 0, or -1 with why.
static int cuda_lib_path(char *path, size_t len, char *why, size_t why_len) {
    const char *env = getenv("MTBERT_CUDA_LIB");
    if (env && *env) return snprintf(path, len, "%s", env), 0;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return mt_fail(why, why_len, "libmtbert_cuda.so: cannot find the program's directory (set MTBERT_CUDA_LIB=PATH)");
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0';
    // beside it, a checkout's bin/ -> build/, build/tests or build/gpu -> build/, `make install`
    static const char *const dirs[] = {"", "/../build", "/..", "/../lib/mtbert"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        int m = snprintf(path, len, "%s%s/libmtbert_cuda.so", exe, dirs[i]);
        if (m > 0 && (size_t)m < len && access(path, F_OK) == 0) return 0;
    }
    return mt_fail(why, why_len,
                   "libmtbert_cuda.so not found in %s, %s/../build, %s/.. or %s/../lib/mtbert (set MTBERT_CUDA_LIB=PATH)",
                   exe, exe, exe, exe);
}

static int cuda_state;  // 0 not tried, 1 the table is filled, -1 the .so failed to load

// Opens the .so and fills the table, once. 0, or -1 with why (the path and dlerror()).
static int cuda_load(char *why, size_t why_len) {
    static char msg[PATH_MAX + 256];
    if (cuda_state == 0) {
        char path[PATH_MAX];
        void *h = NULL;
        if (cuda_lib_path(path, sizeof path, msg, sizeof msg) == 0 && !(h = dlopen(path, RTLD_NOW | RTLD_LOCAL)))
            snprintf(msg, sizeof msg, "cannot load the CUDA backend %s%s: %s", path,
                     getenv("MTBERT_CUDA_LIB") ? " (MTBERT_CUDA_LIB)" : "", dlerror());
#define SYM(field, name) if (h && !(cuda.field = (__typeof__(cuda.field))dlsym(h, name))) \
            snprintf(msg, sizeof msg, "cannot load the CUDA backend: %s", dlerror()), h = NULL
        SYM(probe, "mt_cuda_probe"); SYM(backend, "mt_backend_cuda");
        SYM(set_precision, "mt_cuda_set_precision"); SYM(precision, "mt_cuda_precision");
        SYM(launch_count, "mt_cuda_launch_count"); SYM(attention, "mt_cuda_attention");
#undef SYM
        cuda_state = h ? 1 : -1;
    }
    if (cuda_state < 0) snprintf(why, why_len, "%s", msg);
    return cuda_state > 0 ? 0 : -1;
}

// The table of a "cuda" backend, which came from the .so. (A program that links kernels/ in,
// as tests/gpu/op_parity does, calls mt_cuda_* itself, never through here.)
static __typeof__(cuda) *cuda_loaded(const mt_backend *be) {
    if (cuda_state != 1) mt_die("the %s backend was not loaded by lib/device.c", be->name);
    return &cuda;
}

// 1 with desc describing the GPU; 0 with desc saying why there is none; -1 when the backend
// could not be loaded. cuda loads the .so first (a missing one is reported even on a machine
// without a GPU); auto asks the driver first so that a CPU-only machine loads nothing.
static int gpu_usable(int want_cuda, char *desc, size_t desc_len) {
    if (want_cuda && cuda_load(desc, desc_len) != 0) return -1;
    if (!driver_sees_gpu(desc, desc_len)) return 0;
    if (cuda_load(desc, desc_len) != 0) return -1;
    return cuda.probe(desc, desc_len);
}
#endif

int mt_gpu_available(char *desc, size_t desc_len) {
#ifdef MT_HAVE_CUDA
    return gpu_usable(0, desc, desc_len) > 0;
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

enum { DESC_LEN = 1024 };  // why there is no GPU: room for a path and dlerror()

static const mt_backend *select_unprofiled(const char *device, char *err, size_t err_len) {
    if (!device) device = "auto";
    if (!strcmp(device, "cpu")) return mt_backend_cpu();
    if (!strcmp(device, "cpu-staged")) return mt_backend_cpu_staged();  // tests only
    int want_cuda = !strcmp(device, "cuda");
    if (!want_cuda && strcmp(device, "auto") != 0) {
        snprintf(err, err_len, "unknown device '%s' (expected auto, cpu or cuda)", device);
        return NULL;
    }
    char desc[DESC_LEN];
#ifdef MT_HAVE_CUDA
    int usable = gpu_usable(want_cuda, desc, sizeof desc);
    if (usable > 0) {
        mt_log("device: CUDA, %s", desc);
        return cuda.backend();
    }
#else
    int usable = mt_gpu_available(desc, sizeof desc);
#endif
    if (want_cuda) {
        snprintf(err, err_len, usable < 0 ? "--device cuda: %s" : "--device cuda: no usable GPU: %s", desc);
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
    NEED(embeddings_backward); NEED(adamw_update_multi); NEED(gram); NEED(combine); NEED(scale);
#undef NEED
}

const mt_backend *mt_backend_select(const char *device) {
    char err[DESC_LEN + 64];  // desc and a prefix
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
    cuda_loaded(be)->set_precision(precision);
    mt_log("precision: %s matrix products", precision);
#endif
}

const char *mt_backend_precision(const mt_backend *be) {
#ifdef MT_HAVE_CUDA
    if (!strcmp(be->name, "cuda")) return cuda_loaded(be)->precision();
#endif
    (void)be;
    return "fp32";
}

uint64_t mt_backend_launch_count(const mt_backend *be) {
#ifdef MT_HAVE_CUDA
    if (!strcmp(be->name, "cuda")) return cuda_loaded(be)->launch_count();
#endif
    (void)be;
    return 0;
}

const char *mt_backend_attention(const mt_backend *be) {
#ifdef MT_HAVE_CUDA
    if (!strcmp(be->name, "cuda")) return cuda_loaded(be)->attention();
#endif
    (void)be;
    return "cpu";
}
