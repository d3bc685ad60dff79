// A CUDA emulator for testing the CUDA backend on machines without a GPU: a stand-in
// `libcuda.so` exporting the driver-API calls cudarc makes, with "device memory" in host memory
// and kernels from kernels/*.cu compiled as C++ (shim.h). cuLaunchKernel runs the grid's blocks
// one after another; a block's threads are fibers (ucontext) that switch at __syncthreads and the
// shuffles, so barriers behave as on a GPU. Fresh allocations and dynamic shared memory are
// filled with NaN bytes, so a kernel that reads what nothing wrote shows up as NaN in the tests,
// and every buffer is followed by a guard band that is checked after each launch: a kernel that
// writes past the end of a buffer aborts the process with the kernel's name.
//
// A grid's blocks are shared out among a pool of host threads (one per core, or
// EATNAS_EMU_THREADS), each running whole blocks with its own fibers, shared memory and
// block index (thread_local), as a GPU runs blocks on its multiprocessors in no set order.
//
// `wmma_emu.h` stands in for the tensor-core fragments (whole tiles per thread). Not emulated:
// timing. Calls from several host threads (the test harness runs tests in parallel) are
// serialised by one lock, as a real driver is safe to call from any thread.
#include <ucontext.h>

#include <atomic>
#include <condition_variable>
#include <thread>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "shim.h"

namespace emu {
Dim3 grid_dim, block_dim;
thread_local Dim3 block_idx;

#if defined(__x86_64__)
// Saves the callee-saved registers on the current stack, stores the stack pointer in *from,
// switches to the stack `to` and restores its registers: a tenth of swapcontext's cost (no
// signal-mask system call).
extern "C" void emu_switch(void** from, void* to);
asm(R"(
.text
.globl emu_switch
.type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_switch, .-emu_switch
)");
struct Context {
    void* sp = nullptr;
};
static void switch_to(Context& from, Context& to) { emu_switch(&from.sp, to.sp); }
// A fresh stack whose first switch "returns" into entry() with the ABI's alignment.
static void prepare(Context& c, char* stack, size_t size, void (*entry)()) {
    auto top = reinterpret_cast<std::uintptr_t>(stack + size) & ~std::uintptr_t(15);
    auto* slots = reinterpret_cast<void**>(top);
    slots[-1] = nullptr;                            // entry's (never used) return address
    slots[-2] = reinterpret_cast<void*>(entry);     // where emu_switch's ret goes
    for (int r = 3; r <= 8; ++r) slots[-r] = nullptr;  // the six callee-saved registers
    c.sp = &slots[-8];
}
#else
struct Context {
    ucontext_t uc;
};
static void switch_to(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
static void prepare(Context& c, char* stack, size_t size, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
#endif

struct Fiber {
    Context context;
    Dim3 tid;
    enum State { Ready, AtBarrier, Done } state = Ready;
};

// Each pool thread's own: its scheduler, the fibers of the block it runs, their stacks, the
// block's dynamic shared memory and shuffle slots.
static thread_local Context scheduler;
static thread_local std::vector<Fiber> fibers;
static thread_local std::vector<char> stacks;
static thread_local Fiber* current = nullptr;
static thread_local std::vector<char> dynamic;
static thread_local std::uint64_t slots[1024];
// The launch in progress: set by the launching thread before the pool starts on it.
static const std::function<void()>* body = nullptr;
static const size_t STACK = 256 * 1024;

const Dim3& thread_idx() { return current->tid; }
void* dynamic_shared() { return dynamic.data(); }
std::uint64_t* shuffle_slots() { return slots; }

static thread_local unsigned block_threads = 0;

// Leaves the current fiber (at a barrier, or done) for the next one of the block that has not yet
// reached the barrier, or for the scheduler once every fiber has: one switch per fiber and pass.
static void yield() {
    Fiber* from = current;
    for (Fiber* next = from + 1; next < fibers.data() + block_threads; ++next) {
        if (next->state == Fiber::Ready) {
            current = next;
            switch_to(from->context, next->context);
            return;
        }
    }
    switch_to(from->context, scheduler);
}

void syncthreads() {
    current->state = Fiber::AtBarrier;
    yield();
}

// A fiber's whole life: the kernel, then on to the next fiber for good.
static void trampoline() {
    (*body)();
    current->state = Fiber::Done;
    yield();
    std::abort();  // a finished fiber is never resumed
}

// Runs one block: every fiber to its next barrier, then releases the barrier, until all are done.
static void run_block(unsigned threads) {
    block_threads = threads;
    for (unsigned t = 0; t < threads; ++t) {
        Fiber& f = fibers[t];
        f.state = Fiber::Ready;
        f.tid = Dim3{t, 0, 0};
        prepare(f.context, stacks.data() + t * STACK, STACK, trampoline);
    }
    for (;;) {
        // The pass runs from the first fiber still going through the rest (see yield).
        unsigned first = 0;
        while (first < threads && fibers[first].state != Fiber::Ready) ++first;
        if (first == threads) return;
        current = &fibers[first];
        switch_to(scheduler, fibers[first].context);
        for (unsigned t = 0; t < threads; ++t) {
            if (fibers[t].state == Fiber::AtBarrier) fibers[t].state = Fiber::Ready;
        }
    }
}

// The blocks of one launch, handed out one at a time to whichever pool thread asks next.
struct Grid {
    unsigned threads = 0, blocks = 0;
    size_t shared = 0;
    std::atomic<unsigned> next{0};
};

// Runs blocks of `grid` on this host thread until none is left.
static void run_blocks(Grid& grid) {
    if (fibers.size() < grid.threads) {
        fibers.resize(grid.threads);
        stacks.resize(grid.threads * STACK);
    }
    dynamic.assign(grid.shared + 16, (char)0xff);
    for (unsigned b; (b = grid.next.fetch_add(1)) < grid.blocks;) {
        block_idx = Dim3{b % grid_dim.x, b / grid_dim.x % grid_dim.y, b / (grid_dim.x * grid_dim.y)};
        run_block(grid.threads);
    }
}

// The host threads besides the launching one. Created once and never destroyed (they wait for
// work until the process ends), so no destructor runs while one of them waits. Every helper
// reports back on every grid, so none can still be reading a grid that has been returned.
struct Pool {
    std::mutex lock;
    std::condition_variable work, finished;
    Grid* grid = nullptr;
    unsigned long generation = 0;
    unsigned helpers = 0, reported = 0;

    explicit Pool(unsigned count) : helpers(count) {
        for (unsigned i = 0; i < count; ++i) std::thread([this] { serve(); }).detach();
    }

    void serve() {
        unsigned long seen = 0;
        for (;;) {
            Grid* g;
            {
                std::unique_lock<std::mutex> hold(lock);
                work.wait(hold, [&] { return generation != seen; });
                seen = generation;
                g = grid;
            }
            run_blocks(*g);
            std::lock_guard<std::mutex> hold(lock);
            if (++reported == helpers) finished.notify_all();
        }
    }

    // Runs the grid on the pool and this thread; returns when every helper has reported back.
    void run(Grid& g) {
        {
            std::lock_guard<std::mutex> hold(lock);
            grid = &g;
            reported = 0;
            ++generation;
        }
        work.notify_all();
        run_blocks(g);
        std::unique_lock<std::mutex> hold(lock);
        finished.wait(hold, [&] { return reported == helpers; });
        grid = nullptr;
    }
};

static unsigned pool_threads() {
    if (const char* set = std::getenv("EATNAS_EMU_THREADS")) {
        const int n = std::atoi(set);
        if (n >= 1) return unsigned(n);
    }
    return std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
}

void launch(const std::function<void()>& kernel, Dim3 grid, Dim3 block, size_t shared) {
    static Pool* pool = new Pool(pool_threads() - 1);
    grid_dim = grid;
    block_dim = block;
    body = &kernel;
    Grid g;
    g.threads = block.x * block.y * block.z;
    g.blocks = grid.x * grid.y * grid.z;
    g.shared = shared;
    if (g.blocks == 1 || pool->helpers == 0) {
        run_blocks(g);
    } else {
        pool->run(g);
    }
}

// The kernels by name, each with an invoker that unpacks cuLaunchKernel's argument pointers.
using Invoker = std::function<void(void**)>;
std::map<std::string, Invoker>& registry() {
    static std::map<std::string, Invoker> table;
    return table;
}
}  // namespace emu

// ---- the driver API, as far as cudarc uses it --------------------------------------------------
extern "C" {
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
static int context_token, module_token;
enum { OK = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, INVALID_DEVICE = 101, NOT_FOUND = 500 };

CUresult cuInit(unsigned) { return OK; }
CUresult cuDriverGetVersion(int* v) { *v = 13000; return OK; }
CUresult cuDeviceGetCount(int* count) { *count = 1; return OK; }
CUresult cuDeviceGet(CUdevice* device, int ordinal) {
    if (ordinal != 0) return INVALID_DEVICE;
    *device = 0;
    return OK;
}
CUresult cuDeviceGetAttribute(int* value, int attribute, CUdevice) {
    switch (attribute) {
        case 75: *value = 9; break;    // compute capability 9.0
        case 76: *value = 0; break;
        case 16: *value = 132; break;  // multiprocessors: an H100 SXM's
        default: *value = 0;         // no memory pools: cudarc allocates synchronously
    }
    return OK;
}
CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    std::snprintf(name, len, "eatnas CUDA emulator (host CPU)");
    return OK;
}
CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) { *bytes = size_t(8) << 30; return OK; }
CUresult cuDevicePrimaryCtxRetain(void** ctx, CUdevice) { *ctx = &context_token; return OK; }
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return OK; }
CUresult cuDevicePrimaryCtxRelease(CUdevice) { return OK; }
CUresult cuCtxSetCurrent(void*) { return OK; }
CUresult cuCtxGetCurrent(void** ctx) { *ctx = &context_token; return OK; }
CUresult cuCtxPushCurrent_v2(void*) { return OK; }
CUresult cuCtxPopCurrent_v2(void** ctx) { if (ctx) *ctx = &context_token; return OK; }
CUresult cuCtxSynchronize() { return OK; }
CUresult cuCtxGetDevice(CUdevice* d) { *d = 0; return OK; }
CUresult cuStreamSynchronize(void*) { return OK; }
CUresult cuStreamQuery(void*) { return OK; }
CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) { *free_bytes = *total = size_t(8) << 30; return OK; }

// Live allocations: address -> requested bytes. Each has GUARD bytes of 0xff after it.
// Held by every call that touches device memory or launches: one caller at a time.
static std::mutex driver_lock;

static std::map<CUdeviceptr, size_t>& allocations() {
    static std::map<CUdeviceptr, size_t> live;
    return live;
}
static const size_t GUARD = 256;

static void check_guards(const char* after) {
    for (const auto& [ptr, bytes] : allocations()) {
        const auto* guard = reinterpret_cast<const unsigned char*>(ptr) + bytes;
        for (size_t i = 0; i < GUARD; ++i) {
            if (guard[i] != 0xff) {
                std::fprintf(stderr, "CUDA emulator: %s wrote past the end of a %zu-byte buffer\n", after, bytes);
                std::abort();
            }
        }
    }
}

CUresult cuMemAlloc_v2(CUdeviceptr* ptr, size_t bytes) {
    std::lock_guard<std::mutex> hold(driver_lock);
    const size_t total = (bytes + GUARD + 255) / 256 * 256;
    void* p = std::aligned_alloc(256, total);
    if (!p) return OUT_OF_MEMORY;
    std::memset(p, 0xff, total);  // NaN until written, and the guard band
    *ptr = (CUdeviceptr)p;
    allocations()[*ptr] = bytes;
    return OK;
}
CUresult cuMemFree_v2(CUdeviceptr ptr) {
    std::lock_guard<std::mutex> hold(driver_lock);
    allocations().erase(ptr);
    std::free((void*)ptr);
    return OK;
}
CUresult cuMemAllocAsync(CUdeviceptr* ptr, size_t bytes, void*) { return cuMemAlloc_v2(ptr, bytes); }
CUresult cuMemFreeAsync(CUdeviceptr ptr, void*) { return cuMemFree_v2(ptr); }
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) { std::lock_guard<std::mutex> hold(driver_lock); std::memcpy((void*)dst, src, n); return OK; }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, void*) { return cuMemcpyHtoD_v2(dst, src, n); }
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) { std::lock_guard<std::mutex> hold(driver_lock); std::memcpy(dst, (void*)src, n); return OK; }
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, void*) { return cuMemcpyDtoH_v2(dst, src, n); }
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) { std::lock_guard<std::mutex> hold(driver_lock); std::memmove((void*)dst, (void*)src, n); return OK; }
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void*) { return cuMemcpyDtoD_v2(dst, src, n); }
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) { std::lock_guard<std::mutex> hold(driver_lock); std::memset((void*)dst, v, n); return OK; }
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, void*) { return cuMemsetD8_v2(dst, v, n); }

CUresult cuModuleLoadData(void** module, const void*) { *module = &module_token; return OK; }
CUresult cuModuleUnload(void*) { return OK; }
CUresult cuModuleGetFunction(void** function, void*, const char* name) {
    auto it = emu::registry().find(name);
    if (it == emu::registry().end()) return NOT_FOUND;
    *function = &it->second;
    return OK;
}
CUresult cuLaunchKernel(void* function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void*, void** params, void**) {
    std::lock_guard<std::mutex> hold(driver_lock);
    if (bx * by * bz == 0 || bx * by * bz > 1024 || gx * gy * gz == 0 || by != 1 || bz != 1) return INVALID_VALUE;
    if (shared > 48 * 1024) return INVALID_VALUE;  // without the opt-in attribute, as on the GPU
    auto* invoker = static_cast<emu::Invoker*>(function);
    emu::launch([&] { (*invoker)(params); }, emu::Dim3{gx, gy, gz}, emu::Dim3{bx, by, bz}, shared);
    for (const auto& [name, entry] : emu::registry()) {
        if (&entry == invoker) check_guards(name.c_str());
    }
    return OK;
}
CUresult cuGetErrorString(CUresult, const char** text) { *text = "CUDA emulator error"; return OK; }
CUresult cuGetErrorName(CUresult, const char** text) { *text = "CUDA_EMULATOR_ERROR"; return OK; }
}
