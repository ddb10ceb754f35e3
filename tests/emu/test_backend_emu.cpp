// test_backend_emu.cpp — the CUDA backend as a whole (kernels/backend_cuda.cu's table, wired to
// every launcher of ops.cu, attention.cu, flash.cu, backward.cu, sentence.cu and optim.cu) on
// tests/emu/cuda_emu.h, through mt_backend_cuda(), with the stream in async mode: launches,
// copies and memsets run only when the host waits, as on a GPU. gemm.cu is stood in for by
// tests/emu/gemm_standin.cpp (the CPU's fp32 products, queued on the stream). Checks:
//   - the emulator's stream defers (a reused pinned buffer, an event's position, a launch);
//   - the precision: fp32 only (the stand-in's products), others die;
//   - the memory plan: workspaces reserved once from a shape, re-reserving nothing for a shape
//     it covers, memory_free's accounting, an over-ask (the raw call, and attention_forward on
//     a batch past the shape) and out-of-memory dying with the names (in a child);
//   - the upload staging ring of cuda_copy_to_device: 44 uploads of 1 byte to 3 MiB, 56 MiB (it
//     wraps, at least 3 times), the caller rewriting its buffer after each, one upload of exactly
//     the ring's size and one past it: every byte after a sync;
//   - the sentence model (sbert-cnn-bilstm, the LSTM over the encoder and over the CNN, dropout
//     0.1) forward and backward, op_parity's rows at its fp32 tolerance;
//   - train_check parity (tests/gpu/train_parity.h, the same code): 3 training steps of
//     models/all-MiniLM-L6-v2 (dropout 0.1, AdamW) on this table and on the CPU table, 4
//     sequences of 12 to 48 tokens: losses within 1e-5, gradients after step 1 and parameters
//     after step 3 within 1e-4 globally and 1e-3 per tensor (rounding-noise tensors: the header).
// Needs models/all-MiniLM-L6-v2 (under $MTBERT_ROOT, else .). ~10 s; ~15 s under ASan.
#include "cuda_emu.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <string>
#include <vector>

extern "C" {
#include "adamw.h"
#include "backend.h"
#include "bert.h"
#include "rng.h"
#include "sentence.h"
}
#include "backend_cuda.h"
#include "check.h"
#include "ops.cuh"
#include "rand.h"
#include "parity.h"
extern "C" {
void *mt_malloc(size_t n);  // lib/common.h's (its C11 _Noreturn keeps it out of C++), for train_parity.h
void *mt_calloc(size_t n, size_t size);
#include "../gpu/train_parity.h"
}

namespace {

using std::vector;
const mt_backend *cpu = mt_backend_cpu();
const mt_backend *cuda;

// emu::in_child with the child's stderr; its exit status in *status.
template <class F> std::string in_child(F f, int *status) {
    std::string err;
    *status = emu::in_child(f, &err);
    return err;
}
bool died_saying(const std::string &err, int status, const char *what) {
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 1 && err.find(what) != std::string::npos;
    if (!ok) printf("# child: status %#x, stderr: %s\n", status, err.c_str());
    return ok;
}

// ---- the emulator's stream -------------------------------------------------------------------

TEST(stream_defers) {
    unsigned char *pinned;
    CHECK(cudaHostAlloc((void **)&pinned, 256, cudaHostAllocDefault) == cudaSuccess);
    float *d = (float *)cuda->alloc(256);
    cuda->synchronize();
    memset(pinned, 1, 256);
    CHECK(cudaMemcpyAsync(d, pinned, 128, cudaMemcpyHostToDevice, mt_cuda::stream) == cudaSuccess);
    cudaEvent_t ev;
    CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) == cudaSuccess);
    CHECK(cudaEventRecord(ev, mt_cuda::stream) == cudaSuccess);
    memset(pinned + 128, 2, 128);
    CHECK(cudaMemcpyAsync((char *)d + 128, pinned + 128, 128, cudaMemcpyHostToDevice, mt_cuda::stream) == cudaSuccess);
    CHECK(mt_emu::queued() == 2);
    CHECK(((unsigned char *)d)[0] == 0);  // alloc's memset ran at the sync above; the copy has not
    CHECK(cudaEventSynchronize(ev) == cudaSuccess);  // the first copy only
    CHECK(((unsigned char *)d)[0] == 1 && ((unsigned char *)d)[128] == 0 && mt_emu::queued() == 1);
    memset(pinned + 128, 3, 128);  // reused before its copy ran: the copy reads the 3s
    cuda->synchronize();
    CHECK(((unsigned char *)d)[255] == 3);
    float h[4] = {1, 2, 3, 4}, back[4];
    cuda->copy_to_device(d, h, sizeof h);
    cuda->scale(d, 2.0f, 4);
    CHECK(d[3] != 8.0f);  // the launch is queued
    cuda->copy_to_host(back, d, sizeof back);  // to pageable memory: waits
    CHECK(back[0] == 2 && back[3] == 8 && mt_emu::queued() == 0);
    cudaEventDestroy(ev);
    cudaFreeHost(pinned);
    cuda->free(d);
}

// ---- the memory plan -------------------------------------------------------------------------

mt_workspace_shape small_shape(void) {
    mt_workspace_shape s = {};
    s.max_tokens = 256, s.max_batch = 8, s.max_len = 64, s.C = 384, s.NH = 12, s.F = 1536, s.training = 1;
    s.gram_n = 1 << 16;
    return s;
}

TEST(memory_plan) {
    const mt_workspace_shape s = small_shape();
    size_t each[MT_WS_COUNT], sum = 0;
    const size_t total = cuda->workspace_bytes(&s, each);
    for (size_t b : each) sum += b;
    CHECK(total == sum && each[MT_WS_LT] == mt_cuda::lt_workspace_size() && each[MT_WS_BF16_A] == 0);
    CHECK(each[MT_WS_ATT_S] == mt_ws_att_scores(8, 64, 12));
    const size_t free0 = cuda->memory_free();
    const uint64_t mallocs0 = mt_emu::mem().mallocs;
    cuda->reserve(&s);
    int reserved = 0;
    for (int i = 0; i < MT_WS_COUNT; i++) reserved += i != MT_WS_LT && each[i] > 0;
    CHECK(mt_emu::mem().mallocs == mallocs0 + reserved);  // one cudaMalloc per workspace
    CHECK(cuda->memory_free() == free0);                  // the plan counts what workspaces hold
    void *ptr[MT_WS_COUNT] = {};
    for (int i = 0; i < MT_WS_COUNT; i++)
        if (i != MT_WS_LT && each[i]) ptr[i] = mt_cuda::workspace(i, each[i]);
    mt_workspace_shape smaller = s;
    smaller.max_tokens = 100, smaller.max_len = 32;
    cuda->reserve(&smaller), cuda->reserve(&s);  // covered: nothing allocated or moved
    CHECK(mt_emu::mem().mallocs == mallocs0 + reserved);
    for (int i = 0; i < MT_WS_COUNT; i++)
        if (ptr[i]) CHECK(mt_cuda::workspace(i, 1) == ptr[i]);

    const size_t bytes = (1 << 20) + 13, rounded = (1 << 20) + 64;  // cuda_alloc rounds to 64
    void *p = cuda->alloc(bytes);
    CHECK(cuda->memory_free() == free0 - rounded);
    cuda->free(p);
    CHECK(cuda->memory_free() == free0);

    int st;
    std::string err = in_child([&] { mt_cuda::workspace(MT_WS_ATT_S, each[MT_WS_ATT_S] + 1); }, &st);
    CHECK(died_saying(err, st, "attention scores"));
    // an op on a batch past the shape: 9 sequences of 64 tokens (the shape: 8 x 64)
    err = in_child([&] {
        const int B = 9, L = 64, N = B * L, C = 384, NH = 12;
        vector<int32_t> off(B + 1);
        vector<int64_t> att_off(B);
        for (int b = 0; b <= B; b++) off[b] = b * L;
        for (int b = 0; b < B; b++) att_off[b] = (int64_t)b * NH * L * L;
        float *qkv = (float *)cuda->alloc((size_t)N * 3 * C * 4), *out = (float *)cuda->alloc((size_t)N * C * 4);
        int32_t *doff = (int32_t *)cuda->alloc(off.size() * 4);
        int64_t *datt = (int64_t *)cuda->alloc(att_off.size() * 8);
        cuda->copy_to_device(doff, off.data(), off.size() * 4);
        cuda->copy_to_device(datt, att_off.data(), att_off.size() * 8);
        cuda->attention_forward(out, NULL, qkv, doff, datt, B, L, C, NH);
        cuda->synchronize();
    }, &st);
    CHECK(died_saying(err, st, "attention Q"));
    err = in_child([&] {
        mt_emu::set_capacity(mt_emu::mem().used + (1 << 20));
        cuda->alloc(2 << 20);
    }, &st);
    CHECK(died_saying(err, st, "out of GPU memory allocating 2097152 bytes (1.0 MiB free"));
    err = in_child([&] {
        mt_emu::set_capacity(mt_emu::mem().used + (1 << 20));
        mt_workspace_shape big = small_shape();
        big.max_batch = 64;
        cuda->reserve(&big);
    }, &st);
    CHECK(died_saying(err, st, "for the attention Q workspace"));
}

// gemm_standin.cpp computes fp32 only: another precision dies rather than be faked.
TEST(precision_fp32_only) {
    CHECK(mt_cuda_set_precision("fp32") == 0 && !strcmp(mt_cuda_precision(), "fp32"));
    CHECK(mt_cuda_set_precision("fp64") == -1);
    for (const char *p : {"bf16", "fp16", "tf32"}) {
        int st;
        std::string err = in_child([&] { mt_cuda_set_precision(p); }, &st);
        CHECK(died_saying(err, st, "cuBLAS is not emulated"));
    }
}

// ---- the upload staging ring -----------------------------------------------------------------

unsigned char pattern(size_t i, size_t j) { return (unsigned char)((j ^ (j >> 9)) * 31 + i * 101 + 17); }

TEST(upload_ring) {
    const size_t ring = 16u << 20;
    vector<size_t> sizes;
    uint64_t r = 0x9E3779B97F4A7C15ULL;
    size_t total = 0;
    for (int i = 0; total < 56u << 20; i++) {  // 1 to 300 bytes, to 64 KiB, to 3 MiB, in turn
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        const size_t cap = i % 3 == 0 ? 300 : i % 3 == 1 ? 65536 : 3 << 20;
        sizes.push_back(1 + (r >> 33) % cap);
        total += sizes.back();
        if (i == 4) sizes.push_back(ring + 3), total += ring + 3;  // past the ring: direct, waited for
        if (i == 9) sizes.push_back(ring), total += ring;          // exactly the ring: through it
    }
    vector<void *> dev;
    size_t biggest = 0;
    for (size_t n : sizes) dev.push_back(cuda->alloc(n)), biggest = std::max(biggest, n);
    cuda->synchronize();
    vector<unsigned char> src(biggest), back(biggest);
    const uint64_t waits0 = mt_emu::stream_q().event_waits;
    for (size_t i = 0; i < sizes.size(); i++) {
        for (size_t j = 0; j < sizes[i]; j++) src[j] = pattern(i, j);  // the caller reuses src at once
        cuda->copy_to_device(dev[i], src.data(), sizes[i]);
    }
    CHECK(mt_emu::queued() > 0);                       // the uploads after the last wait are still queued
    CHECK(mt_emu::stream_q().event_waits >= waits0 + 3);  // the ring wrapped (and waited)
    cuda->synchronize();
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < sizes.size(); i++) {
        cuda->copy_to_host(back.data(), dev[i], sizes[i]);
        size_t wrong = 0;
        for (size_t j = 0; j < sizes[i]; j++) wrong += back[j] != pattern(i, j);
        if (wrong && !bad++) first = i;
    }
    if (bad) printf("# %zu of %zu uploads wrong, the first #%zu (%zu bytes)\n", bad, sizes.size(), first, sizes[first]);
    CHECK(bad == 0);
    printf("# %zu uploads, %.1f MiB\n", sizes.size(), total / 1048576.0);
    for (void *p : dev) cuda->free(p);
}

// ---- the sentence model: op_parity's check_sentence_model through the whole table ----------------

// out, dinp and the parameter gradients of one forward and backward through be (host copies)
vector<vector<float>> sentence_model(const mt_backend *be, const mt_sentence_layout &L, const vector<int32_t> &offsets,
                                     const vector<float> &params, const vector<float> &x, const vector<float> &dx0,
                                     const vector<float> &R, const mt_dropout_key *key) {
    const int B = (int)offsets.size() - 1, N = offsets[B];
    vector<vector<float>> host = {params, x, dx0, R, vector<float>((size_t)B * L.D, NAN), vector<float>(L.n_params, 0)};
    vector<float *> d;  // params, x, dx, dR, out, grads
    for (const auto &h : host) {
        d.push_back((float *)be->alloc(h.size() * sizeof(float)));
        be->copy_to_device(d.back(), h.data(), h.size() * sizeof(float));
    }
    mt_sentence_weights w, dw;
    mt_sentence_weights_point(&w, &L, d[0]), mt_sentence_weights_point(&dw, &L, d[5]);
    mt_sentence_acts a;
    mt_sentence_acts_alloc(be, &a, &L, N, B);
    mt_sentence_forward(be, d[4], &a, &L, &w, d[1], offsets.data(), B, N, key);
    mt_sentence_backward(be, d[2], &dw, d[3], &a, &L, &w, d[1]);
    vector<vector<float>> out;
    for (int k : {4, 2, 5}) {
        out.push_back(vector<float>(host[k].size()));
        be->copy_to_host(out.back().data(), d[k], host[k].size() * sizeof(float));
    }
    mt_sentence_acts_free(be, &a);
    for (float *p : d) be->free(p);
    return out;
}

TEST(sentence_model) {
    const vector<int32_t> offsets = {0, 1, 8, 40, 43, 107, 109, 126, 166};  // lengths 1, 7, 32, 3, 64, 2, 17, 40
    for (int over_cnn = 0; over_cnn < 2; over_cnn++) {
        mt_sentence_config cfg = mt_sentence_default_config(MT_SENT_SBERT_CNN_BILSTM, 384, 64, 128);
        cfg.lstm_over_cnn = over_cnn, cfg.cnn_dropout = 0.1f;
        mt_sentence_layout L;
        mt_sentence_layout_init(&L, &cfg);
        vector<float> params(L.n_params), x((size_t)offsets.back() * 384), dx0(x.size()), R((size_t)8 * L.D);
        mt_sentence_init_params(&L, params.data(), 11);
        uint64_t r = 7 + over_cnn;
        for (auto *v : {&x, &dx0, &R})
            for (float &e : *v) r = r * 6364136223846793005ULL + 1442695040888963407ULL, e = (float)(r >> 40) / (1 << 24) - 0.5f;
        const mt_dropout_key key = {0.1f, 0x0123456789ABCDEFULL, 7, mt_dropout_site(0, MT_SENT_DROPOUT_LAYER, 0)};
        const auto ref = sentence_model(cpu, L, offsets, params, x, dx0, R, &key);
        const auto got = sentence_model(cuda, L, offsets, params, x, dx0, R, &key);
        const char *names[] = {"out", "dinp", "dparams"};
        for (int k = 0; k < 3; k++)  // op_parity's fp32 rule: 1e-5 max|ref| + 1e-5 |ref|
            CHECK(emu::near(names[k], got[k], ref[k], ref[k].size(), 1e-5 * emu::max_abs(ref[k], ref[k].size()), 1e-5));
    }
}

// ---- training: train_check parity's steps (tests/gpu/train_parity.h), emulated CUDA vs CPU ------

std::string model_dir;

TEST(training_parity) {
    fflush(stdout);  // its lines are printed by C stdio too
    CHECK(training_parity(model_dir.c_str(), cpu, cuda, 4, 48, 3) == 0);
}

}  // namespace

int main(void) {
    const char *root = getenv("MTBERT_ROOT");
    model_dir = std::string(root ? root : ".") + "/models/all-MiniLM-L6-v2";
    mt_emu::set_async(true);
    char desc[256];
    CHECK(mt_cuda_probe(desc, sizeof desc) == 1);
    cuda = mt_backend_cuda();
    printf("# %s: %s, %d SMs as the kernels see them\n", cuda->name, desc, mt_cuda::num_sms);
    RUN(stream_defers);
    RUN(memory_plan);
    RUN(precision_fp32_only);
    RUN(upload_ring);
    RUN(sentence_model);
    RUN(training_parity);
    return check_summary();
}
