// cuda_emu.h — runs kernels/*.cu kernel source on the CPU, in CUDA's thread model, so the
// kernels' index arithmetic, masks, shared-memory use and synchronisation are tested on a
// machine without a GPU (CI). It is not a GPU test: nvcc's code, the tensor cores, the warps'
// memory model and timing are out of its reach (tests/gpu/check.sh is the GPU's test).
//
// How a launch runs: the grid's blocks one after another; a block's threads as fibers on one
// OS thread, each run until it reaches a barrier (__syncthreads, __syncwarp, a shuffle) or
// exits, then the next. A barrier opens once every live thread it waits for has arrived. The
// order of lanes, warps and blocks, and whether the warps keep in step or one runs ahead to its
// next __syncthreads, is the schedule (set_schedule): a kernel whose result depends on it has a
// race (a missing barrier: a read before another thread's write), which a test finds by running
// under several schedules and comparing bits. A thread is never interrupted between barriers,
// so each read-modify-write is atomic here: two writers of one element show only where the
// order of their additions changes the bits (tests add into random nonzero starts for that),
// and a lost update cannot happen. Shared memory, dynamic and static, is filled with NaN bytes
// for each block: a read before a write shows in the output.
//
// What is checked as the hardware would refuse it: block and grid limits, dynamic shared
// memory past 48 KB without cudaFuncSetAttribute or past sm_90's 227 KB, wmma pointers not
// 32-byte aligned or ldm not a multiple of 16 bytes, a barrier no thread can pass (deadlock),
// a shuffle that reads a lane which has exited or lies past the block, __trap. (Barriers wait
// for the threads that have not exited, as on the hardware.) Stricter than the
// hardware: wmma's *_sync calls do not synchronise the warp here (the kernels put __syncwarp
// where lanes hand data over), and each lane stores only its own eighth of an accumulator tile,
// so a lane that reads another lane's share before __syncwarp reads the old contents under some
// schedule.
//
// The runtime, enough for kernels/backend_cuda.cu's whole table (tests/emu/test_backend_emu):
// cudaMalloc / cudaFree against a pretend capacity (set_capacity; 4 GiB) that cudaMemGetInfo
// reports, cudaHostAlloc (pinned), events, and a pretend sm_90 device of SMS = 2 multiprocessors
// (cudaGetDeviceCount, cudaGetDeviceProperties, cudaDeviceGetAttribute, cudaFuncGetAttributes,
// cudaSetDevice). The one stream runs each launch, copy and memset at its call (the default), or
// after set_async(true) queues them, arguments by value, and runs them in order only when the
// host waits (cudaStreamSynchronize, cudaEventSynchronize up to the event, a copy to pageable host
// memory, cudaMemcpy, cudaFree): a host that reuses a buffer before its copy ran, or reads results
// before a wait, gets wrong data, as on a GPU ("the stream" below says exactly what waits).
//
// Use: compile the kernel source with this header included first, after rewriting its launch
// syntax (the Makefile's sed: kernel<<<g, b, s, st>>>(args) -> mt_emu::launch(kernel, g, b, s,
// st)(args); `extern __shared__ ... name[]` -> a pointer from mt_emu::dynamic_smem();
// `__shared__ T name[..];` -> mt_emu::block_shared<T[..]>, storage refilled with NaN bytes for
// each block as dynamic shared memory is). Several
// kernel files may be compiled apart (g++ -include cuda_emu.h, one object each) and linked into
// one program: everything here is inline, and the fiber switch a weak symbol.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#endif

namespace mt_emu {

[[noreturn]] __attribute__((format(printf, 1, 2))) inline void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuda_emu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

// ---- fibers --------------------------------------------------------------------------------
// A context switch saves the callee-saved registers and the stack pointer (x86-64 System V).
// A weak symbol: every translation unit that includes this header defines it, and the linker
// keeps one (a library of several kernel files, tests/emu/test_backend_emu).
extern "C" void mt_emu_switch(void **save_sp, void *load_sp);
#if defined(__x86_64__)
asm(R"(
    .text
    .weak mt_emu_switch
    .type mt_emu_switch, @function
mt_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size mt_emu_switch, .-mt_emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
#else
#error "cuda_emu.h: fibers are written for x86-64 only"
#endif

enum state { RUNNABLE, AT_WARP, AT_BLOCK, DONE };
constexpr size_t STACK_BYTES = 256 * 1024, GUARD_PAGE = 4096;

// A fiber's stack: STACK_BYTES above one inaccessible page, so a kernel that overflows it faults
// at once instead of writing over the heap.
struct stack_unmap {
    void operator()(unsigned char *stack) const { munmap(stack - GUARD_PAGE, STACK_BYTES + GUARD_PAGE); }
};
inline unsigned char *new_stack() {
    void *p = mmap(nullptr, STACK_BYTES + GUARD_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || mprotect(p, GUARD_PAGE, PROT_NONE) != 0) fail("no memory for a fiber stack");
    return (unsigned char *)p + GUARD_PAGE;
}
constexpr int WARP = 32;

struct thread {
    void *sp = nullptr;
    state st = RUNNABLE;
    uint3 idx;
};

struct block {
    std::vector<thread> threads;
    std::vector<std::unique_ptr<unsigned char, stack_unmap>> stacks;
    int live = 0, at_block = 0;
    std::vector<int> warp_live, at_warp;
    std::vector<uint64_t> exchange;  // a shuffle's values, one slot per thread
    unsigned char *smem = nullptr;
    size_t smem_bytes = 0;
};

struct runtime {
    block blk;
    int current = -1;  // the running thread, -1: the scheduler
    void *scheduler_sp = nullptr;
    const std::function<void()> *body = nullptr;
    uint3 block_idx;
    dim3 grid_dim, block_dim;
    int order = 0;           // the schedule (set_schedule): UP, DOWN or SHUFFLED below
    bool lockstep = false;
    std::map<const void *, int> max_dynamic_smem;  // cudaFuncSetAttribute's opt-ins
    uint64_t blocks_run = 0, phases = 0;
};
inline runtime &rt() {
    static runtime r;
    return r;
}

// The order a launch runs its threads in. WARPS_UP is the default; the others are for a test's
// second and third runs, whose bits must match the first's. SHUFFLED: lanes, warps and blocks in
// an order that changes every phase (an affine permutation: neither ascending nor descending).
enum schedule { WARPS_UP, WARPS_DOWN, LOCKSTEP_UP, LOCKSTEP_DOWN, LOCKSTEP_SHUFFLED };
enum { UP, DOWN, SHUFFLED };
inline void set_schedule(schedule s) {
    rt().order = s == WARPS_DOWN || s == LOCKSTEP_DOWN ? DOWN : s == LOCKSTEP_SHUFFLED ? SHUFFLED : UP;
    rt().lockstep = s == LOCKSTEP_UP || s == LOCKSTEP_DOWN || s == LOCKSTEP_SHUFFLED;
}
// The k-th of n in the schedule's order; `turn` picks the shuffle and must stay the same while
// k runs over 0 .. n-1 (lanes and warps: the phase; blocks: the grid).
inline long long in_order(long long k, long long n, uint64_t turn) {
    const runtime &r = rt();
    if (r.order == UP) return k;
    if (r.order == DOWN) return n - 1 - k;
    static const long long primes[] = {5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43};  // 3 * ... * 43 > 2^31
    long long a = 1;
    for (int i = 0; i < 12; i++)
        if (n % (a = primes[(turn + i) % 12]) != 0) break;  // coprime with n: a permutation
    return (a * k + (long long)(turn * 7919 % (uint64_t)n)) % n;
}

inline void yield_to_scheduler() {
    runtime &r = rt();
    thread &t = r.blk.threads[r.current];
    mt_emu_switch(&t.sp, r.scheduler_sp);
}

[[noreturn]] inline void fiber_entry() {
    runtime &r = rt();
    (*r.body)();
    block &b = r.blk;
    thread &t = b.threads[r.current];
    t.st = DONE;
    b.live--;
    const int w = r.current / WARP;
    b.warp_live[w]--;  // a warp barrier waits for the live lanes only, as the guide says
    mt_emu_switch(&t.sp, r.scheduler_sp);
    abort();  // a finished fiber is never resumed
}

// A fresh stack whose first switch "returns" into fiber_entry with the ABI's alignment.
inline void *fresh_stack(unsigned char *stack) {
#ifdef __SANITIZE_ADDRESS__
    // fiber_entry never returns, so AddressSanitizer's redzones around its locals (at the top of
    // the stack: every other frame returned and cleared its own) outlive the block whose thread
    // used it, and this block's writes below would land in them
    ASAN_UNPOISON_MEMORY_REGION(stack + STACK_BYTES - 4096, 4096);
#endif
    uintptr_t top = ((uintptr_t)(stack + STACK_BYTES)) & ~(uintptr_t)15;
    void **sp = (void **)(top - 16);
    *sp = (void *)&fiber_entry;  // ret target: at entry rsp = top - 8, as after a call
    sp -= 6;                     // rbp rbx r12 r13 r14 r15
    memset(sp, 0, 6 * sizeof(void *));
    sp -= 1;                     // mxcsr, x87 control word
    uint32_t csr[2];
    asm volatile("stmxcsr %0" : "=m"(csr[0]));
    asm volatile("fnstcw %0" : "=m"(csr[1]));
    memcpy(sp, csr, 8);
    return sp;
}

// Opens warp w's barrier if every live lane of it has arrived.
inline bool open_warp(int w) {
    block &b = rt().blk;
    if (b.at_warp[w] == 0 || b.at_warp[w] != b.warp_live[w]) return false;
    for (int l = w * WARP; l < (int)b.threads.size() && l < (w + 1) * WARP; l++)
        if (b.threads[l].st == AT_WARP) b.threads[l].st = RUNNABLE;
    b.at_warp[w] = 0;
    return true;
}
// Opens the block's barrier if every live thread has arrived.
inline bool open_block() {
    block &b = rt().blk;
    if (b.at_block == 0 || b.at_block != b.live) return false;
    for (thread &t : b.threads)
        if (t.st == AT_BLOCK) t.st = RUNNABLE;
    b.at_block = 0;
    return true;
}

// Runs thread t to its next barrier or its end.
inline void step(int t) {
    runtime &r = rt();
    r.current = t;
    mt_emu_switch(&r.scheduler_sp, r.blk.threads[t].sp);
    r.current = -1;
}

// Lanes of warp w in the schedule's order, each to its next barrier; true if any ran.
inline bool sweep_warp(int w, int nthreads) {
    runtime &r = rt();
    const int first = w * WARP, last = std::min(nthreads, first + WARP) - 1;
    bool ran = false;
    for (int k = 0; k <= last - first; k++) {
        const int t = first + (int)in_order(k, last - first + 1, r.phases * 2);
        if (r.blk.threads[t].st == RUNNABLE) step(t), ran = true;
    }
    return ran;
}

// One block: every thread to its next barrier, in the schedule's order, until all are done.
// LOCKSTEP: all warps one phase at a time (a warp barrier opens after the sweep over all warps).
// WARPS: a warp runs on, through its own barriers, until it waits at __syncthreads or ends; then
// the next warp (the way a fast warp runs ahead of a slow one).
inline void run_block(int nthreads) {
    runtime &r = rt();
    block &b = r.blk;
    for (int t = 0; t < nthreads; t++) {
        thread &th = b.threads[t];
        th.st = RUNNABLE;
        th.idx = make_uint3(t % r.block_dim.x, t / r.block_dim.x % r.block_dim.y, t / (r.block_dim.x * r.block_dim.y));
        th.sp = fresh_stack(b.stacks[t].get());
    }
    b.live = nthreads, b.at_block = 0;
    const int warps = (nthreads + WARP - 1) / WARP;
    b.warp_live.assign(warps, 0), b.at_warp.assign(warps, 0);
    for (int t = 0; t < nthreads; t++) b.warp_live[t / WARP]++;
    while (b.live > 0) {
        bool progress = false;
        for (int k = 0; k < warps; k++) {
            const int w = (int)in_order(k, warps, r.phases * 2 + 1);
            if (r.lockstep) progress |= sweep_warp(w, nthreads);
            else
                while (sweep_warp(w, nthreads) | open_warp(w)) progress = true;
        }
        for (int w = 0; w < warps; w++) progress |= open_warp(w);
        progress |= open_block();
        r.phases++;
        if (!progress && b.live > 0)
            fail("deadlock in block (%u, %u, %u): threads wait at a barrier others never reach", r.block_idx.x,
                 r.block_idx.y, r.block_idx.z);
    }
}

inline void check_launch(const void *kernel, dim3 g, dim3 bd, size_t smem) {
    const long long threads = (long long)bd.x * bd.y * bd.z;
    if (threads < 1 || threads > 1024 || bd.z > 64) fail("launch: %lld threads per block (1 to 1024)", threads);
    if (g.x < 1 || g.y < 1 || g.z < 1 || g.x > INT_MAX || g.y > 65535 || g.z > 65535)
        fail("launch: grid (%u, %u, %u) (x 1 to 2^31 - 1, y and z 1 to 65535)", g.x, g.y, g.z);
    if (smem > 227 * 1024) fail("launch: %zu bytes of dynamic shared memory (sm_90: at most 232448)", smem);
    if (smem > 48 * 1024) {
        auto it = rt().max_dynamic_smem.find(kernel);
        if (it == rt().max_dynamic_smem.end() || (size_t)it->second < smem)
            fail("launch: %zu bytes of dynamic shared memory, past 48 KB without cudaFuncSetAttribute", smem);
    }
}

// The grid: blocks one at a time (order by the schedule), each a fresh NaN-filled shared memory.
inline void run_grid(const void *kernel, dim3 g, dim3 bd, size_t smem, const std::function<void()> &body) {
    check_launch(kernel, g, bd, smem);
    runtime &r = rt();
    block &b = r.blk;
    const int nthreads = bd.x * bd.y * bd.z;
    while ((int)b.stacks.size() < nthreads) b.stacks.emplace_back(new_stack());
    b.threads.assign(nthreads, thread());
    b.exchange.assign(nthreads, 0);
    r.body = &body, r.grid_dim = g, r.block_dim = bd;
    const long long blocks = (long long)g.x * g.y * g.z;
    const uint64_t grid_turn = r.blocks_run;
    for (long long k = 0; k < blocks; k++) {
        const long long i = in_order(k, blocks, grid_turn);
        r.block_idx = make_uint3(i % g.x, i / g.x % g.y, i / ((long long)g.x * g.y));
        b.smem_bytes = smem;
        b.smem = (unsigned char *)aligned_alloc(128, smem ? (smem + 127) / 128 * 128 : 128);
        memset(b.smem, 0xff, smem);  // NaN as float, bf16 and fp16
        run_block(nthreads);
        free(b.smem);
        b.smem = nullptr;
        r.blocks_run++;
    }
}

// ---- the stream: immediate, or queued (set_async) ---------------------------------------------
// One stream (every stream argument names it). Off, the default: a launch, copy or memset runs
// at its call, to its end. On: each is queued, its arguments captured by value at the call, and
// the queue runs in order only when the host waits: cudaStreamSynchronize, cudaEventSynchronize
// (up to that event's record), cudaMemcpy, an async copy to pageable host memory (CUDA returns
// once it is done), cudaFree and cudaFreeHost (they synchronise the device). So a host that
// reuses a buffer a queued copy still reads, or reads results before it waits, gets wrong data,
// as on a GPU. An async copy from pageable host memory takes its bytes at the call (CUDA stages
// them before it returns) but, unlike CUDA, does not wait for the queue first.
struct stream_state {
    bool async = false;
    std::deque<std::function<void()>> queue;
    uint64_t enqueued = 0, done = 0;  // operations so far; an event records `enqueued`
    uint64_t event_waits = 0;         // cudaEventSynchronize calls (a test's count of the host's waits)
};
inline stream_state &stream_q() {
    static stream_state s;
    return s;
}
// Runs queued operations until the first n have run.
inline void run_until(uint64_t n) {
    stream_state &q = stream_q();
    while (q.done < n) {
        std::function<void()> op = std::move(q.queue.front());
        q.queue.pop_front();
        op();
        q.done++;
    }
}
inline void drain() { run_until(stream_q().enqueued); }
inline void enqueue(std::function<void()> op) {
    stream_state &q = stream_q();
    q.enqueued++;
    if (q.async) return q.queue.push_back(std::move(op));
    op();
    q.done++;
}
inline void set_async(bool on) {
    drain();
    stream_q().async = on;
}
inline size_t queued() { return stream_q().queue.size(); }

template <class... P> struct launcher {
    void (*kernel)(P...);
    dim3 grid, block_dim;
    size_t smem;
    // The arguments are captured by value now (as cudaLaunchKernel copies them); the grid runs
    // on the stream (at once, or at the host's next wait under set_async).
    template <class... A> void operator()(A &&...args) const {
        std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
        check_launch((const void *)kernel, grid, block_dim, smem);  // a bad configuration fails at the launch
        auto k = kernel;
        const dim3 g = grid, bd = block_dim;
        const size_t sm = smem;
        enqueue([params, k, g, bd, sm]() mutable {
            std::function<void()> body = [&params, k] { std::apply(k, params); };
            run_grid((const void *)k, g, bd, sm, body);
        });
    }
};
template <class... P>
launcher<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block_dim, size_t smem = 0, cudaStream_t = nullptr) {
    return launcher<P...>{kernel, grid, block_dim, smem};
}

// A static __shared__ array (the sed writes `auto &name = mt_emu::block_shared<T[..]>([] {});`:
// the lambda's type makes each declaration, in each instantiation, its own storage). One block
// runs at a time, so one storage serves every block; it is NaN-filled again for each new block.
template <class T, class Site> T &block_shared(Site) {
    static T storage;
    static uint64_t filled_for = UINT64_MAX;
    if (filled_for != rt().blocks_run) memset(&storage, 0xff, sizeof storage), filled_for = rt().blocks_run;
    return storage;
}

inline unsigned char *dynamic_smem(size_t align) {
    if ((uintptr_t)rt().blk.smem % align) fail("dynamic shared memory not %zu-byte aligned", align);
    return rt().blk.smem;
}

template <class K> cudaError_t func_set_attribute(K *kernel, cudaFuncAttribute attr, int value) {
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value > 227 * 1024) return cudaErrorInvalidValue;
        rt().max_dynamic_smem[(const void *)kernel] = value;
    }
    return cudaSuccess;
}
inline cudaError_t get_last_error() { return cudaSuccess; }

// ---- memory and the device -------------------------------------------------------------------
// cudaMalloc: 256-byte aligned host memory, filled with NaN bytes (the GPU's is not cleared),
// counted against a pretend capacity (set_capacity; 4 GiB) that cudaMemGetInfo reports, so an
// out-of-memory path runs; under ASan the rounding past the bytes asked is poisoned.
// cudaHostAlloc: page-aligned host memory, remembered as pinned (the copies below treat it so).
// Memory not from cudaMalloc (the one-file tests' vectors) is device memory too.
// The device is a pretend sm_90 with SMS multiprocessors: few, so grid_for's cap (32 blocks
// per SM) is small and grid-stride loops stride.
constexpr int SMS = 2;
struct memory_state {
    size_t capacity = (size_t)4 << 30, used = 0;  // bytes: the pretend device's, and cudaMalloc's
    uint64_t mallocs = 0;                         // cudaMalloc calls that allocated
    std::map<const void *, size_t> device, pinned;  // allocation -> bytes asked
};
inline memory_state &mem() {
    static memory_state m;
    return m;
}
inline void set_capacity(size_t bytes) { mem().capacity = bytes; }
inline bool is_pinned(const void *p, size_t bytes) {
    const auto &m = mem().pinned;
    auto it = m.upper_bound(p);
    if (it == m.begin()) return false;
    --it;
    const char *a = (const char *)it->first, *q = (const char *)p;
    return q >= a && q + bytes <= a + it->second;
}

template <class T> cudaError_t device_malloc(T **p, size_t bytes) {
    memory_state &m = mem();
    *p = nullptr;
    if (!bytes) return cudaSuccess;
    if (m.used > m.capacity || bytes > m.capacity - m.used) return cudaErrorMemoryAllocation;
    const size_t rounded = (bytes + 255) / 256 * 256;
    unsigned char *q = (unsigned char *)aligned_alloc(256, rounded);
    if (!q) fail("cudaMalloc: the host has no %zu bytes", rounded);
    memset(q, 0xff, rounded);  // NaN as float, bf16 and fp16
#ifdef __SANITIZE_ADDRESS__
    ASAN_POISON_MEMORY_REGION(q + bytes, rounded - bytes);
#endif
    m.device[q] = bytes, m.used += bytes, m.mallocs++;
    *p = (T *)q;
    return cudaSuccess;
}
inline cudaError_t device_free(void *p) {
    drain();
    if (!p) return cudaSuccess;
    memory_state &m = mem();
    auto it = m.device.find(p);
    if (it == m.device.end()) return cudaErrorInvalidValue;
#ifdef __SANITIZE_ADDRESS__
    ASAN_UNPOISON_MEMORY_REGION(p, (it->second + 255) / 256 * 256);
#endif
    m.used -= it->second;
    m.device.erase(it);
    free(p);
    return cudaSuccess;
}
inline cudaError_t mem_get_info(size_t *free_bytes, size_t *total) {
    const memory_state &m = mem();
    *free_bytes = m.capacity > m.used ? m.capacity - m.used : 0, *total = m.capacity;
    return cudaSuccess;
}
template <class T> cudaError_t host_alloc(T **p, size_t bytes, unsigned = 0) {
    const size_t rounded = (std::max(bytes, (size_t)1) + 4095) / 4096 * 4096;
    *p = (T *)aligned_alloc(4096, rounded);
    if (!*p) return cudaErrorMemoryAllocation;
    mem().pinned[(const void *)*p] = bytes;
    return cudaSuccess;
}
inline cudaError_t free_host(void *p) {
    drain();
    if (p && !mem().pinned.erase(p)) return cudaErrorInvalidValue;
    free(p);
    return cudaSuccess;
}

inline cudaError_t get_device_count(int *n) {
    *n = 1;
    return cudaSuccess;
}
inline cudaError_t set_device(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
inline cudaError_t get_device_properties(cudaDeviceProp *p, int d) {
    if (d != 0) return cudaErrorInvalidDevice;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuda_emu (a pretend sm_90 on the CPU)");
    p->major = 9, p->minor = 0, p->multiProcessorCount = SMS, p->warpSize = WARP;
    p->totalGlobalMem = mem().capacity, p->maxThreadsPerBlock = 1024;
    p->sharedMemPerBlock = 48 * 1024, p->sharedMemPerBlockOptin = 227 * 1024;
    return cudaSuccess;
}
inline cudaError_t device_get_attribute(int *v, cudaDeviceAttr attr, int d) {
    if (d != 0) return cudaErrorInvalidDevice;
    switch (attr) {
    case cudaDevAttrMultiProcessorCount: *v = SMS; break;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = 227 * 1024; break;
    default: fail("cudaDeviceGetAttribute: attribute %d is not emulated", (int)attr);
    }
    return cudaSuccess;
}
// Every kernel of this build "loads": sm_90 code on the pretend sm_90.
template <class K> cudaError_t func_get_attributes(cudaFuncAttributes *a, K *) {
    memset(a, 0, sizeof *a);
    a->maxThreadsPerBlock = 1024, a->ptxVersion = 90, a->binaryVersion = 90;
    a->maxDynamicSharedSizeBytes = 48 * 1024;
    return cudaSuccess;
}

// ---- events: a position in the stream's queue --------------------------------------------------
struct event {
    uint64_t at = 0;  // the operations enqueued before its record
};
inline cudaError_t event_create(cudaEvent_t *e, unsigned = 0) {
    *e = reinterpret_cast<cudaEvent_t>(new event);
    return cudaSuccess;
}
inline cudaError_t event_record(cudaEvent_t e, cudaStream_t = nullptr) {
    reinterpret_cast<event *>(e)->at = stream_q().enqueued;
    return cudaSuccess;
}
inline cudaError_t event_synchronize(cudaEvent_t e) {
    stream_q().event_waits++;
    run_until(reinterpret_cast<event *>(e)->at);
    return cudaSuccess;
}
inline cudaError_t event_destroy(cudaEvent_t e) {
    delete reinterpret_cast<event *>(e);
    return cudaSuccess;
}

// ---- copies and memsets, on the stream ---------------------------------------------------------
inline cudaError_t memcpy_async(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t = nullptr) {
    if (!bytes) return cudaSuccess;
    if (!stream_q().async) memmove(dst, src, bytes);
    else if (kind == cudaMemcpyHostToDevice && !is_pinned(src, bytes)) {  // staged at the call
        auto staged = std::make_shared<std::vector<unsigned char>>((const unsigned char *)src,
                                                                   (const unsigned char *)src + bytes);
        enqueue([dst, staged] { memcpy(dst, staged->data(), staged->size()); });
    } else if (kind == cudaMemcpyDeviceToHost && !is_pinned(dst, bytes)) {  // returns when done
        drain();
        memmove(dst, src, bytes);
    } else {
        enqueue([dst, src, bytes] { memmove(dst, src, bytes); });
    }
    return cudaSuccess;
}
inline cudaError_t memcpy_sync(void *dst, const void *src, size_t bytes, cudaMemcpyKind) {
    drain();
    memmove(dst, src, bytes);
    return cudaSuccess;
}
// Device to device (sentence.cu's copy_2d): the source is read when the copy runs.
inline cudaError_t memcpy_2d_async(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                                   size_t height, cudaMemcpyKind, cudaStream_t = nullptr) {
    if (width > dpitch || width > spitch) return cudaErrorInvalidPitchValue;
    enqueue([=] {
        for (size_t r = 0; r < height; r++) memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    });
    return cudaSuccess;
}
inline cudaError_t memset_async(void *dst, int value, size_t bytes, cudaStream_t = nullptr) {
    enqueue([=] { memset(dst, value, bytes); });
    return cudaSuccess;
}
inline cudaError_t stream_synchronize(cudaStream_t) {
    drain();
    return cudaSuccess;
}
inline const char *error_string(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory (emulated)";
    case cudaErrorInvalidValue: return "invalid argument (emulated)";
    case cudaErrorInvalidDevice: return "invalid device ordinal (emulated)";
    default: return "error (emulated)";
    }
}

// ---- the thread's view -----------------------------------------------------------------------
inline const uint3 &thread_idx() {
    runtime &r = rt();
    if (r.current < 0) fail("threadIdx read outside a kernel");
    return r.blk.threads[r.current].idx;
}

inline void barrier(state at) {
    runtime &r = rt();
    block &b = r.blk;
    b.threads[r.current].st = at;
    const int w = r.current / WARP;
    if (at == AT_BLOCK) b.at_block++;
    else b.at_warp[w]++;
    yield_to_scheduler();
}

template <class T> T shfl_xor(T v, int lane_mask) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    runtime &r = rt();
    const int me = r.current, partner = (me / WARP) * WARP + ((me % WARP) ^ lane_mask);
    if (lane_mask < 0 || lane_mask >= WARP) fail("__shfl_xor_sync: lane mask %d", lane_mask);
    memcpy(&r.blk.exchange[me], &v, sizeof v);
    barrier(AT_WARP);  // every live lane has written
    // the mask may name exited lanes (and lanes past a partial warp), but what a shuffle reads
    // from one is undefined: a hang or garbage on the hardware, here an error
    if (partner >= (int)r.blk.threads.size() || r.blk.threads[partner].st == DONE) {
        const uint3 b = r.block_idx;
        fail("block (%u, %u, %u), lane %d: a shuffle reads lane %d, which %s", b.x, b.y, b.z, me % WARP,
             partner % WARP, partner >= (int)r.blk.threads.size() ? "is past the block" : "has exited");
    }
    T out;
    memcpy(&out, &r.blk.exchange[partner], sizeof out);
    barrier(AT_WARP);  // every lane has read
    return out;
}

}  // namespace mt_emu

// The CUDA built-ins the kernels use, on the emulator.
#undef __launch_bounds__
#define __launch_bounds__(...)
#define threadIdx (mt_emu::thread_idx())
#define blockIdx (mt_emu::rt().block_idx)
#define blockDim (mt_emu::rt().block_dim)
#define gridDim (mt_emu::rt().grid_dim)
inline void __syncthreads() { mt_emu::barrier(mt_emu::AT_BLOCK); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    if (mask != 0xffffffffu) mt_emu::fail("__syncwarp with a partial mask (%#x) is not emulated", mask);
    mt_emu::barrier(mt_emu::AT_WARP);
}
template <class T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    if (mask != 0xffffffffu) mt_emu::fail("__shfl_xor_sync with a partial mask (%#x) is not emulated", mask);
    return mt_emu::shfl_xor(v, lane_mask);
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
[[noreturn]] inline void __trap() { 
    const uint3 b = mt_emu::rt().block_idx;
    mt_emu::fail("__trap() in block (%u, %u, %u)", b.x, b.y, b.z);
}
// nvcc never fuses an __f*_rn / __d*_rn operation into an FMA, but g++ contracts a * b + c
// across inlined calls (-ffp-contract=fast is its C++ default, -std=c++17 or not; only ISO C
// turns it off): operands and result pass through an empty asm, so each is rounded on its own.
namespace mt_emu {
template <class T> inline T opaque(T v) {
    asm("" : "+x"(v));
    return v;
}
}  // namespace mt_emu
inline float __fadd_rn(float a, float b) { return mt_emu::opaque(mt_emu::opaque(a) + mt_emu::opaque(b)); }
inline float __fsub_rn(float a, float b) { return mt_emu::opaque(mt_emu::opaque(a) - mt_emu::opaque(b)); }
inline float __fmul_rn(float a, float b) { return mt_emu::opaque(mt_emu::opaque(a) * mt_emu::opaque(b)); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline double __dadd_rn(double a, double b) { return mt_emu::opaque(mt_emu::opaque(a) + mt_emu::opaque(b)); }
inline double __dmul_rn(double a, double b) { return mt_emu::opaque(mt_emu::opaque(a) * mt_emu::opaque(b)); }
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline float max(float a, float b) { return fmaxf(a, b); }
inline float min(float a, float b) { return fminf(a, b); }
#define cudaFuncSetAttribute mt_emu::func_set_attribute
#define cudaGetLastError mt_emu::get_last_error
#define cudaGetErrorString mt_emu::error_string
#define cudaMemcpyAsync mt_emu::memcpy_async
#define cudaMemcpy mt_emu::memcpy_sync
#define cudaMemcpy2DAsync mt_emu::memcpy_2d_async
#define cudaMemsetAsync mt_emu::memset_async
#define cudaStreamSynchronize mt_emu::stream_synchronize
#define cudaMalloc mt_emu::device_malloc
#define cudaFree mt_emu::device_free
#define cudaMemGetInfo mt_emu::mem_get_info
#define cudaHostAlloc mt_emu::host_alloc
#define cudaFreeHost mt_emu::free_host
#define cudaGetDeviceCount mt_emu::get_device_count
#define cudaSetDevice mt_emu::set_device
#define cudaGetDeviceProperties mt_emu::get_device_properties
#define cudaDeviceGetAttribute mt_emu::device_get_attribute
#define cudaFuncGetAttributes mt_emu::func_get_attributes
#define cudaEventCreate mt_emu::event_create
#define cudaEventCreateWithFlags mt_emu::event_create
#define cudaEventRecord mt_emu::event_record
#define cudaEventSynchronize mt_emu::event_synchronize
#define cudaEventDestroy mt_emu::event_destroy

// ---- nvcuda::wmma, 16x16x16 ----------------------------------------------------------------
// a and b fragments hold the whole tile (every lane loads all of it, as every lane's share of
// the product needs its rows and columns); an accumulator holds the lane's own eighth, the rest
// NaN. Ownership is mma.sync's m16n8k16 layout (lane 4 g + t: rows g and g + 8, columns 2 t,
// 2 t + 1 of each 8-column half), what sm_80 and later use: a kernel that reads a stored tile
// in any other pattern before __syncwarp reads another lane's elements.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "cuda_emu.h emulates the 16x16x16 shape only");
    float x[256];  // row-major [16][16]: a [m][k], b [k][n], accumulator [m][n]
};

namespace detail {
inline int lane() { return mt_emu::rt().current % mt_emu::WARP; }
inline int owner(int m, int n) { return m % 8 * 4 + n % 8 / 2; }
inline void check_ptr(const void *p, unsigned ldm, size_t elem) {
    if ((uintptr_t)p % 32) mt_emu::fail("wmma: pointer %p not 32-byte aligned", p);
    if (ldm * elem % 16) mt_emu::fail("wmma: ldm %u elements of %zu bytes: not a multiple of 16 bytes", ldm, elem);
}
inline float widen(float v) { return v; }
inline float widen(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float widen(__half v) { return __half2float(v); }
}  // namespace detail

template <class T, class L> void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, L> &f, const T *p, unsigned ldm) {
    detail::check_ptr(p, ldm, sizeof(T));
    for (int m = 0; m < 16; m++)
        for (int k = 0; k < 16; k++)
            f.x[m * 16 + k] = detail::widen(std::is_same<L, row_major>::value ? p[m * ldm + k] : p[k * ldm + m]);
}
template <class T, class L> void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, L> &f, const T *p, unsigned ldm) {
    detail::check_ptr(p, ldm, sizeof(T));
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < 16; n++)
            f.x[k * 16 + n] = detail::widen(std::is_same<L, row_major>::value ? p[k * ldm + n] : p[n * ldm + k]);
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ldm, layout_t l) {
    detail::check_ptr(p, ldm, sizeof(float));
    const int lane = detail::lane();
    for (int e = 0; e < 256; e++) {
        const int m = e / 16, n = e % 16;
        f.x[e] = detail::owner(m, n) == lane ? (l == mem_row_major ? p[m * ldm + n] : p[n * ldm + m]) : NAN;
    }
}
inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ldm, layout_t l) {
    detail::check_ptr(p, ldm, sizeof(float));
    const int lane = detail::lane();
    for (int e = 0; e < 256; e++) {
        const int m = e / 16, n = e % 16;
        if (detail::owner(m, n) == lane) (l == mem_row_major ? p[m * ldm + n] : p[n * ldm + m]) = f.x[e];
    }
}
template <class Use, class T, class L> void fill_fragment(fragment<Use, 16, 16, 16, T, L> &f, float v) {
    for (float &x : f.x) x = v;
}
// d = a b + c in fp32, the lane's own elements (products of 16-bit values are exact in fp32)
template <class TA, class LA, class TB, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float> &d, const fragment<matrix_a, 16, 16, 16, TA, LA> &a,
              const fragment<matrix_b, 16, 16, 16, TB, LB> &b, const fragment<accumulator, 16, 16, 16, float> &c) {
    const int lane = detail::lane();
    for (int e = 0; e < 256; e++) {
        const int m = e / 16, n = e % 16;
        if (detail::owner(m, n) != lane) continue;
        float s = c.x[e];
        for (int k = 0; k < 16; k++) s += a.x[m * 16 + k] * b.x[k * 16 + n];
        d.x[e] = s;
    }
}
}  // namespace wmma
}  // namespace nvcuda
