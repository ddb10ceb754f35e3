// backend_glue.h — what kernels/*.cu take from backend_cuda.cu (the stream, the launch count,
// the SM count, the workspaces), for a test that runs kernel files on tests/emu/cuda_emu.h.
// Include once, after the kernel files. Workspaces are fresh NaN-filled allocations of the bytes
// asked (a read before a write shows): exactly those under ASan, which sees any access past them;
// in the plain build followed by a finite guard that is checked when the workspace is replaced
// and at exit (a write past it, even of a NaN, aborts naming the workspace).
#pragma once
#include <math.h>
#include <stdlib.h>

#include <memory>

namespace mt_cuda {
cudaStream_t stream = nullptr;
uint64_t launches = 0;
// 2: grid_for's cap (32 blocks per SM) is 64 blocks, so a grid-stride loop over more items
// than 64 blocks hold runs its stride, as on a full GPU with larger inputs
int num_sms = 2;

#ifdef __SANITIZE_ADDRESS__
constexpr size_t WS_GUARD = 0;
#else
constexpr size_t WS_GUARD = 256;
#endif
constexpr float WS_CANARY = -7.25f;
static std::unique_ptr<float[]> emu_workspaces[MT_WS_COUNT];
static size_t emu_workspace_floats[MT_WS_COUNT];

static void workspace_guard_check(int which) {
    const float *w = emu_workspaces[which].get();
    if (!w) return;
    for (size_t i = emu_workspace_floats[which]; i < emu_workspace_floats[which] + WS_GUARD; i++)
        if (memcmp(&w[i], &WS_CANARY, 4)) {
            fprintf(stderr, "backend_glue: a kernel wrote past the %s workspace (%zu floats), at [%zu]\n",
                    mt_workspace_names[which], emu_workspace_floats[which], i);
            abort();
        }
}
static void workspace_guards_check(void) {
    for (int i = 0; i < MT_WS_COUNT; i++) workspace_guard_check(i);
}

void *workspace(int which, size_t bytes) {
    if (which < 0 || which >= MT_WS_COUNT) mt_die("workspace %d: no such workspace", which);
    static bool checked_at_exit = atexit(workspace_guards_check) == 0;
    (void)checked_at_exit;
    workspace_guard_check(which);
    const size_t n = (bytes + 3) / 4;
    emu_workspaces[which].reset(new float[n + WS_GUARD ? n + WS_GUARD : 1]);
    for (size_t i = 0; i < n + WS_GUARD; i++) emu_workspaces[which][i] = i < n ? NAN : WS_CANARY;
    emu_workspace_floats[which] = n;
    return emu_workspaces[which].get();
}
// backward.cu's, for the files that use it without it; backward.cu's own test defines
// MT_EMU_NO_SCRATCH (the kernel file defines it)
#ifndef MT_EMU_NO_SCRATCH
void *scratch(size_t bytes) { return workspace(MT_WS_SCRATCH, bytes); }
#endif
}  // namespace mt_cuda
