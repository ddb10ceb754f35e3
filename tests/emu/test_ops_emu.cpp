// test_ops_emu.cpp — kernels/ops.cu (embeddings, LayerNorm, GELU, tanh, pooling, unpack, and
// gemm.cu's helpers bias_residual_forward and scale_matrix) run on the CPU by tests/emu/cuda_emu.h,
// against lib/cpu's table: tests/gpu/op_parity.c's rows for these ops with its tolerances (its
// exact rows as bits), plus edge shapes (sizes off the block and warp sizes, empty inputs, grids
// past num_sms * 32 blocks so the grid-stride loops run their stride, the last row of every
// table). Every launch also runs under two other schedules, which must give the same bits (the
// race check; in the ASan build too: these launches are cheap). Every output is followed by a
// NaN guard that must come through bit for bit, every input by another NaN, which a read past it
// carries into the output (exact sizes under ASan instead, which sees any access past them).
// ops.cu has no dropout: none of its ops takes a key. It tests the kernels' logic without a GPU;
// nvcc's code and CUDA's erff / tanhf are tests/gpu/check.sh's (op_parity), on a GPU.
#include "cuda_emu.h"

extern "C" {
#include "backend.h"  // before ops.cu's includes, so its C declarations keep C linkage
}
#include "ops.emu.cpp"  // kernels/ops.cu, its launch syntax rewritten by the Makefile
#include "backend_glue.h"

#include "check.h"
#include "rand.h"

#include "parity.h"

namespace {

typedef std::vector<float> vec;
using emu::outputs;
using emu::rand_around;
using emu::same_bits;
using emu::untouched_past;
const mt_backend *cpu = mt_backend_cpu();

// Two NaNs told apart by their payloads: what follows an output (and fills it before the launch)
// and what follows an input. A kernel that reads past an input and writes the result past an
// output leaves the input's NaN (or another) in the output's guard.
const float OUT_NAN = emu::nan_of(0x7fc0ffeeu), IN_NAN = emu::nan_of(0x7fc0beefu);

// v followed by GUARD input NaNs: a read past it becomes a NaN in the output.
vec guarded(const vec &v) { return emu::guarded(v, IN_NAN); }
// n output NaNs and the guard: an element the kernel skips stays NaN.
vec nans(size_t n) { return emu::guarded(n, OUT_NAN); }

// Every launch under every schedule, in the ASan build too: these launches are cheap.
template <class F> outputs run_all_schedules(const char *what, F launch) {
    return emu::run_all_schedules(what, launch, emu::races::every_build);
}

// ---- embeddings -----------------------------------------------------------------------------

// op_parity's check_embeddings: exact. ids include V - 1 and the longest sequence P tokens, so
// the last row of each table is read (one past it reads a guard NaN).
void check_embeddings(const std::vector<int> &lengths, int C, int V, int P) {
    const emu::packing p = emu::pack(lengths);
    const int N = p.N, TV = 2;
    std::vector<int32_t> ids(N), types(N), pos(N);
    for (int b = 0; b < p.B; b++)
        for (int n = p.offsets[b]; n < p.offsets[b + 1]; n++)
            ids[n] = (int32_t)((frand() + 1) * 500) % V, types[n] = n % 3 == 0, pos[n] = n - p.offsets[b];
    if (N) ids[N - 1] = V - 1;
    const vec wte = guarded(rand_around((size_t)V * C, 0, 1)), wpe = guarded(rand_around((size_t)P * C, 0, 1)),
              wtt = guarded(rand_around((size_t)TV * C, 0, 1));
    const size_t n = (size_t)N * C;
    vec ref(n);
    cpu->embeddings_forward(ref.data(), ids.data(), types.data(), pos.data(), wte.data(), wpe.data(), wtt.data(), N, C);
    const outputs got = run_all_schedules("embeddings", [&] {
        vec out = nans(n);
        mt_cuda::embeddings_forward(out.data(), ids.data(), types.data(), pos.data(), wte.data(), wpe.data(),
                                    wtt.data(), N, C);
        return outputs{out};
    });
    CHECK(same_bits("embeddings", got[0], ref, n));
    CHECK(untouched_past("embeddings", got[0], n, OUT_NAN));
}

// op_parity's check_row_gather: heads fit gathers rows with all-zero position and type tables,
// out[i] exactly x[ids[i]] (the last row among them).
void check_row_gather(int rows, int m, int D) {
    std::vector<int32_t> ids(m), zeros(m, 0);
    for (int i = 0; i < m; i++) ids[i] = (int32_t)((frand() + 1) * 0.5f * rows) % rows;
    ids[0] = rows - 1;
    const vec x = guarded(rand_around((size_t)rows * D, 0, 1)), zrow = guarded(vec(D, 0.0f));
    vec ref((size_t)m * D);
    for (int i = 0; i < m; i++) memcpy(&ref[(size_t)i * D], &x[(size_t)ids[i] * D], (size_t)D * 4);
    const outputs got = run_all_schedules("row gather", [&] {
        vec out = nans((size_t)m * D);
        mt_cuda::embeddings_forward(out.data(), ids.data(), zeros.data(), zeros.data(), x.data(), zrow.data(),
                                    zrow.data(), m, D);
        return outputs{out};
    });
    CHECK(same_bits("row gather", got[0], ref, (size_t)m * D));
    CHECK(untouched_past("row gather", got[0], (size_t)m * D, OUT_NAN));
}

TEST(embeddings_minilm) { check_embeddings({1, 7, 32, 128, 512, 3, 64, 200}, 384, 1000, 512); }
TEST(embeddings_odd_width) { check_embeddings({1, 7, 32, 128, 3, 64, 200}, 45, 7, 200); }  // C off the warp
TEST(embeddings_one_token) { check_embeddings({1}, 33, 2, 1); }
TEST(embeddings_empty) { check_embeddings({}, 384, 10, 4); }  // N = 0: no launch, nothing written
TEST(embeddings_row_gather) { check_row_gather(3001, 64, 1537); }

// ---- LayerNorm --------------------------------------------------------------------------------

// op_parity's check_layernorm: inputs around 3 (the mean matters), out within 1e-5 + 1e-5 |ref|,
// mean 1e-6 + 1e-6, rstd 1e-6 + 1e-5; in place the same; with mean and rstd NULL (the kernel
// skips them) out the same bits.
void check_layernorm(int N, int C) {
    const size_t n = (size_t)N * C;
    const vec x = guarded(rand_around(n, 3, 2)), w = guarded(rand_around(C, 1, 0.1f)),
              bias = guarded(rand_around(C, 0, 0.1f));
    vec ref(n), rm(N), rr(N);
    cpu->layernorm_forward(ref.data(), rm.data(), rr.data(), x.data(), w.data(), bias.data(), N, C, 1e-12f);
    const outputs got = run_all_schedules("layernorm", [&] {
        vec out = nans(n), m = nans(N), r = nans(N);
        mt_cuda::layernorm_forward(out.data(), m.data(), r.data(), x.data(), w.data(), bias.data(), N, C, 1e-12f);
        return outputs{out, m, r};
    });
    CHECK(emu::near("layernorm out", got[0], ref, n, 1e-5, 1e-5));
    CHECK(emu::near("layernorm mean", got[1], rm, N, 1e-6, 1e-6));
    CHECK(emu::near("layernorm rstd", got[2], rr, N, 1e-6, 1e-5));
    CHECK(untouched_past("layernorm out", got[0], n, OUT_NAN));
    CHECK(untouched_past("layernorm mean", got[1], N, OUT_NAN));
    CHECK(untouched_past("layernorm rstd", got[2], N, OUT_NAN));

    const outputs inplace = run_all_schedules("layernorm in place", [&] {
        vec io = x, m = nans(N), r = nans(N);
        mt_cuda::layernorm_forward(io.data(), m.data(), r.data(), io.data(), w.data(), bias.data(), N, C, 1e-12f);
        return outputs{io, m, r};
    });
    CHECK(same_bits("layernorm in place", inplace[0], got[0], n));
    CHECK(same_bits("layernorm in place, mean", inplace[1], got[1], N));
    CHECK(untouched_past("layernorm in place", inplace[0], n, IN_NAN));

    const outputs no_stats = run_all_schedules("layernorm, no mean/rstd", [&] {
        vec out = nans(n);
        mt_cuda::layernorm_forward(out.data(), nullptr, nullptr, x.data(), w.data(), bias.data(), N, C, 1e-12f);
        return outputs{out};
    });
    CHECK(same_bits("layernorm, no mean/rstd", no_stats[0], got[0], n));
    CHECK(untouched_past("layernorm, no mean/rstd", no_stats[0], n, OUT_NAN));
}

TEST(layernorm_minilm) { check_layernorm(300, 384); }
TEST(layernorm_bert_base) { check_layernorm(300, 768); }
TEST(layernorm_odd) { check_layernorm(37, 45); }    // rows off the block's 8, columns off the warp
TEST(layernorm_edges) {
    check_layernorm(1, 1);     // one column: variance 0, out = bias
    check_layernorm(9, 31);    // fewer columns than lanes
    check_layernorm(8, 33);    // one full block; a lane with two columns
    check_layernorm(600, 64);  // 75 blocks
    check_layernorm(0, 45);    // N = 0: no launch, nothing written
}

// ---- GELU, tanh -------------------------------------------------------------------------------

typedef void unary_fn(float *out, const float *inp, int64_t n);

// op_parity's check_unary: GELU 2.5e-7 |ref| (both in double, rounded once), tanh 1e-6 + 2e-6
// |ref| (libm vs CUDA tanhf); inf, -inf and NaN
// among the inputs, and in place. n past 64 blocks of 256 (num_sms = 2): the loop strides.
void check_unary(const char *name, unary_fn *cpu_fn, unary_fn *emu_fn, int64_t n, float range, double atol,
                 double rtol) {
    vec x = rand_around(n, 0, range);
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN};
    for (int64_t i = 0; i < n && i < 5; i++) x[i] = special[i];
    x = guarded(x);
    vec ref(n);
    cpu_fn(ref.data(), x.data(), n);
    const outputs got = run_all_schedules(name, [&] {
        vec out = nans(n);
        emu_fn(out.data(), x.data(), n);
        return outputs{out};
    });
    CHECK(emu::near(name, got[0], ref, n, atol, rtol));
    CHECK(untouched_past(name, got[0], n, OUT_NAN));
    const outputs inplace = run_all_schedules(name, [&] {  // each element once: a stride off shows
        vec io = x;
        emu_fn(io.data(), io.data(), n);
        return outputs{io};
    });
    CHECK(same_bits(name, inplace[0], got[0], n));
    CHECK(untouched_past(name, inplace[0], n, IN_NAN));
}

// 1000003: op_parity's n (64 blocks stride 61 times); 16385: one element past the grid's first
// sweep; 257 and 1: a partial block.
TEST(gelu) {
    for (int64_t n : {1000003, 16385, 257, 1, 0}) check_unary("gelu", cpu->gelu_forward, mt_cuda::gelu_forward, n, 8, 0, 2.5e-7);
}
TEST(tanh) {
    for (int64_t n : {1000003, 16385, 257, 1, 0}) check_unary("tanh", cpu->tanh_forward, mt_cuda::tanh_forward, n, 10, 1e-6, 2e-6);
}

// ---- pooling ----------------------------------------------------------------------------------

// op_parity's check_pool: cls and max exact, mean 1e-6 + 1e-6 |ref|.
void check_pool(const std::vector<int> &lengths, int C, int mode) {
    const emu::packing p = emu::pack(lengths);
    const size_t nin = (size_t)p.N * C, nout = (size_t)p.B * C;
    const vec x = guarded(rand_around(nin, 0, 1));
    vec ref(nout);
    cpu->pool_forward(ref.data(), x.data(), p.offsets.data(), p.B, C, mode);
    const outputs got = run_all_schedules("pool", [&] {
        vec out = nans(nout);
        mt_cuda::pool_forward(out.data(), x.data(), p.offsets.data(), p.B, C, mode);
        return outputs{out};
    });
    if (mode == MT_POOL_MEAN) CHECK(emu::near("pool mean", got[0], ref, nout, 1e-6, 1e-6));
    else CHECK(same_bits(mode == MT_POOL_CLS ? "pool cls" : "pool max", got[0], ref, nout));
    CHECK(untouched_past("pool", got[0], nout, OUT_NAN));
}

const std::vector<int> lengths = {1, 7, 32, 128, 512, 3, 64, 200};  // op_parity's

TEST(pool) {
    for (int mode = 0; mode < 3; mode++) {
        check_pool(lengths, 384, mode);
        check_pool(lengths, 45, mode);
        check_pool(lengths, 129, mode);  // a second column tile of one thread
        check_pool({1}, 1, mode);
        check_pool({}, 384, mode);  // B = 0: no launch
    }
    std::vector<int> many(100);  // 100 sequences of 1 to 3 tokens: 200 blocks
    for (int &L : many) L = 1 + (int)((frand() + 1) * 1.5f);
    for (int mode = 0; mode < 3; mode++) check_pool(many, 130, mode);
}

// An empty sequence pools to zeros (the kernel's contract; the CPU's loop has none: it copies
// the next row), and its neighbours are what the CPU gives without it.
TEST(pool_empty_sequence) {
    const int C = 45;
    const emu::packing p = emu::pack({3, 0, 5, 0}), q = emu::pack({3, 5});
    const vec x = guarded(rand_around((size_t)p.N * C, 0, 1));
    for (int mode = 0; mode < 3; mode++) {
        vec ref((size_t)q.B * C);
        cpu->pool_forward(ref.data(), x.data(), q.offsets.data(), q.B, C, mode);
        const outputs got = run_all_schedules("pool, empty", [&] {
            vec out = nans((size_t)p.B * C);
            mt_cuda::pool_forward(out.data(), x.data(), p.offsets.data(), p.B, C, mode);
            return outputs{out};
        });
        vec want((size_t)p.B * C, 0.0f);
        std::copy(ref.begin(), ref.begin() + C, want.begin());
        std::copy(ref.begin() + C, ref.end(), want.begin() + 2 * C);
        CHECK(same_bits("pool, empty", got[0], want, want.size()));
        CHECK(untouched_past("pool, empty", got[0], want.size(), OUT_NAN));
    }
}

// ---- unpack -----------------------------------------------------------------------------------

// op_parity's check_unpack: exact over a NaN-filled output (pad rows must be written as zeros).
void check_unpack(const std::vector<int> &lengths, int C, int extra) {
    const emu::packing p = emu::pack(lengths);
    const int T = p.maxL + extra;
    const size_t nin = (size_t)p.N * C, nout = (size_t)p.B * T * C;
    // at least one float each: the CPU's memcpy of 0 bytes (B > 0, T = 0) still wants pointers
    const vec x = guarded(rand_around(std::max<size_t>(nin, 1), 0, 1));
    vec ref(nout + 1);
    cpu->unpack_forward(ref.data(), x.data(), p.offsets.data(), p.B, T, C);
    const outputs got = run_all_schedules("unpack", [&] {
        vec out = nans(nout);
        mt_cuda::unpack_forward(out.data(), x.data(), p.offsets.data(), p.B, T, C);
        return outputs{out};
    });
    CHECK(same_bits("unpack", got[0], ref, nout));
    CHECK(untouched_past("unpack", got[0], nout, OUT_NAN));
}

TEST(unpack) {
    check_unpack(lengths, 384, 5);
    check_unpack(lengths, 45, 5);
    check_unpack(lengths, 45, 0);  // T = the longest: no pad rows for it
    check_unpack({1}, 1, 0);
    check_unpack({3, 0, 2}, 7, 1);  // an empty sequence: all pad
    check_unpack({}, 45, 3);        // B = 0: no launch
    check_unpack({0, 0}, 45, 0);    // T = 0: no launch
}

// ---- gemm.cu's helpers ------------------------------------------------------------------------

// bias_residual_forward is the first half of the CPU's matmul_forward (bias and residual written,
// then sgemm with beta = 1): the CPU's with a zero inp and weight (IC = 1, adding exact zeros)
// is its twin. Exact. variant: 0 bias + residual, 1 bias, 2 residual, 3 neither.
void check_bias_residual(int N, int OC, int variant) {
    const vec bias = guarded(rand_around(OC, 0, 1)), res = guarded(rand_around((size_t)N * OC, 0, 1));
    const float *b = variant <= 1 ? bias.data() : nullptr, *r = variant == 0 || variant == 2 ? res.data() : nullptr;
    const vec zin(N, 0.0f), zw(OC, 0.0f);
    const size_t n = (size_t)N * OC;
    vec ref(n);
    cpu->matmul_forward(ref.data(), zin.data(), zw.data(), b, r, N, 1, OC);
    const outputs got = run_all_schedules("bias_residual", [&] {
        vec out = nans(n);
        mt_cuda::bias_residual_forward(out.data(), b, r, N, OC);
        return outputs{out};
    });
    CHECK(same_bits("bias_residual", got[0], ref, n));
    CHECK(untouched_past("bias_residual", got[0], n, OUT_NAN));
}

TEST(bias_residual) {
    for (int v = 0; v < 4; v++) check_bias_residual(200, 1152, v), check_bias_residual(19, 33, v);
    check_bias_residual(1, 1, 0);
    check_bias_residual(0, 33, 0);  // no launch
}

// scale_matrix is what gemm.cu does for K = 0 or alpha = 0: C = beta C, beta = 0 writing zeros
// over NaN; the CPU's gemm with K = 0 is its twin. Exact, the padding past N in each row (and the
// guard) untouched.
void check_scale_matrix(int M, int N, int ldc, float beta) {
    const size_t n = (size_t)M * ldc;
    vec c = rand_around(n, 0, 1);
    for (size_t i = 0; i < n; i += 7) c[i] = NAN;  // beta = 0 must overwrite them
    c = guarded(c);
    vec ref = c;
    const float dummy = 0.0f;
    cpu->gemm(0, 0, M, N, 0, 1.0f, &dummy, 1, &dummy, std::max(N, 1), beta, ref.data(), ldc);
    const outputs got = run_all_schedules("scale_matrix", [&] {
        vec out = c;
        mt_cuda::scale_matrix(out.data(), M, N, ldc, beta);
        return outputs{out};
    });
    CHECK(same_bits("scale_matrix", got[0], ref, n));  // the padding included
    CHECK(untouched_past("scale_matrix", got[0], n, IN_NAN));
}

TEST(scale_matrix) {
    for (float beta : {0.5f, 0.0f, -3.0f, 1.0f}) {
        check_scale_matrix(5, 7, 9, beta);
        check_scale_matrix(300, 130, 133, beta);  // 153 blocks, rows off the block size
        check_scale_matrix(1, 1, 1, beta);
    }
    check_scale_matrix(0, 7, 9, 0.0f);  // no launch
}

}  // namespace

int main(void) {
    RUN(embeddings_minilm);
    RUN(embeddings_odd_width);
    RUN(embeddings_one_token);
    RUN(embeddings_empty);
    RUN(embeddings_row_gather);
    RUN(layernorm_minilm);
    RUN(layernorm_bert_base);
    RUN(layernorm_odd);
    RUN(layernorm_edges);
    RUN(gelu);
    RUN(tanh);
    RUN(pool);
    RUN(pool_empty_sequence);
    RUN(unpack);
    RUN(bias_residual);
    RUN(scale_matrix);
    return check_summary();
}
