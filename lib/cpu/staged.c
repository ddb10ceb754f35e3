// staged.c — a test-only backend: the CPU ops, but declaring host_memory = 0, so the code
// written for device backends (copies to and from the device, device-resident training)
// runs and can be compared with the CPU backend on machines without a GPU. Its copies are
// real memcpys. Selected by --device cpu-staged (lib/device.c); not for production use.
#include <string.h>

#include "backend.h"

static void staged_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);  // never overlapping, as host <-> device copies
}

const mt_backend *mt_backend_cpu_staged(void) {
    static mt_backend staged;
    if (!staged.name) {
        mt_backend b = *mt_backend_cpu();
        b.name = "cpu-staged";
        b.host_memory = 0;
        b.copy_to_device = staged_copy;
        b.copy_to_host = staged_copy;
        staged = b;
    }
    return &staged;
}
