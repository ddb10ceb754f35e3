// test_attention_emu.cpp — kernels/attention.cu's batched path at fp32 (layout kernels, softmax
// rows forward and backward, with and without dropout) run on the CPU by tests/emu/cuda_emu.h
// against lib/cpu's attention: tests/gpu/op_parity.c's rows for attention_forward,
// attention_forward_dropout and attention_backward at op_parity's tolerances, with lengths across
// the warp's edges (1 token, 31 to 33, 64, 65), max_len past the longest sequence, NH 1 to 12;
// nothing written past out, att or dqkv; the race check (the same bits under two other
// schedules); and the softmax kernels' trap when a sequence is longer than max_len. The products
// are gemm.cu's contract done by the CPU table's gemm (cuBLAS is not emulated), so this tests the
// kernels around them, not the products' precision.
#include "cuda_emu.h"

extern "C" {
#include "backend.h"  // before attention.cu's includes, so its C functions keep C linkage
}
#include "attention.emu.cpp"  // kernels/attention.cu, its launch syntax rewritten by the Makefile
#include "backend_glue.h"

#include <signal.h>

#include "check.h"
#include "rand.h"

#include "parity.h"

namespace mt_cuda {
// gemm.cu's strided batched product (cuBLAS is not emulated): the CPU table's gemm, which has its
// row-major contract, once per matrix of the batch; at fp32, the precision the CPU twin matches
void gemm_batched(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, int64_t sA,
                  const float *B, int ldb, int64_t sB, float beta, float *C, int ldc, int64_t sC, int batch) {
    for (int i = 0; i < batch; i++)
        mt_backend_cpu()->gemm(trans_a, trans_b, M, N, K, alpha, A + i * sA, lda, B + i * sB, ldb, beta, C + i * sC,
                               ldc);
}
int gemm_precision(void) { return MT_PRECISION_FP32; }
// flash.cu's, which MTBERT_ATTENTION=fused would call (test_flash_emu tests them): never here
bool attention_flash_applies(int, int) { return false; }
void attention_forward_flash(float *, float *, const float *, const int32_t *, const int64_t *, int, int, int, int,
                             const mt_dropout_key *) {
    mt_emu::fail("attention_forward_flash called on the batched path");
}
void attention_backward_flash(float *, const float *, const float *, const float *, const int32_t *, const int64_t *,
                              int, int, int, int, const mt_dropout_key *) {
    mt_emu::fail("attention_backward_flash called on the batched path");
}
}  // namespace mt_cuda

namespace {

using emu::guarded;
using emu::pack;
using emu::rand_around;
using std::vector;
const mt_backend *cpu = mt_backend_cpu();

const float NO_KEY = -1;  // p: attention_forward, and no key for the backward

// op_parity's check_attention, check_attention_dropout and check_attention_backward on one input:
// the forward with att (attention_forward_dropout with a key of dropout p, or attention_forward
// for NO_KEY), the forward without att (no att, no dropout, as the CPU), and the backward from the
// CPU forward's att into a dqkv that already holds values; max_len = the longest + extra.
void check_attention(const vector<int> &lengths, int C, int NH, float p, int extra = 0) {
    const emu::packing pk = pack(lengths, NH);
    const int max_len = pk.maxL + extra;
    const mt_dropout_key key = emu::key_of(p, mt_dropout_site(0, 5, 1)), *k = p >= 0 ? &key : nullptr;
    const size_t nqkv = (size_t)pk.N * 3 * C, nout = (size_t)pk.N * C, natt = pk.att_size;
    const vector<float> qkv = rand_around(nqkv, 0, 2), dout = rand_around(nout, 0, 1), start = rand_around(nqkv, 0, 0.1f);
    const int32_t *off = pk.offsets.data();
    const int64_t *aoff = pk.att_offsets.data();
    vector<float> out(nout), att(natt), out_noatt(nout), dqkv = start;
    cpu->attention_forward_dropout(out.data(), att.data(), qkv.data(), off, aoff, pk.B, max_len, C, NH, k);
    cpu->attention_forward_dropout(out_noatt.data(), nullptr, qkv.data(), off, aoff, pk.B, max_len, C, NH, k);
    cpu->attention_backward(dqkv.data(), dout.data(), qkv.data(), att.data(), off, aoff, pk.B, max_len, C, NH, k);
    auto run = [&] {
        emu::outputs o = {guarded(nout), guarded(natt), guarded(nout), guarded(start)};
        if (k) mt_cuda::attention_forward_dropout(o[0].data(), o[1].data(), qkv.data(), off, aoff, pk.B, max_len, C, NH, k);
        else mt_cuda::attention_forward(o[0].data(), o[1].data(), qkv.data(), off, aoff, pk.B, max_len, C, NH);
        mt_cuda::attention_forward_dropout(o[2].data(), nullptr, qkv.data(), off, aoff, pk.B, max_len, C, NH, k);
        mt_cuda::attention_backward(o[3].data(), dout.data(), qkv.data(), att.data(), off, aoff, pk.B, max_len, C, NH, k);
        return o;
    };
    const emu::outputs got = emu::run_all_schedules("attention", run);
    CHECK(emu::near("out", got[0], out, nout, 1e-5, 1e-5));
    CHECK(emu::near("probs (pre-dropout)", got[1], att, natt, 1e-6, 1e-5));
    CHECK(emu::near("out, att NULL", got[2], out_noatt, nout, 1e-5, 1e-5));
    CHECK(emu::near("dqkv", got[3], dqkv, nqkv, 1e-5 * emu::max_abs(dqkv, nqkv), 1e-5));
    const char *names[4] = {"out", "att", "out (att NULL)", "dqkv"};
    for (int t = 0; t < 4; t++) CHECK(emu::untouched_past(names[t], got[t], got[t].size() - emu::GUARD));
}

// Across the warp's 32 lanes (1 token, 31 to 33, two warps' worth and one more) and 7
const vector<int> edges = {1, 31, 32, 33, 64, 65, 7};
// op_parity's lengths, less the 512 (emulated softmax rows cost time; the longer row below has more)
const vector<int> lengths = {1, 7, 32, 128, 3, 64, 200};

TEST(attention_minilm_edges) { check_attention(edges, 384, 12, NO_KEY); }  // hs 32
TEST(attention_minilm_edges_dropout) { check_attention(edges, 384, 12, 0.1f); }
TEST(attention_bert_dropout) { check_attention(lengths, 768, 12, 0.1f); }  // hs 64
TEST(attention_hs96_one_head_dropout) { check_attention(edges, 96, 1, 0.1f); }  // hs not a power of two
TEST(attention_hs128_two_heads_p0) { check_attention(edges, 256, 2, 0.0f); }  // a key with p = 0: no dropout
TEST(attention_three_heads_max_len_past_dropout) { check_attention(lengths, 96, 3, 0.1f, 7); }
TEST(attention_one_token_dropout) { check_attention({1}, 64, 2, 0.1f); }
// max_len past the longest: padded rows and columns the batch does not use
TEST(attention_max_len_past_longest_dropout) { check_attention(edges, 384, 12, 0.1f, 19); }
TEST(attention_one_token_max_len_33) { check_attention({1}, 64, 2, NO_KEY, 32); }
// a row longer than many warps' strides (op_parity's: more query rows than a block holds)
TEST(attention_longer_dropout) { check_attention({1300, 5, 33}, 64, 1, 0.1f); }

// ---- the softmax kernels' trap: a sequence longer than max_len dies, never writes past its row ----

// The op in a child process (the emulator aborts at __trap); true if it died there.
template <class Op> bool traps(Op op) {
    std::string msg;
    const int status = emu::in_child(op, &msg);
    const bool trapped =
        WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && msg.find("__trap()") != std::string::npos;
    if (!trapped) printf("# no trap: status %#x, stderr: %s\n", status, msg.c_str());
    return trapped;
}

TEST(attention_traps_past_max_len) {
    const int C = 64, NH = 2;
    const emu::packing pk = pack({5, 40, 3}, NH);
    const int max_len = pk.maxL - 1;  // the caller's bug: 40 tokens, max_len 39
    const vector<float> qkv = rand_around((size_t)pk.N * 3 * C, 0, 2), dout = rand_around((size_t)pk.N * C, 0, 1);
    const vector<float> att(pk.att_size, 0.01f);
    vector<float> out((size_t)pk.N * C), latt(pk.att_size), dqkv((size_t)pk.N * 3 * C);
    const int32_t *off = pk.offsets.data();
    const int64_t *aoff = pk.att_offsets.data();
    CHECK(traps([&] { mt_cuda::attention_forward(out.data(), latt.data(), qkv.data(), off, aoff, pk.B, max_len, C, NH); }));
    const mt_dropout_key key = emu::key_of(0.1f, mt_dropout_site(0, 5, 1));
    CHECK(traps([&] {
        mt_cuda::attention_forward_dropout(out.data(), latt.data(), qkv.data(), off, aoff, pk.B, max_len, C, NH, &key);
    }));
    CHECK(traps([&] {
        mt_cuda::attention_backward(dqkv.data(), dout.data(), qkv.data(), att.data(), off, aoff, pk.B, max_len, C, NH,
                                    nullptr);
    }));
    // and at max_len = the longest, no trap: the child exits cleanly
    const int status = emu::in_child(
        [&] { mt_cuda::attention_forward(out.data(), latt.data(), qkv.data(), off, aoff, pk.B, pk.maxL, C, NH); });
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace

int main(void) {
    RUN(attention_minilm_edges);
    RUN(attention_minilm_edges_dropout);
    RUN(attention_bert_dropout);
    RUN(attention_hs96_one_head_dropout);
    RUN(attention_hs128_two_heads_p0);
    RUN(attention_three_heads_max_len_past_dropout);
    RUN(attention_one_token_dropout);
    RUN(attention_max_len_past_longest_dropout);
    RUN(attention_one_token_max_len_33);
    RUN(attention_longer_dropout);
    RUN(attention_traps_past_max_len);
    return check_summary();
}
