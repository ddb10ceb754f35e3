// test_sentence_emu.cpp — kernels/sentence.cu run on the CPU by tests/emu/cuda_emu.h, against
// lib/cpu/sentence.c: tests/gpu/op_parity.c's rows for the sentence model's ops (pool_backward,
// copy_2d, add_bias, im2col / col2im, relu_dropout, max_pool; the same shapes: op_parity's
// lengths, one token alone, C 384 and 45, widths 1 to 5, p 0.1 and 0, ties), plus edges op_parity
// lacks (empty inputs, column tiles cut short, grids past num_sms * 32 blocks so the grid-stride
// loops stride), the LSTM cell ops through a whole time loop in both directions, and the whole
// sentence model through the CPU table with these ops swapped in.
// Every op, every row: the result, "nothing written outside the output" (NaN guards on both sides
// of every float buffer in the plain build, exact sizes under ASan), and the race check (the
// same bits under mt_emu::WARPS_DOWN and LOCKSTEP_SHUFFLED as under the default; plain build only).
// Tolerances: op_parity says exact for every op here, so bits. The LSTM cell and the model are
// 1e-5 norm there only because CUDA's expf / tanhf are an ulp or two from libm; on the emulator
// they are libm's, and the kernels round every other operation as the C does (__fmul_rn /
// __fadd_rn), so those are bits here too: a kernel that contracted or reordered would show.
// It tests the kernels' logic without a GPU; nvcc's code is tests/gpu/check.sh's business.
#include "cuda_emu.h"

extern "C" {
#include "backend.h"  // before sentence.cu's includes, so its C functions keep C linkage
#include "sentence.h"
}
#include "sentence.emu.cpp"  // kernels/sentence.cu, its launch syntax rewritten by the Makefile
#include "backend_glue.h"

#include "check.h"
#include "rand.h"

#include "parity.h"

namespace {

const mt_backend *cpu = mt_backend_cpu();

using emu::buf;
using emu::pack;
using emu::rand_around;

// got's body holds ref's bits, and is ref's size
bool same_bits(const char *what, const buf &got, const std::vector<float> &ref) {
    return emu::same_bits(what, got.p(), ref.data(), std::min(got.n, ref.size())) && got.n == ref.size();
}

// run() (a launch sequence on fresh copies of the inputs, returning the emulator's outputs) under
// every schedule (emu::run_all_schedules); nothing written outside the default run's outputs.
template <class R> std::vector<buf> schedules(const char *what, R run) {
    std::vector<buf> first = emu::run_all_schedules(what, run);
    for (size_t k = 0; k < first.size(); k++) {
        if (!first[k].guards_intact(what)) printf("# %s: output %zu: written outside it\n", what, k);
        CHECK(first[k].guards_intact(what));
    }
    return first;
}

const std::vector<int> lengths = {1, 7, 32, 128, 512, 3, 64, 200};  // op_parity's
const std::vector<int> one = {1};

// ---- pool_backward, copy_2d, add_bias (op_parity's check_sentence_small_ops) --------------------

void check_pool_backward(const emu::packing &p, int C) {
    const std::vector<float> acc = rand_around((size_t)p.N * C, 0, 1), g = rand_around((size_t)p.B * C, 0, 1);
    for (int mode = 0; mode < 2; mode++) {
        std::vector<float> ref = acc;
        cpu->pool_backward(ref.data(), g.data(), p.offsets.data(), p.B, C, mode);
        char what[96];
        snprintf(what, sizeof what, "pool_backward %s B=%d N=%d C=%d", mode == MT_POOL_CLS ? "cls" : "mean", p.B, p.N, C);
        std::vector<buf> got = schedules(what, [&] {
            buf d(acc), dg(g);
            mt_cuda::pool_backward(d.p(), dg.p(), p.offsets.data(), p.B, C, mode);
            return std::vector<buf>{d};
        });
        CHECK(same_bits(what, got[0], ref));
    }
}

// columns 3 .. C/2 of [N, C] rows into a [N, C/2 + 5] buffer (its other columns kept)
void check_copy_2d(const emu::packing &p, int C) {
    const int w = C / 2, ldd = w + 5;
    const std::vector<float> src = rand_around((size_t)p.N * C, 0, 1), dst = rand_around((size_t)p.N * ldd, 0, 1);
    std::vector<float> ref = dst;
    cpu->copy_2d(ref.data(), ldd, src.data() + 3, C, p.N, w - 3);
    char what[96];
    snprintf(what, sizeof what, "copy_2d [%d,%d] of ld %d into ld %d", p.N, w - 3, C, ldd);
    std::vector<buf> got = schedules(what, [&] {
        buf d(dst), s(src);
        mt_cuda::copy_2d(d.p(), ldd, s.p() + 3, C, p.N, w - 3);
        return std::vector<buf>{d};
    });
    CHECK(same_bits(what, got[0], ref));
}

// forward on columns [0, F) of rows of stride ldo, one bias then two; backward of the same
// columns into db1, then of all ldo columns into db1 and db2 (op_parity's sequence)
void check_add_bias(int N, int ldo, int F) {
    const std::vector<float> acc = rand_around((size_t)N * ldo, 0, 1), b1 = rand_around(ldo, 0, 1),
                             b2 = rand_around(ldo, 0, 1), db1 = rand_around(ldo, 0, 1), db2 = rand_around(ldo, 0, 1);
    std::vector<float> ref = acc, rdb1 = db1, rdb2 = db2;
    cpu->add_bias_forward(ref.data(), ldo, b1.data(), NULL, N, F);
    cpu->add_bias_forward(ref.data(), ldo, b1.data(), b2.data(), N, F);
    cpu->add_bias_backward(rdb1.data(), NULL, acc.data(), ldo, N, F);
    cpu->add_bias_backward(rdb1.data(), rdb2.data(), acc.data(), ldo, N, ldo);
    char what[96];
    snprintf(what, sizeof what, "add_bias N=%d F=%d ld %d", N, F, ldo);
    std::vector<buf> got = schedules(what, [&] {
        buf out(acc), x(acc), B1(b1), B2(b2), D1(db1), D2(db2);
        mt_cuda::add_bias_forward(out.p(), ldo, B1.p(), NULL, N, F);
        mt_cuda::add_bias_forward(out.p(), ldo, B1.p(), B2.p(), N, F);
        mt_cuda::add_bias_backward(D1.p(), NULL, x.p(), ldo, N, F);
        mt_cuda::add_bias_backward(D1.p(), D2.p(), x.p(), ldo, N, ldo);
        return std::vector<buf>{out, D1, D2};
    });
    CHECK(same_bits(what, got[0], ref));
    CHECK(same_bits(what, got[1], rdb1));
    CHECK(same_bits(what, got[2], rdb2));
}

void check_small_ops(const emu::packing &p, int C) {
    check_pool_backward(p, C);
    check_copy_2d(p, C);
    check_add_bias(p.N, C, C / 2);
}

// The rows below run the grid-stride loops' stride: op_parity's N * 45 = 42615 elements are more
// than grid_for's cap (num_sms * 32 = 64 blocks of 256 threads) covers in one pass.
TEST(grids_stride) {
    const int64_t n = (int64_t)pack(lengths).N * 45;
    CHECK(mt_cuda::grid_for(n, 256) == mt_cuda::num_sms * 32);
    CHECK((int64_t)mt_cuda::grid_for(n, 256) * 256 < n);
}

TEST(small_ops_384) { check_small_ops(pack(lengths), 384); }
TEST(small_ops_45) { check_small_ops(pack(lengths), 45); }
TEST(small_ops_one_token) { check_small_ops(pack(one), 45); }
// column tiles cut short (C = 130: 128 + 2), and many sequences (300 blocks of pool_backward)
TEST(small_ops_edges) {
    check_pool_backward(pack(std::vector<int>(300, 2)), 130);
    check_copy_2d(pack({3, 1}), 9);
    check_add_bias(70, 300, 257);  // 257 columns: a second block of one thread
    check_add_bias(0, 45, 45);     // no rows: forward writes nothing, backward adds 0
    check_add_bias(5, 45, 0);      // no columns
}

// ---- im2col / col2im (op_parity's check_im2col) --------------------------------------------------

void check_im2col(const emu::packing &p, int C, int w) {
    const size_t nx = (size_t)p.N * C, ncol = nx * w;
    const std::vector<float> x = rand_around(nx, 0, 1), dcol = rand_around(ncol, 0, 1), acc = rand_around(nx, 0, 1);
    std::vector<float> ref(ncol), racc = acc;
    cpu->im2col_same(ref.data(), x.data(), p.offsets.data(), p.B, p.N, C, w);
    cpu->col2im_same(racc.data(), dcol.data(), p.offsets.data(), p.B, p.N, C, w);
    char what[96];
    snprintf(what, sizeof what, "im2col / col2im w=%d B=%d N=%d C=%d", w, p.B, p.N, C);
    std::vector<buf> got = schedules(what, [&] {
        buf col(ncol), X(x), dc(dcol), a(acc);
        std::fill(col.p(), col.p() + ncol, NAN);  // every element must be written
        mt_cuda::im2col_same(col.p(), X.p(), p.offsets.data(), p.B, p.N, C, w);
        mt_cuda::col2im_same(a.p(), dc.p(), p.offsets.data(), p.B, p.N, C, w);
        return std::vector<buf>{col, a};
    });
    CHECK(same_bits(what, got[0], ref));
    CHECK(same_bits(what, got[1], racc));
}

TEST(im2col_45_widths_1_to_5) {
    for (int w = 1; w <= 5; w++) check_im2col(pack(lengths), 45, w);
}
TEST(im2col_384_w4) { check_im2col(pack(lengths), 384, 4); }
TEST(im2col_one_token) {
    for (int w = 1; w <= 4; w++) check_im2col(pack(one), 45, w);  // windows past both ends
}
// windows wider than the sequences; and nothing at all (B = 0, C = 0)
TEST(im2col_edges) {
    check_im2col(pack({2, 1, 3}), 5, 16);
    check_im2col(pack({}), 45, 3);
    check_im2col(pack({4, 2}), 0, 3);
}

// ---- relu_dropout, max_pool (op_parity's check_relu_dropout_max_pool) ----------------------------

// coarse: inputs rounded to multiples of 1/2, so positive maxima tie too (argmax keeps the first)
void check_relu_dropout_max_pool(const emu::packing &p, int D, float pdrop, bool coarse) {
    const mt_dropout_key key = emu::key_of(pdrop, mt_dropout_site(2, MT_SENT_DROPOUT_LAYER, 0));
    const size_t n = (size_t)p.N * D, nb = (size_t)p.B * D;
    std::vector<float> x = rand_around(n, 0, 1);
    const std::vector<float> dy = rand_around(n, 0, 1), acc = rand_around(n, 0, 1), g = rand_around(nb, 0, 1);
    for (size_t i = 0; coarse && i < n; i++) x[i] = roundf(2.0f * x[i]) / 2.0f;
    std::vector<float> y = x, rdy = dy, pool(nb), racc = acc, arg(nb);
    cpu->relu_dropout_forward(y.data(), p.N, D, &key);
    cpu->relu_dropout_backward(rdy.data(), rdy.data(), y.data(), p.N, D, &key);  // in place, as op_parity
    cpu->max_pool_forward(pool.data(), (int32_t *)arg.data(), y.data(), p.offsets.data(), p.B, D);
    cpu->max_pool_backward(racc.data(), g.data(), (int32_t *)arg.data(), p.B, D);
    char what[96];
    snprintf(what, sizeof what, "relu_dropout / max_pool N=%d D=%d p=%g%s", p.N, D, pdrop, coarse ? " coarse" : "");
    std::vector<buf> got = schedules(what, [&] {
        buf X(x), DY(dy), P(nb), A(nb), AC(acc), G(g);
        std::fill(P.p(), P.p() + nb, NAN), std::fill(A.p(), A.p() + nb, NAN);
        mt_cuda::relu_dropout_forward(X.p(), p.N, D, &key);
        mt_cuda::relu_dropout_backward(DY.p(), DY.p(), X.p(), p.N, D, &key);
        mt_cuda::max_pool_forward(P.p(), A.ip(), X.p(), p.offsets.data(), p.B, D);
        mt_cuda::max_pool_backward(AC.p(), G.p(), A.ip(), p.B, D);
        return std::vector<buf>{X, DY, P, A, AC};
    });
    CHECK(same_bits("relu_dropout forward", got[0], y));
    CHECK(same_bits("relu_dropout backward", got[1], rdy));
    CHECK(same_bits("max_pool forward", got[2], pool));
    CHECK(same_bits("max_pool argmax", got[3], arg));
    CHECK(same_bits("max_pool backward", got[4], racc));
}

TEST(relu_dropout_max_pool_256) { check_relu_dropout_max_pool(pack(lengths), 256, 0.1f, false); }
TEST(relu_dropout_max_pool_45_p0) { check_relu_dropout_max_pool(pack(lengths), 45, 0.0f, false); }
// rows start mid Philox block; N*D % 4 = 3: a tail; ties everywhere
TEST(relu_dropout_max_pool_45_coarse) { check_relu_dropout_max_pool(pack(lengths), 45, 0.1f, true); }
TEST(relu_dropout_max_pool_one_token) { check_relu_dropout_max_pool(pack(one), 45, 0.1f, false); }
// a column tile cut short (D = 130), many sequences; and no sequences
TEST(relu_dropout_max_pool_edges) {
    check_relu_dropout_max_pool(pack(std::vector<int>(200, 3)), 130, 0.5f, true);
    check_relu_dropout_max_pool(pack({}), 45, 0.1f, false);
}

// ---- the LSTM cell: a whole time loop of one direction ---------------------------------------

// Appends x[0, n) to trace: what a step hands the next step's GEMM, compared after the loop.
void append(std::vector<float> &trace, const float *x, size_t n) { trace.insert(trace.end(), x, x + n); }

// The LSTM buffers of one side (mt_lstm_acts' shapes), NaN where the loop must write.
struct lstm_state {
    buf gates, cell, hidden, hfinal, step_g, step_h, dgates, hprev, dc, trace_h, trace_g;
    lstm_state(const std::vector<float> &gates0, int N, int B, int H)
        : gates(gates0), cell(nans((size_t)N * H)), hidden(nans((size_t)N * H)), hfinal(nans((size_t)B * H)),
          step_g(nans((size_t)B * 4 * H)), step_h(nans((size_t)B * H)), dgates(nans((size_t)N * 4 * H)),
          hprev(nans((size_t)N * H)), dc((size_t)B * H), trace_h(0), trace_g(0) {}
    static std::vector<float> nans(size_t n) { return std::vector<float>(n, NAN); }
};

// Forward over every step s (step_g = rg[s], standing in for h W_hh^T), then backward (step_h =
// rh[s], standing in for dg W_hh) through `be`'s cell ops, as lib/sentence.c's mt_lstm_* call them.
template <class FWD, class BWD>
void lstm_loop(lstm_state &a, const mt_seq_steps &st, const std::vector<std::vector<float>> &rg,
               const std::vector<std::vector<float>> &rh, const std::vector<float> &dhfinal, int H, int reverse,
               FWD fwd, BWD bwd) {
    const int G = 4 * H;
    std::vector<float> trace_h, trace_g;
    for (int s = 0; s < st.T; s++) {
        const int e = st.start[s], nact = st.start[s + 1] - e, after = s + 1 < st.T ? st.start[s + 2] - st.start[s + 1] : 0;
        std::copy(rg[s].begin(), rg[s].end(), a.step_g.p());
        fwd(a.gates.p(), a.cell.p(), a.hidden.p(), a.step_h.p(), a.hfinal.p(), a.step_g.p(), st.list + e, st.next + e,
            st.offsets, nact, s, H, reverse);
        append(trace_h, a.step_h.p(), (size_t)after * H);
    }
    for (int s = st.T - 1; s >= 0; s--) {
        const int e = st.start[s], nact = st.start[s + 1] - e;
        std::copy(rh[s].begin(), rh[s].end(), a.step_h.p());
        bwd(a.dgates.p(), a.hprev.p(), a.step_g.p(), a.dc.p(), a.step_h.p(), dhfinal.data(), a.gates.p(), a.cell.p(),
            a.hidden.p(), st.list + e, st.next + e, st.offsets, nact, s, H, reverse);
        append(trace_g, a.step_g.p(), (size_t)nact * G);
    }
    a.trace_h = buf(trace_h), a.trace_g = buf(trace_g);
}

void check_lstm(const std::vector<int> &lengths, int H, int reverse) {
    const emu::packing p = pack(lengths);
    const int G = 4 * H;
    mt_seq_steps st;
    mt_seq_steps_alloc(cpu, &st, p.N, p.B);
    mt_seq_steps_set(cpu, &st, p.offsets.data(), p.B);
    const std::vector<float> gates0 = rand_around((size_t)p.N * G, 0, 2.0f), dhfinal = rand_around((size_t)p.B * H, 0, 1);
    std::vector<std::vector<float>> rg(st.T), rh(st.T);
    for (int s = 0; s < st.T; s++) {
        const int nact = st.start[s + 1] - st.start[s];
        rg[s] = s ? rand_around((size_t)nact * G, 0, 1) : std::vector<float>((size_t)nact * G, 0.0f);  // h0 = 0
        rh[s] = rand_around((size_t)p.B * H, 0, 0.5f);
    }
    lstm_state ref(gates0, p.N, p.B, H);
    lstm_loop(ref, st, rg, rh, dhfinal, H, reverse, cpu->lstm_cell_forward, cpu->lstm_cell_backward);
    char what[96];
    snprintf(what, sizeof what, "lstm_cell B=%d N=%d H=%d%s", p.B, p.N, H, reverse ? " reverse" : "");
    std::vector<buf> got = schedules(what, [&] {
        lstm_state a(gates0, p.N, p.B, H);
        lstm_loop(a, st, rg, rh, dhfinal, H, reverse, mt_cuda::lstm_cell_forward, mt_cuda::lstm_cell_backward);
        return std::vector<buf>{a.gates, a.cell, a.hidden, a.hfinal, a.trace_h, a.dgates, a.hprev, a.dc, a.trace_g};
    });
    const buf *want[] = {&ref.gates, &ref.cell, &ref.hidden, &ref.hfinal, &ref.trace_h,
                         &ref.dgates, &ref.hprev, &ref.dc, &ref.trace_g};
    const char *names[] = {"gates", "cell", "hidden", "hfinal", "step_h (forward)",
                           "dgates", "hprev", "dc", "step_g (backward)"};
    for (int k = 0; k < 9; k++) CHECK(same_bits(names[k], got[k], want[k]->body()));
    mt_seq_steps_free(cpu, &st);
}

// op_parity's lengths (512 steps, 8 to 1 sequences running) with H = 7 (no warp multiple) and
// 128; 300 short sequences at H = 64: 19200 threads a step, past 64 blocks of 256 (the stride)
TEST(lstm_cell_h7) { check_lstm(lengths, 7, 0), check_lstm(lengths, 7, 1); }
TEST(lstm_cell_h128) { check_lstm(lengths, 128, 1); }
TEST(lstm_cell_strided) {
    std::vector<int> many(300);
    for (int b = 0; b < 300; b++) many[b] = 1 + b * 7 % 5;
    check_lstm(many, 64, 0), check_lstm(many, 64, 1);
    check_lstm(one, 3, 1);
}

// ---- the whole sentence model (op_parity's check_sentence_model, fp32) ---------------------------

// The CPU table with sentence.cu's launchers in place of lib/cpu/sentence.c's ops (device memory
// is host memory on the emulator), so lib/sentence.c drives the kernels as the CUDA table would.
mt_backend emu_table() {
    mt_backend t = *cpu;
    t.pool_backward = mt_cuda::pool_backward, t.copy_2d = mt_cuda::copy_2d;
    t.add_bias_forward = mt_cuda::add_bias_forward, t.add_bias_backward = mt_cuda::add_bias_backward;
    t.im2col_same = mt_cuda::im2col_same, t.col2im_same = mt_cuda::col2im_same;
    t.relu_dropout_forward = mt_cuda::relu_dropout_forward, t.relu_dropout_backward = mt_cuda::relu_dropout_backward;
    t.max_pool_forward = mt_cuda::max_pool_forward, t.max_pool_backward = mt_cuda::max_pool_backward;
    t.lstm_cell_forward = mt_cuda::lstm_cell_forward, t.lstm_cell_backward = mt_cuda::lstm_cell_backward;
    return t;
}

// out, dinp and the parameter gradients of one forward and backward through `be`.
std::vector<buf> sentence_model(const mt_backend *be, const mt_sentence_layout &L, const emu::packing &p,
                                const std::vector<float> &params, const std::vector<float> &x,
                                const std::vector<float> &dx0, const std::vector<float> &R, float pdrop) {
    const mt_dropout key = emu::key_of(pdrop, mt_dropout_site(0, MT_SENT_DROPOUT_LAYER, 0));
    buf P(params), X(x), out(std::vector<float>((size_t)p.B * L.D, NAN)), dx(dx0), grads(L.n_params), dR(R);
    mt_sentence_weights w, dw;
    mt_sentence_weights_point(&w, &L, P.p()), mt_sentence_weights_point(&dw, &L, grads.p());
    mt_sentence_acts a;
    mt_sentence_acts_alloc(be, &a, &L, p.N, p.B);
    mt_sentence_forward(be, out.p(), &a, &L, &w, X.p(), p.offsets.data(), p.B, p.N, pdrop > 0 ? &key : NULL);
    mt_sentence_backward(be, dx.p(), &dw, dR.p(), &a, &L, &w, X.p());
    mt_sentence_acts_free(be, &a);
    return {out, dx, grads};
}

void check_sentence_model(const std::vector<int> &lengths, int C, int filters, int H, int over_cnn, float pdrop) {
    const emu::packing p = pack(lengths);
    mt_sentence_config cfg = mt_sentence_default_config(MT_SENT_SBERT_CNN_BILSTM, C, filters, H);
    cfg.lstm_over_cnn = over_cnn, cfg.cnn_dropout = pdrop;
    mt_sentence_layout L;
    mt_sentence_layout_init(&L, &cfg);
    std::vector<float> params(L.n_params);
    mt_sentence_init_params(&L, params.data(), 11);
    const std::vector<float> x = rand_around((size_t)p.N * C, 0, 1), dx0 = rand_around((size_t)p.N * C, 0, 0.1f),
                             R = rand_around((size_t)p.B * L.D, 0, 1);
    const std::vector<buf> ref = sentence_model(cpu, L, p, params, x, dx0, R, pdrop);
    const mt_backend emu = emu_table();
    char what[96];
    snprintf(what, sizeof what, "sentence B=%d C=%d F=4x%d H=%d%s p=%g", p.B, C, filters, H, over_cnn ? " over CNN" : "",
             pdrop);
    const std::vector<buf> got = schedules(what, [&] { return sentence_model(&emu, L, p, params, x, dx0, R, pdrop); });
    const char *names[] = {"out", "dinp", "dparams"};
    for (int k = 0; k < 3; k++) CHECK(same_bits(names[k], got[k], ref[k].body()));
}

const std::vector<int> short_lengths = {1, 7, 32, 3, 64, 2, 17, 40};  // op_parity's
TEST(sentence_model_384) { check_sentence_model(short_lengths, 384, 64, 128, 0, 0.1f); }
TEST(sentence_model_384_over_cnn) { check_sentence_model(short_lengths, 384, 64, 128, 1, 0.0f); }
TEST(sentence_model_45) { check_sentence_model(lengths, 45, 5, 7, 1, 0.1f); }
TEST(sentence_model_one_token) { check_sentence_model(one, 32, 3, 4, 0, 0.1f); }

}  // namespace

int main(void) {
    RUN(grids_stride);
    RUN(small_ops_384);
    RUN(small_ops_45);
    RUN(small_ops_one_token);
    RUN(small_ops_edges);
    RUN(im2col_45_widths_1_to_5);
    RUN(im2col_384_w4);
    RUN(im2col_one_token);
    RUN(im2col_edges);
    RUN(relu_dropout_max_pool_256);
    RUN(relu_dropout_max_pool_45_p0);
    RUN(relu_dropout_max_pool_45_coarse);
    RUN(relu_dropout_max_pool_one_token);
    RUN(relu_dropout_max_pool_edges);
    RUN(lstm_cell_h7);
    RUN(lstm_cell_h128);
    RUN(lstm_cell_strided);
    RUN(sentence_model_384);
    RUN(sentence_model_384_over_cnn);
    RUN(sentence_model_45);
    RUN(sentence_model_one_token);
    return check_summary();
}
