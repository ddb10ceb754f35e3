// test_lossscale.c — the loss scaler (lib/lossscale.h): the modes and their defaults, growth
// after MT_LOSS_SCALE_GROWTH_INTERVAL good steps, backoff and skip on inf/NaN, the fixed mode,
// unscaling, and the checkpoint line's round trip.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "common.h"
#include "lossscale.h"

TEST(modes_and_defaults) {
    mt_loss_scaler s;
    char err[256];
    CHECK(mt_loss_scaler_init(&s, NULL, 0, "fp32", err, sizeof err) == 0 && s.mode == MT_LOSS_SCALE_NONE && s.scale == 1.0f);
    CHECK(mt_loss_scaler_init(&s, NULL, 0, NULL, err, sizeof err) == 0 && s.mode == MT_LOSS_SCALE_NONE);
    CHECK(mt_loss_scaler_init(&s, NULL, 0, "fp16", err, sizeof err) == 0 && s.mode == MT_LOSS_SCALE_DYNAMIC &&
          s.scale == 65536.0f);
    CHECK(mt_loss_scaler_init(&s, "none", 0, "fp16", err, sizeof err) == 0 && s.mode == MT_LOSS_SCALE_NONE);
    CHECK(mt_loss_scaler_init(&s, "dynamic", 1024, "fp32", err, sizeof err) == 0 && s.mode == MT_LOSS_SCALE_DYNAMIC &&
          s.scale == 1024.0f);
    CHECK(mt_loss_scaler_init(&s, "1024", 0, "fp32", err, sizeof err) == 0 && s.mode == MT_LOSS_SCALE_FIXED &&
          s.scale == 1024.0f);
    CHECK(mt_loss_scaler_init(&s, "0", 0, NULL, err, sizeof err) == -1 && strstr(err, "--loss-scale 0"));
    CHECK(mt_loss_scaler_init(&s, "12x", 0, NULL, err, sizeof err) == -1);
    CHECK(mt_loss_scaler_init(&s, "1e39", 0, NULL, err, sizeof err) == -1);  // not a finite float
    CHECK(mt_loss_scaler_init(&s, "dynamic", 1e39, NULL, err, sizeof err) == -1 && strstr(err, "--loss-scale-init"));
}

TEST(growth_after_interval) {
    mt_loss_scaler s;
    char err[256];
    mt_loss_scaler_init(&s, "dynamic", 0, NULL, err, sizeof err);
    for (long i = 1; i < MT_LOSS_SCALE_GROWTH_INTERVAL; i++) CHECK(mt_loss_scaler_update(&s, 1.5, i) == 1);
    CHECK(s.scale == 65536.0f && s.good == MT_LOSS_SCALE_GROWTH_INTERVAL - 1);
    CHECK(mt_loss_scaler_update(&s, 1.5, MT_LOSS_SCALE_GROWTH_INTERVAL) == 1);
    CHECK(s.scale == 131072.0f && s.good == 0 && s.skipped == 0);
    // never to inf: at 2^127 the growth is refused
    s.scale = ldexpf(1.0f, 127), s.good = MT_LOSS_SCALE_GROWTH_INTERVAL - 1;
    CHECK(mt_loss_scaler_update(&s, 1.0, 1) == 1 && s.scale == ldexpf(1.0f, 127) && s.good == 0);
}

TEST(backoff_and_skip) {
    mt_loss_scaler s;
    char err[256];
    mt_loss_scaler_init(&s, "dynamic", 0, NULL, err, sizeof err);
    for (long i = 1; i <= 10; i++) mt_loss_scaler_update(&s, 2.0, i);
    CHECK(mt_loss_scaler_update(&s, INFINITY, 11) == 0);
    CHECK(s.scale == 32768.0f && s.good == 0 && s.skipped == 1);
    CHECK(mt_loss_scaler_update(&s, NAN, 12) == 0);
    CHECK(s.scale == 16384.0f && s.skipped == 2);
    CHECK(mt_loss_scaler_update(&s, 0.5, 13) == 1 && s.good == 1);
    // the growth count restarts after a backoff: 2000 more good steps to double
    for (long i = 2; i <= MT_LOSS_SCALE_GROWTH_INTERVAL; i++) mt_loss_scaler_update(&s, 0.5, 12 + i);
    CHECK(s.scale == 32768.0f);
}

TEST(fixed_and_none) {
    mt_loss_scaler s;
    char err[256];
    mt_loss_scaler_init(&s, "512", 0, NULL, err, sizeof err);
    for (long i = 1; i <= 2 * MT_LOSS_SCALE_GROWTH_INTERVAL; i++) mt_loss_scaler_update(&s, 1.0, i);
    CHECK(s.scale == 512.0f);  // no growth
    CHECK(mt_loss_scaler_update(&s, INFINITY, 1) == 0 && s.scale == 512.0f && s.skipped == 1);  // no backoff
    mt_loss_scaler_init(&s, "none", 0, NULL, err, sizeof err);
    CHECK(mt_loss_scaler_update(&s, 3.0, 1) == 1);
    CHECK(mt_loss_scaler_update(&s, NAN, 2) == 0 && s.skipped == 0 && s.scale == 1.0f);  // the caller stops
}

// A non-finite loss is a non-finite gradient: skipped (dynamic halves), or -1 with none.
TEST(skip_loss) {
    mt_loss_scaler s;
    char err[256];
    mt_loss_scaler_init(&s, "dynamic", 1024, NULL, err, sizeof err);
    mt_loss_scaler_update(&s, 1.0, 1);
    CHECK(mt_loss_scaler_skip_loss(&s, "sst loss", NAN, 2) == 0 && s.scale == 512.0f && s.skipped == 1 && s.good == 0);
    mt_loss_scaler_init(&s, "256", 0, NULL, err, sizeof err);
    CHECK(mt_loss_scaler_skip_loss(&s, "loss", INFINITY, 1) == 0 && s.scale == 256.0f && s.skipped == 1);
    mt_loss_scaler_init(&s, "none", 0, NULL, err, sizeof err);
    CHECK(mt_loss_scaler_skip_loss(&s, "loss", NAN, 1) == -1 && s.skipped == 0);
}

// Unscaling by a power of two is exact; the norm is the unscaled gradient's, clipping applies
// after; an inf anywhere gives a non-finite norm.
TEST(unscale_clip) {
    const mt_backend *cpu = mt_backend_cpu(), *staged = mt_backend_cpu_staged();
    float a[5] = {3, 4, 0.1f, -2.5f, 1e-3f}, b[3] = {1, 2, 3}, a0[5], b0[3];
    memcpy(a0, a, sizeof a), memcpy(b0, b, sizeof b);
    mt_loss_scaler s;
    char err[256];
    mt_loss_scaler_init(&s, "1024", 0, NULL, err, sizeof err);
    float *sa = staged->alloc(sizeof a);
    // the staged backend keeps a device's workspace reservation: the gram's scratch, up front
    staged->reserve(&(mt_workspace_shape){.training = 1, .gram_n = 5});
    for (int i = 0; i < 5; i++) a[i] *= 1024.0f;
    for (int i = 0; i < 3; i++) b[i] *= 1024.0f;
    staged->copy_to_device(sa, a, sizeof a);
    mt_grad_segment seg[2] = {{staged, sa, 5}, {cpu, b, 3}};
    double norm = mt_loss_scaler_unscale_clip(&s, seg, 2, 0.0);
    staged->copy_to_host(a, sa, sizeof a);
    CHECK(!memcmp(a, a0, sizeof a) && !memcmp(b, b0, sizeof b));
    mt_grad_segment ref[2] = {{cpu, a0, 5}, {cpu, b0, 3}};
    CHECK(norm == mt_clip_grad_segments(ref, 2, 0.0));
    for (int i = 0; i < 3; i++) b[i] *= 1024.0f;
    double clipped = mt_loss_scaler_unscale_clip(&s, seg + 1, 1, 1.0);
    CHECK(clipped == sqrt(14.0) && fabs(sqrt((double)b[0] * b[0] + b[1] * b[1] + b[2] * b[2]) - 1.0) < 1e-6);
    b[1] = INFINITY;
    CHECK(!isfinite(mt_loss_scaler_unscale_clip(&s, seg + 1, 1, 0.0)));
    staged->free(sa);
}

TEST(state_round_trip) {
    mt_loss_scaler s = {MT_LOSS_SCALE_DYNAMIC, 8192.0f, 1234, 5}, t;
    char line[64];
    mt_loss_scaler_format(&s, line, sizeof line);
    CHECK(!strcmp(line, "dynamic 8192 1234 5"));
    CHECK(mt_loss_scaler_parse(&t, line) == 0 && !memcmp(&s, &t, sizeof s));
    s = (mt_loss_scaler){MT_LOSS_SCALE_FIXED, 0.1f, 0, 0};  // not a power of two: 9 digits keep the float
    mt_loss_scaler_format(&s, line, sizeof line);
    CHECK(mt_loss_scaler_parse(&t, line) == 0 && t.scale == 0.1f && t.mode == MT_LOSS_SCALE_FIXED);
    CHECK(mt_loss_scaler_parse(&t, "sometimes 2 0 0") == -1);
    CHECK(mt_loss_scaler_parse(&t, "dynamic 2 0") == -1);
    CHECK(mt_loss_scaler_parse(&t, "dynamic inf 0 0") == -1);
}

int main(void) {
    mt_quiet = 1;  // the skip lines
    RUN(modes_and_defaults);
    RUN(growth_after_interval);
    RUN(backoff_and_skip);
    RUN(fixed_and_none);
    RUN(skip_loss);
    RUN(unscale_clip);
    RUN(state_round_trip);
    return check_summary();
}
