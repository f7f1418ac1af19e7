// memory_requests.cpp: what the memory accesses of emulated kernels would cost a GPU, per source line,
// for machines without one (on a GPU, Nsight Compute's wavefront and sector counters say the same):
// shared-memory bank conflicts, and device-memory requests that touch more 32-byte sectors than their
// bytes need (uncoalesced). `make memory-requests` runs the GPU tests' small shapes so and prints the
// report; CUDA_EMULATION_REQUESTS=1 does it for any race-detection build (build/test_gpu_racecheck, ...).
//
// A warp's request is one load or store instruction executed by its lanes together.
//  - Shared memory is 32 banks of 4-byte words, word w in bank w % 32. A request is served in wavefronts,
//    each reading or writing at most one word per bank (any number of lanes may share a word). Accesses
//    up to 4 bytes make one phase of all 32 lanes; of 8 bytes, two phases of 16 lanes; of 16 bytes, four
//    of 8 (128 bytes a phase). A phase takes as many wavefronts as the most distinct words any one bank
//    holds; the ideal is one per phase with an active lane. "Two-way conflicts": twice the ideal.
//  - Device memory moves in 32-byte sectors: a request costs the distinct sectors its lanes touch; the
//    ideal is the fewest that could hold the distinct bytes it accesses (32 lanes reading consecutive
//    floats: 4 sectors; the same floats two apart: 8, twice the ideal).
//
// How: race_detection.cpp sees every access to shared and device memory (the -fsanitize=thread
// instrumentation) and hands it here with its thread and instruction. The lanes of a warp run one after
// another in the emulator, so a request is rebuilt as the n-th execution of one instruction by each lane
// of the warp (as on a GPU while the warp runs converged), and costed when the block ends. g++ splits the
// 4-, 8- and 16-byte accesses nvcc makes of a bf16 pair, float2, float4 or 16-byte struct into several; a
// thread's run of accesses to one array or buffer that continue one another and fill an aligned 4, 8 or 16 bytes
// counts as one (which also merges two adjacent bf16 accesses nvcc might leave apart). Shared banks are
// counted from the start of each shared array (the dynamic one is 128-byte aligned on a GPU; a __shared__
// variable is assumed to be); device sectors from the addresses themselves (cudaMalloc's alignment is
// emulated). Not counted: wmma loads and stores (their lanes' addresses are the hardware's secret), and
// the libraries (cuBLASLt, NCCL). Approximate: an access only some lanes make (a load under a condition) is
// grouped by each lane's own count of executions, which can put different steps of the lanes in one
// request; and where g++ keeps a value in a register that nvcc would load again, or the other way round.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cuda_emulation.h"

namespace cuda_emulation::memory_requests {

namespace {

constexpr uint32_t DEVICE = UINT32_MAX;  // the region of a device-memory access (offset: its address)

struct LaneAccess {
    uint32_t lane, region;  // region: which shared array (race_detection's index), or DEVICE
    uint64_t offset;        // in bytes from the array's start, or the address
    uint32_t bytes;
};
struct Request {
    uint32_t code = 0;
    std::vector<LaneAccess> lanes;
    bool device() const { return lanes[0].region == DEVICE; }
};
struct Counts {
    uint64_t requests = 0, cost = 0, ideal = 0;  // cost: wavefronts (shared) or sectors (device)
    void add(const Counts& other) {
        requests += other.requests;
        cost += other.cost;
        ideal += other.ideal;
    }
};

// The running block's requests, by (instruction, space, warp, execution), and each thread's executions
// so far of each instruction. Blocks run one at a time under race detection.
std::unordered_map<uint64_t, Request> block_requests;
std::unordered_map<uint64_t, uint32_t> executions;
std::unordered_map<uint64_t, Counts> by_code;  // every block so far, by (instruction, space)
Counts all[2];                                 // shared, device

Counts shared_cost(const Request& request) {
    uint32_t width = 0;
    for (const LaneAccess& access : request.lanes) width = std::max(width, access.bytes);
    const uint32_t lanes_per_phase = width <= 4 ? 32 : 128 / width;
    Counts counts{1, 0, 0};
    for (uint32_t first = 0; first < 32; first += lanes_per_phase) {
        std::vector<std::pair<uint32_t, uint64_t>> words[32];  // per bank: (array, word)
        bool active = false;
        for (const LaneAccess& access : request.lanes) {
            if (access.lane < first || access.lane >= first + lanes_per_phase) continue;
            active = true;
            for (uint64_t word = access.offset / 4; word <= (access.offset + access.bytes - 1) / 4; word++) {
                auto& bank = words[word % 32];
                const std::pair<uint32_t, uint64_t> key{access.region, word};
                if (std::find(bank.begin(), bank.end(), key) == bank.end()) bank.push_back(key);
            }
        }
        if (!active) continue;
        size_t most = 0;
        for (const auto& bank : words) most = std::max(most, bank.size());
        counts.cost += most;
        counts.ideal += 1;
    }
    return counts;
}

Counts device_cost(const Request& request) {
    std::unordered_set<uint64_t> sectors, bytes;
    for (const LaneAccess& access : request.lanes)
        for (uint64_t address = access.offset; address < access.offset + access.bytes; address++) {
            sectors.insert(address / 32);
            bytes.insert(address);
        }
    return {1, sectors.size(), (bytes.size() + 31) / 32};
}

// A thread's accesses to each shared array and device buffer are held back while each continues the one
// before (same direction, the next bytes): nvcc makes one 4-, 8- or 16-byte access of a bf16 pair, a
// float2, a float4 or a 16-byte struct where g++ makes several (and may put a copy's stores between its
// loads), so such a run that fills an aligned 4, 8 or 16 bytes counts as one access.
struct Pending {
    uint64_t offset = 0;
    uint32_t bytes = 0;
    bool write = false;
    std::vector<std::pair<uint32_t, LaneAccess>> parts;  // (instruction, access)
};
// by thread (the top 10 bits) and array: a shared array's index, or a device buffer's start (user-space
// addresses fit 47 bits) with bit 53 set
std::unordered_map<uint64_t, Pending> pending_accesses;

// Adds the access to its request: the n-th execution of the instruction by the lanes of this warp.
void add(int thread, uint32_t code, const LaneAccess& access) {
    const bool device = access.region == DEVICE;
    // wider accesses (a struct copied whole) as the 16-byte instructions a GPU would use, in order
    for (uint32_t piece = 0; piece < access.bytes; piece += 16) {
        uint32_t& n = executions[uint64_t(thread) << 33 | uint64_t(device) << 32 | code];
        Request& request =
            block_requests[uint64_t(code) << 32 | uint64_t(device) << 31 | uint64_t(thread / 32) << 26 | n++];
        request.code = code;
        request.lanes.push_back(
            {access.lane, access.region, access.offset + piece, std::min(16u, access.bytes - piece)});
    }
}

void complete(int thread, Pending& pending) {
    const uint32_t bytes = pending.bytes;
    const bool vector = pending.parts.size() > 1 && (bytes == 4 || bytes == 8 || bytes == 16) &&
                        pending.offset % bytes == 0;
    if (vector) {
        const auto& [code, first] = pending.parts[0];
        add(thread, code, {first.lane, first.region, pending.offset, bytes});
    } else {
        for (const auto& [code, access] : pending.parts) add(thread, code, access);
    }
    pending.parts.clear();
}

// A barrier, or the block's end: nothing continues across it.
void end_interval() {
    for (auto& [key, pending] : pending_accesses) complete(int(key >> 54), pending);
    pending_accesses.clear();
}

// The block's requests, its held-back accesses first, into the counts.
void cost_block() {
    end_interval();
    for (const auto& [key, request] : block_requests) {
        const Counts counts = request.device() ? device_cost(request) : shared_cost(request);
        by_code[uint64_t(request.code) << 1 | request.device()].add(counts);
        all[request.device()].add(counts);
    }
    block_requests.clear();
    executions.clear();
}

// One space's total, then its source lines that cost more than the ideal (one line may hold several
// instructions, and several instantiations of a template), the most extra first.
void print_space(bool device) {
    const Counts& total = all[device];
    const char* unit = device ? "sectors" : "wavefronts";
    std::fprintf(stderr, "\n%s: %llu warp requests took %llu %s where %llu would do (%.1f%% extra)\n",
                 device ? "device memory, 32-byte sectors" : "shared memory, bank conflicts",
                 (unsigned long long)total.requests, (unsigned long long)total.cost, unit,
                 (unsigned long long)total.ideal,
                 100.0 * double(total.cost - total.ideal) / double(std::max<uint64_t>(total.ideal, 1)));
    std::map<std::string, Counts> by_line;
    for (const auto& [key, counts] : by_code)
        if ((key & 1) == device && counts.cost > counts.ideal)
            by_line[race_detection::source_of(uint32_t(key >> 1))].add(counts);
    std::vector<std::pair<std::string, Counts>> lines(by_line.begin(), by_line.end());
    std::sort(lines.begin(), lines.end(), [](const auto& a, const auto& b) {
        return a.second.cost - a.second.ideal > b.second.cost - b.second.ideal;
    });
    if (lines.empty()) return;
    std::fprintf(stderr, "%10s %10s %10s  %s\n", "requests", "ideal", unit, "source line (most extra first)");
    const size_t shown = std::min<size_t>(lines.size(), 20);
    for (size_t i = 0; i < shown; i++) {
        const Counts& c = lines[i].second;
        std::fprintf(stderr, "%10llu %10llu %10llu  %s (%.2fx)\n", (unsigned long long)c.requests,
                     (unsigned long long)c.ideal, (unsigned long long)c.cost, lines[i].first.c_str(),
                     double(c.cost) / double(c.ideal));
    }
    if (lines.size() > shown) std::fprintf(stderr, "and %zu more lines\n", lines.size() - shown);
}

void print_report() {
    cost_block();
    std::fprintf(stderr, "\nmemory requests of the kernels (wmma loads and stores, cuBLASLt and NCCL not counted):");
    print_space(false);
    print_space(true);
}

void record(int thread, uint32_t code, uint64_t array, uint32_t region, uint64_t offset, size_t bytes, bool write) {
    const LaneAccess access{uint32_t(thread % 32), region, offset, uint32_t(bytes)};
    Pending& pending = pending_accesses[uint64_t(thread) << 54 | array];
    const bool extends = !pending.parts.empty() && pending.write == write && pending.offset + pending.bytes == offset &&
                         pending.bytes + bytes <= 16;
    if (!extends) {
        complete(thread, pending);
        pending = Pending{offset, 0, write, {}};
    }
    pending.bytes += uint32_t(bytes);
    pending.parts.emplace_back(code, access);
}

bool report_at_exit_when_asked() {
    if (!std::getenv("CUDA_EMULATION_REQUESTS")) return false;
    std::atexit(print_report);  // after the statics above are made, so before they are destroyed
    return true;
}

}  // namespace

bool enabled = report_at_exit_when_asked();

void block_started() { cost_block(); }

void barrier_released() { end_interval(); }

void record_shared(int thread, uint32_t code, size_t array, size_t offset, size_t bytes, bool write) {
    record(thread, code, array, uint32_t(array), offset, bytes, write);
}

void record_device(int thread, uint32_t code, const void* buffer, const void* address, size_t bytes, bool write) {
    record(thread, code, uint64_t(1) << 53 | reinterpret_cast<uintptr_t>(buffer), DEVICE,
           reinterpret_cast<uintptr_t>(address), bytes, write);
}

Totals totals() {
    cost_block();
    return {all[0].requests, all[0].cost, all[0].ideal, all[1].requests, all[1].cost, all[1].ideal};
}

}  // namespace cuda_emulation::memory_requests
