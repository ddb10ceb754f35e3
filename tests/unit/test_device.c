// test_device.c — --device selection. Runs on any machine: where no usable GPU is present
// (or the build has no CUDA), auto must fall back to the CPU and cuda must be an error; where
// one is, both must give the CUDA backend. MT_EXPECT_GPU=0|1 pins which case this machine
// must be (tests/gpu/check.sh sets 1), so a probe that wrongly finds no GPU cannot pass there.
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "device.h"

static int gpu;
static char desc[256];

TEST(probe_answers_without_dying) {
    CHECK(gpu == 0 || gpu == 1);
    CHECK(desc[0] != '\0');  // a device description, or the reason there is none
    const char *expect = getenv("MT_EXPECT_GPU");
    if (expect && *expect) {
        if (gpu != atoi(expect)) printf("# MT_EXPECT_GPU=%s but the probe says %d: %s\n", expect, gpu, desc);
        CHECK(gpu == atoi(expect));
    }
}

TEST(cpu_gives_the_cpu_backend) {
    char err[256] = "";
    const mt_backend *be = mt_backend_try_select("cpu", err, sizeof err);
    CHECK(be && !strcmp(be->name, "cpu") && be->host_memory == 1);
    CHECK(mt_backend_select("cpu") == be);
}

TEST(auto_follows_the_gpu) {
    char err[256] = "";
    const mt_backend *be = mt_backend_try_select("auto", err, sizeof err);
    CHECK(be != NULL);
    if (be) CHECK(!strcmp(be->name, gpu ? "cuda" : "cpu"));
    CHECK(mt_backend_try_select(NULL, err, sizeof err) == be);  // NULL means auto
}

// Is a shared library whose name contains lib mapped into this process?
static int mapped(const char *lib) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, lib) != NULL;
    fclose(f);
    return found;
}

// The CUDA libraries are loaded only when a GPU is asked for and present: after cpu and auto
// on a machine without one, neither the backend nor cudart / cuBLAS is in the process.
TEST(no_gpu_loads_no_cuda_library) {
    if (gpu) return;
    CHECK(mapped("libc.so") == 1);  // the check itself sees shared libraries
    CHECK(mapped("libmtbert_cuda") == 0);
    CHECK(mapped("libcudart") == 0);
    CHECK(mapped("libcublas") == 0);
}

TEST(cuda_without_gpu_is_an_error) {
    char err[256] = "";
    const mt_backend *be = mt_backend_try_select("cuda", err, sizeof err);
    if (gpu) {
        CHECK(be && !strcmp(be->name, "cuda") && be->host_memory == 0);
    } else {
        CHECK(be == NULL);
        CHECK(strstr(err, "--device cuda") != NULL);
        if (be == NULL) printf("# the error reads: %s\n", err);
    }
#ifdef MT_HAVE_CUDA
    CHECK(mapped("libmtbert_cuda") == 1);  // asked for, so loaded: the .so was found and opened
#endif
}

TEST(unknown_device_is_an_error) {
    char err[256] = "";
    CHECK(mt_backend_try_select("tpu", err, sizeof err) == NULL);
    CHECK(strstr(err, "'tpu'") != NULL);
    CHECK(mt_backend_try_select("", err, sizeof err) == NULL);
}

// What a backend computes in: fp32 on the CPU backends; on CUDA whatever was set, fp16 included.
TEST(precision_follows_the_setting) {
    CHECK(!strcmp(mt_backend_precision(mt_backend_cpu()), "fp32"));
    CHECK(!strcmp(mt_backend_precision(mt_backend_cpu_staged()), "fp32"));
    mt_backend_set_precision(mt_backend_cpu(), "fp32");  // accepted (fp16 there dies: the bats suites check)
    if (!gpu) return;
    const mt_backend *be = mt_backend_select("cuda");
    mt_backend_set_precision(be, "fp16");
    CHECK(!strcmp(mt_backend_precision(be), "fp16"));
    mt_backend_set_precision(be, "fp32");
    CHECK(!strcmp(mt_backend_precision(be), "fp32"));
}

int main(void) {
    gpu = mt_gpu_available(desc, sizeof desc);
    printf("# gpu: %d (%s)\n", gpu, desc);
    RUN(probe_answers_without_dying);
    RUN(cpu_gives_the_cpu_backend);
    RUN(auto_follows_the_gpu);
    RUN(no_gpu_loads_no_cuda_library);  // before cuda, which loads the backend
    RUN(cuda_without_gpu_is_an_error);
    RUN(unknown_device_is_an_error);
    RUN(precision_follows_the_setting);
    return check_summary();
}
