// parity.h — tests/gpu/op_parity.c's comparison rule and the checks every emulator test makes
// of an op (what it writes and nothing past it, the same bits under other schedules), for a
// tests/emu/test_X_emu.cpp. Include after check.h and rand.h.
#pragma once
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <vector>

namespace emu {

// NaNs after each output: a write past it shows. Under ASan none: exact sizes, and the
// sanitizer sees any access past them.
#ifdef __SANITIZE_ADDRESS__
constexpr size_t GUARD = 0;
#else
constexpr size_t GUARD = 1024;
#endif

typedef std::vector<std::vector<float>> outputs;

// op_parity's rand_around: center + scale * frand()
inline std::vector<float> rand_around(size_t n, float center, float scale) {
    std::vector<float> v(n);
    for (float &x : v) x = center + scale * frand();
    return v;
}
// v, then GUARD NaNs: an output buffer that starts from v's values
inline std::vector<float> guarded(std::vector<float> v) {
    v.resize(v.size() + GUARD, NAN);
    return v;
}
// n NaNs, then GUARD more: an output buffer the op must fill
inline std::vector<float> guarded(size_t n) { return std::vector<float>(n + GUARD, NAN); }

inline double max_abs(const std::vector<float> &x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = std::max(m, (double)fabsf(x[i]));
    return m;
}

// op_parity's report rule on the first n elements: |got - ref| <= atol + rtol |ref|, NaN only
// where ref is NaN; the first miss and the count as "#" lines.
inline bool near(const char *what, const std::vector<float> &got, const std::vector<float> &ref, size_t n, double atol,
                 double rtol) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        const bool ok = std::isnan(got[i]) || std::isnan(ref[i])
                            ? std::isnan(got[i]) && std::isnan(ref[i])
                            : fabs((double)got[i] - ref[i]) <= atol + rtol * fabs((double)ref[i]);
        if (!ok && !bad++) first = i;
    }
    if (bad)
        printf("# %s: %zu of %zu past %.3g + %.3g |ref|; [%zu] got %.9g want %.9g\n", what, bad, n, atol, rtol, first,
               got[first], ref[first]);
    return bad == 0;
}
// op_parity's "exact": the first n elements, bit for bit.
inline bool same_bits(const char *what, const std::vector<float> &got, const std::vector<float> &ref, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &ref[i], 4)) {
            printf("# %s: [%zu] got %.9g want %.9g (of %zu, bit for bit)\n", what, i, got[i], ref[i], n);
            return false;
        }
    return true;
}
// Nothing written past the first n elements (the guard's NaNs intact).
inline bool untouched_past(const char *what, const std::vector<float> &x, size_t n) {
    for (size_t i = n; i < x.size(); i++)
        if (!std::isnan(x[i])) {
            printf("# %s: written past its %zu elements, at [%zu]\n", what, n, i);
            return false;
        }
    return true;
}

// The race check: run() again under the other schedules (lanes, warps and blocks in the other
// order; warps in step or running ahead) gives the same bits as `got`, the default schedule's.
// The plain build's only: the sanitizer build is there for the bounds, which schedules do not move.
template <class Run> void race_check(Run run, const outputs &got) {
#ifndef __SANITIZE_ADDRESS__
    for (mt_emu::schedule order : {mt_emu::WARPS_DOWN, mt_emu::LOCKSTEP_DOWN}) {
        mt_emu::set_schedule(order);
        const outputs again = run();
        mt_emu::set_schedule(mt_emu::WARPS_UP);
        for (size_t k = 0; k < got.size(); k++) {
            const bool same = again[k].size() == got[k].size() &&
                              memcmp(again[k].data(), got[k].data(), got[k].size() * sizeof(float)) == 0;
            if (!same) printf("# race check: output %zu differs under schedule %d\n", k, (int)order);
            CHECK(same);
        }
    }
#else
    (void)run, (void)got;
#endif
}

}  // namespace emu
