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
//   - train_check parity's approach: 3 training steps of models/all-MiniLM-L6-v2 (dropout 0.1,
//     AdamW) on this table and on the CPU table, losses within 1e-5, gradients after step 1 and
//     parameters after step 3 within 1e-4 globally and 1e-3 per tensor (the tensors whose
//     gradient is rounding noise left out of the per-tensor rule: tensors_near says which).
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

namespace {

using std::vector;
const mt_backend *cpu = mt_backend_cpu();
const mt_backend *cuda;

// Runs f in a child with its stderr captured; the child's exit status in *status.
template <class F> std::string in_child(F f, int *status) {
    fflush(stdout), fflush(stderr);
    int fd[2];
    if (pipe(fd)) mt_die("pipe failed");
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        f();
        _exit(0);
    }
    close(fd[1]);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd[0], buf, sizeof buf)) > 0) out.append(buf, n);
    close(fd[0]);
    waitpid(pid, status, 0);
    return out;
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

// op_parity's fp32 rule: |got - ref| <= 1e-5 max|ref| + 1e-5 |ref|
bool near_rows(const char *what, const vector<float> &got, const vector<float> &ref) {
    double m = 0;
    for (float v : ref) m = std::max(m, (double)fabsf(v));
    size_t bad = 0;
    for (size_t i = 0; i < ref.size(); i++) bad += !(fabs((double)got[i] - ref[i]) <= 1e-5 * m + 1e-5 * fabs(ref[i]));
    if (bad) printf("# %s: %zu of %zu past 1e-5 max|ref| + 1e-5 |ref|\n", what, bad, ref.size());
    return bad == 0;
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
        for (int k = 0; k < 3; k++) CHECK(near_rows(names[k], got[k], ref[k]));
    }
}

// ---- training: train_check parity's steps, emulated CUDA vs CPU -------------------------------

struct trainee {
    mt_bert *m;
    const mt_backend *be;
    float *grads, *dh;
    mt_adamw opt;
};

trainee trainee_new(const char *dir, const mt_backend *be, int max_tokens, int max_batch, int max_len) {
    char err[1024];
    trainee t = {mt_bert_load(dir, be, err, sizeof err), be, NULL, NULL, {}};
    if (!t.m) mt_die("%s", err);
    t.grads = (float *)be->alloc(t.m->num_params * sizeof(float));
    t.dh = (float *)be->alloc((size_t)max_tokens * t.m->cfg.hidden_size * sizeof(float));
    mt_adamw_hparams hp = mt_adamw_defaults();
    mt_bert_adamw_init(&t.opt, t.m, &hp, 0);
    mt_bert_reserve(t.m, max_tokens, max_batch, max_len, 1, 0);
    return t;
}

// loss = 1e-3 sum(h^2) (returned), its gradients, AdamW at lr 1e-4
double train_step(trainee *t, const int32_t *ids, const int32_t *offsets, int B, uint32_t step) {
    mt_bert_dropout drop = {0.1f, 1234, step, 0};
    const float *h = mt_bert_forward_train(t->m, ids, NULL, offsets, B, &drop);
    if (!h) mt_die("%s", mt_bert_error(t->m));
    const size_t n = (size_t)offsets[B] * t->m->cfg.hidden_size;
    const float *const hs[1] = {h};
    double sumsq, w = 2e-3;
    t->be->gram(&sumsq, hs, 1, n);
    t->be->combine(t->dh, hs, &w, 1, n);
    t->be->zero(t->grads, t->m->num_params * sizeof(float));
    mt_bert_backward(t->m, t->dh, t->grads);
    mt_adamw_step(&t->opt, t->m->params, t->grads, 1e-4);
    return 1e-3 * sumsq;
}

vector<float> to_host(const mt_backend *be, const float *p, size_t n) {
    vector<float> h(n);
    be->copy_to_host(h.data(), p, n * sizeof(float));
    return h;
}

double rel_diff(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)a[i] - b[i];
        num += d * d, den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

double norm(const float *a, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * a[i];
    return sqrt(s);
}

// train_check's compare_tensors: the global and the worst per-tensor relative difference. A
// tensor whose reference gradient is below 1e-6 of the whole's norm is rounding noise, compared
// only within the global norm, and from then on (exempt, filled by the gradients' call): the key
// biases, whose exact gradient is 0 (a row's softmax ignores a shift), whose noise Adam turns
// into full steps of either sign (and the pooler's, which training leaves at 0).
bool tensors_near(const char *what, const mt_bert *m, const vector<float> &got, const vector<float> &ref,
                  std::set<std::string> &exempt, bool gradients) {
    const double global = rel_diff(got.data(), ref.data(), got.size()), whole = norm(ref.data(), ref.size());
    double worst = 0;
    const char *worst_name = "-";
    const int n = mt_bert_tensor_info(m, NULL, 0);
    vector<struct mt_bert_tensor_info> info(n);
    mt_bert_tensor_info(m, info.data(), n);
    for (const auto &t : info) {
        if (gradients && norm(ref.data() + t.offset, t.size) < 1e-6 * whole) exempt.insert(t.name);
        if (exempt.count(t.name)) continue;
        const double r = rel_diff(got.data() + t.offset, ref.data() + t.offset, t.size);
        if (!(r <= worst)) worst = r, worst_name = t.name;  // NaN wins
    }
    printf("# %s: ||cuda - cpu|| / ||cpu|| = %.2e (tolerance 1e-4), worst tensor %s %.2e (tolerance 1e-3; "
           "%zu noise tensors left out)\n", what, global, worst_name, worst, exempt.size());
    return global <= 1e-4 && worst <= 1e-3;
}

std::string model_dir;

TEST(training_parity) {
    const int B = 4, L = 48, steps = 3;
    trainee a = trainee_new(model_dir.c_str(), cpu, B * L, B, L), g = trainee_new(model_dir.c_str(), cuda, B * L, B, L);
    const size_t P = a.m->num_params;
    std::set<std::string> noise;
    for (int s = 0; s < steps; s++) {
        int32_t offsets[B + 1] = {0};  // lengths across the warp's edges: 48, 33, 17, 31 (and so on)
        for (int b = 0; b < B; b++) offsets[b + 1] = offsets[b] + L - (int)((b * 7919u + 15 * s) % 32);
        vector<int32_t> ids(offsets[B]);
        for (int i = 0; i < offsets[B]; i++) ids[i] = 1000 + (int32_t)((i * 7919u + (s + 1) * 104729u) % 20000);
        for (int b = 0; b < B; b++) ids[offsets[b]] = 101, ids[offsets[b + 1] - 1] = 102;  // [CLS] ... [SEP]
        const double la = train_step(&a, ids.data(), offsets, B, s), lg = train_step(&g, ids.data(), offsets, B, s);
        const double rd = fabs(la - lg) / fabs(la);
        printf("# step %d (%d tokens): loss cpu %.9g, cuda %.9g, rel diff %.2e (tolerance 1e-5)\n", s + 1,
               offsets[B], la, lg, rd);
        CHECK(rd <= 1e-5);
        if (s == 0)
            CHECK(tensors_near("gradients after step 1", a.m, to_host(cuda, g.grads, P), to_host(cpu, a.grads, P),
                               noise, true));
    }
    CHECK(tensors_near("parameters after 3 steps", a.m, to_host(cuda, g.m->params, P), to_host(cpu, a.m->params, P),
                       noise, false));
    for (const std::string &name : noise)  // the key biases, and the pooler (no gradient in training)
        CHECK(name.find("attention.self.key.bias") != std::string::npos || name.find("pooler.") != std::string::npos);
    for (trainee *t : {&a, &g}) {
        mt_adamw_free(&t->opt);
        t->be->free(t->grads), t->be->free(t->dh);
        mt_bert_free(t->m);
    }
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
