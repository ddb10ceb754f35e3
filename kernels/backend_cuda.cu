// backend_cuda.cu — the CUDA backend's table (lib/backend.h): device memory with cudaMalloc
// (no managed memory), copies, and the launchers of gemm.cu, ops.cu, backward.cu, sentence.cu
// and optim.cu.
// Everything runs in order on one stream; copies to the host and synchronize wait for it.
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "backend_cuda.h"
#include "ops.cuh"

namespace mt_cuda {
cudaStream_t stream = 0;  // the legacy default stream for now: orders with cudaMemcpy / cudaFree
int num_sms = 1;
uint64_t launches = 0;
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
    CUDA_ENQUEUE(cudaMemsetAsync(p, 0, rounded, stream));
    return p;
}

// ---- workspaces: reserved once from the memory plan (lib/workspace.h) --------------------------

static void *ws_ptr[MT_WS_COUNT];
static size_t ws_size[MT_WS_COUNT];  // MT_WS_LT is gemm.cu's, allocated at start-up
static mt_workspace_shape ws_shape;   // every shape reserved, field by field the largest (max_tokens 0: none yet)

void *mt_cuda::workspace(int which, size_t bytes) {
    mt_workspace_check(which, bytes, ws_size[which]);
    return ws_ptr[which];
}

// The generic sizes (workspace.c) plus what only this backend knows: CUB's sort storage,
// the 16-bit (bf16 or fp16) operand copies of the current precision, cuBLASLt's workspace.
static size_t cuda_workspace_bytes(const mt_workspace_shape *s, size_t *each) {
    size_t w[MT_WS_COUNT];
    mt_workspace_generic(s, w);
    if (s->training) {
        size_t sort = mt_ws_embed_sort(s->max_tokens, embeddings_sort_temp(s->max_tokens));
        w[MT_WS_SCRATCH] = sort > w[MT_WS_SCRATCH] ? sort : w[MT_WS_SCRATCH];
    }
    w[MT_WS_BF16_A] = w[MT_WS_BF16_B] = half_operand_bytes(s, w);
    w[MT_WS_LT] = lt_workspace_size();
    size_t total = 0;
    for (int i = 0; i < MT_WS_COUNT; i++) total += w[i];
    if (each) memcpy(each, w, sizeof w);
    return total;
}

// Field by field the larger of a and s: a shape that covers both (every size grows with each field).
static void shape_cover(mt_workspace_shape *a, const mt_workspace_shape *s) {
    int64_t padded = mt_ws_padded_bound(a) > mt_ws_padded_bound(s) ? mt_ws_padded_bound(a) : mt_ws_padded_bound(s);
    a->max_padded = padded < INT_MAX ? (int)padded : INT_MAX;  // 0 means no bound: compare the bounds themselves
#define MT_COVER(f) a->f = s->f > a->f ? s->f : a->f
    MT_COVER(max_tokens), MT_COVER(max_batch), MT_COVER(max_len), MT_COVER(C), MT_COVER(NH), MT_COVER(F);
    MT_COVER(training), MT_COVER(gram_n), MT_COVER(operand_floats);
#undef MT_COVER
}

// Grows (never shrinks) each workspace to the shape's size: one cudaMalloc per workspace per run.
// Several shapes may be reserved (the encoder's, then the sentence model's operands): a later
// precision change re-reserves one covering them all.
static void cuda_reserve(const mt_workspace_shape *s) {
    size_t w[MT_WS_COUNT];
    shape_cover(&ws_shape, s);
    cuda_workspace_bytes(s, w);
    for (int i = 0; i < MT_WS_COUNT; i++) {
        if (i == MT_WS_LT || w[i] <= ws_size[i]) continue;
        if (ws_ptr[i]) {
            CUDA_CHECK(cudaStreamSynchronize(stream));  // earlier launches may still read it
            CUDA_CHECK(cudaFree(ws_ptr[i]));
            ws_ptr[i] = nullptr, ws_size[i] = 0;
        }
        cudaError_t err = cudaMalloc(&ws_ptr[i], w[i]);
        if (err != cudaSuccess) {
            (void)cudaGetLastError();
            ws_ptr[i] = nullptr;
            mt_die("out of GPU memory reserving %.1f MiB for the %s workspace: %s", w[i] / 1048576.0,
                   mt_workspace_names[i], cudaGetErrorString(err));
        }
        ws_size[i] = w[i];
    }
}

// --precision bf16 after the reservation needs the operand copies: the shapes reserved again.
void mt_cuda::workspaces_follow_precision(void) {
    if (ws_shape.max_tokens > 0) cuda_reserve(&ws_shape);
}

// Free device memory, plus what the workspaces hold (the plan counts them).
static size_t cuda_memory_free(void) {
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    for (int i = 0; i < MT_WS_COUNT; i++) free_b += i == MT_WS_LT ? lt_workspace_size() : ws_size[i];
    return free_b;
}

static void cuda_free(void *p) {
    if (p) CUDA_CHECK(cudaFree(p));
}

// Uploads without waiting for the GPU. The caller may reuse src as soon as this returns, and a
// training step makes ~25 small uploads (ids, offsets, step lists, the heads' gradients): each
// used to drain the stream. Now src is copied into a pinned staging ring and the DMA reads the
// ring in stream order. The ring is written front to back; before it wraps, the host waits
// once for the last upload from it (one stream: everything enqueued before that is done too),
// so no byte of the ring is overwritten while a copy may still read it. An upload larger than
// the ring is copied from src directly and waited for, as before (model weights at start-up).
static const size_t upload_ring_bytes = 16u << 20;
static char *upload_ring;          // pinned (cudaHostAlloc), allocated at the first upload
static size_t upload_ring_head;    // next free byte
static cudaEvent_t upload_done;    // recorded after the latest upload from the ring

static void cuda_copy_to_device(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    if (bytes > upload_ring_bytes) {
        CUDA_ENQUEUE(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
        CUDA_CHECK(cudaStreamSynchronize(stream));  // src may be reused by the caller at once
        return;
    }
    if (!upload_ring) {
        CUDA_CHECK(cudaHostAlloc((void **)&upload_ring, upload_ring_bytes, cudaHostAllocDefault));
        CUDA_CHECK(cudaEventCreateWithFlags(&upload_done, cudaEventDisableTiming));
    }
    size_t at = (upload_ring_head + 255) / 256 * 256;  // each upload 256-byte aligned in the ring
    if (at + bytes > upload_ring_bytes) {               // wrap: wait until the ring's copies are done
        CUDA_CHECK(cudaEventSynchronize(upload_done));
        at = 0;
    }
    memcpy(upload_ring + at, src, bytes);
    CUDA_ENQUEUE(cudaMemcpyAsync(dst, upload_ring + at, bytes, cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaEventRecord(upload_done, stream));
    upload_ring_head = at + bytes;
}

static void cuda_copy_to_host(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CUDA_ENQUEUE(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
}

uint64_t mt_cuda_launch_count(void) { return launches; }

static void cuda_set_threads(int n) { (void)n; }  // host threads mean nothing here
static void cuda_synchronize(void) { CUDA_CHECK(cudaStreamSynchronize(stream)); }

static void cuda_zero(void *p, size_t bytes) {
    if (bytes) CUDA_ENQUEUE(cudaMemsetAsync(p, 0, bytes, stream));
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
    pool_backward,
    copy_2d,
    add_bias_forward,
    add_bias_backward,
    im2col_same,
    col2im_same,
    relu_dropout_forward,
    relu_dropout_backward,
    max_pool_forward,
    max_pool_backward,
    lstm_cell_forward,
    lstm_cell_backward,
    adamw_update_multi,
    gram,
    combine,
    scale,
    cuda_workspace_bytes,
    cuda_reserve,
    cuda_memory_free,
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
    attention_init();
    ready = true;
    return &cuda_backend;
}
