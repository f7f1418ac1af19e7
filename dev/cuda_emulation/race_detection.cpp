// race_detection.cpp: finds data races in emulated kernels, on shared memory (what compute-sanitizer's
// racecheck finds on a GPU) and on device memory (two blocks of one launch writing one element, which no
// GPU tool reports), for machines without a GPU: `make emulate-check` runs build/test_race_detection (known
// races) and build/test_gpu_racecheck and build/test_gpu_fp32_racecheck (every kernel of the GPU tests).
//
// How: the kernels are compiled by g++ with -fsanitize=thread, which puts a call to __tsan_read4(address),
// __tsan_write2(address), ... before every load and store it cannot prove private to the thread. libtsan
// is not linked; this file implements those calls itself. An access from a kernel to the running block's
// shared memory (the dynamic array and the block's __shared__ variables) or to a device buffer is recorded
// per byte: who made it (the emulated thread, or a warp for a wmma load or store, which all its lanes make
// together), in which block, in which barrier interval of the block (between two __syncthreads), and
// after how many memory-ordering syncs of the thread's warp. Two accesses to the same byte race when they
// come from different threads, at least one writes, and nothing orders them: they are in one launch and
// either in different blocks (blocks run in any order, at once) or in one block with no __syncthreads
// between them and, for two threads of one warp, no __syncwarp (or wmma operation) of the whole warp.
// Warp shuffles and votes do not order memory (the CUDA guide: they imply no memory barrier), so they do
// not count. The first race ends the launch with a failure naming both threads, the byte and, through
// addr2line, the source line of each access (the instrumented code is compiled with -g). So does a read of
// shared memory that no thread of the block has written before it (shared memory starts each block
// undefined), which the NaN poison misses where the value is dropped (by fmaxf, say).
//
// Per byte it keeps the last write and two reads not yet ordered before everything to come (the last
// reader and the last different one), which finds every read-write and write-write race except a write
// racing only with a reader that two later different readers displaced. Records of device memory live from
// cudaMalloc to cudaFree (in pages made when first touched); blocks run one at a time under race detection,
// so the records need no locks. Not checked: atomics (none in the kernels), memory written by the emulated
// libraries (cuBLASLt, NCCL: ordered by their launches anyway), a __syncwarp with a partial mask (treated as
// ordering nothing: conservative).
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <utility>
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
    uint32_t block = 0;  // the block's number among all blocks run, from 1
    uint32_t interval = 0, warp_syncs = 0;
    uint32_t code = 0;  // the accessing instruction, as an offset into the executable (for addr2line)
};
struct ByteRecord {
    Access write, read, other_read;
};

// Shared memory: the dynamic array, or a __shared__ variable.
struct SharedRegion {
    const unsigned char* begin = nullptr;
    size_t bytes = 0;
    ByteRecord* records = nullptr;
    bool dynamic = false;
};

// A device buffer's records, in pages made when a kernel first touches them.
struct DeviceRecords {
    static constexpr size_t PAGE = 4096;
    uintptr_t begin = 0;
    size_t bytes = 0;
    std::vector<std::unique_ptr<ByteRecord[]>> pages;
    ByteRecord& at(size_t offset) {
        std::unique_ptr<ByteRecord[]>& page = pages[offset / PAGE];
        if (!page) page = std::make_unique<ByteRecord[]>(PAGE);
        return page[offset % PAGE];
    }
};

// Blocks run one after another under race detection (run_grid), on the launching thread.
uint32_t blocks_run = 0, first_block_of_launch = 1;
std::vector<uint3> launch_blocks;               // blockIdx of the launch's blocks, in the order they ran
std::map<uintptr_t, DeviceRecords> device_records;  // by buffer start, from cudaMalloc to cudaFree

struct BlockState {
    uintptr_t executable_base = 0;
    uint32_t block = 0, interval = 0;
    std::vector<uint32_t> warp_syncs;
    std::vector<ByteRecord> dynamic_records;
    std::vector<SharedRegion> regions;                                // [0]: the dynamic shared memory
    std::map<const void*, std::vector<ByteRecord>> variable_records;  // by storage, reused by later blocks
    DeviceRecords* last_buffer = nullptr;                             // the buffer of the last device access
};
// A pointer: thread_local objects with constructors cost a call to their initialiser at every use.
thread_local BlockState* running_block = nullptr;
BlockState& this_block() {
    static thread_local std::unique_ptr<BlockState> owned;
    if (!owned) owned = std::make_unique<BlockState>();
    return *(running_block = owned.get());
}

int warp_of(int32_t thread) { return thread >= COLLECTIVE ? thread - COLLECTIVE : thread / 32; }

// Whether `earlier` is ordered before everything from `now` on: nobody, a block of an earlier launch, or
// an earlier barrier interval of the same block. Shared memory is the block's own, so another block's
// record there is an earlier block's; in device memory the blocks of one launch are not ordered at all.
inline bool settled(const Access& earlier, const Access& now, bool device) {
    if (earlier.thread == NOBODY) return true;
    if (earlier.block != now.block) return !device || earlier.block < first_block_of_launch;
    return earlier.interval != now.interval;
}

// Whether `earlier` happened before `now`: settled, the same thread, or a whole-warp sync between them.
inline bool ordered(const Access& earlier, const Access& now, bool device) {
    if (settled(earlier, now, device) || (earlier.block == now.block && earlier.thread == now.thread)) return true;
    return earlier.block == now.block && warp_of(earlier.thread) == warp_of(now.thread) &&
           earlier.warp_syncs != now.warp_syncs;
}

uintptr_t executable_base() {
    static const uintptr_t base = [] {
        Dl_info info{};
        dladdr(reinterpret_cast<const void*>(&executable_base), &info);
        return reinterpret_cast<uintptr_t>(info.dli_fbase);
    }();
    return base;
}

std::string who(const Access& access, const Access& now) {
    if (access.thread >= COLLECTIVE) return "the wmma load or store of warp " + std::to_string(access.thread - COLLECTIVE);
    const unsigned t = unsigned(access.thread);
    std::string text = "thread (" + std::to_string(t % blockDim.x) + ", " + std::to_string(t / blockDim.x % blockDim.y) +
                       ", " + std::to_string(t / (blockDim.x * blockDim.y)) + ")";
    if (access.block != now.block && access.block >= first_block_of_launch) {
        const uint3 b = launch_blocks[access.block - first_block_of_launch];
        text += " of block (" + std::to_string(b.x) + ", " + std::to_string(b.y) + ", " + std::to_string(b.z) + ")";
    }
    return text;
}

// what: "byte 12 of the dynamic shared memory", say
[[noreturn]] void report(const Access& now, bool write, const Access& earlier, bool earlier_wrote,
                         const std::string& what, bool device) {
    // fault() names the running thread; a wmma access is its warp's
    const std::string subject = now.thread >= COLLECTIVE ? who(now, now) + " (this thread's)" : "it";
    fault("race on %s memory: %s %ss %s at %s; %s %s it at %s, %s", device ? "device" : "shared", subject.c_str(),
          write ? "write" : "read", what.c_str(), source_of(now.code).c_str(), who(earlier, now).c_str(),
          earlier_wrote ? "wrote" : "read", source_of(earlier.code).c_str(),
          earlier.block != now.block ? "and nothing orders the blocks of one launch"
                                     : "with no __syncthreads (nor a __syncwarp of the whole warp) between");
}

// Checks an access to one byte against its record and records it. Shared memory starts each block
// undefined (on a GPU it holds what an earlier block left), so a read of a byte no thread of the block
// has written is reported too: the emulator's NaN poison shows such a read only where the value is used,
// not where fmaxf() or a mask drops it.
template <typename Describe>
void check_byte(ByteRecord& record, const Access& now, bool write, bool device, Describe describe) {
    if (!device && !write && record.write.block != now.block) {
        const std::string subject = now.thread >= COLLECTIVE ? who(now, now) + " (this thread's)" : "it";
        fault("uninitialized shared memory: %s reads %s at %s, which no thread of this block has written before "
              "(never, or later without a __syncthreads between)",
              subject.c_str(), describe().c_str(), source_of(now.code).c_str());
    }
    if (!ordered(record.write, now, device)) report(now, write, record.write, true, describe(), device);
    if (write) {
        if (!ordered(record.read, now, device)) report(now, write, record.read, false, describe(), device);
        if (!ordered(record.other_read, now, device)) report(now, write, record.other_read, false, describe(), device);
        record = ByteRecord{now, {}, {}};
        return;
    }
    // keep two unsettled reads by different threads: the latest of each thread, and the latest other one
    if (settled(record.other_read, now, device)) record.other_read = {};
    if (settled(record.read, now, device)) record.read = std::exchange(record.other_read, {});
    const auto same_thread = [&](const Access& a) { return a.block == now.block && a.thread == now.thread; };
    if (record.read.thread == NOBODY || same_thread(record.read))
        record.read = now;
    else
        record.other_read = now;
}

// The shared region holding [address, address + bytes), or nullptr.
const SharedRegion* shared_region(const BlockState& block, const unsigned char* address, size_t bytes) {
    for (const SharedRegion& region : block.regions)
        if (address >= region.begin && address + bytes <= region.begin + region.bytes) return &region;
    return nullptr;
}

// The records of the device buffer holding [address, address + bytes), or nullptr.
DeviceRecords* device_buffer_records(BlockState& block, const unsigned char* address, size_t bytes) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(address);
    DeviceRecords* last = block.last_buffer;
    if (last && a >= last->begin && a + bytes <= last->begin + last->bytes) return last;
    auto it = device_records.upper_bound(a);
    if (it == device_records.begin()) return nullptr;
    --it;
    if (a + bytes > it->second.begin + it->second.bytes) return nullptr;
    return block.last_buffer = &it->second;
}

void access(const void* address, size_t bytes, bool write, const void* code, bool collective) {
    if (!running_block) return;  // no block has run on this OS thread
    BlockState& block = *running_block;
    const int thread = running_thread();
    if (thread < 0) return;  // host code
    const int warp = thread / 32;
    const Access now{collective ? COLLECTIVE + warp : thread, block.block, block.interval, block.warp_syncs[warp],
                     uint32_t(reinterpret_cast<uintptr_t>(code) - 1 - block.executable_base)};
    const unsigned char* p = static_cast<const unsigned char*>(address);
    if (const SharedRegion* region = shared_region(block, p, bytes)) {
        if (memory_requests::enabled && !collective)
            memory_requests::record_shared(thread, now.code, size_t(region - block.regions.data()),
                                           size_t(p - region->begin), bytes, write);
        for (size_t offset = size_t(p - region->begin), end = offset + bytes; offset < end; offset++)
            check_byte(region->records[offset], now, write, false, [&] {
                return "byte " + std::to_string(offset) +
                       (region->dynamic ? " of the dynamic shared memory" : " of a __shared__ variable");
            });
    } else if (DeviceRecords* buffer = device_buffer_records(block, p, bytes)) {
        if (memory_requests::enabled && !collective)
            memory_requests::record_device(thread, now.code, reinterpret_cast<const void*>(buffer->begin), p, bytes,
                                           write);
        for (size_t offset = size_t(reinterpret_cast<uintptr_t>(p) - buffer->begin), end = offset + bytes;
             offset < end; offset++)
            check_byte(buffer->at(offset), now, write, true, [&] {
                return "byte " + std::to_string(offset) + " of a device buffer of " + std::to_string(buffer->bytes) +
                       " bytes";
            });
    }
}

}  // namespace

// Relative to the working directory, with up to two calls the instruction is inlined into
// ("a.cuh:12 < b.cuh:40"): the project's frames only (not the emulator's or the system's).
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

void launch_started() {
    first_block_of_launch = blocks_run + 1;
    launch_blocks.clear();
}

void start_block(const unsigned char* dynamic_shared, size_t bytes, int warps) {
    BlockState& block = this_block();
    block.executable_base = executable_base();
    block.block = ++blocks_run;
    launch_blocks.push_back(blockIdx);
    block.interval = 0;
    block.warp_syncs.assign(size_t(warps), 0);
    if (block.dynamic_records.size() < bytes) block.dynamic_records.resize(bytes);
    block.regions.assign(1, SharedRegion{dynamic_shared, bytes, block.dynamic_records.data(), true});
    if (memory_requests::enabled) memory_requests::block_started();
}

void barrier_released() {
    running_block->interval++;
    if (memory_requests::enabled) memory_requests::barrier_released();
}

void warp_synchronized(int warp) { running_block->warp_syncs[size_t(warp)]++; }

void register_shared_variable(const void* storage, size_t bytes) {
    BlockState& block = *running_block;
    std::vector<ByteRecord>& records = block.variable_records[storage];
    records.resize(bytes);
    block.regions.push_back(SharedRegion{static_cast<const unsigned char*>(storage), bytes, records.data(), false});
}

void device_buffer_allocated(const void* begin, size_t bytes) {
    DeviceRecords& records = device_records[reinterpret_cast<uintptr_t>(begin)];
    records.begin = reinterpret_cast<uintptr_t>(begin);
    records.bytes = bytes;
    records.pages.resize((bytes + DeviceRecords::PAGE - 1) / DeviceRecords::PAGE);
}

void device_buffer_freed(const void* begin) {
    device_records.erase(reinterpret_cast<uintptr_t>(begin));
    if (running_block) running_block->last_buffer = nullptr;
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
// atomics (host code's: std::atomic counters) are not checked, only performed, sequentially consistent
unsigned char __tsan_atomic8_load(const volatile unsigned char* address, int) {
    return __atomic_load_n(address, __ATOMIC_SEQ_CST);
}
long long __tsan_atomic64_load(const volatile long long* address, int) {
    return __atomic_load_n(address, __ATOMIC_SEQ_CST);
}
long long __tsan_atomic64_fetch_add(volatile long long* address, long long value, int) {
    return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST);
}
long long __tsan_atomic64_fetch_sub(volatile long long* address, long long value, int) {
    return __atomic_fetch_sub(address, value, __ATOMIC_SEQ_CST);
}
int __tsan_atomic64_compare_exchange_weak(volatile long long* address, long long* expected, long long desired, int,
                                          int) {
    return __atomic_compare_exchange_n(address, expected, desired, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
}
