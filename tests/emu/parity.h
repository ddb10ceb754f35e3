// parity.h — the helpers every tests/emu/test_X_emu.cpp shares: tests/gpu/op_parity.c's inputs
// and comparison rule, the checks of what an op writes and nothing outside it, and the race
// check (the same bits under the emulator's other schedules). Include after the kernel file,
// check.h and rand.h.
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

namespace emu {

// Guards after (or around) each buffer: a write there shows. Under ASan none: exact sizes, and
// the sanitizer sees any access past them.
#ifdef __SANITIZE_ADDRESS__
constexpr size_t GUARD = 0;
#else
constexpr size_t GUARD = 1024;
#endif

typedef std::vector<std::vector<float>> outputs;

// A NaN with the given bits: arithmetic keeps an input NaN's payload, so two of them tell apart
// what a kernel read past an input from what it wrote past an output.
inline float nan_of(uint32_t bits) {
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// op_parity's rand_around: center + scale * frand()
inline std::vector<float> rand_around(size_t n, float center, float scale) {
    std::vector<float> v(n);
    for (float &x : v) x = center + scale * frand();
    return v;
}
// The guard after an output an op adds into (+=) or updates in place: a write past the end
// changes it, even a NaN computed from a NaN guard (which NaN guards would not show).
constexpr float CANARY = -7.25f;

// v, then GUARD copies of `guard`: an output that starts from v's values, or an input whose
// NaN guard a read past it carries into a result
inline std::vector<float> guarded(std::vector<float> v, float guard = NAN) {
    v.resize(v.size() + GUARD, guard);
    return v;
}
// n + GUARD copies of `fill`: an output the op must fill, each element it skips left as is
inline std::vector<float> guarded(size_t n, float fill = NAN) { return std::vector<float>(n + GUARD, fill); }

// n floats (zeros, or x's) with GUARD NaNs on each side: p() is the buffer a kernel gets; a
// read outside it reads NaN into a result, a write outside it shows in guards_intact().
struct buf {
    std::vector<float> v;
    size_t n;
    explicit buf(size_t n_) : v(n_ + 2 * GUARD, NAN), n(n_) { std::fill(p(), p() + n, 0.0f); }
    buf(const std::vector<float> &x) : v(x.size() + 2 * GUARD, NAN), n(x.size()) {
        std::copy(x.begin(), x.end(), v.begin() + GUARD);
    }
    float *p() { return v.data() + GUARD; }
    const float *p() const { return v.data() + GUARD; }
    int32_t *ip() { return (int32_t *)p(); }
    std::vector<float> body() const { return std::vector<float>(p(), p() + n); }
    bool guards_intact(const char *what) const;
};

// Sequences of the given lengths packed: offsets [B + 1], and for NH heads the [NH, L, L]
// attention blocks' offsets and their total.
struct packing {
    int B = 0, N = 0, maxL = 0;
    std::vector<int32_t> offsets;
    std::vector<int64_t> att_offsets;
    int64_t att_size = 0;
};
inline packing pack(const std::vector<int> &lengths, int NH = 1) {
    packing p;
    p.B = (int)lengths.size();
    p.offsets.push_back(0);
    for (int L : lengths) {
        p.att_offsets.push_back(p.att_size);
        p.att_size += (int64_t)NH * L * L;
        p.offsets.push_back(p.offsets.back() + L);
        p.maxL = std::max(p.maxL, L);
    }
    p.N = p.offsets.back();
    return p;
}

// op_parity's dropout key: its seed and step, dropout p at `site`
inline mt_dropout_key key_of(float p, uint32_t site) { return mt_dropout_key{p, 0x0123456789ABCDEFULL, 7, site}; }

inline double max_abs(const std::vector<float> &x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = std::max(m, (double)fabsf(x[i]));
    return m;
}

// ---- comparisons: each prints its first miss and the count as "#" lines ------------------------

// op_parity's rule on the first n elements: |got - ref| <= atol + rtol |ref|, NaN only where ref
// is NaN, an infinity only where ref has the same one.
inline bool near(const char *what, const std::vector<float> &got, const std::vector<float> &ref, size_t n, double atol,
                 double rtol) {
    size_t bad = 0, first = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - ref[i]);
        const bool ok = std::isnan(got[i]) || std::isnan(ref[i])   ? std::isnan(got[i]) && std::isnan(ref[i])
                        : std::isinf(got[i]) || std::isinf(ref[i]) ? got[i] == ref[i]  // inf <= inf tolerance
                                                                   : d <= atol + rtol * fabs(ref[i]);
        if (!ok && !bad++) first = i;
        if (!ok) worst = std::max(worst, std::isnan(d) ? INFINITY : d);
    }
    if (bad)
        printf("# %s: %zu of %zu past %.3g + %.3g |ref| (worst %.3g); [%zu] got %.9g want %.9g\n", what, bad, n, atol,
               rtol, worst, first, got[first], ref[first]);
    return bad == 0;
}

template <class T> uint64_t bits_of(T x) {
    uint64_t b = 0;
    memcpy(&b, &x, sizeof x);
    return b;
}
// op_parity's "exact": got[0, n) holds ref's bits (NaNs compared by their bits too).
template <class T> bool same_bits(const char *what, const T *got, const T *ref, size_t n) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &ref[i], sizeof(T)) && !bad++) first = i;
    if (bad)
        printf("# %s: %zu of %zu differ; [%zu] got %.17g (%#llx) want %.17g (%#llx)\n", what, bad, n, first,
               (double)got[first], (unsigned long long)bits_of(got[first]), (double)ref[first],
               (unsigned long long)bits_of(ref[first]));
    return bad == 0;
}
template <class T> bool same_bits(const char *what, const std::vector<T> &got, const std::vector<T> &ref, size_t n) {
    return same_bits(what, got.data(), ref.data(), n);
}

// x[from, to) still holds `guard`'s bits: nothing written there. A NaN guard's payload tells
// which NaN is where; a finite guard (a canary) also shows a NaN an in-place op computed from
// a NaN guard and wrote back.
template <class T> bool guard_intact(const char *what, const T *x, size_t from, size_t to, T guard) {
    for (size_t i = from; i < to; i++)
        if (memcmp(&x[i], &guard, sizeof(T))) {
            printf("# %s: written outside its elements, at [%zu] of [%zu, %zu): %.9g (%#llx)\n", what, i, from, to,
                   (double)x[i], (unsigned long long)bits_of(x[i]));
            return false;
        }
    return true;
}
// Nothing written past the first n elements of x (its guard, `guard`, intact).
template <class T>
bool untouched_past(const char *what, const std::vector<T> &x, size_t n,
                    typename std::vector<T>::value_type guard = (T)NAN) {
    return guard_intact(what, x.data(), n, x.size(), guard);
}
inline bool buf::guards_intact(const char *what) const {
    return guard_intact(what, v.data(), 0, GUARD, (float)NAN) &&
           guard_intact(what, v.data(), GUARD + n, v.size(), (float)NAN);
}

// ---- the race check -----------------------------------------------------------------------------

// Which runs the race check makes: none; the other schedules in the plain build only (the
// sanitizer build is there for the bounds, which schedules do not move); or in both builds.
enum class races { skip, plain_build, every_build };

template <class T> bool same_bytes(const std::vector<T> &a, const std::vector<T> &b) {
    return a.size() == b.size() && (a.empty() || memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}
inline bool same_bytes(const buf &a, const buf &b) { return same_bytes(a.v, b.v); }

// run() (fresh outputs, guards included, from the same inputs each call) under the default
// schedule; then under WARPS_DOWN (lanes, warps and blocks descending, each warp running ahead)
// and LOCKSTEP_SHUFFLED (warps in step, an order changing every phase), which must give the same
// bits. Returns the default schedule's outputs.
template <class Run>
auto run_all_schedules(const char *what, Run run, races when = races::plain_build) -> decltype(run()) {
    mt_emu::set_schedule(mt_emu::WARPS_UP);
    auto first = run();
#ifdef __SANITIZE_ADDRESS__
    if (when == races::plain_build) when = races::skip;
#endif
    for (mt_emu::schedule order : {mt_emu::WARPS_DOWN, mt_emu::LOCKSTEP_SHUFFLED}) {
        if (when == races::skip) break;
        mt_emu::set_schedule(order);
        const auto again = run();
        mt_emu::set_schedule(mt_emu::WARPS_UP);
        for (size_t k = 0; k < first.size(); k++)
            if (!same_bytes(again[k], first[k])) {
                printf("# %s: output %zu differs under schedule %d (a race)\n", what, k, (int)order);
                CHECK(!"the same bits under every schedule");
            }
    }
    return first;
}

// ---- what the emulator stops ----------------------------------------------------------------

// op() in a child process: its wait status, its stderr in *err (NULL: to /dev/null). The
// emulator stops with abort() at what the hardware would refuse, hang on or trap at; the child
// keeps that from ending the test, and alarm() turns a hang into a failed check.
template <class Op> int in_child(Op op, std::string *err = nullptr) {
    int fd[2];
    if (pipe(fd) != 0) return -1;
    fflush(stdout), fflush(stderr);
    const pid_t pid = fork();
    if (pid == 0) {
        if (err) dup2(fd[1], 2);
        else if (!freopen("/dev/null", "w", stderr)) _exit(3);
        alarm(60);
        op();
        _exit(0);
    }
    close(fd[1]);
    char chunk[4096];
    ssize_t r;
    while ((r = read(fd[0], chunk, sizeof chunk)) > 0)
        if (err) err->append(chunk, (size_t)r);
    close(fd[0]);
    int status = -1;
    waitpid(pid, &status, 0);
    return status;
}

}  // namespace emu
