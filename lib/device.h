// device.h — picking the backend for --device auto|cpu|cuda (DESIGN.md §5).
#ifndef MT_DEVICE_H
#define MT_DEVICE_H
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

// "cpu": the CPU backend (nothing of CUDA is loaded). "cuda": the CUDA backend, or an error
// when this build has no CUDA, libmtbert_cuda.so cannot be loaded (the error names the path
// and dlerror()) or no usable GPU is present. "auto" (or NULL): CUDA when usable, saying
// which GPU on stderr, else the CPU with a note on stderr saying why. "cpu-staged" (tests
// only, undocumented in --help): mt_backend_cpu_staged. Anything else is an error.
// mt_backend_select dies with the error; mt_backend_try_select returns NULL and writes it
// into err[err_len]. With MTBERT_PROFILE=ops|host in the environment the backend comes wrapped
// in lib/profile.h's timing table, whose report goes to stderr at exit; any other non-empty
// value is an error.
const mt_backend *mt_backend_select(const char *device);
const mt_backend *mt_backend_try_select(const char *device, char *err, size_t err_len);

// The environment the device layer reads, for the --help of every program with --device.
#define MT_DEVICE_ENV_HELP                                                                      \
    "environment:\n"                                                                           \
    "  MTBERT_PROFILE=ops|host     a table of where the time went, op by op, on stderr at exit\n" \
    "                              (ops: each op timed between synchronizations; host: none\n"  \
    "                              added); outputs unchanged\n"                                 \
    "  MTBERT_ATTENTION=batched|fused  CUDA bf16/fp16 attention (default batched; fused:\n"     \
    "                              flash-style kernels, not yet run on a GPU)\n"                \
    "  MTBERT_CUDA_LIB=PATH        the CUDA backend (default libmtbert_cuda.so beside the\n"     \
    "                              program, in its ../build, its parent or ../lib/mtbert)\n"

// --precision fp32|tf32|bf16|fp16 (lib/backend_cuda.h says what each does) for the backend be:
// the CPU backend computes in fp32 only, so anything else there is an error (naming the
// option); NULL or "fp32" is always accepted. Dies with the error.
void mt_backend_set_precision(const mt_backend *be, const char *precision);
// The precision be's matrix products compute in now ("fp32" for the CPU backends; on CUDA
// what --precision or MTBERT_PRECISION set).
const char *mt_backend_precision(const mt_backend *be);

// The attention path of be: on CUDA "batched" or "fused" (MTBERT_ATTENTION, lib/backend_cuda.h),
// "cpu" for the CPU backends.
const char *mt_backend_attention(const mt_backend *be);

// Work the CUDA backend has enqueued since start-up (mt_cuda_launch_count of
// lib/backend_cuda.h, reached through the loaded backend: lib/profile.c counts launches with
// it); 0 for the CPU backends.
uint64_t mt_backend_launch_count(const mt_backend *be);

// Dies with "<who>: the <name> backend lacks the <op> op ..." unless be has every op that
// training needs (the backward and optimizer ops of backend.h).
void mt_backend_require_training(const mt_backend *be, const char *who);

// 1 when this build has CUDA and a usable GPU is present (desc describes it), else 0 with
// desc saying why. Never dies, on any machine. Asks the NVIDIA driver first and opens
// libmtbert_cuda.so (MTBERT_CUDA_LIB, else beside the program, its ../build, its parent) only
// when the driver sees a GPU, as auto does.
int mt_gpu_available(char *desc, size_t desc_len);

#endif
