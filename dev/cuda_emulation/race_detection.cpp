// race_detection.cpp: finds data races on shared memory in emulated kernels, what compute-sanitizer's
// racecheck finds on a GPU, for machines without one (`make emulate-check` runs build/test_gpu_racecheck).
//
// How: the kernels are compiled by g++ with -fsanitize=thread, which puts a call to __tsan_read4(address),
// __tsan_write2(address), ... before every load and store it cannot prove private to the thread. libtsan
// is not linked; this file implements those calls itself. An access inside the running block's shared
// memory (the dynamic array and the block's __shared__ variables) is recorded per byte: who made it
// (the emulated thread, or a warp for a wmma load or store, which all its lanes make together), in which
// barrier interval of the block (the __syncthreads between two barriers), and after how many
// memory-ordering syncs of the thread's warp. Two accesses to the same byte race when they come from
// different threads, at least one writes, and nothing orders them: no __syncthreads between them and,
// for two threads of one warp, no __syncwarp (or wmma operation) of the whole warp either. Warp shuffles
// and votes do not order memory (the CUDA guide: they imply no memory barrier), so they do not count.
// The first race ends the launch with a failure naming both threads, the byte and, through addr2line,
// the source line of each access (the instrumented code is compiled with -g).
//
// Per byte it keeps the last write and two reads of the current interval (the last reader and the last
// different one), which finds every read-write and write-write race except a write racing only with a
// reader that two later different readers displaced. Records of earlier intervals and blocks read as
// ordered because intervals are numbered across all the blocks an OS thread runs, so nothing is reset.
// Not checked: global memory (no two threads of a launch may race there either, but that is left to the
// real racecheck's sibling tools), atomics (none in the kernels), syncwarp with a partial mask (treated as
// ordering nothing: conservative).
#include <dlfcn.h>
#include <unistd.h>

#include <cstdint>
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cuda_emulation.h"

namespace cuda_emulation::race_detection {

bool enabled = false;

namespace {

// A thread id at or above COLLECTIVE is warp (id - COLLECTIVE) making a wmma load or store.
constexpr int32_t COLLECTIVE = 1 << 20;
constexpr int32_t NOBODY = -1;

struct Access {
    int32_t thread = NOBODY;
    uint32_t interval = 0, warp_syncs = 0;
    uint32_t code = 0;  // the accessing instruction, as an offset into the executable (for addr2line)
};
struct ByteRecord {
    Access write, read, other_read;
};
struct Region {
    const unsigned char* begin = nullptr;
    size_t bytes = 0;
    ByteRecord* records = nullptr;
    bool dynamic = false;
};

// Per OS thread: the block it runs (its fibers share the thread).
struct BlockState {
    uintptr_t executable_base = 0;
    uint32_t interval = 0;
    std::vector<uint32_t> warp_syncs;
    std::vector<ByteRecord> dynamic_records;
    std::vector<Region> regions;                                    // [0]: the dynamic shared memory
    std::map<const void*, std::vector<ByteRecord>> variable_records;  // by storage, reused by later blocks
};
// A pointer: thread_local objects with constructors cost a call to their initialiser at every use.
thread_local BlockState* running_block = nullptr;
BlockState& this_block() {
    static thread_local std::unique_ptr<BlockState> owned;
    if (!owned) owned = std::make_unique<BlockState>();
    return *(running_block = owned.get());
}

int warp_of(int32_t thread) { return thread >= COLLECTIVE ? thread - COLLECTIVE : thread / 32; }

inline bool ordered(const Access& earlier, const Access& now) {
    if (earlier.thread == NOBODY || earlier.interval != now.interval || earlier.thread == now.thread) return true;
    return warp_of(earlier.thread) == warp_of(now.thread) && earlier.warp_syncs != now.warp_syncs;
}

uintptr_t executable_base() {
    static const uintptr_t base = [] {
        Dl_info info{};
        dladdr(reinterpret_cast<const void*>(&executable_base), &info);
        return reinterpret_cast<uintptr_t>(info.dli_fbase);
    }();
    return base;
}

// "file:line" of the instruction at code, relative to the working directory, and of up to two calls it
// is inlined into ("a.cuh:12 < b.cuh:40"): the project's frames only (not the emulator's or the system's).
std::string source_of(uint32_t code) {
    char executable[4096] = {}, directory[4096] = {};
    if (readlink("/proc/self/exe", executable, sizeof executable - 1) <= 0 || !getcwd(directory, sizeof directory))
        return "?";
    char address[32];
    std::snprintf(address, sizeof address, "0x%x", code);
    const std::string command = "addr2line -ie '" + std::string(executable) + "' " + address + " 2>/dev/null";
    FILE* pipe = popen(command.c_str(), "r");
    if (!pipe) return "?";
    const std::string prefix = std::string(directory) + "/";
    std::string frames;
    int kept = 0;
    bool ended = false;
    char line[4096];
    while (std::fgets(line, sizeof line, pipe)) {
        std::string frame(line);
        frame.erase(std::min(frame.find(" (discriminator"), frame.find('\n')));
        if (frame.compare(0, prefix.size(), prefix) == 0) frame.erase(0, prefix.size());
        if (frame.compare(0, 2, "./") == 0) frame.erase(0, 2);
        const bool project = frame[0] != '/' && frame[0] != '?' && frame.find("cuda_emulation/") == std::string::npos;
        ended |= kept > 0 && !project;
        if (project && !ended && kept < 3) frames += (kept++ ? " < " : "") + frame;
    }
    pclose(pipe);
    return kept ? frames : "?";
}

std::string who(int32_t thread) {
    if (thread >= COLLECTIVE) return "the wmma load or store of warp " + std::to_string(thread - COLLECTIVE);
    const unsigned x = unsigned(thread) % blockDim.x, y = unsigned(thread) / blockDim.x % blockDim.y,
                   z = unsigned(thread) / (blockDim.x * blockDim.y);
    return "thread (" + std::to_string(x) + ", " + std::to_string(y) + ", " + std::to_string(z) + ")";
}

[[noreturn]] void report(const Access& now, bool write, const Access& earlier, bool earlier_wrote,
                         const Region& region, size_t offset) {
    const std::string where = region.dynamic ? "of the dynamic shared memory" : "of a __shared__ variable";
    // fault() names the running thread; a wmma access is its warp's
    const std::string subject = now.thread >= COLLECTIVE ? who(now.thread) + " (this thread's)" : "it";
    fault("race on shared memory: %s %ss byte %zu %s at %s; %s %s it at %s, with no __syncthreads (nor a __syncwarp "
          "of the whole warp) between",
          subject.c_str(), write ? "write" : "read", offset, where.c_str(), source_of(now.code).c_str(),
          who(earlier.thread).c_str(), earlier_wrote ? "wrote" : "read", source_of(earlier.code).c_str());
}

// The records of [address, address + bytes) if it lies in the block's shared memory, else nullptr.
const Region* region_of(const BlockState& block, const unsigned char* address, size_t bytes) {
    for (const Region& region : block.regions)
        if (address >= region.begin && address + bytes <= region.begin + region.bytes) return &region;
    return nullptr;
}

void access(const void* address, size_t bytes, bool write, const void* code, bool collective) {
    if (!running_block) return;  // no block has run on this OS thread
    const BlockState& block = *running_block;
    const unsigned char* p = static_cast<const unsigned char*>(address);
    const Region* region = region_of(block, p, bytes);
    if (!region) return;
    const int thread = running_thread();
    if (thread < 0) return;
    const int warp = thread / 32;
    const Access now{collective ? COLLECTIVE + warp : thread, block.interval, block.warp_syncs[warp],
                     uint32_t(reinterpret_cast<uintptr_t>(code) - 1 - block.executable_base)};
    const size_t first = size_t(p - region->begin);
    for (size_t offset = first; offset < first + bytes; offset++) {
        ByteRecord& record = region->records[offset];
        if (!ordered(record.write, now)) report(now, write, record.write, true, *region, offset);
        if (write) {
            if (!ordered(record.read, now)) report(now, write, record.read, false, *region, offset);
            if (!ordered(record.other_read, now)) report(now, write, record.other_read, false, *region, offset);
            record = ByteRecord{now, {}, {}};
        } else if (record.read.thread == NOBODY || record.read.interval != now.interval ||
                   record.read.thread == now.thread) {
            if (record.read.interval != now.interval) record.other_read = {};
            record.read = now;
        } else {
            record.other_read = now;
        }
    }
}

}  // namespace

void start_block(const unsigned char* dynamic_shared, size_t bytes, int warps) {
    BlockState& block = this_block();
    block.executable_base = executable_base();
    block.interval++;
    block.warp_syncs.assign(size_t(warps), 0);
    if (block.dynamic_records.size() < bytes) block.dynamic_records.resize(bytes);
    block.regions.assign(1, Region{dynamic_shared, bytes, block.dynamic_records.data(), true});
}

void barrier_released() { running_block->interval++; }

void warp_synchronized(int warp) { running_block->warp_syncs[size_t(warp)]++; }

void register_shared_variable(const void* storage, size_t bytes) {
    BlockState& block = *running_block;
    std::vector<ByteRecord>& records = block.variable_records[storage];
    records.resize(bytes);
    block.regions.push_back(Region{static_cast<const unsigned char*>(storage), bytes, records.data(), false});
}

void collective_access(const void* address, size_t bytes, bool write, const void* code) {
    access(address, bytes, write, code, true);
}

}  // namespace cuda_emulation::race_detection

// ---- the calls -fsanitize=thread inserts (those the project's code needs; a missing one fails the link) ----

using cuda_emulation::race_detection::access;

extern "C" {
void __tsan_init() { cuda_emulation::race_detection::enabled = true; }

#define CUDA_EMULATION_TSAN_ACCESS(bytes)                                                                \
    void __tsan_read##bytes(void* address) { access(address, bytes, false, __builtin_return_address(0), false); } \
    void __tsan_write##bytes(void* address) { access(address, bytes, true, __builtin_return_address(0), false); }
CUDA_EMULATION_TSAN_ACCESS(1)
CUDA_EMULATION_TSAN_ACCESS(2)
CUDA_EMULATION_TSAN_ACCESS(4)
CUDA_EMULATION_TSAN_ACCESS(8)
CUDA_EMULATION_TSAN_ACCESS(16)
#undef CUDA_EMULATION_TSAN_ACCESS

void __tsan_read_range(void* address, unsigned long bytes) {
    access(address, bytes, false, __builtin_return_address(0), false);
}
void __tsan_write_range(void* address, unsigned long bytes) {
    access(address, bytes, true, __builtin_return_address(0), false);
}
// a C++ object's vtable pointer being set (host objects only)
void __tsan_vptr_update(void** slot, void*) { access(slot, sizeof(void*), true, __builtin_return_address(0), false); }
// atomics are not checked, only performed
unsigned char __tsan_atomic8_load(const volatile unsigned char* address, int) {
    return __atomic_load_n(address, __ATOMIC_SEQ_CST);
}
}
