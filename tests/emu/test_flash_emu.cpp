// test_flash_emu.cpp — kernels/flash.cu's fused attention (bf16 / fp16, hs 32 and 64, with and
// without dropout) run on the CPU by tests/emu/cuda_emu.h, against lib/cpu's attention: the
// same rows as tests/gpu/op_parity.c's attn_fused (out, the log-sum-exps in att, dqkv, what is
// written and what is not, the dropout mask exactly), plus the emulator's race check: the
// kernels run again under two other schedules (lanes, warps and blocks in the opposite order;
// warps in step or running ahead) must give the same bits.
// It tests the kernels' logic without a GPU; it says nothing of nvcc's code or the tensor
// cores (tests/gpu/check.sh does, on a GPU).
#include "cuda_emu.h"

extern "C" {
#include "backend.h"  // before flash.cu's includes, so its C functions keep C linkage
}
#include "flash.emu.cpp"  // kernels/flash.cu, its launch syntax rewritten by the Makefile
#include "backend_glue.h"

#include <signal.h>

#include "check.h"
#include "rand.h"

#include "parity.h"

namespace mt_cuda {  // gemm.cu's, which the test sets
static int precision = MT_PRECISION_BF16;
int gemm_precision(void) { return precision; }
}  // namespace mt_cuda

namespace {

const mt_backend *cpu = mt_backend_cpu();
const int NH = 2;

using emu::packing;
using emu::rand_around;

bool rel_l2_within(const char *what, const std::vector<float> &got, const std::vector<float> &ref, double tol) {
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); i++) num += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]), den += (double)ref[i] * ref[i];
    const double rel = sqrt(num / den);
    if (!(rel <= tol)) printf("# %s: relative L2 %.3g > %.3g\n", what, rel, tol);
    return rel <= tol;
}
// lse[att_offsets[b] + h L + i] in double from the fp32 inputs; *max_s the largest |scaled score|.
std::vector<float> host_lse(const std::vector<float> &qkv, const packing &pk, int C, double *max_s) {
    const int hs = C / NH;
    const double scale = 1.0 / sqrt((double)hs);
    std::vector<float> lse(pk.att_size, NAN);
    std::vector<double> s(pk.maxL);
    *max_s = 0;
    for (int b = 0; b < pk.B; b++) {
        const int first = pk.offsets[b], L = pk.offsets[b + 1] - first;
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < L; i++) {
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < L; j++) {
                    double d = 0;
                    for (int e = 0; e < hs; e++)
                        d += (double)qkv[(size_t)(first + i) * 3 * C + h * hs + e] * qkv[(size_t)(first + j) * 3 * C + C + h * hs + e];
                    s[j] = d * scale, mx = std::max(mx, s[j]), *max_s = std::max(*max_s, fabs(s[j]));
                }
                for (int j = 0; j < L; j++) sum += exp(s[j] - mx);
                lse[pk.att_offsets[b] + (int64_t)h * L + i] = (float)(mx + log(sum));
            }
    }
    return lse;
}

// The fused forward and backward on the emulator under each schedule (`when`): out, att and
// dqkv (from `start`), out and att NaN-filled, each with GUARD NaNs after it. The default
// schedule's outputs.
emu::outputs run_fused(const packing &pk, const std::vector<float> &qkv, const std::vector<float> &dout,
                       const std::vector<float> &start, int C, int prec, const mt_dropout_key *key,
                       emu::races when = emu::races::plain_build) {
    mt_cuda::precision = prec;
    return emu::run_all_schedules("fused", [&] {
        emu::outputs r = {emu::guarded((size_t)pk.N * C), emu::guarded(pk.att_size), emu::guarded(start)};
        mt_cuda::attention_forward_flash(r[0].data(), r[1].data(), qkv.data(), pk.offsets.data(), pk.att_offsets.data(),
                                         pk.B, pk.maxL, C, NH, key);
        mt_cuda::attention_backward_flash(r[2].data(), dout.data(), qkv.data(), r[1].data(), pk.offsets.data(),
                                          pk.att_offsets.data(), pk.B, pk.maxL, C, NH, key);
        return r;
    }, when);
}

// op_parity's check_attention_fused on the emulator, and the race check unless `when` skips it.
void check_fused(const std::vector<int> &lengths, int hs, int prec, float p,
                 emu::races when = emu::races::plain_build) {
    const packing pk = emu::pack(lengths, NH);
    const int C = NH * hs;
    const mt_dropout_key key = emu::key_of(p, mt_dropout_site(0, 4, 1)), *k = p > 0 ? &key : nullptr;
    const size_t nqkv = (size_t)pk.N * 3 * C, nout = (size_t)pk.N * C;
    const std::vector<float> qkv = rand_around(nqkv, 0, 2), dout = rand_around(nout, 0, 1),
                             start = rand_around(nqkv, 0, 0.1f);
    std::vector<float> ref(nout), ratt(pk.att_size), rd = start;
    cpu->attention_forward_dropout(ref.data(), ratt.data(), qkv.data(), pk.offsets.data(), pk.att_offsets.data(), pk.B,
                                   pk.maxL, C, NH, k);
    cpu->attention_backward(rd.data(), dout.data(), qkv.data(), ratt.data(), pk.offsets.data(), pk.att_offsets.data(),
                            pk.B, pk.maxL, C, NH, k);
    const emu::outputs got = run_fused(pk, qkv, dout, start, C, prec, k, when);
    const std::vector<float> &out = got[0], &att = got[1], &dqkv = got[2];
    const double u = prec == MT_PRECISION_FP16 ? ldexp(1, -11) : ldexp(1, -8);

    CHECK(emu::near("out", out, ref, nout, 10 * u * emu::max_abs(ref, nout), 0));
    CHECK(emu::untouched_past("out", out, nout) && emu::untouched_past("dqkv", dqkv, nqkv));
    bool att_as_lse = emu::untouched_past("att", att, pk.att_size);  // exactly NH L values per block
    for (int b = 0; b < pk.B; b++) {
        const int64_t L = lengths[b], used = NH * L;
        for (int64_t i = 0; i < NH * L * L; i++) att_as_lse = att_as_lse && (i < used) == !std::isnan(att[pk.att_offsets[b] + i]);
    }
    CHECK(att_as_lse);
    double max_s;
    std::vector<float> lse = host_lse(qkv, pk, C, &max_s), glse(att.begin(), att.begin() + pk.att_size);
    for (size_t i = 0; i < lse.size(); i++)
        if (std::isnan(lse[i])) lse[i] = glse[i] = 0;  // the rest of each block: checked above
    CHECK(emu::near("log-sum-exp", glse, lse, lse.size(), 10 * u * max_s, 0));
    std::vector<float> gd(nqkv), rdi(nqkv);
    for (size_t i = 0; i < nqkv; i++) gd[i] = dqkv[i] - start[i], rdi[i] = rd[i] - start[i];
    CHECK(rel_l2_within("dqkv", gd, rdi, prec == MT_PRECISION_BF16 ? 5e-2 : 1e-2));

}

// Lengths across the 64-row tiles' edges (1 token, a partial tile, one and two full ones, three).
const std::vector<int> edges = {1, 7, 64, 65, 130, 3};

TEST(fused_bf16_hs32) { check_fused(edges, 32, MT_PRECISION_BF16, 0.0f); }
TEST(fused_bf16_hs32_dropout) { check_fused(edges, 32, MT_PRECISION_BF16, 0.1f); }
TEST(fused_bf16_hs64) { check_fused(edges, 64, MT_PRECISION_BF16, 0.0f); }
TEST(fused_bf16_hs64_dropout) { check_fused(edges, 64, MT_PRECISION_BF16, 0.1f); }
TEST(fused_fp16_hs32_dropout) { check_fused(edges, 32, MT_PRECISION_FP16, 0.1f); }
TEST(fused_fp16_hs64) { check_fused(edges, 64, MT_PRECISION_FP16, 0.0f); }
// BERT's longest sequences: eight 64-key tiles per row block (one schedule: the rows above race-check)
TEST(fused_bf16_hs64_long_dropout) { check_fused({512, 200}, 64, MT_PRECISION_BF16, 0.1f, emu::races::skip); }

// op_parity's mask row: Q = 0 makes every P exactly 1/L; with integer V and dO and power-of-two
// lengths every 16-bit operand is exact, so out and dV match the CPU to its own rounding while
// one element masked differently moves them by 2e-3 or more.
void check_mask(int hs, int prec) {
    const std::vector<int> lengths = {1, 2, 32, 64, 128};
    const packing pk = emu::pack(lengths, NH);
    const int C = NH * hs;
    const mt_dropout_key key = emu::key_of(0.1f, mt_dropout_site(0, 6, 1));
    const size_t nqkv = (size_t)pk.N * 3 * C, nout = (size_t)pk.N * C;
    std::vector<float> qkv = rand_around(nqkv, 0, 2), dout(nout);
    for (int n = 0; n < pk.N; n++)
        for (int c = 0; c < C; c++) {
            qkv[(size_t)n * 3 * C + c] = 0.0f;
            qkv[(size_t)n * 3 * C + 2 * C + c] = (float)(1 + (int)((frand() + 1) * 2));
            dout[(size_t)n * C + c] = (float)(1 + (int)((frand() + 1) * 2));
        }
    std::vector<float> ref(nout), att(pk.att_size), rd(nqkv, 0.0f);
    cpu->attention_forward_dropout(ref.data(), att.data(), qkv.data(), pk.offsets.data(), pk.att_offsets.data(), pk.B,
                                   pk.maxL, C, NH, &key);
    cpu->attention_backward(rd.data(), dout.data(), qkv.data(), att.data(), pk.offsets.data(), pk.att_offsets.data(),
                            pk.B, pk.maxL, C, NH, &key);
    const emu::outputs got = run_fused(pk, qkv, dout, std::vector<float>(nqkv, 0.0f), C, prec, &key, emu::races::skip);
    CHECK(emu::near("mask: out", got[0], ref, nout, 2e-5 * emu::max_abs(ref, nout), 0));
    std::vector<float> dv_ref(nout), dv_got(nout);
    for (int n = 0; n < pk.N; n++)
        for (int c = 0; c < C; c++)
            dv_ref[(size_t)n * C + c] = rd[(size_t)n * 3 * C + 2 * C + c], dv_got[(size_t)n * C + c] = got[2][(size_t)n * 3 * C + 2 * C + c];
    CHECK(emu::near("mask: dV", dv_got, dv_ref, nout, 2e-5 * emu::max_abs(dv_ref, nout), 0));
}
TEST(fused_mask_bf16_hs64) { check_mask(64, MT_PRECISION_BF16); }
TEST(fused_mask_fp16_hs32) { check_mask(32, MT_PRECISION_FP16); }

// ---- the emulator's own checks: each can fail ---------------------------------------------------

// A warp's wmma product of A (row-major) and B (column-major, as flash.cu reads K) against a
// plain loop: the fragment layouts as the CUDA programming guide defines them.
__global__ void wmma_kernel(float *d, const __nv_bfloat16 *a, const __nv_bfloat16 *b) {
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __nv_bfloat16, nvcuda::wmma::row_major> fa;
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __nv_bfloat16, nvcuda::wmma::col_major> fb;
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc;
    nvcuda::wmma::fill_fragment(acc, 1.0f);
    nvcuda::wmma::load_matrix_sync(fa, a, 24);
    nvcuda::wmma::load_matrix_sync(fb, b, 24);
    nvcuda::wmma::mma_sync(acc, fa, fb, acc);
    nvcuda::wmma::store_matrix_sync(d, acc, 20, nvcuda::wmma::mem_row_major);
}
TEST(emu_wmma_layouts) {
    alignas(32) __nv_bfloat16 a[16 * 24], b[16 * 24];
    alignas(32) float d[16 * 20];
    for (int i = 0; i < 16 * 24; i++) a[i] = __float2bfloat16_rn(frand()), b[i] = __float2bfloat16_rn(frand());
    mt_emu::launch(wmma_kernel, 1, 32)(d, a, b);
    double worst = 0;
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 16; n++) {
            double s = 1;  // b column-major: B[k][n] at b[n * 24 + k]
            for (int k = 0; k < 16; k++) s += (double)__bfloat162float(a[m * 24 + k]) * __bfloat162float(b[n * 24 + k]);
            worst = std::max(worst, fabs(s - d[m * 20 + n]));
        }
    CHECK(worst < 1e-5);
}

// A block sum that forgets the barrier between the writes and the reads: the two schedules
// must disagree (the race check above can fail), and with the barrier they must agree.
template <bool SYNC> __global__ void block_sum_kernel(float *out, const float *in) {
    float *s = (float *)mt_emu::dynamic_smem(128);  // extern __shared__, as the Makefile's sed writes it
    s[threadIdx.x] = in[threadIdx.x];
    if (SYNC) __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0;
        for (int i = 0; i < 64; i++) t += s[i];
        *out = t;
    }
}
TEST(emu_finds_a_missing_barrier) {
    float in[64], out[2][2];
    for (float &x : in) x = 1.0f + frand();
    for (int sync = 0; sync < 2; sync++)
        for (int down = 0; down < 2; down++) {
            mt_emu::set_schedule(down ? mt_emu::WARPS_DOWN : mt_emu::WARPS_UP);
            if (sync) mt_emu::launch(block_sum_kernel<true>, 1, 64, 256)(&out[sync][down], in);
            else mt_emu::launch(block_sum_kernel<false>, 1, 64, 256)(&out[sync][down], in);
        }
    mt_emu::set_schedule(mt_emu::WARPS_UP);
    CHECK(memcmp(&out[0][0], &out[0][1], 4) != 0);  // unsynchronised: NaN one way, the sum the other
    CHECK(out[1][0] == out[1][1] && !std::isnan(out[1][0]));
}

// Every schedule runs every thread of every block exactly once, and the three orders differ.
__global__ void order_kernel(int *count, int *sequence, int *next) {
    count[blockIdx.x * blockDim.x + threadIdx.x]++;
    if (threadIdx.x == 0) sequence[(*next)++] = blockIdx.x;
}
TEST(emu_schedules_are_permutations) {
    const int blocks = 37, threads = 45;
    std::vector<int> seq[3];
    const mt_emu::schedule orders[3] = {mt_emu::WARPS_UP, mt_emu::WARPS_DOWN, mt_emu::LOCKSTEP_SHUFFLED};
    for (int o = 0; o < 3; o++) {
        std::vector<int> count(blocks * threads, 0);
        seq[o].assign(blocks, -1);
        int next = 0;
        mt_emu::set_schedule(orders[o]);
        mt_emu::launch(order_kernel, blocks, threads)(count.data(), seq[o].data(), &next);
        mt_emu::set_schedule(mt_emu::WARPS_UP);
        CHECK(next == blocks && std::count(count.begin(), count.end(), 1) == blocks * threads);
    }
    std::vector<int> reversed(seq[0].rbegin(), seq[0].rend());
    CHECK(seq[1] == reversed && seq[2] != seq[0] && seq[2] != seq[1]);
}

// What the hardware would refuse, hang on or leave undefined, the emulator stops with a message
// (abort): each case in a child process, its message checked.
__global__ void exited_lane_kernel(float *x) {
    if (threadIdx.x == 3) return;
    x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);  // lane 2 reads lane 3, which is gone
}
__global__ void half_warp_sum_kernel(float *x) {  // correct: exited lanes are named but never read
    if (threadIdx.x >= 16) return;
    float v = 1.0f;
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    x[threadIdx.x] = v;
}
__global__ void partial_warp_kernel(float *x) {  // 48 threads: lane 0 of warp 1 reads lane 16, past the block
    x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 16);
}
__global__ void divergent_barrier_kernel(float *x) {
    if (threadIdx.x % 32 < 16) __syncwarp();  // half of each warp waits here, half at the block's
    else __syncthreads();                     // barrier: neither can open, a hang
    x[threadIdx.x] = 1.0f;
}
__global__ void big_smem_kernel(float *x) { x[threadIdx.x] = 1.0f; }
// "" when the child exits cleanly, else its message (or "no abort" when it died another way).
std::string child_message(void (*body)(float *)) {
    std::string err;
    const int status = emu::in_child(
        [&] {
            float x[64];
            body(x);
        },
        &err);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT ? err : "no abort";
}
bool stopped_saying(void (*body)(float *), const char *what) {
    const std::string err = child_message(body);
    if (err.find(what) == std::string::npos) printf("# wanted \"%s\", got \"%s\"\n", what, err.c_str());
    return err.find(what) != std::string::npos;
}
TEST(emu_stops_what_the_hardware_would_not_run) {
    CHECK(stopped_saying([](float *x) { mt_emu::launch(exited_lane_kernel, 1, 32)(x); }, "which has exited"));
    CHECK(stopped_saying([](float *x) { mt_emu::launch(partial_warp_kernel, 1, 48)(x); }, "past the block"));
    CHECK(stopped_saying([](float *x) { mt_emu::launch(divergent_barrier_kernel, 1, 64)(x); }, "deadlock"));
    CHECK(stopped_saying([](float *x) { mt_emu::launch(big_smem_kernel, 1, 32, 64 * 1024)(x); }, "past 48 KB"));
    CHECK(stopped_saying([](float *x) { mt_emu::launch(big_smem_kernel, 1, 2048)(x); }, "threads per block"));
    // the controls: legal launches run
    CHECK(child_message([](float *x) { mt_emu::launch(big_smem_kernel, 1, 64, 1024)(x); }).empty());
    CHECK(child_message([](float *x) {
              mt_emu::launch(half_warp_sum_kernel, 1, 32)(x);
              if (x[0] != 16.0f || x[15] != 16.0f) abort();
          }).empty());
}

}  // namespace

int main(void) {
    RUN(emu_wmma_layouts);
    RUN(emu_finds_a_missing_barrier);
    RUN(emu_schedules_are_permutations);
    RUN(emu_stops_what_the_hardware_would_not_run);
    RUN(fused_bf16_hs32);
    RUN(fused_bf16_hs32_dropout);
    RUN(fused_bf16_hs64);
    RUN(fused_bf16_hs64_dropout);
    RUN(fused_fp16_hs32_dropout);
    RUN(fused_fp16_hs64);
    RUN(fused_bf16_hs64_long_dropout);
    RUN(fused_mask_bf16_hs64);
    RUN(fused_mask_fp16_hs32);
    return check_summary();
}
