// backend_cuda.cu — the CUDA backend's table (lib/backend.h): device memory with cudaMalloc
// (no managed memory), copies, and the launchers of gemm.cu, ops.cu, backward.cu and optim.cu.
// Everything runs in order on one stream; copies to the host and synchronize wait for it.
#include <stdio.h>

#include "backend_cuda.h"
#include "ops.cuh"

namespace mt_cuda {
cudaStream_t stream = 0;  // the legacy default stream for now: orders with cudaMemcpy / cudaFree
int num_sms = 1;
}  // namespace mt_cuda
using namespace mt_cuda;

// ---- memory and control --------------------------------------------------------------------

// Zero-filled like the CPU backend's (cudaMalloc gives 256-byte alignment). Dies when out of
// memory, naming the size asked for and what was free.
static void *cuda_alloc(size_t bytes) {
    size_t rounded = bytes ? (bytes + 63) / 64 * 64 : 64;
    void *p = nullptr;
    cudaError_t err = cudaMalloc(&p, rounded);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        mt_die("out of GPU memory allocating %zu bytes (%.1f MiB free of %.1f MiB): %s", bytes, free_b / 1048576.0,
               total_b / 1048576.0, cudaGetErrorString(err));
    }
    CUDA_CHECK(cudaMemsetAsync(p, 0, rounded, stream));
    return p;
}

void *mt_cuda::grow_buffer(void **p, size_t *cap, size_t bytes, const char *what) {
    if (bytes <= *cap) return *p;
    size_t want = bytes < ((size_t)1 << 20) ? (size_t)1 << 20 : bytes + bytes / 4;
    if (*p) {
        CUDA_CHECK(cudaStreamSynchronize(stream));
        CUDA_CHECK(cudaFree(*p));
        *p = nullptr, *cap = 0;
    }
    cudaError_t err = cudaMalloc(p, want);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        *p = nullptr;
        mt_die("out of GPU memory allocating %.1f MiB of %s: %s", want / 1048576.0, what, cudaGetErrorString(err));
    }
    *cap = want;
    return *p;
}

static void cuda_free(void *p) {
    attention_forget_geometry();  // a later allocation may reuse the address
    if (p) CUDA_CHECK(cudaFree(p));
}

static void cuda_copy_to_device(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    attention_forget_geometry();  // the copy may have changed a batch's offsets
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));  // src may be reused by the caller at once
}

static void cuda_copy_to_host(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
}

static void cuda_set_threads(int n) { (void)n; }  // host threads mean nothing here
static void cuda_synchronize(void) { CUDA_CHECK(cudaStreamSynchronize(stream)); }

static void cuda_zero(void *p, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream));
}

// ---- the table -----------------------------------------------------------------------------

static const mt_backend cuda_backend = {
    "cuda",
    0,
    cuda_alloc,
    cuda_free,
    cuda_copy_to_device,
    cuda_copy_to_host,
    cuda_set_threads,
    cuda_synchronize,
    gemm,
    matmul_forward,
    embeddings_forward,
    layernorm_forward,
    attention_forward,
    gelu_forward,
    tanh_forward,
    pool_forward,
    unpack_forward,
    cuda_zero,
    attention_forward_dropout,
    dropout_forward,
    dropout_backward,
    matmul_backward,
    layernorm_backward,
    attention_backward,
    gelu_backward,
    embeddings_backward,
    adamw_update,
    gram,
    combine,
    scale,
};

// An empty kernel: asking for its attributes tells whether this build's machine code (or
// PTX) can be loaded on the device at all.
__global__ void probe_kernel(void) {}

extern "C" int mt_cuda_probe(char *desc, size_t desc_len) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);  // with no driver: an error code, not a crash
    if (err != cudaSuccess || n == 0) {
        (void)cudaGetLastError();
        snprintf(desc, desc_len, "%s", err != cudaSuccess ? cudaGetErrorString(err) : "no CUDA device");
        return 0;
    }
    cudaDeviceProp prop;
    cudaFuncAttributes attr;
    if ((err = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess ||
        (err = cudaFuncGetAttributes(&attr, probe_kernel)) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(desc, desc_len, "device 0 unusable by this build (it targets sm_90; rebuild with NVCCFLAGS "
                 "naming the GPU's architecture): %s", cudaGetErrorString(err));
        return 0;
    }
    snprintf(desc, desc_len, "%s, sm_%d%d, %d SMs, %.1f GiB", prop.name, prop.major, prop.minor,
             prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0);
    return 1;
}

extern "C" const mt_backend *mt_backend_cuda(void) {
    static bool ready;
    if (ready) return &cuda_backend;
    char desc[256];
    if (!mt_cuda_probe(desc, sizeof desc)) mt_die("no usable CUDA GPU: %s", desc);
    CUDA_CHECK(cudaSetDevice(0));
    CUDA_CHECK(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, 0));
    gemm_init();
    ready = true;
    return &cuda_backend;
}
