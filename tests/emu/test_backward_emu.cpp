// test_backward_emu.cpp — kernels/backward.cu run on the CPU by tests/emu/cuda_emu.h against
// lib/cpu's twins (lib/cpu/backward.c): tests/gpu/op_parity.c's rows for dropout, matmul_backward
// (its column sums), layernorm_backward, gelu_backward and embeddings_backward at op_parity's
// tolerances (exact ones bit for bit), nothing written past an output, and the race check (the
// same bits under two other schedules). The shapes are op_parity's or smaller, with sizes off
// the block and warp sizes and grids past num_sms * 32 blocks, so grid-stride loops run their
// stride. CUB's sort is tests/emu/include's host emulation; the products are the CPU table's.
// It tests the kernels' logic without a GPU; nvcc's code is tests/gpu/check.sh's to test.
#include "cuda_emu.h"

extern "C" {
#include "backend.h"  // before backward.cu's includes, so its C functions keep C linkage
}
#include "backward.emu.cpp"  // kernels/backward.cu, its launch syntax rewritten by the Makefile
#define MT_EMU_NO_SCRATCH    // backward.cu defines mt_cuda::scratch itself
#include "backend_glue.h"

#include "check.h"
#include "rand.h"

#include "parity.h"

namespace mt_cuda {
// gemm.cu's product (cuBLAS is not emulated): the CPU table's, which has the same row-major contract
void gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
          float beta, float *C, int ldc) {
    mt_backend_cpu()->gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
}  // namespace mt_cuda

namespace {

using emu::CANARY;
using emu::guarded;
using emu::rand_around;
using std::vector;
const mt_backend *cpu = mt_backend_cpu();

// ---- dropout: exact (the Philox mask, the scale and the residual add rounded as the CPU) -------

void check_dropout(int64_t n, float p) {
    const mt_dropout_key key = emu::key_of(p, mt_dropout_site(1, 3, 2));
    const vector<float> x = rand_around(n, 0, 1), res = rand_around(n, 0, 1), acc = rand_around(n, 0, 1);
    vector<float> fwd(n), fwd_res(n), bwd = acc, copy(n);
    cpu->dropout_forward(fwd.data(), x.data(), nullptr, n, &key);
    cpu->dropout_forward(fwd_res.data(), x.data(), res.data(), n, &key);
    cpu->dropout_backward(bwd.data(), res.data(), n, &key);
    cpu->dropout_forward(copy.data(), x.data(), res.data(), n, nullptr);
    auto run = [&] {
        vector<float> y = guarded(n), in_place = guarded(x, CANARY), b = guarded(acc, CANARY), c = guarded(n);
        mt_cuda::dropout_forward(y.data(), x.data(), nullptr, n, &key);
        mt_cuda::dropout_forward(in_place.data(), in_place.data(), res.data(), n, &key);  // out == inp
        mt_cuda::dropout_backward(b.data(), res.data(), n, &key);
        mt_cuda::dropout_forward(c.data(), x.data(), res.data(), n, nullptr);  // no key: a copy plus residual
        return emu::outputs{y, in_place, b, c};
    };
    const emu::outputs got = emu::run_all_schedules("dropout", run);
    CHECK(emu::same_bits("fwd", got[0], fwd, n));
    CHECK(emu::same_bits("fwd+residual in place", got[1], fwd_res, n));
    CHECK(emu::same_bits("bwd", got[2], bwd, n));
    CHECK(emu::same_bits("fwd+residual, key NULL", got[3], copy, n));
    for (int k = 0; k < 4; k++) CHECK(emu::untouched_past("dropout", got[k], n, k == 1 || k == 2 ? CANARY : NAN));
    if (p > 0) {  // the mask itself, element by element, against lib/rng.h
        const uint32_t thr = mt_dropout_threshold(p);
        int64_t wrong = 0;
        for (int64_t i = 0; i < n; i++)
            wrong += (got[0][i] != 0.0f || x[i] == 0.0f) != mt_dropout_keep(key.seed, key.step, key.site, (uint64_t)i, thr);
        CHECK(wrong == 0);
    }
}
TEST(dropout_grid_stride) { check_dropout(1000003, 0.1f); }  // groups of 4 past 64 blocks x 256; a tail of 3
TEST(dropout_p_half) { check_dropout(4099, 0.5f); }
TEST(dropout_p_zero) { check_dropout(1001, 0.0f); }

// ---- matmul_backward: dinp, dweight (the CPU's GEMM here), dbias (column sums) 1e-5 norm -------

// mask: bit 0 dinp, bit 1 dweight, bit 2 dbias wanted (the others NULL and untouched).
void check_matmul_backward(int N, int IC, int OC, int mask) {
    const vector<float> dout = rand_around((size_t)N * OC, 0, 1), inp = rand_around((size_t)N * IC, 0, 1),
                        w = rand_around((size_t)OC * IC, 0, 1);
    const vector<float> start[3] = {rand_around((size_t)N * IC, 0, 1), rand_around((size_t)OC * IC, 0, 1),
                                    rand_around(OC, 0, 1)};
    vector<float> ref[3] = {start[0], start[1], start[2]};
    cpu->matmul_backward(mask & 1 ? ref[0].data() : nullptr, mask & 2 ? ref[1].data() : nullptr,
                         mask & 4 ? ref[2].data() : nullptr, dout.data(), inp.data(), w.data(), N, IC, OC);
    auto run = [&] {
        emu::outputs o = {guarded(start[0], CANARY), guarded(start[1], CANARY), guarded(start[2], CANARY)};
        mt_cuda::matmul_backward(mask & 1 ? o[0].data() : nullptr, mask & 2 ? o[1].data() : nullptr,
                                 mask & 4 ? o[2].data() : nullptr, dout.data(), inp.data(), w.data(), N, IC, OC);
        return o;
    };
    const emu::outputs got = emu::run_all_schedules("matmul_backward", run);
    const char *names[3] = {"dinp", "dweight", "dbias"};
    for (int t = 0; t < 3; t++) {
        const size_t n = start[t].size();
        if (mask >> t & 1) CHECK(emu::near(names[t], got[t], ref[t], n, 1e-5 * emu::max_abs(ref[t], n), 1e-5));
        else CHECK(emu::same_bits(names[t], got[t], start[t], n));
        CHECK(emu::untouched_past(names[t], got[t], n, CANARY));
    }
}
TEST(matmul_backward_bert) { check_matmul_backward(517, 768, 3072, 7); }  // 256-row chunks: 2 and a part
TEST(matmul_backward_odd) { check_matmul_backward(19, 45, 33, 7); }
TEST(matmul_backward_minilm) { check_matmul_backward(200, 384, 1152, 7); }
TEST(matmul_backward_each_alone) {
    for (int mask : {1, 2, 4}) check_matmul_backward(64, 96, 80, mask);
}

// ---- layernorm_backward: dinp 1e-5 rel, dweight and dbias 1e-5 norm ------------------------------

// All three gradients, then dinp alone, then dweight alone and dbias alone (the column sums' two
// sets, each finished on its own).
void check_layernorm_backward(int N, int C) {
    const vector<float> x = rand_around((size_t)N * C, 3, 2), w = rand_around(C, 1, 0.1f), bias = rand_around(C, 0, 0.1f);
    vector<float> y((size_t)N * C), mean(N), rstd(N);
    cpu->layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), bias.data(), N, C, 1e-12f);
    const vector<float> dout = rand_around((size_t)N * C, 0, 1);
    const vector<float> start[3] = {rand_around((size_t)N * C, 0, 1), rand_around(C, 0, 1), rand_around(C, 0, 1)};
    vector<float> ref[3] = {start[0], start[1], start[2]};
    cpu->layernorm_backward(ref[0].data(), ref[1].data(), ref[2].data(), dout.data(), x.data(), w.data(), mean.data(),
                            rstd.data(), N, C);
    auto run = [&] {
        emu::outputs o = {guarded(start[0], CANARY), guarded(start[1], CANARY), guarded(start[2], CANARY),
                          guarded(start[0], CANARY), guarded(start[1], CANARY), guarded(start[2], CANARY)};
        mt_cuda::layernorm_backward(o[0].data(), o[1].data(), o[2].data(), dout.data(), x.data(), w.data(), mean.data(),
                                    rstd.data(), N, C);
        mt_cuda::layernorm_backward(o[3].data(), nullptr, nullptr, dout.data(), x.data(), w.data(), mean.data(),
                                    rstd.data(), N, C);
        mt_cuda::layernorm_backward(nullptr, o[4].data(), nullptr, dout.data(), x.data(), w.data(), mean.data(),
                                    rstd.data(), N, C);
        mt_cuda::layernorm_backward(nullptr, nullptr, o[5].data(), dout.data(), x.data(), w.data(), mean.data(),
                                    rstd.data(), N, C);
        return o;
    };
    const emu::outputs got = emu::run_all_schedules("layernorm_backward", run);
    const size_t nx = (size_t)N * C;
    CHECK(emu::near("dinp", got[0], ref[0], nx, 1e-5, 1e-5));
    CHECK(emu::near("dweight", got[1], ref[1], C, 1e-5 * emu::max_abs(ref[1], C), 1e-5));
    CHECK(emu::near("dbias", got[2], ref[2], C, 1e-5 * emu::max_abs(ref[2], C), 1e-5));
    for (int t = 0; t < 3; t++) CHECK(emu::same_bits("alone vs together", got[3 + t], got[t], start[t].size()));
    for (const vector<float> &o : got) CHECK(emu::untouched_past("layernorm_backward", o, o.size() - emu::GUARD, CANARY));
}
TEST(layernorm_backward_bert) { check_layernorm_backward(517, 768); }
TEST(layernorm_backward_minilm) { check_layernorm_backward(300, 384); }
TEST(layernorm_backward_odd) { check_layernorm_backward(37, 45); }

// ---- gelu_backward: 1e-6 rel, atol 1e-6 (both sides in double, one rounding each) ----------------

TEST(gelu_backward_grid_stride) {
    const int64_t n = 1000003;  // past 64 blocks x 256: the stride
    vector<float> x = rand_around(n, 0, 8);
    x[0] = 0, x[1] = -0.0f, x[2] = 12, x[3] = -12;
    const vector<float> dout = rand_around(n, 0, 1), start = rand_around(n, 0, 1);
    vector<float> y(n), ref = start;
    cpu->gelu_forward(y.data(), x.data(), n);
    cpu->gelu_backward(ref.data(), x.data(), nullptr, dout.data(), n);
    auto run = [&] {
        emu::outputs o = {guarded(start, CANARY), guarded(start, CANARY)};
        mt_cuda::gelu_backward(o[0].data(), x.data(), nullptr, dout.data(), n);
        mt_cuda::gelu_backward(o[1].data(), x.data(), y.data(), dout.data(), n);  // out given: not read
        return o;
    };
    const emu::outputs got = emu::run_all_schedules("gelu_backward", run);
    CHECK(emu::near("out NULL", got[0], ref, n, 1e-6, 1e-6));
    CHECK(emu::same_bits("out given", got[1], got[0], n));
    for (const vector<float> &o : got) CHECK(emu::untouched_past("gelu_backward", o, n, CANARY));
}

// ---- embeddings_backward: exact (the CPU's float additions in token order) -----------------------

// Sequences of the given lengths (positions from 0 in each), V words drawn at random (few words:
// long runs of one row in the sort), types 1 on every third token.
void check_embeddings_backward(const vector<int> &lengths, int C, int V, bool with_pos) {
    const int P = 512, TV = 2;
    vector<int32_t> ids, types, pos;
    for (int L : lengths)
        for (int i = 0; i < L; i++) {
            ids.push_back((int32_t)((frand() + 1) * 0.5f * V) % V);
            types.push_back(ids.size() % 3 == 1);
            pos.push_back(i);
        }
    const int N = (int)ids.size();
    const vector<float> dout = rand_around((size_t)N * C, 0, 1);
    const vector<float> start[3] = {rand_around((size_t)V * C, 0, 1), rand_around((size_t)P * C, 0, 1),
                                    rand_around((size_t)TV * C, 0, 1)};
    vector<float> ref[3] = {start[0], start[1], start[2]};
    cpu->embeddings_backward(ref[0].data(), with_pos ? ref[1].data() : nullptr, ref[2].data(), dout.data(), ids.data(),
                             types.data(), pos.data(), N, C);
    auto run = [&] {
        emu::outputs o = {guarded(start[0], CANARY), guarded(start[1], CANARY), guarded(start[2], CANARY)};
        mt_cuda::embeddings_backward(o[0].data(), with_pos ? o[1].data() : nullptr, o[2].data(), dout.data(), ids.data(),
                                     types.data(), pos.data(), N, C);
        return o;
    };
    const emu::outputs got = emu::run_all_schedules("embeddings_backward", run);
    const char *names[3] = {"dwte", "dwpe", "dwtt"};
    for (int t = 0; t < 3; t++) {
        CHECK(emu::same_bits(names[t], got[t], ref[t], start[t].size()));  // dwpe NULL: ref untouched too
        CHECK(emu::untouched_past(names[t], got[t], start[t].size(), CANARY));
    }
}
const vector<int> lengths = {1, 7, 32, 128, 512, 3, 64, 200};  // op_parity's
TEST(embeddings_backward_384) { check_embeddings_backward(lengths, 384, 1000, true); }
TEST(embeddings_backward_7_words) { check_embeddings_backward(lengths, 45, 7, false); }  // long runs of one row
TEST(embeddings_backward_one_token) { check_embeddings_backward({1}, 45, 7, true); }

// ---- the emulated CUB sort: stable, by the key bits in range, the size it asked for honoured -----

TEST(emu_cub_sort) {
    const int n = 1000;
    vector<int32_t> keys(n), vals(n), kout(n), vout(n);
    for (int i = 0; i < n; i++) keys[i] = (int32_t)(frand() * 300), vals[i] = i;  // negatives too
    size_t bytes = 0;
    CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, keys.data(), kout.data(), vals.data(), vout.data(), n) ==
          cudaSuccess);
    vector<char> temp(bytes);
    size_t less = bytes - 1;
    CHECK(cub::DeviceRadixSort::SortPairs(temp.data(), less, keys.data(), kout.data(), vals.data(), vout.data(), n) ==
          cudaErrorInvalidValue);
    CHECK(cub::DeviceRadixSort::SortPairs(temp.data(), bytes, keys.data(), kout.data(), vals.data(), vout.data(), n, 0,
                                          32) == cudaSuccess);
    vector<int> order(n);
    for (int i = 0; i < n; i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return keys[a] < keys[b]; });
    bool same = true;
    for (int i = 0; i < n; i++) same = same && kout[i] == keys[order[i]] && vout[i] == order[i];
    CHECK(same);
    // bits [4, 8) only: stable by (key >> 4) & 15 of the sign-flipped key
    CHECK(cub::DeviceRadixSort::SortPairs(temp.data(), bytes, keys.data(), kout.data(), vals.data(), vout.data(), n, 4,
                                          8) == cudaSuccess);
    auto digit = [](int32_t k) { return ((uint32_t)k ^ 0x80000000u) >> 4 & 15; };
    for (int i = 0; i < n; i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return digit(keys[a]) < digit(keys[b]); });
    same = true;
    for (int i = 0; i < n; i++) same = same && kout[i] == keys[order[i]] && vout[i] == order[i];
    CHECK(same);
}

}  // namespace

int main(void) {
    RUN(emu_cub_sort);
    RUN(dropout_grid_stride);
    RUN(dropout_p_half);
    RUN(dropout_p_zero);
    RUN(matmul_backward_bert);
    RUN(matmul_backward_odd);
    RUN(matmul_backward_minilm);
    RUN(matmul_backward_each_alone);
    RUN(layernorm_backward_bert);
    RUN(layernorm_backward_minilm);
    RUN(layernorm_backward_odd);
    RUN(gelu_backward_grid_stride);
    RUN(embeddings_backward_384);
    RUN(embeddings_backward_7_words);
    RUN(embeddings_backward_one_token);
    return check_summary();
}
