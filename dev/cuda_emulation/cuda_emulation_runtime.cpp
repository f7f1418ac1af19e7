// cuda_emulation_runtime.cpp: the scheduler of cuda_emulation.h (fibers, barriers, shuffles, launches) and
// the parts of the CUDA runtime, cuBLASLt and NCCL that the project calls, on the host. What is emulated
// and what is not: the comment at the top of cuda_emulation.h.
#include "cuda_emulation.h"

#include <cublasLt.h>
#include <nccl.h>
#include <omp.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace cuda_emulation {

thread_local uint64_t block_serial = 0;

namespace {

// The emulated device: an H100 SXM's limits.
constexpr size_t DEVICE_MEMORY = size_t(80) << 30;
constexpr int SHARED_MEMORY_DEFAULT = 48 << 10;   // dynamic shared memory without opting in
constexpr int SHARED_MEMORY_OPTIN = 232448;       // cudaDevAttrMaxSharedMemoryPerBlockOptin on sm_90
constexpr int MULTIPROCESSORS = 132;
constexpr size_t FIBER_STACK_BYTES = size_t(256) << 10;

size_t page_bytes() {
    static const size_t page = size_t(sysconf(_SC_PAGESIZE));
    return page;
}
size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

std::string vformat(const char* format, va_list args) {
    char buffer[2048];
    std::vsnprintf(buffer, sizeof buffer, format, args);
    return buffer;
}
std::string format(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* format, ...) {
    va_list args;
    va_start(args, format);
    std::string text = vformat(format, args);
    va_end(args);
    return text;
}
void report(const std::string& message) { std::fprintf(stderr, "emulator: %s\n", message.c_str()); }

// readable, writable, with an inaccessible page before and after; nullptr when out of memory
unsigned char* map_guarded(size_t bytes) {
    const size_t page = page_bytes(), span = round_up(bytes, page) + 2 * page;
    void* mapping = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapping == MAP_FAILED) return nullptr;
    unsigned char* base = static_cast<unsigned char*>(mapping);
    mprotect(base, page, PROT_NONE);
    mprotect(base + span - page, page, PROT_NONE);
    return base + page;
}
void unmap_guarded(unsigned char* usable, size_t bytes) {
    const size_t page = page_bytes();
    munmap(usable - page, round_up(bytes, page) + 2 * page);
}

// ---- device memory ------------------------------------------------------------------------------

struct Allocation {
    unsigned char* usable;  // the mapping between its guard pages
    size_t usable_bytes, bytes;
};
std::mutex allocations_mutex;
std::map<uintptr_t, Allocation> allocations;  // by start address
size_t allocated_bytes = 0;

// The allocation holding [p, p + bytes) (p + bytes may be its end), or nullptr.
const Allocation* find_allocation(const void* p, size_t bytes) {
    const uintptr_t address = reinterpret_cast<uintptr_t>(p);
    auto it = allocations.upper_bound(address);
    if (it == allocations.begin()) return nullptr;
    --it;
    return address + bytes <= it->first + it->second.bytes ? &it->second : nullptr;
}
bool is_device_range(const void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(allocations_mutex);
    return find_allocation(p, bytes) != nullptr;
}
bool is_device_pointer(const void* p) { return p != nullptr && is_device_range(p, 0); }

// What the address of a fault is, as far as the device allocations tell.
std::string describe_address(const void* p) {
    std::unique_lock<std::mutex> lock(allocations_mutex, std::try_to_lock);
    if (!lock.owns_lock()) return "";
    const uintptr_t address = reinterpret_cast<uintptr_t>(p);
    for (const auto& [start, a] : allocations) {
        const uintptr_t low = reinterpret_cast<uintptr_t>(a.usable) - page_bytes(),
                        high = reinterpret_cast<uintptr_t>(a.usable) + a.usable_bytes + page_bytes();
        if (address >= start + a.bytes && address < high)
            return format("%zu bytes past the end of a device buffer of %zu bytes", size_t(address - start - a.bytes),
                          a.bytes);
        if (address >= low && address < start)
            return format("%zu bytes before a device buffer of %zu bytes", size_t(start - address), a.bytes);
    }
    return "not near a device buffer";
}

// ---- fibers ---------------------------------------------------------------------------------------

// A fiber's saved state. On x86-64 a switch saves the callee-saved registers on the old stack and loads
// them from the new one (~10 ns); elsewhere ucontext, whose swapcontext also makes a system call for the
// signal mask (~1 us: a launch switches fibers at every barrier and shuffle of every thread).
#if defined(__x86_64__)
extern "C" void cuda_emulation_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl cuda_emulation_switch
    .type cuda_emulation_switch, @function
cuda_emulation_switch:
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
    .size cuda_emulation_switch, .-cuda_emulation_switch
)");

struct Context {
    void* sp = nullptr;
};
// A context that starts entry() on the stack [stack, stack + bytes): the frame cuda_emulation_switch pops,
// with the default MXCSR and x87 control word, entry as the return address, and the stack aligned as at a
// function's entry.
void make_context(Context& context, unsigned char* stack, size_t bytes, void (*entry)()) {
    const uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t(15);
    uint64_t* frame = reinterpret_cast<uint64_t*>(top - 9 * sizeof(uint64_t));
    frame[0] = 0x1F80 | uint64_t(0x037F) << 32;
    for (int i = 1; i <= 6; i++) frame[i] = 0;
    frame[7] = reinterpret_cast<uint64_t>(entry);
    frame[8] = 0;
    context.sp = frame;
}
void switch_context(Context& from, Context& to) { cuda_emulation_switch(&from.sp, to.sp); }
#else
struct Context {
    ucontext_t context;
};
void make_context(Context& context, unsigned char* stack, size_t bytes, void (*entry)()) {
    getcontext(&context.context);
    context.context.uc_stack.ss_sp = stack;
    context.context.uc_stack.ss_size = bytes;
    context.context.uc_link = nullptr;
    makecontext(&context.context, entry, 0);
}
void switch_context(Context& from, Context& to) { swapcontext(&from.context, &to.context); }
#endif

struct Fiber {
    Context context;
    unsigned char* stack = nullptr;
    int linear = 0;  // threadIdx as one number, x fastest; warp = linear / 32
    uint3 index{};
    enum class State { ready, block_barrier, warp_barrier, done } state = State::ready;
    int vote = 0, vote_result = 0;
    uint64_t product_generation = 0;  // the warp barrier its wmma products count from, and how many so far
    int products = 0;
};

struct Warp {
    unsigned arrived = 0, mask = 0;  // lanes waiting, and the mask they wait with
    const char* file = nullptr;
    int line = 0;
    uint64_t generation = 0;  // completed barriers; shuffles alternate between two sets of slots
    uint64_t slots[2][32];
    // The wmma products of the warp's first lane since the warp's last barrier, in order: every lane
    // multiplies the same tiles in the same order, so the others copy its results (when their inputs are
    // the same bits). Four: the most the project's kernels make between two fragment loads.
    struct Product {
        bool filled = false;
        float inputs[3][16][16], result[16][16];
    };
    Product products[4];
};

// Per OS thread: the fibers of the block it runs, and that block's shared memory.
struct Worker {
    Context scheduler;
    std::vector<std::unique_ptr<Fiber>> fibers;  // stacks are made once and reused
    std::vector<Warp> warps;
    int count = 0, live = 0, at_barrier = 0;
    const char* barrier_file = nullptr;
    int barrier_line = 0;
    Fiber* current = nullptr;
    bool failed = false;
    const char *kernel = nullptr, *caller = nullptr;
    void (*body)(void*) = nullptr;
    void* context = nullptr;
    unsigned char* shared = nullptr;  // dynamic shared memory: a guarded mapping, the block's bytes at its end
    size_t shared_capacity = 0;
    unsigned char* shared_start = nullptr;
    std::vector<unsigned char> signal_stack;

    Worker() : signal_stack(1 << 16) {
        stack_t alternate{};
        alternate.ss_sp = signal_stack.data();
        alternate.ss_size = signal_stack.size();
        sigaltstack(&alternate, nullptr);  // a fiber's stack overflow still reaches the SIGSEGV handler
    }
    ~Worker() {
        for (auto& fiber : fibers) unmap_guarded(fiber->stack, FIBER_STACK_BYTES);
        if (shared) unmap_guarded(shared, shared_capacity);
    }
};
thread_local Worker* worker = nullptr;

Worker& this_worker() {
    static thread_local std::unique_ptr<Worker> owned;
    if (!owned) owned = std::make_unique<Worker>();
    worker = owned.get();
    return *owned;
}

std::string where() {
    const Worker* w = worker;
    if (!w || !w->current) return "outside any kernel";
    const uint3 t = w->current->index;
    return format("kernel %s in %s, block (%u, %u, %u), thread (%u, %u, %u)", w->kernel, w->caller, blockIdx.x,
                  blockIdx.y, blockIdx.z, t.x, t.y, t.z);
}

Fiber& running_fiber(const char* what) {
    if (!worker || !worker->current) {
        report(format("%s called outside a kernel", what));
        std::abort();
    }
    return *worker->current;
}

void resume(Worker& w, Fiber& from, Fiber& to) {
    w.current = &to;
    threadIdx = to.index;
    switch_context(from.context, to.context);
}

std::string describe_waits(const Worker& w) {
    int at_block = 0, at_warp = 0;
    std::string warps;
    for (const auto& fiber : w.fibers) {
        if (fiber->linear >= w.count) break;
        at_block += fiber->state == Fiber::State::block_barrier;
        at_warp += fiber->state == Fiber::State::warp_barrier;
    }
    for (size_t i = 0; i < w.warps.size(); i++)
        if (w.warps[i].arrived)
            warps += format(" warp %zu: lanes 0x%08x of mask 0x%08x at %s:%d;", i, w.warps[i].arrived, w.warps[i].mask,
                            w.warps[i].file, w.warps[i].line);
    return format("%d of %d live threads at __syncthreads (%s:%d), %d in a shuffle or __syncwarp;%s", at_block, w.live,
                  w.barrier_file ? w.barrier_file : "-", w.barrier_line, at_warp, warps.c_str());
}

// The order in which ready fibers run, from CUDA_EMULATION_ORDER: forward (thread 0 first, the default),
// reverse, or random. Between two barriers a thread sees the writes of the threads that ran before it, so
// a missing barrier shows as results that depend on the order.
enum class Order { forward, reverse, random };
Order order() {
    static const Order chosen = [] {
        const char* value = std::getenv("CUDA_EMULATION_ORDER");
        const std::string name = value ? value : "forward";
        if (name != "forward" && name != "reverse" && name != "random") {
            report("CUDA_EMULATION_ORDER is forward, reverse or random, not " + name);
            std::exit(2);
        }
        return name == "reverse" ? Order::reverse : name == "random" ? Order::random : Order::forward;
    }();
    return chosen;
}
// The fiber `step` places after `from` in the running order (step = count: from itself).
int next_in_order(const Worker& w, int from, int step) {
    static thread_local uint64_t random_state = 0x9E3779B97F4A7C15ull;
    switch (order()) {
        case Order::forward: return (from + step) % w.count;
        case Order::reverse: return (from - step % w.count + w.count) % w.count;
        case Order::random: break;
    }
    if (step == 1) {  // a new random starting offset for each search (xorshift)
        random_state ^= random_state << 13;
        random_state ^= random_state >> 7;
        random_state ^= random_state << 17;
    }
    return int((from + step + random_state % uint64_t(w.count)) % w.count);
}

// Runs the next ready fiber in the running order (self itself last); self must be waiting or done.
// Returns when self runs again.
void switch_away(Fiber& self) {
    Worker& w = *worker;
    for (int step = 1; step <= w.count; step++) {
        Fiber& next = *w.fibers[next_in_order(w, self.linear, step)];
        if (next.state != Fiber::State::ready) continue;
        if (&next != &self) resume(w, self, next);
        return;
    }
    if (w.live == 0) {  // self was the last to finish
        w.current = nullptr;
        switch_context(self.context, w.scheduler);
    }
    fault("deadlock: %s", describe_waits(w).c_str());
}

void release_block_barrier(Worker& w) {
    int any = 0, all = 1, count = 0;
    for (int i = 0; i < w.count; i++) {
        const Fiber& f = *w.fibers[i];
        if (f.state != Fiber::State::block_barrier) continue;
        any |= f.vote != 0;
        all &= f.vote != 0;
        count += f.vote != 0;
    }
    for (int i = 0; i < w.count; i++) {
        Fiber& f = *w.fibers[i];
        if (f.state != Fiber::State::block_barrier) continue;
        f.state = Fiber::State::ready;
        f.vote_result = f.vote_result == int(Vote::any) ? any : f.vote_result == int(Vote::all) ? all : count;
    }
    w.at_barrier = 0;
    if (race_detection::enabled) race_detection::barrier_released();
}

// The lanes of mask must exist and not have exited.
void check_lanes(const Worker& w, int warp, unsigned mask, const char* what) {
    for (int lane = 0; lane < 32; lane++) {
        if (!(mask >> lane & 1)) continue;
        const int linear = warp * 32 + lane;
        if (linear >= w.count)
            fault("%s with mask 0x%08x names lane %d, which this block (%d threads) does not have", what, mask, lane,
                  w.count);
        if (w.fibers[linear]->state == Fiber::State::done)
            fault("%s with mask 0x%08x names lane %d, which has exited", what, mask, lane);
    }
}

// orders_memory: a __syncwarp, which orders the lanes' memory accesses; a shuffle does not.
void arrive_at_warp_barrier(Fiber& self, unsigned mask, const char* file, int line, const char* what,
                            bool orders_memory) {
    Worker& w = *worker;
    const int lane = self.linear % 32, warp_index = self.linear / 32;
    Warp& warp = w.warps[warp_index];
    if (!(mask >> lane & 1)) fault("lane %d calls %s with mask 0x%08x, which leaves it out", lane, what, mask);
    if (warp.arrived == 0) {
        check_lanes(w, warp_index, mask, what);  // a lane that exits later, while others wait, faults in finish()
        warp.mask = mask;
        warp.file = file;
        warp.line = line;
    } else if (warp.mask != mask) {
        fault("%s at %s:%d with mask 0x%08x while lanes 0x%08x wait at %s:%d with mask 0x%08x", what, file, line, mask,
              warp.arrived, warp.file, warp.line, warp.mask);
    }
    warp.arrived |= 1u << lane;
    self.state = Fiber::State::warp_barrier;
    if (warp.arrived == mask) {
        for (int l = 0; l < 32; l++)
            if (mask >> l & 1) w.fibers[warp_index * 32 + l]->state = Fiber::State::ready;
        warp.arrived = 0;
        warp.generation++;
        const int lanes = std::min(32, w.count - warp_index * 32);
        if (orders_memory && race_detection::enabled && mask == (lanes == 32 ? ~0u : (1u << lanes) - 1))
            race_detection::warp_synchronized(warp_index);
    } else {
        switch_away(self);
    }
}

void finish(Fiber& self) {
    Worker& w = *worker;
    const Warp& warp = w.warps[self.linear / 32];
    if (warp.arrived && (warp.mask >> (self.linear % 32) & 1))
        fault("exits while lanes 0x%08x of its warp wait for it (mask 0x%08x) at %s:%d", warp.arrived, warp.mask,
              warp.file, warp.line);
    self.state = Fiber::State::done;
    w.live--;
    if (w.at_barrier > 0 && w.at_barrier == w.live) release_block_barrier(w);
    switch_away(self);
}

void fiber_main() {
    Worker& w = *worker;
    w.body(w.context);
    finish(*w.current);
}

Fiber& fiber_slot(Worker& w, int i) {
    while (int(w.fibers.size()) <= i) {
        auto fiber = std::make_unique<Fiber>();
        fiber->stack = map_guarded(FIBER_STACK_BYTES);
        if (!fiber->stack) {
            report("out of memory for fiber stacks");
            std::abort();
        }
        w.fibers.push_back(std::move(fiber));
    }
    return *w.fibers[i];
}

// Runs one block to the end; false if it faulted.
bool run_block(Worker& w, const LaunchConfig& config, uint3 block) {
    block_serial++;
    blockIdx = block;
    blockDim = config.block;
    gridDim = config.grid;
    std::memset(w.shared_start, 0xFF, config.shared_bytes);
    const int count = int(config.block.x * config.block.y * config.block.z);
    for (int i = 0; i < count; i++) {
        Fiber& f = fiber_slot(w, i);
        f.linear = i;
        f.index = {i % config.block.x, i / config.block.x % config.block.y, i / (config.block.x * config.block.y)};
        f.state = Fiber::State::ready;
        make_context(f.context, f.stack, FIBER_STACK_BYTES, fiber_main);
    }
    w.warps.assign((count + 31) / 32, Warp{});
    if (race_detection::enabled) race_detection::start_block(w.shared_start, config.shared_bytes, int(w.warps.size()));
    w.count = w.live = count;
    w.at_barrier = 0;
    w.failed = false;
    Fiber& first = *w.fibers[order() == Order::forward ? 0 : next_in_order(w, 0, 1)];
    w.current = &first;
    threadIdx = first.index;
    switch_context(w.scheduler, first.context);
    w.current = nullptr;
    return !w.failed;
}

void prepare_shared_memory(Worker& w, size_t bytes) {
    const size_t needed = round_up(std::max<size_t>(bytes, 1), 128);
    if (needed > w.shared_capacity) {
        if (w.shared) unmap_guarded(w.shared, w.shared_capacity);
        w.shared_capacity = round_up(needed, page_bytes());
        w.shared = map_guarded(w.shared_capacity);
    }
    w.shared_start = w.shared + w.shared_capacity - round_up(bytes, 128);  // ends at the guard page
}

// ---- errors and handles -------------------------------------------------------------------------

thread_local cudaError_t last_error = cudaSuccess;
cudaError_t fail(cudaError_t error, const std::string& message) {
    report(message);
    last_error = error;
    return error;
}

std::mutex handles_mutex;
std::set<const void*> streams, events;
std::map<const void*, int> max_dynamic_shared;  // cudaFuncAttributeMaxDynamicSharedMemorySize by kernel

bool valid_stream(cudaStream_t stream) {
    if (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread) return true;
    std::lock_guard<std::mutex> lock(handles_mutex);
    return streams.count(stream) != 0;
}

// What else an address near the running kernel's memory can be.
std::string describe_fault(const void* address) {
    if (address == nullptr)
        return "a null pointer, or a misaligned vector access (on a GPU: misaligned address)";
    const Worker* w = worker;
    const uintptr_t a = reinterpret_cast<uintptr_t>(address), page = page_bytes();
    if (w && w->shared) {
        const uintptr_t end = reinterpret_cast<uintptr_t>(w->shared) + w->shared_capacity;
        if (a >= end && a < end + page)
            return format("%zu bytes past the end of the block's dynamic shared memory", size_t(a - end));
    }
    if (w && w->current) {
        const uintptr_t stack = reinterpret_cast<uintptr_t>(w->current->stack);
        if (a + page >= stack && a < stack) return "the emulated thread's stack overflowed";
    }
    return describe_address(address);
}

void on_segfault(int, siginfo_t* info, void*) {
    std::fprintf(stderr, "emulator: invalid memory access at %p (%s), %s\n", info->si_addr,
                 describe_fault(info->si_addr).c_str(), where().c_str());
    signal(SIGSEGV, SIG_DFL);  // returning re-runs the access, which now ends the process
}

struct InstallHandler {
    InstallHandler() {
        this_worker();  // the main thread's alternate signal stack
        struct sigaction action {};
        action.sa_sigaction = on_segfault;
        action.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigaction(SIGSEGV, &action, nullptr);
        sigaction(SIGBUS, &action, nullptr);
    }
} install_handler;

}  // namespace

// ---- the interface of cuda_emulation.h ---------------------------------------------------------------

void fault(const char* format, ...) {
    va_list args;
    va_start(args, format);
    const std::string message = vformat(format, args);
    va_end(args);
    report(where() + ": " + message);
    Worker* w = worker;
    if (!w || !w->current) std::abort();
    w->failed = true;
    Fiber& self = *w->current;
    w->current = nullptr;
    switch_context(self.context, w->scheduler);  // the block is abandoned: this fiber never resumes
    std::abort();
}

void syncthreads(const char* file, int line) { syncthreads_vote(1, Vote::any, file, line); }

int syncthreads_vote(int predicate, Vote vote, const char* file, int line) {
    Fiber& self = running_fiber("__syncthreads");
    Worker& w = *worker;
    if (w.at_barrier == 0) {
        w.barrier_file = file;
        w.barrier_line = line;
    } else if (line != w.barrier_line || std::strcmp(file, w.barrier_file) != 0) {
        fault("__syncthreads at %s:%d while %d threads wait at %s:%d (a barrier in divergent code)", file, line,
              w.at_barrier, w.barrier_file, w.barrier_line);
    }
    self.state = Fiber::State::block_barrier;
    self.vote = predicate;
    self.vote_result = int(vote);  // which reduction it asked for, until the release writes the result
    if (++w.at_barrier == w.live)
        release_block_barrier(w);
    else
        switch_away(self);
    return self.vote_result;
}

void syncwarp(unsigned mask, const char* file, int line) {
    arrive_at_warp_barrier(running_fiber("__syncwarp"), mask, file, line, "__syncwarp", true);
}

uint64_t shuffle(unsigned mask, uint64_t bits, Shuffle kind, int operand, int width, const char* file, int line) {
    Fiber& self = running_fiber("a warp shuffle");
    if (width < 1 || width > 32 || (width & (width - 1)))
        fault("shuffle width %d at %s:%d is not a power of two up to 32", width, file, line);
    Warp& warp = worker->warps[self.linear / 32];
    const int lane = self.linear % 32, group = lane / width * width;
    const uint64_t generation = warp.generation;
    warp.slots[generation & 1][lane] = bits;
    arrive_at_warp_barrier(self, mask, file, line, "a shuffle", false);
    int source = lane;
    switch (kind) {
        case Shuffle::index: source = group + ((operand % width) + width) % width; break;
        case Shuffle::up: source = lane - operand >= group ? lane - operand : lane; break;
        case Shuffle::down: source = lane + operand < group + width ? lane + operand : lane; break;
        case Shuffle::exclusive_or: source = (lane ^ operand) / width <= lane / width ? lane ^ operand : lane; break;
    }
    if (source < 0 || source > 31 || !(mask >> source & 1))
        fault("a shuffle at %s:%d reads lane %d, outside its mask 0x%08x", file, line, source, mask);
    return warp.slots[generation & 1][source];
}

int running_thread() { return worker && worker->current ? worker->current->linear : -1; }

unsigned char* dynamic_shared_memory() {
    running_fiber("dynamic shared memory");
    return worker->shared_start;
}

bool valid_pointer_argument(const char* name, int index, const void* pointer) {
    if (pointer == nullptr || is_device_pointer(pointer)) return true;
    fail(cudaErrorInvalidValue,
         format("launch of %s: argument %d (%p) is not device memory (a host pointer?)", name, index, pointer));
    return false;
}

bool valid_launch(const char* name, const void* kernel, const LaunchConfig& config) {
    const dim3 g = config.grid, b = config.block;
    const size_t threads = size_t(b.x) * b.y * b.z;
    if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535 || threads == 0 ||
        threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64)
        return fail(cudaErrorInvalidConfiguration, format("launch of %s: grid (%u, %u, %u), block (%u, %u, %u)", name,
                                                          g.x, g.y, g.z, b.x, b.y, b.z)) == cudaSuccess;
    if (!valid_stream(config.stream))
        return fail(cudaErrorInvalidResourceHandle, format("launch of %s on an unknown stream", name)) == cudaSuccess;
    if (config.shared_bytes > size_t(SHARED_MEMORY_DEFAULT)) {
        int allowed = SHARED_MEMORY_DEFAULT;
        {
            std::lock_guard<std::mutex> lock(handles_mutex);
            auto it = max_dynamic_shared.find(kernel);
            if (kernel && it != max_dynamic_shared.end()) allowed = it->second;
        }
        if (!kernel)
            return fail(cudaErrorInvalidValue,
                        format("launch of %s: %zu bytes of dynamic shared memory, and the emulator cannot tell the "
                               "kernel's cudaFuncSetAttribute (launch through a function pointer variable)",
                               name, config.shared_bytes)) == cudaSuccess;
        if (config.shared_bytes > size_t(allowed))
            return fail(cudaErrorInvalidValue,
                        format("launch of %s: %zu bytes of dynamic shared memory, the kernel is allowed %d", name,
                               config.shared_bytes, allowed)) == cudaSuccess;
    }
    return true;
}

void run_grid(const char* name, const char* caller, const LaunchConfig& config, void (*body)(void*), void* context) {
    const dim3 g = config.grid;
    const long blocks = long(g.x) * g.y * g.z;
    std::atomic<bool> failed{false};
    // the race detector's records of device memory are not shared between OS threads: one block at a time
    if (race_detection::enabled) race_detection::launch_started();
#pragma omp parallel if (blocks > 1 && !race_detection::enabled)
    {
        Worker& w = this_worker();
        w.kernel = name;
        w.caller = caller;
        w.body = body;
        w.context = context;
        prepare_shared_memory(w, config.shared_bytes);
#pragma omp for schedule(dynamic)
        for (long i = 0; i < blocks; i++) {
            if (failed) continue;
            const uint3 block{unsigned(i % g.x), unsigned(i / g.x % g.y), unsigned(i / (long(g.x) * g.y))};
            if (!run_block(w, config, block)) failed = true;
        }
    }
    if (failed) last_error = cudaErrorLaunchFailure;
}

}  // namespace cuda_emulation

void nvcuda::wmma::detail::check_operand(const void* pointer, size_t ldm_bytes, const char* what) {
    if (reinterpret_cast<uintptr_t>(pointer) % 32 != 0)
        cuda_emulation::fault("%s: pointer %p is not 256-bit aligned", what, pointer);
    if (ldm_bytes % 16 != 0)
        cuda_emulation::fault("%s: the leading dimension (%zu bytes) is not a multiple of 16 bytes", what, ldm_bytes);
}

void nvcuda::wmma::detail::multiply(float d[16][16], const float a[16][16], const float b[16][16],
                                    const float c[16][16]) {
    using namespace cuda_emulation;
    Fiber& lane = running_fiber("mma_sync");
    Warp& warp = worker->warps[lane.linear / 32];
    if (lane.product_generation != warp.generation) {
        lane.product_generation = warp.generation;
        lane.products = 0;
    }
    const int n = lane.products++;
    Warp::Product* product = n < int(std::size(warp.products)) ? &warp.products[n] : nullptr;
    if (product && product->filled && std::memcmp(product->inputs[0], a, sizeof product->inputs[0]) == 0 &&
        std::memcmp(product->inputs[1], b, sizeof product->inputs[1]) == 0 &&
        std::memcmp(product->inputs[2], c, sizeof product->inputs[2]) == 0) {
        std::memcpy(d, product->result, sizeof product->result);
        return;
    }
    // products exact (bf16 x bf16 fits a float), the sum in double, rounded once to float
    float result[16][16];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            double sum = c[i][j];
            for (int k = 0; k < 16; k++) sum += double(a[i][k]) * b[k][j];
            result[i][j] = float(sum);
        }
    if (product) {
        std::memcpy(product->inputs[0], a, sizeof product->inputs[0]);
        std::memcpy(product->inputs[1], b, sizeof product->inputs[1]);
        std::memcpy(product->inputs[2], c, sizeof product->inputs[2]);
        std::memcpy(product->result, result, sizeof result);
        product->filled = true;
    }
    std::memcpy(d, result, sizeof result);
}

void nvcuda::wmma::detail::warp_collective(const char* what) { cuda_emulation::syncwarp(0xffffffffu, what, 0); }

// ---- the CUDA runtime API --------------------------------------------------------------------------------

using cuda_emulation::fail;
using cuda_emulation::format;

cudaError_t cudaGetLastError() {
    const cudaError_t error = cuda_emulation::last_error;
    cuda_emulation::last_error = cudaSuccess;
    return error;
}
cudaError_t cudaPeekAtLastError() { return cuda_emulation::last_error; }

const char* cudaGetErrorString(cudaError_t error) {
    switch (error) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
        case cudaErrorInvalidResourceHandle: return "invalid resource handle";
        case cudaErrorLaunchFailure: return "unspecified launch failure (emulated: see the emulator's message)";
        case cudaErrorNotSupported: return "operation not supported";
        default: return "unknown error";
    }
}
const char* cudaGetErrorName(cudaError_t error) { return cudaGetErrorString(error); }

cudaError_t cudaGetDeviceCount(int* count) {
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
    *device = 0;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
    return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice, format("cudaSetDevice(%d): one device", device));
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
    if (device != 0) return fail(cudaErrorInvalidDevice, format("cudaGetDeviceProperties(%d)", device));
    std::memset(prop, 0, sizeof *prop);
    std::snprintf(prop->name, sizeof prop->name, "NVIDIA H100 80GB HBM3 (CPU emulation)");
    prop->totalGlobalMem = cuda_emulation::DEVICE_MEMORY;
    prop->sharedMemPerBlock = cuda_emulation::SHARED_MEMORY_DEFAULT;
    prop->sharedMemPerBlockOptin = cuda_emulation::SHARED_MEMORY_OPTIN;
    prop->regsPerBlock = 65536;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
    prop->maxThreadsDim[2] = 64;
    prop->maxGridSize[0] = 0x7fffffff;
    prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = cuda_emulation::MULTIPROCESSORS;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
    if (device != 0) return fail(cudaErrorInvalidDevice, format("cudaDeviceGetAttribute(device %d)", device));
    switch (attr) {
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = cuda_emulation::SHARED_MEMORY_OPTIN; break;
        case cudaDevAttrMaxSharedMemoryPerBlock: *value = cuda_emulation::SHARED_MEMORY_DEFAULT; break;
        case cudaDevAttrMultiProcessorCount: *value = cuda_emulation::MULTIPROCESSORS; break;
        case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
        case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
        case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
        default: return fail(cudaErrorInvalidValue, format("cudaDeviceGetAttribute(%d) is not emulated", int(attr)));
    }
    return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
        return fail(cudaErrorInvalidValue, format("cudaFuncSetAttribute(%d) is not emulated", int(attr)));
    if (value < 0 || value > cuda_emulation::SHARED_MEMORY_OPTIN)
        return fail(cudaErrorInvalidValue, format("cudaFuncSetAttribute: %d bytes of dynamic shared memory, the "
                                                  "device allows %d", value, cuda_emulation::SHARED_MEMORY_OPTIN));
    std::lock_guard<std::mutex> lock(cuda_emulation::handles_mutex);
    cuda_emulation::max_dynamic_shared[func] = value;
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
    std::lock_guard<std::mutex> lock(cuda_emulation::allocations_mutex);
    *total = cuda_emulation::DEVICE_MEMORY;
    *free = cuda_emulation::DEVICE_MEMORY - cuda_emulation::allocated_bytes;
    return cudaSuccess;
}

// Each buffer ends (after rounding to 256 bytes, cudaMalloc's alignment) at an inaccessible page.
cudaError_t cudaMalloc(void** pointer, size_t bytes) {
    using namespace cuda_emulation;
    if (!pointer) return fail(cudaErrorInvalidValue, "cudaMalloc(nullptr, ...)");
    *pointer = nullptr;
    if (bytes == 0) return cudaSuccess;
    const size_t rounded = round_up(bytes, 256);
    {
        std::lock_guard<std::mutex> lock(allocations_mutex);
        if (allocated_bytes + rounded > DEVICE_MEMORY) {
            last_error = cudaErrorMemoryAllocation;
            return cudaErrorMemoryAllocation;
        }
        allocated_bytes += rounded;
    }
    const size_t usable_bytes = round_up(rounded, page_bytes());
    unsigned char* usable = map_guarded(usable_bytes);
    if (!usable) {
        std::lock_guard<std::mutex> lock(allocations_mutex);
        allocated_bytes -= rounded;
        last_error = cudaErrorMemoryAllocation;
        return cudaErrorMemoryAllocation;
    }
    unsigned char* start = usable + usable_bytes - rounded;
    std::memset(start, 0xFF, rounded);  // NaN in float and bf16: unwritten memory shows
    std::lock_guard<std::mutex> lock(allocations_mutex);
    allocations[reinterpret_cast<uintptr_t>(start)] = {usable, usable_bytes, bytes};
    if (race_detection::enabled) race_detection::device_buffer_allocated(start, bytes);
    *pointer = start;
    return cudaSuccess;
}

cudaError_t cudaFree(void* pointer) {
    using namespace cuda_emulation;
    if (!pointer) return cudaSuccess;
    std::lock_guard<std::mutex> lock(allocations_mutex);
    auto it = allocations.find(reinterpret_cast<uintptr_t>(pointer));
    if (it == allocations.end())
        return fail(cudaErrorInvalidValue, format("cudaFree(%p): not the start of a device buffer", pointer));
    unmap_guarded(it->second.usable, it->second.usable_bytes);
    allocated_bytes -= round_up(it->second.bytes, 256);
    allocations.erase(it);
    if (race_detection::enabled) race_detection::device_buffer_freed(pointer);
    return cudaSuccess;
}

namespace {
// Direction and bounds of a copy, against the live allocations.
cudaError_t check_copy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
    using namespace cuda_emulation;
    const bool dst_device = is_device_pointer(dst), src_device = is_device_pointer(src);
    bool dst_want = dst_device, src_want = src_device;
    switch (kind) {
        case cudaMemcpyHostToDevice: dst_want = true, src_want = false; break;
        case cudaMemcpyDeviceToHost: dst_want = false, src_want = true; break;
        case cudaMemcpyDeviceToDevice: dst_want = src_want = true; break;
        case cudaMemcpyHostToHost: dst_want = src_want = false; break;
        default: break;  // cudaMemcpyDefault: from the pointers
    }
    if (dst_want != dst_device || src_want != src_device)
        return fail(cudaErrorInvalidValue, format("cudaMemcpy of %zu bytes, kind %d: destination %p is %s, source %p "
                                                  "is %s", count, int(kind), dst, dst_device ? "device" : "host", src,
                                                  src_device ? "device" : "host"));
    if ((dst_device && !is_device_range(dst, count)) || (src_device && !is_device_range(src, count)))
        return fail(cudaErrorInvalidValue,
                    format("cudaMemcpy of %zu bytes from %p to %p runs past the end of a device buffer", count, src, dst));
    return cudaSuccess;
}
}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
    if (count == 0) return cudaSuccess;
    if (const cudaError_t error = check_copy(dst, src, count, kind)) return error;
    std::memmove(dst, src, count);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
    if (!cuda_emulation::valid_stream(stream))
        return fail(cudaErrorInvalidResourceHandle, "cudaMemcpyAsync on an unknown stream");
    return cudaMemcpy(dst, src, count, kind);
}
cudaError_t cudaMemset(void* pointer, int value, size_t count) {
    if (count == 0) return cudaSuccess;
    if (!cuda_emulation::is_device_range(pointer, count))
        return fail(cudaErrorInvalidValue, format("cudaMemset of %zu bytes at %p: not inside a device buffer", count,
                                                  pointer));
    std::memset(pointer, value, count);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* pointer, int value, size_t count, cudaStream_t stream) {
    if (!cuda_emulation::valid_stream(stream))
        return fail(cudaErrorInvalidResourceHandle, "cudaMemsetAsync on an unknown stream");
    return cudaMemset(pointer, value, count);
}

// Streams and events are handles only: every operation has finished when its call returns.
namespace {
cudaError_t create_handle(std::set<const void*>& handles, void** handle) {
    std::lock_guard<std::mutex> lock(cuda_emulation::handles_mutex);
    *handle = new char;
    handles.insert(*handle);
    return cudaSuccess;
}
cudaError_t destroy_handle(std::set<const void*>& handles, void* handle, const char* what) {
    std::lock_guard<std::mutex> lock(cuda_emulation::handles_mutex);
    if (!handles.erase(handle)) {
        cuda_emulation::last_error = cudaErrorInvalidResourceHandle;
        cuda_emulation::report(format("%s of an unknown handle %p", what, handle));
        return cudaErrorInvalidResourceHandle;
    }
    delete static_cast<char*>(handle);
    return cudaSuccess;
}
bool valid_event(cudaEvent_t event) {
    std::lock_guard<std::mutex> lock(cuda_emulation::handles_mutex);
    return cuda_emulation::events.count(event) != 0;
}
}  // namespace

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
    return create_handle(cuda_emulation::streams, reinterpret_cast<void**>(stream));
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) { return cudaStreamCreate(stream); }
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    return destroy_handle(cuda_emulation::streams, stream, "cudaStreamDestroy");
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    return cuda_emulation::valid_stream(stream) ? cudaSuccess
                                                : fail(cudaErrorInvalidResourceHandle, "cudaStreamSynchronize");
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
    return cuda_emulation::valid_stream(stream) && valid_event(event)
               ? cudaSuccess
               : fail(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent");
}
cudaError_t cudaEventCreate(cudaEvent_t* event) {
    return create_handle(cuda_emulation::events, reinterpret_cast<void**>(event));
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned) { return cudaEventCreate(event); }
cudaError_t cudaEventDestroy(cudaEvent_t event) {
    return destroy_handle(cuda_emulation::events, event, "cudaEventDestroy");
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    return cuda_emulation::valid_stream(stream) && valid_event(event)
               ? cudaSuccess
               : fail(cudaErrorInvalidResourceHandle, "cudaEventRecord");
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
    return valid_event(event) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle, "cudaEventQuery");
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) { return cudaEventQuery(event); }

// ---- cuBLASLt ----------------------------------------------------------------------------------------------

namespace {

struct MatmulDesc {
    int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
    uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    const void* bias = nullptr;
    void* aux = nullptr;
    int64_t aux_ld = 0;
};
struct Layout {
    cudaDataType type;
    uint64_t rows, cols;
    int64_t ld;
};
struct Preference {};

MatmulDesc& desc_of(cublasLtMatmulDesc_t d) { return *reinterpret_cast<MatmulDesc*>(d); }
const Layout& layout_of(cublasLtMatrixLayout_t l) { return *reinterpret_cast<const Layout*>(l); }

cublasStatus_t blas_error(cublasStatus_t status, const std::string& message) {
    cuda_emulation::report("cuBLASLt: " + message);
    return status;
}

size_t element_bytes(cudaDataType type) { return type == CUDA_R_16BF ? 2 : 4; }
float load(const void* p, cudaDataType type, size_t i) {
    return type == CUDA_R_16BF ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i])
                               : static_cast<const float*>(p)[i];
}
void store(void* p, cudaDataType type, size_t i, float x) {
    if (type == CUDA_R_16BF)
        static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(x);
    else
        static_cast<float*>(p)[i] = x;
}
// the bytes a column-major rows x cols matrix with leading dimension ld spans
size_t span_bytes(const Layout& l) { return ((l.cols - 1) * size_t(l.ld) + l.rows) * element_bytes(l.type); }

bool has_bias(uint32_t epilogue) { return epilogue == CUBLASLT_EPILOGUE_BIAS || epilogue == CUBLASLT_EPILOGUE_GELU_BIAS ||
                                          epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS; }
bool has_gelu(uint32_t epilogue) { return epilogue & CUBLASLT_EPILOGUE_GELU; }
bool has_aux(uint32_t epilogue) {
    return epilogue == CUBLASLT_EPILOGUE_GELU_AUX || epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}

// The rules of cublasLt.h for D = epilogue(alpha op(A) op(B) + beta C): shapes, leading dimensions, types, the
// epilogue's inputs. k is returned.
cublasStatus_t validate(const MatmulDesc& d, const Layout& a, const Layout& b, const Layout& c, const Layout& out,
                        uint64_t& k) {
    const bool ta = d.transa != CUBLAS_OP_N, tb = d.transb != CUBLAS_OP_N;
    for (const Layout* l : {&a, &b, &c, &out})
        if (l->rows == 0 || l->cols == 0 || l->ld < int64_t(l->rows))
            return blas_error(CUBLAS_STATUS_INVALID_VALUE, format("a %llu x %llu matrix with leading dimension %lld",
                                                                  (unsigned long long)l->rows,
                                                                  (unsigned long long)l->cols, (long long)l->ld));
    const uint64_t m = out.rows, n = out.cols, a_rows = ta ? a.cols : a.rows, b_cols = tb ? b.rows : b.cols;
    k = ta ? a.rows : a.cols;
    const uint64_t b_k = tb ? b.cols : b.rows;
    if (a_rows != m || b_cols != n || b_k != k || c.rows != m || c.cols != n)
        return blas_error(CUBLAS_STATUS_INVALID_VALUE,
                          format("shapes do not match: op(A) %llu x %llu, op(B) %llu x %llu, C %llu x %llu, D %llu x %llu",
                                 (unsigned long long)a_rows, (unsigned long long)k, (unsigned long long)b_k,
                                 (unsigned long long)b_cols, (unsigned long long)c.rows, (unsigned long long)c.cols,
                                 (unsigned long long)m, (unsigned long long)n));
    if (a.type != b.type || c.type != out.type || (a.type != CUDA_R_16BF && a.type != CUDA_R_32F) ||
        (a.type == CUDA_R_32F && out.type != CUDA_R_32F))
        return blas_error(CUBLAS_STATUS_NOT_SUPPORTED, "these data types are not emulated");
    switch (d.epilogue) {
        case CUBLASLT_EPILOGUE_DEFAULT:
        case CUBLASLT_EPILOGUE_BIAS:
        case CUBLASLT_EPILOGUE_GELU:
        case CUBLASLT_EPILOGUE_GELU_BIAS:
        case CUBLASLT_EPILOGUE_GELU_AUX:
        case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: break;
        default: return blas_error(CUBLAS_STATUS_NOT_SUPPORTED, format("epilogue %u is not emulated", d.epilogue));
    }
    if (has_bias(d.epilogue) && !d.bias)
        return blas_error(CUBLAS_STATUS_INVALID_VALUE, "a bias epilogue without CUBLASLT_MATMUL_DESC_BIAS_POINTER");
    if (has_aux(d.epilogue)) {
        if (!d.aux)
            return blas_error(CUBLAS_STATUS_INVALID_VALUE, "a GELU_AUX epilogue without an aux pointer");
        if (d.aux_ld % 8 != 0 || d.aux_ld < int64_t(m))
            return blas_error(CUBLAS_STATUS_INVALID_VALUE,
                              format("aux leading dimension %lld: must be divisible by 8 and at least the %llu rows of D",
                                     (long long)d.aux_ld, (unsigned long long)m));
    }
    return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
    *handle = reinterpret_cast<cublasLtHandle_t>(new char);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
    delete reinterpret_cast<char*>(handle);
    return CUBLAS_STATUS_SUCCESS;
}
const char* cublasLtGetStatusString(cublasStatus_t status) {
    switch (status) {
        case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
        default: return "a cuBLAS error";
    }
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
    if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F)
        return blas_error(CUBLAS_STATUS_NOT_SUPPORTED, "only CUBLAS_COMPUTE_32F with float scales is emulated");
    *desc = reinterpret_cast<cublasLtMatmulDesc_t>(new MatmulDesc);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
    delete reinterpret_cast<MatmulDesc*>(desc);
    return CUBLAS_STATUS_SUCCESS;
}

// Each attribute with the size cublasLt.h documents for it.
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buffer, size_t bytes) {
    MatmulDesc& d = desc_of(desc);
    auto take = [&](auto& field) {
        if (bytes != sizeof field)
            return blas_error(CUBLAS_STATUS_INVALID_VALUE,
                              format("attribute %d set with %zu bytes, it has %zu", int(attr), bytes, sizeof field));
        std::memcpy(&field, buffer, bytes);
        return CUBLAS_STATUS_SUCCESS;
    };
    switch (attr) {
        case CUBLASLT_MATMUL_DESC_TRANSA: return take(d.transa);
        case CUBLASLT_MATMUL_DESC_TRANSB: return take(d.transb);
        case CUBLASLT_MATMUL_DESC_EPILOGUE: return take(d.epilogue);
        case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return take(d.bias);
        case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return take(d.aux);
        case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return take(d.aux_ld);
        default: return blas_error(CUBLAS_STATUS_NOT_SUPPORTED, format("matmul attribute %d is not emulated", int(attr)));
    }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
    if (type != CUDA_R_16BF && type != CUDA_R_32F)
        return blas_error(CUBLAS_STATUS_NOT_SUPPORTED, format("data type %d is not emulated", int(type)));
    *layout = reinterpret_cast<cublasLtMatrixLayout_t>(new Layout{type, rows, cols, ld});
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
    delete reinterpret_cast<Layout*>(layout);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* preference) {
    *preference = reinterpret_cast<cublasLtMatmulPreference_t>(new Preference);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t preference) {
    delete reinterpret_cast<Preference*>(preference);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void*, size_t bytes) {
    switch (attr) {
        case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
            return bytes == sizeof(uint64_t) ? CUBLAS_STATUS_SUCCESS
                                             : blas_error(CUBLAS_STATUS_INVALID_VALUE, "workspace size is a uint64_t");
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
            return bytes == sizeof(uint32_t) ? CUBLAS_STATUS_SUCCESS
                                             : blas_error(CUBLAS_STATUS_INVALID_VALUE, "alignments are uint32_t");
        default: return blas_error(CUBLAS_STATUS_NOT_SUPPORTED, format("preference %d is not emulated", int(attr)));
    }
}

// One "algorithm" for every valid problem.
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* found) {
    uint64_t k = 0;
    const cublasStatus_t status = validate(desc_of(desc), layout_of(a), layout_of(b), layout_of(c), layout_of(d), k);
    *found = 0;
    if (status != CUBLAS_STATUS_SUCCESS) return status;
    if (requested < 1) return blas_error(CUBLAS_STATUS_INVALID_VALUE, "requested no algorithm");
    std::memset(&results[0], 0, sizeof results[0]);
    results[0].state = CUBLAS_STATUS_SUCCESS;
    *found = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void* alpha_pointer, const void* A,
                              cublasLtMatrixLayout_t a_desc, const void* B, cublasLtMatrixLayout_t b_desc,
                              const void* beta_pointer, const void* C, cublasLtMatrixLayout_t c_desc, void* D,
                              cublasLtMatrixLayout_t d_desc, const cublasLtMatmulAlgo_t*, void*, size_t,
                              cudaStream_t stream) {
    using cuda_emulation::is_device_range;
    const MatmulDesc& d = desc_of(desc);
    const Layout &a = layout_of(a_desc), &b = layout_of(b_desc), &c = layout_of(c_desc), &out = layout_of(d_desc);
    uint64_t k = 0;
    if (const cublasStatus_t status = validate(d, a, b, c, out, k)) return status;
    if (!cuda_emulation::valid_stream(stream)) return blas_error(CUBLAS_STATUS_INVALID_VALUE, "an unknown stream");
    // alpha and beta in host memory (the default pointer mode)
    if (cuda_emulation::is_device_pointer(alpha_pointer) || cuda_emulation::is_device_pointer(beta_pointer))
        return blas_error(CUBLAS_STATUS_INVALID_VALUE, "alpha and beta must be host pointers");
    const float alpha = *static_cast<const float*>(alpha_pointer), beta = *static_cast<const float*>(beta_pointer);
    if (C == D && (c.ld != out.ld || c.type != out.type))
        return blas_error(CUBLAS_STATUS_INVALID_VALUE, "in place (C == D) needs the same layout for C and D");
    const uint64_t m = out.rows, n = out.cols;
    const Layout bias_layout{out.type, m, 1, int64_t(m)}, aux_layout{out.type, m, n, d.aux_ld};
    if (!is_device_range(A, span_bytes(a)) || !is_device_range(B, span_bytes(b)) ||
        !is_device_range(D, span_bytes(out)) || (beta != 0.0f && !is_device_range(C, span_bytes(c))) ||
        (has_bias(d.epilogue) && !is_device_range(d.bias, span_bytes(bias_layout))) ||
        (has_aux(d.epilogue) && !is_device_range(d.aux, span_bytes(aux_layout))))
        return blas_error(CUBLAS_STATUS_INVALID_VALUE, "a matrix, the bias or the aux buffer is not inside a device buffer");

    // op(A) as row-major m x k and op(B) as column-major k x n, so that the sums run along contiguous rows
    std::vector<float> op_a(m * k), op_b(k * n);
    const bool ta = d.transa != CUBLAS_OP_N, tb = d.transb != CUBLAS_OP_N;
    for (uint64_t i = 0; i < m; i++)
        for (uint64_t p = 0; p < k; p++) op_a[i * k + p] = load(A, a.type, ta ? p + i * a.ld : i + p * a.ld);
    for (uint64_t j = 0; j < n; j++)
        for (uint64_t p = 0; p < k; p++) op_b[j * k + p] = load(B, b.type, tb ? j + p * b.ld : p + j * b.ld);
#pragma omp parallel for
    for (int64_t j = 0; j < int64_t(n); j++) {
        for (uint64_t i = 0; i < m; i++) {
            float sum = 0.0f;
            for (uint64_t p = 0; p < k; p++) sum += op_a[i * k + p] * op_b[j * k + p];
            float x = alpha * sum;
            if (beta != 0.0f) x += beta * load(C, c.type, i + j * c.ld);  // C is not read when beta is 0
            if (has_bias(d.epilogue)) x += load(d.bias, out.type, i);
            if (has_aux(d.epilogue)) store(d.aux, out.type, i + j * d.aux_ld, x);
            if (has_gelu(d.epilogue)) x = 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
            store(D, out.type, i + j * out.ld, x);
        }
    }
    return CUBLAS_STATUS_SUCCESS;
}

// ---- NCCL, one rank ------------------------------------------------------------------------------------

struct ncclComm {};

namespace {
size_t nccl_bytes(ncclDataType_t type) {
    switch (type) {
        case ncclInt8: case ncclUint8: return 1;
        case ncclFloat16: case ncclBfloat16: return 2;
        case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
        default: return 8;
    }
}
ncclResult_t nccl_error(ncclResult_t result, const std::string& message) {
    cuda_emulation::report("NCCL: " + message);
    return result;
}
// With one rank every collective copies count elements from send to recv (the same buffer when in place).
ncclResult_t one_rank_copy(const void* send, void* recv, size_t count, ncclDataType_t type, cudaStream_t stream,
                           const char* what) {
    const size_t bytes = count * nccl_bytes(type);
    if (!cuda_emulation::valid_stream(stream)) return nccl_error(ncclInvalidArgument, format("%s on an unknown stream", what));
    if (!cuda_emulation::is_device_range(send, bytes) || !cuda_emulation::is_device_range(recv, bytes))
        return nccl_error(ncclInvalidArgument, format("%s of %zu bytes: a buffer is not inside device memory", what, bytes));
    const auto s = reinterpret_cast<uintptr_t>(send), r = reinterpret_cast<uintptr_t>(recv);
    if (s != r && s < r + bytes && r < s + bytes)
        return nccl_error(ncclInvalidArgument, format("%s: the buffers overlap without being in place", what));
    std::memmove(recv, send, bytes);
    return ncclSuccess;
}
}  // namespace

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
    std::memset(id, 0, sizeof *id);
    return ncclSuccess;
}
ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId, int rank, ncclConfig_t*) {
    if (nranks != 1 || rank != 0)
        return nccl_error(ncclInvalidUsage, format("only one rank is emulated (rank %d of %d)", rank, nranks));
    *comm = new ncclComm;
    return ncclSuccess;
}
ncclResult_t ncclCommAbort(ncclComm_t comm) {
    delete comm;
    return ncclSuccess;
}
ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t* error) {
    *error = ncclSuccess;
    return ncclSuccess;
}
const char* ncclGetErrorString(ncclResult_t result) { return result == ncclSuccess ? "no error" : "an NCCL error"; }
const char* ncclGetLastError(ncclComm_t) { return ""; }
ncclResult_t ncclGroupStart() { return ncclSuccess; }
ncclResult_t ncclGroupEnd() { return ncclSuccess; }

// avg, sum, min, max and prod over one rank are the values themselves
ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t, ncclComm_t,
                           cudaStream_t stream) {
    return one_rank_copy(send, recv, count, type, stream, "ncclAllReduce");
}
ncclResult_t ncclReduce(const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t, int root,
                        ncclComm_t, cudaStream_t stream) {
    if (root != 0) return nccl_error(ncclInvalidArgument, format("ncclReduce to root %d of one rank", root));
    return one_rank_copy(send, recv, count, type, stream, "ncclReduce");
}
ncclResult_t ncclAllGather(const void* send, void* recv, size_t sendcount, ncclDataType_t type, ncclComm_t,
                           cudaStream_t stream) {
    return one_rank_copy(send, recv, sendcount, type, stream, "ncclAllGather");
}
