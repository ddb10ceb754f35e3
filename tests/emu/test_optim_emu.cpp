// test_optim_emu.cpp — kernels/optim.cu's optimizer ops (the fused multi-tensor AdamW, the Gram
// matrix, combine, scale) run on the CPU by tests/emu/cuda_emu.h, against lib/cpu/optim.c: the
// rows of tests/gpu/op_parity.c's check_adamw and check_gram_combine with its tolerances (adamw
// and scale exact, gram 1e-9 of the largest entry; combine bit for bit, stricter than op_parity's
// 1e-6: the kernel rounds each double product and sum as lib/cpu/optim.c, and the emulator's
// __d*_rn are the same IEEE operations), plus edge shapes (empty inputs and lists, sizes off the
// block and chunk edges, grids past num_sms * 32 blocks so the grid-stride loops stride), the
// race check (the same bits under two other schedules) and nothing written past an output.
// None of these ops has dropout. It tests the kernels' logic without a GPU; it says nothing of
// nvcc's code (tests/gpu/check.sh does, on a GPU).
#include "cuda_emu.h"

extern "C" {
#include "backend.h"  // before optim.cu's includes, so its C functions keep C linkage
}
#include "optim.emu.cpp"  // kernels/optim.cu, its launch syntax rewritten by the Makefile
#include "backend_glue.h"

#include "check.h"
#include "rand.h"

#include "parity.h"

namespace {

const mt_backend *cpu = mt_backend_cpu();

using emu::GUARD;
using emu::same_bits;
using emu::untouched_past;

// What follows an array: read-only inputs get NaNs (a read past the end poisons a result),
// written arrays get emu::CANARY.
using emu::CANARY;

// n values center + scale * frand(), then GUARD copies of `after`
std::vector<float> rand_then(size_t n, float center, float scale, float after) {
    return emu::guarded(emu::rand_around(n, center, scale), after);
}

// ---- AdamW -------------------------------------------------------------------------------------

// op_parity's adamw_scalars: step `step` with lr, as lib/adamw.c's scalars_for (torch defaults).
mt_adamw_scalars adamw_scalars(int step, double lr, int decay) {
    double wd = decay ? 0.01 : 0.0, bc1 = 1.0 - pow(0.9, step), bc2 = 1.0 - pow(0.999, step);
    return mt_adamw_scalars{(float)(1.0 - lr * wd), (float)(1.0 - 0.9), 0.999f, (float)(1.0 - 0.999),
                            (float)sqrt(bc2), 1e-8f, (float)(-(lr / bc1)), wd != 0.0};
}

// A step's slice list: each slice's lr scale and decay; `n` the elements the slices span.
struct layout {
    std::vector<mt_adamw_chunk> list;
    std::vector<double> scale;
    std::vector<int> decay;
    size_t n = 0;
    void add(size_t size, double sc, int dc, size_t gap = 0) {
        n += gap;
        list.push_back(mt_adamw_chunk{n, size, mt_adamw_scalars{}});
        scale.push_back(sc), decay.push_back(dc);
        n += size;
    }
    void set_step(int step) {
        for (size_t i = 0; i < list.size(); i++) list[i].s = adamw_scalars(step, 2e-5 * scale[i], decay[i]);
    }
};

// op_parity's adamw_layout: slices of the given sizes after `gap` untouched elements each; decay on
// every other slice, lr scales 1, 0.9, 0.81, ...
layout end_to_end(const std::vector<size_t> &sizes, size_t gap) {
    layout l;
    for (size_t i = 0; i < sizes.size(); i++) l.add(sizes[i], pow(0.9, i % 8), i % 2, gap);
    return l;
}

// op_parity's minilm_list: MiniLM-L6's 103 tensors with --llrd 0.9's scales, as lib/bert.c builds it.
layout minilm() {
    const size_t C = 384, F = 1536, L = 6;
    layout l;
    const double emb = pow(0.9, L + 1);
    l.add(30522 * C, emb, 1), l.add(512 * C, emb, 1), l.add(2 * C, emb, 1), l.add(C, emb, 0), l.add(C, emb, 0);
    for (size_t k = 0; k < L; k++) {
        const double sc = pow(0.9, (double)(L - k));
        for (int qkvo = 0; qkvo < 4; qkvo++) l.add(C * C, sc, 1), l.add(C, sc, 0);
        l.add(C, sc, 0), l.add(C, sc, 0);
        l.add(F * C, sc, 1), l.add(F, sc, 0), l.add(C * F, sc, 1), l.add(C, sc, 0), l.add(C, sc, 0), l.add(C, sc, 0);
    }
    l.add(C * C, 1.0, 0), l.add(C, 1.0, 0);
    return l;
}

struct adamw_state {
    std::vector<float> p, m, v;  // [n] then GUARD canaries
};

// `steps` updates of the layout's slices on the emulator from `start` under each schedule
// (`when`): p, m, v of the default schedule
emu::outputs run_adamw(layout l, const adamw_state &start, const std::vector<float> &g, int steps, emu::races when) {
    return emu::run_all_schedules("adamw", [&] {
        adamw_state s = start;
        for (int step = 1; step <= steps; step++) {
            l.set_step(step);
            mt_cuda::adamw_update_multi(s.p.data(), g.data(), s.m.data(), s.v.data(), l.list.data(),
                                        (int)l.list.size());
        }
        return emu::outputs{s.p, s.m, s.v};
    }, when);
}

// op_parity's check_adamw_list: p, g, m, v [total] through `steps` updates on both tables, every
// element exact (those in no slice untouched); nothing written past p, m, v; the race check
// unless `once`.
void check_adamw(const char *what, layout l, size_t total, int steps = 3, bool once = false) {
    adamw_state start{rand_then(total, 0, 1, CANARY), rand_then(total, 0, 1e-3f, CANARY), rand_then(total, 1e-5f, 1e-5f, CANARY)};
    const std::vector<float> g = rand_then(total, 0, 1e-2f, NAN);
    adamw_state ref = start;
    for (int step = 1; step <= steps; step++) {
        l.set_step(step);
        cpu->adamw_update_multi(ref.p.data(), g.data(), ref.m.data(), ref.v.data(), l.list.data(), (int)l.list.size());
    }
    const emu::outputs got = run_adamw(l, start, g, steps, once ? emu::races::skip : emu::races::plain_build);
    printf("# adamw %s: %zu slices, %zu elements\n", what, l.list.size(), total);
    CHECK(same_bits("adamw p", got[0], ref.p, total));
    CHECK(same_bits("adamw m", got[1], ref.m, total));
    CHECK(same_bits("adamw v", got[2], ref.v, total));
    CHECK(untouched_past("adamw p", got[0], total, CANARY) && untouched_past("adamw m", got[1], total, CANARY) &&
          untouched_past("adamw v", got[2], total, CANARY));
}

// one big slice: 245 chunks on a 64-block grid (the grid-stride loop strides), a partial last one
TEST(adamw_one_slice) { check_adamw("one slice", end_to_end({1000003}, 0), 1000003); }
// slice edges at the 4096-element chunks' edges, empty slices, one element, gaps between
TEST(adamw_edges_gaps) {
    const layout l = end_to_end({4095, 4096, 4097, 0, 1, 8192, 0, 12289, 384, 0}, 3);
    check_adamw("edges+gaps", l, l.n + 5);
}
// 1100 slices, some empty: three launches of at most 512 (the 513th a new launch's first)
TEST(adamw_1100_slices) {
    std::vector<size_t> sizes(1100);
    for (size_t i = 0; i < sizes.size(); i++) sizes[i] = i * 37 % 700;
    const layout l = end_to_end(sizes, 1);
    check_adamw("1100 slices", l, l.n);
}
// exactly 512 non-empty slices, then only empty ones: the second launch has nothing to do
TEST(adamw_512_then_empty) {
    std::vector<size_t> sizes(512, 3);
    sizes.resize(520, 0);
    const layout l = end_to_end(sizes, 0);
    check_adamw("512+empties", l, l.n);
}
// nothing to update: no slices, only empty slices (p, m, v keep their bits)
TEST(adamw_empty_lists) {
    check_adamw("no slices", layout(), 100);
    check_adamw("only empty slices", end_to_end({0, 0, 0}, 10), 50);
}
// a real step's list: MiniLM-L6 with --llrd: 22.7M parameters, so one step, one schedule (the
// rows above run the same kernel under the others) and the plain build only
TEST(adamw_minilm) {
#ifndef __SANITIZE_ADDRESS__
    const layout l = minilm();
    check_adamw("MiniLM-L6 llrd", l, l.n, 1, true);
#endif
}

// ---- gram, combine, scale ----------------------------------------------------------------------

struct buffers {
    std::vector<std::vector<float>> h;  // [k][n] then GUARD NaNs
    std::vector<const float *> ptr;
    std::vector<double> w;
};
buffers make_buffers(int k, size_t n) {
    buffers b;
    for (int j = 0; j < k; j++) {
        b.h.push_back(rand_then(n, j % 2 ? 0.01f : 0, 1, NAN));
        b.w.push_back(1.0 - 0.37 * j);
    }
    for (const auto &x : b.h) b.ptr.push_back(x.data());
    return b;
}

// Each op under every schedule (the race check): its output, CANARY after it, of the default one.
std::vector<double> run_gram(const buffers &b, int k, size_t n) {
    return emu::run_all_schedules("gram", [&] {
        std::vector<double> out((size_t)k * k + GUARD, CANARY);
        mt_cuda::gram(out.data(), b.ptr.data(), k, n);
        return std::vector<std::vector<double>>{out};
    })[0];
}
std::vector<float> run_combine(const buffers &b, int k, size_t n) {
    return emu::run_all_schedules("combine", [&] {
        // an element never written stays NaN
        std::vector<float> out = emu::guarded(std::vector<float>(n, NAN), CANARY);
        mt_cuda::combine(out.data(), b.ptr.data(), b.w.data(), k, n);
        return emu::outputs{out};
    })[0];
}
std::vector<float> run_scale(const std::vector<float> &x0, size_t n) {
    return emu::run_all_schedules("scale", [&] {
        std::vector<float> x = emu::guarded(std::vector<float>(x0.begin(), x0.begin() + n), CANARY);
        mt_cuda::scale(x.data(), 0.3f, n);
        return emu::outputs{x};
    })[0];
}

// gram to 1e-9 of its largest entry (the blocks' partial sums in double, added in block order;
// only the order within a block differs), symmetric bit for bit.
void check_gram(const buffers &b, int k, size_t n) {
    std::vector<double> ref(std::max((size_t)k * k, (size_t)1));  // k = 0: not NULL (lib/cpu's memset)
    cpu->gram(ref.data(), b.ptr.data(), k, n);
    const std::vector<double> got = run_gram(b, k, n);
    double maxref = 0, worst = 0;
    for (double r : ref) maxref = std::max(maxref, fabs(r));
    bool symmetric = true;
    for (int i = 0; i < k * k; i++) {
        const double d = fabs(got[i] - ref[i]);
        worst = std::max(worst, std::isnan(d) ? INFINITY : d);
        symmetric = symmetric && memcmp(&got[i], &got[i % k * k + i / k], 8) == 0;
    }
    if (!(worst <= 1e-9 * maxref)) printf("# gram k=%d n=%zu: |got - ref| %.3g > %.3g\n", k, n, worst, 1e-9 * maxref);
    CHECK(worst <= 1e-9 * maxref);
    CHECK(symmetric);
    CHECK(untouched_past("gram", got, (size_t)k * k, CANARY));
}

void check_combine(const buffers &b, int k, size_t n) {
    std::vector<float> ref(n);
    cpu->combine(ref.data(), b.ptr.data(), b.w.data(), k, n);
    const std::vector<float> got = run_combine(b, k, n);
    CHECK(same_bits("combine", got, ref, n));
    CHECK(untouched_past("combine", got, n, CANARY));
}

void check_scale(const std::vector<float> &x0, size_t n) {
    std::vector<float> ref(x0.begin(), x0.begin() + n);
    cpu->scale(ref.data(), 0.3f, n);
    const std::vector<float> got = run_scale(x0, n);
    CHECK(same_bits("scale", got, ref, n));
    CHECK(untouched_past("scale", got, n, CANARY));
}

// op_parity's check_gram_combine: the three ops on k buffers of n floats
void check_gram_combine(int k, size_t n) {
    printf("# gram, combine, scale: k=%d n=%zu\n", k, n);
    const buffers b = make_buffers(k, n);
    check_gram(b, k, n);
    check_combine(b, k, n);
    if (k > 0) check_scale(b.h[0], n);
}

// k = 1: the squared norm; n past 64 blocks of 256 (combine's and scale's loops stride) and
// off MT_GRAM_BLOCK's edge
TEST(gram_k1_100003) { check_gram_combine(1, 100003); }
TEST(gram_k3_blocks_plus_17) { check_gram_combine(3, 3 * MT_GRAM_BLOCK + 17); }
TEST(gram_k3_whole_blocks) { check_gram_combine(3, 2 * MT_GRAM_BLOCK); }
// the most buffers: 136 pairs, gram_finish_kernel's 160 threads nearly all busy
TEST(gram_k16_50000) { check_gram_combine(MT_GRAM_MAX_K, 50000); }
// fewer elements than a warp; one element
TEST(gram_k2_5) { check_gram_combine(2, 5); }
TEST(gram_k2_1) { check_gram_combine(2, 1); }
// empty inputs: n = 0 (gram all zeros, nothing written by combine / scale), k = 0
TEST(gram_empty) {
    check_gram_combine(4, 0);
    check_gram_combine(0, 1000);
}

// ---- the emulator's own check: it can fail ------------------------------------------------------

// optim.cu's exactness rests on the _rn intrinsics rounding every operation: a product whose
// rounding drops half an ulp, then a sum that cancels it, gives 0, where a fused multiply-add
// (what g++ makes of a * b + c under -march=native) gives that half ulp. volatile: computed at
// run time, as in a kernel.
TEST(emu_rn_not_fused) {
#ifndef __FMA__
    printf("# no FMA in this build (no -march=native): nothing to fuse, so this check cannot fail here\n");
#endif
    volatile float fa = 1.0f + 0x1p-12f, fc = -(1.0f + 0x1p-11f);
    volatile double da = 1.0 + 0x1p-27, dc = -(1.0 + 0x1p-26);
    CHECK(__fadd_rn(__fmul_rn(fa, fa), fc) == 0.0f);
    CHECK(__fsub_rn(__fmul_rn(fa, fa), -fc) == 0.0f);
    CHECK(__dadd_rn(__dmul_rn(da, da), dc) == 0.0);
}

}  // namespace

int main(void) {
    RUN(emu_rn_not_fused);
    RUN(adamw_one_slice);
    RUN(adamw_edges_gaps);
    RUN(adamw_1100_slices);
    RUN(adamw_512_then_empty);
    RUN(adamw_empty_lists);
    RUN(adamw_minilm);
    RUN(gram_k1_100003);
    RUN(gram_k3_blocks_plus_17);
    RUN(gram_k3_whole_blocks);
    RUN(gram_k16_50000);
    RUN(gram_k2_5);
    RUN(gram_k2_1);
    RUN(gram_empty);
    return check_summary();
}
