// test_profile.c — lib/profile.h in HOST mode on a CPU table: the wrapper passes results and
// the non-op fields through, keeps a missing op missing, profiles one backend only, and its
// counters (calls, waits, the idle bound after waits) follow the calls made. The OPS mode and
// the table at exit are tested end to end by tests/bats/profile.bats.
#include <time.h>

#include "check.h"
#include "common.h"
#include "profile.h"

static mt_backend fake;  // the CPU table lacking one op, under another name
static const mt_backend *w;

static void sleep_ms(int ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

TEST(wrapper_passes_results_and_fields_through) {
    CHECK(mt_profile_mode(w) == MT_PROFILE_HOST && mt_profile_mode(&fake) == MT_PROFILE_OFF);
    CHECK(w->dropout_forward == NULL && w->gemm != fake.gemm);  // missing stays missing, ops wrapped
    CHECK(w->alloc == fake.alloc && w->reserve == fake.reserve && w->memory_free == fake.memory_free);
    CHECK(!strcmp(w->name, "fake") && w->host_memory == 1);
    float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {0.5f, -1, 2, 0.25f, 3, -2}, c1[4], c2[4];
    fake.gemm(0, 0, 2, 2, 3, 1.5f, A, 3, B, 2, 0.0f, c1, 2);
    w->gemm(0, 0, 2, 2, 3, 1.5f, A, 3, B, 2, 0.0f, c2, 2);
    CHECK(memcmp(c1, c2, sizeof c1) == 0);
}

TEST(one_backend_per_process) {
    CHECK(mt_profile_wrap(&fake, MT_PROFILE_OPS) == w);  // the same backend: its wrapper, first mode
    CHECK(mt_profile_wrap(w, MT_PROFILE_HOST) == w);
    const mt_backend *cpu = mt_backend_cpu(), *staged = mt_backend_cpu_staged();
    CHECK(mt_profile_wrap(cpu, MT_PROFILE_HOST) == cpu);  // another one stays unprofiled
    CHECK(mt_profile_wrap(staged, MT_PROFILE_OPS) == staged && mt_profile_mode(staged) == MT_PROFILE_OFF);
    CHECK(mt_profile_parse("ops") == MT_PROFILE_OPS && mt_profile_parse("host") == MT_PROFILE_HOST);
    CHECK(mt_profile_parse(NULL) == MT_PROFILE_OFF && mt_profile_parse("") == MT_PROFILE_OFF);
    CHECK(mt_profile_parse("OPS") == -1 && mt_profile_parse("steps") == -1);
}

TEST(counters_follow_the_calls) {
    float x[64] = {0}, y[64];
    mt_profile_totals t;
    mt_profile_reset();
    sleep_ms(20);       // the device counts as idle from the reset ...
    w->scale(x, 2.0f, 64);  // ... until this launch returns
    w->copy_to_host(y, x, sizeof x);  // a wait
    sleep_ms(30);       // host work after it: the device starves
    w->scale(y, 2.0f, 64);
    mt_profile_get(&t);
    CHECK(t.calls == 3 && t.waits == 1 && t.launches == 0 && t.device_s == 0);
    CHECK(t.idle_s >= 0.048 && t.idle_s < 1.0);
    double idle = t.idle_s;
    w->scale(y, 2.0f, 64);  // launches after launches: the device had work queued
    sleep_ms(10);
    w->scale(y, 2.0f, 64);
    mt_profile_get(&t);
    CHECK(t.calls == 5 && t.idle_s == idle);
    CHECK(t.launch_s >= 0 && t.wait_s >= 0 && t.launch_s + t.wait_s < 0.06);  // the sleeps are not the ops'
    mt_profile_reset();
    mt_profile_get(&t);
    CHECK(t.calls == 0 && t.waits == 0 && t.idle_s == 0 && t.launch_s == 0);
}

TEST(slow_host_doubles_the_launching_calls) {
    static float x[1 << 20];
    mt_profile_totals t;
    mt_profile_reset();
    mt_profile_slow_host(1);
    double t0 = mt_now();
    w->scale(x, 0.5f, 1 << 20);
    double wall = mt_now() - t0;
    mt_profile_slow_host(0);
    mt_profile_get(&t);
    CHECK(t.calls == 1 && t.launch_s > 0 && wall >= 2 * t.launch_s);  // the spin is not counted
}

TEST(the_table_names_the_ops_called) {
    float A[4] = {1, 2, 3, 4}, C[4];
    mt_profile_reset();
    for (int i = 0; i < 3; i++) w->gemm(0, 0, 2, 2, 2, 1.0f, A, 2, A, 2, 0.0f, C, 2);
    w->synchronize();
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    mt_profile_print(f);
    fclose(f);
    CHECK(strstr(buf, "profile (MTBERT_PROFILE=host, fake backend)") != NULL);
    unsigned long calls = 0;
    const char *row = strstr(buf, "\ngemm ");
    CHECK(row && sscanf(row, " gemm %lu", &calls) == 1 && calls == 3);
    CHECK(strstr(buf, "\nsynchronize ") != NULL && strstr(buf, "\nscale ") == NULL);  // no row for an op not called
    CHECK(strstr(buf, "in 4 op calls") != NULL && strstr(buf, "inside the 1 that wait") != NULL);
    free(buf);
}

int main(void) {
    fake = *mt_backend_cpu();
    fake.name = "fake";
    fake.dropout_forward = NULL;
    w = mt_profile_wrap(&fake, MT_PROFILE_HOST);
    RUN(wrapper_passes_results_and_fields_through);
    RUN(one_backend_per_process);
    RUN(counters_follow_the_calls);
    RUN(slow_host_doubles_the_launching_calls);
    RUN(the_table_names_the_ops_called);
    return check_summary();
}
