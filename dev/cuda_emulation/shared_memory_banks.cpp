// shared_memory_banks.cpp: counts the shared-memory bank conflicts of emulated kernels, per source line,
// for machines without a GPU (on a GPU, Nsight Compute's shared-memory wavefront counters say the same).
// `make bank-conflicts` runs the GPU tests' small shapes so and prints the report; CUDA_EMULATION_BANKS=1
// does it for any race-detection build (build/test_gpu_racecheck, ...).
//
// The hardware rule: shared memory is 32 banks of 4-byte words, word w in bank w % 32. A warp's request
// (one load or store instruction, all its lanes) is served in wavefronts; each wavefront reads or writes
// at most one word per bank (any number of lanes may share a word). A request of accesses up to 4 bytes
// is one phase of all 32 lanes; of 8 bytes, two phases of 16 lanes; of 16 bytes, four of 8 (128 bytes a
// phase). A phase takes as many wavefronts as the most distinct words any one bank holds; the ideal is
// one per phase that has an active lane. "Two-way conflicts" means twice the ideal.
//
// How: race_detection.cpp sees every access to shared memory (the -fsanitize=thread instrumentation)
// and hands it here with its thread and instruction. The lanes of a warp run one after another in the
// emulator, so a request is rebuilt as the n-th execution of one instruction by each lane of the warp (as
// on a GPU while the warp runs converged), and evaluated when the block ends. g++ splits the 8- and 16-byte
// accesses nvcc makes of a float2, float4 or 16-byte struct into several; a thread's run of accesses that
// continue one another and fill an aligned 8 or 16 bytes is counted as one. Banks are counted from the
// start of each shared array (the dynamic one is 128-byte aligned on a GPU; a __shared__ variable is
// assumed to be). Not counted: wmma loads and stores (their lanes' addresses are the hardware's secret).
// Approximate: an access only some lanes make (a load under a condition) is grouped by each lane's own
// count of executions, which can put different steps of the lanes in one request; and where g++ keeps a
// value in a register that nvcc would load again, or the other way round.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda_emulation.h"

namespace cuda_emulation::shared_memory_banks {

namespace {

struct LaneAccess {
    uint32_t lane, region;  // region: which shared array (race_detection's index)
    uint64_t offset;        // in bytes from the array's start
    uint32_t bytes;
};
struct Request {
    uint32_t code = 0;
    std::vector<LaneAccess> lanes;
};
struct Counts {
    uint64_t requests = 0, wavefronts = 0, ideal = 0;
    void add(const Counts& other) {
        requests += other.requests;
        wavefronts += other.wavefronts;
        ideal += other.ideal;
    }
};

// The running block's requests, by (instruction, warp, execution), and each thread's executions so far
// of each instruction. Blocks run one at a time under race detection.
std::unordered_map<uint64_t, Request> block_requests;
std::unordered_map<uint64_t, uint32_t> executions;
std::unordered_map<uint32_t, Counts> by_code;  // every block so far, by instruction
Counts all;

Counts evaluate(const Request& request) {
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
        counts.wavefronts += most;
        counts.ideal += 1;
    }
    return counts;
}

void evaluate_block() {
    for (const auto& [key, request] : block_requests) {
        const Counts counts = evaluate(request);
        by_code[request.code].add(counts);
        all.add(counts);
    }
    block_requests.clear();
    executions.clear();
}

// A thread's accesses are held back while each continues the one before (same array, same direction,
// the next bytes): nvcc makes one 8- or 16-byte access of a float2, float4 or 16-byte struct where g++
// makes several, so such a run that fills an aligned 8 or 16 bytes counts as one access.
struct Pending {
    uint32_t region = 0;
    uint64_t offset = 0;
    uint32_t bytes = 0;
    bool write = false;
    std::vector<std::pair<uint32_t, LaneAccess>> parts;  // (instruction, access)
};
std::unordered_map<int, Pending> pending_accesses;  // by thread

// Adds the access to its request: the n-th execution of the instruction by the lanes of this warp.
void add(int thread, uint32_t code, const LaneAccess& access) {
    // wider accesses (a struct copied whole) as the 16-byte instructions a GPU would use, in order
    for (uint32_t piece = 0; piece < access.bytes; piece += 16) {
        uint32_t& n = executions[uint64_t(thread) << 32 | code];
        Request& request = block_requests[uint64_t(code) << 32 | uint64_t(thread / 32) << 26 | n++];
        request.code = code;
        request.lanes.push_back({access.lane, access.region, access.offset + piece, std::min(16u, access.bytes - piece)});
    }
}

void complete(int thread, Pending& pending) {
    const bool vector = pending.parts.size() > 1 && (pending.bytes == 8 || pending.bytes == 16) &&
                        pending.offset % pending.bytes == 0;
    if (vector)
        add(thread, pending.parts[0].first, {pending.parts[0].second.lane, pending.region, pending.offset, pending.bytes});
    else
        for (const auto& [code, access] : pending.parts) add(thread, code, access);
    pending.parts.clear();
}

// A barrier, or the block's end: nothing continues across it.
void end_interval() {
    for (auto& [thread, pending] : pending_accesses) complete(thread, pending);
}

// The instructions with conflicts, merged by source line (one line may hold several instructions, and
// several instantiations of a template), the most extra wavefronts first.
void print_report() {
    end_interval();
    evaluate_block();
    if (all.requests == 0) return;
    std::map<std::string, Counts> by_line;
    for (const auto& [code, counts] : by_code)
        if (counts.wavefronts > counts.ideal) by_line[race_detection::source_of(code)].add(counts);
    std::vector<std::pair<std::string, Counts>> lines(by_line.begin(), by_line.end());
    std::sort(lines.begin(), lines.end(), [](const auto& a, const auto& b) {
        return a.second.wavefronts - a.second.ideal > b.second.wavefronts - b.second.ideal;
    });
    std::fprintf(stderr,
                 "\nshared-memory bank conflicts: %llu warp requests took %llu wavefronts where %llu would do "
                 "(%.1f%% extra; wmma loads and stores not counted)\n",
                 (unsigned long long)all.requests, (unsigned long long)all.wavefronts, (unsigned long long)all.ideal,
                 100.0 * double(all.wavefronts - all.ideal) / double(std::max<uint64_t>(all.ideal, 1)));
    if (lines.empty()) return;
    std::fprintf(stderr, "%10s %10s %10s  %s\n", "requests", "ideal", "wavefronts", "source line (most extra first)");
    const size_t shown = std::min<size_t>(lines.size(), 25);
    for (size_t i = 0; i < shown; i++) {
        const Counts& c = lines[i].second;
        std::fprintf(stderr, "%10llu %10llu %10llu  %s (%.2fx)\n", (unsigned long long)c.requests,
                     (unsigned long long)c.ideal, (unsigned long long)c.wavefronts, lines[i].first.c_str(),
                     double(c.wavefronts) / double(c.ideal));
    }
    if (lines.size() > shown) std::fprintf(stderr, "and %zu more lines\n", lines.size() - shown);
}

bool report_at_exit_when_asked() {
    if (!std::getenv("CUDA_EMULATION_BANKS")) return false;
    std::atexit(print_report);  // after the statics above are made, so before they are destroyed
    return true;
}

}  // namespace

bool enabled = report_at_exit_when_asked();

void block_started() {
    end_interval();
    evaluate_block();
}

void barrier_released() { end_interval(); }

void record(int thread, uint32_t code, size_t region, size_t offset, size_t bytes, bool write) {
    const LaneAccess access{uint32_t(thread % 32), uint32_t(region), offset, uint32_t(bytes)};
    Pending& pending = pending_accesses[thread];
    const bool extends = !pending.parts.empty() && pending.write == write && pending.region == region &&
                         pending.offset + pending.bytes == offset && pending.bytes + bytes <= 16;
    if (!extends) {
        complete(thread, pending);
        pending = Pending{uint32_t(region), offset, 0, write, {}};
    }
    pending.bytes += uint32_t(bytes);
    pending.parts.emplace_back(code, access);
}

Totals totals() {
    end_interval();
    evaluate_block();
    return {all.requests, all.wavefronts, all.ideal};
}

}  // namespace cuda_emulation::shared_memory_banks
