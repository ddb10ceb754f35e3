// backend_glue.h — what kernels/*.cu take from backend_cuda.cu (the stream, the launch count,
// the SM count, the workspaces), for a test that runs kernel files on tests/emu/cuda_emu.h.
// Include once, after the kernel files. Workspaces are fresh NaN-filled allocations of exactly
// the bytes asked: a read before a write shows, and the sanitizer build sees any access past them.
#pragma once
#include <math.h>

#include <memory>

namespace mt_cuda {
cudaStream_t stream = nullptr;
uint64_t launches = 0;
// 2: grid_for's cap (32 blocks per SM) is 64 blocks, so a grid-stride loop over more items
// than 64 blocks hold runs its stride, as on a full GPU with larger inputs
int num_sms = 2;

static std::unique_ptr<float[]> emu_workspaces[MT_WS_COUNT];
void *workspace(int which, size_t bytes) {
    if (which < 0 || which >= MT_WS_COUNT) mt_die("workspace %d: no such workspace", which);
    const size_t n = (bytes + 3) / 4;
    emu_workspaces[which].reset(new float[n ? n : 1]);
    for (size_t i = 0; i < n; i++) emu_workspaces[which][i] = NAN;
    return emu_workspaces[which].get();
}
// backward.cu's, for the files that use it without it; backward.cu's own test defines
// MT_EMU_NO_SCRATCH (the kernel file defines it)
#ifndef MT_EMU_NO_SCRATCH
void *scratch(size_t bytes) { return workspace(MT_WS_SCRATCH, bytes); }
#endif
}  // namespace mt_cuda
