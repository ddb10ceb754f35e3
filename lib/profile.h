// profile.h — where a run's time goes, op by op, on any backend (MTBERT_PROFILE).
//
// mt_profile_wrap returns a table with the backend's ops wrapped in timers; everything else
// (alloc, free, set_threads, the memory plan's ops) passes straight through, and an op the
// backend lacks stays NULL. Results are the backend's exactly: the wrapper only reads clocks
// and, in the ops mode, adds synchronize calls.
//   MT_PROFILE_OPS   synchronize before and after every op: each op's own device time (the
//                    time of a kernel sequence on CUDA, not the host's), its host time inside
//                    the call, its FLOPs for the products, and on CUDA its kernel launches.
//   MT_PROFILE_HOST  no synchronize added (a step's timing stays the real one): the host time
//                    inside each op, split into launching (ops that return before the device
//                    finishes) and waiting (synchronize, readbacks, gram: they return when it
//                    has), and a bound on the GPU's idle time after each wait (see mt_profile_totals).
// lib/device.c wraps the backend it selects when MTBERT_PROFILE=ops|host is set and prints
// the table on stderr at exit (mt_profile_report, also after mt_die).
// One backend per process is profiled (the first one wrapped); the counters are global.
#ifndef MT_PROFILE_H
#define MT_PROFILE_H
#include <stdint.h>
#include <stdio.h>

#include "backend.h"

enum { MT_PROFILE_OFF = 0, MT_PROFILE_OPS = 1, MT_PROFILE_HOST = 2 };

// "ops" / "host" -> the mode; NULL or "" -> MT_PROFILE_OFF; anything else -1.
int mt_profile_parse(const char *s);

// The timing table around be in mode (OPS or HOST). Wrapping the profiled backend again, or
// its wrapper, returns the wrapper (in its first mode); a second, different backend is
// returned as it is, unprofiled: mt_profile_mode tells.
const mt_backend *mt_profile_wrap(const mt_backend *be, int mode);
// The mode be was wrapped in, MT_PROFILE_OFF when be is not the profiling table.
int mt_profile_mode(const mt_backend *be);

// The whole run's counters since the wrap or the last reset.
typedef struct {
    uint64_t calls;      // op calls (every wrapped op, waits included)
    uint64_t launches;   // CUDA: kernels, cuBLAS and CUB calls, async memsets and copies; else 0
    uint64_t waits;      // calls of the waiting ops: synchronize, copy_to_device/host, gram
    double launch_s;     // host seconds inside the other ops (enqueueing, on CUDA)
    double wait_s;       // host seconds inside the waiting ops
    double idle_s;       // HOST mode: sum over each wait (and the reset) of the host time from its
                         // return to the return of the next op: the longest the device can have
                         // sat idle for want of work after the waits (a run of waits, uploads say,
                         // counts whole: the device computes nothing else meanwhile)
    double device_s;     // OPS mode: sum of the ops' synchronize-to-synchronize times
} mt_profile_totals;
void mt_profile_get(mt_profile_totals *t);
// Zeroes every counter (the next step's numbers alone); in HOST mode the device counts as
// idle from here, as after a wait.
void mt_profile_reset(void);

// HOST mode, on: each launching call then spins as long again as it took, so the host's launch
// time doubles and nothing else changes. How much longer a step gets bounds what cheaper
// launches (CUDA graphs) could save: a step's time is a max over paths of sums of host and
// device times, convex in the launch times, so the second h of launch time costs at least
// what the first did (train_check speed prints it).
void mt_profile_slow_host(int on);

// The table on f: one row per op called, by time, then the totals. Nothing when nothing was
// profiled. mt_profile_report is it on stderr (device.c registers it with atexit).
void mt_profile_print(FILE *f);
void mt_profile_report(void);

#endif
