// test_race_detection.cu: the emulator's race detector (dev/cuda_emulation/race_detection.cpp) against
// small kernels whose answer is known: each faulty kernel (a race on shared or device memory, a read of
// shared memory no thread of the block wrote) must fail its launch with a report of that kind naming the
// source lines, and each corrected one must pass. Built only for the emulation with -fsanitize=thread
// (build/test_race_detection, in `make emulate-check`); on a GPU the nearest check is compute-sanitizer's
// racecheck (dev/sanitize.sh), which covers shared memory.
#include <cuda_runtime.h>
#include <mma.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

constexpr int THREADS = 64;  // two warps

// This thread's own element of a kernel's output.
__device__ float& own(float* out) { return out[blockIdx.x * blockDim.x + threadIdx.x]; }

// thread t writes its element, then reads its neighbour's: needs the barrier (the elements are set once
// before, so that the read without it is a race, not a read of memory the block never wrote)
__global__ void neighbour_read(float* out, bool barrier) {
    extern __shared__ float values[];
    const int t = threadIdx.x;
    values[t] = 0.0f;
    __syncthreads();
    values[t] = float(t);
    if (barrier) __syncthreads();
    own(out) = values[(t + 1) % THREADS];
}

// every thread writes the same element
__global__ void same_element_written(float* out) {
    extern __shared__ float values[];
    values[0] = float(threadIdx.x);
    __syncthreads();
    own(out) = values[0];
}

// values[t] = values[t + 1] in place: the read must be separated from the neighbour's write
__global__ void shift_in_place(float* out, bool barrier) {
    extern __shared__ float values[];
    const int t = threadIdx.x;
    values[t] = float(t);
    values[t + THREADS] = 0.0f;
    __syncthreads();
    const float next = values[t + 1];
    if (barrier) __syncthreads();
    values[t] = next;
    __syncthreads();
    own(out) = values[t];
}

// lanes exchange through shared memory: a __syncwarp orders that, a shuffle does not
__global__ void lane_exchange(float* out, bool syncwarp) {
    extern __shared__ float values[];
    const int t = threadIdx.x;
    values[t] = float(t);
    if (syncwarp)
        __syncwarp();
    else
        own(out) = __shfl_xor_sync(0xffffffffu, float(t), 1);
    own(out) = values[t ^ 1];
}

// one thread writes, all read, one other writes again: each step behind a barrier
__global__ void broadcast_between_barriers(float* out) {
    extern __shared__ float values[];
    if (threadIdx.x == 0) values[0] = 1.0f;
    __syncthreads();
    own(out) = values[0];
    __syncthreads();
    if (threadIdx.x == 1) values[0] = 2.0f;
}

// a `__shared__` variable, set by thread 0 and read by all (the racy kernels here set their memory once
// first, behind a barrier, so that in any thread order the fault is the race, not a read of unset memory)
__global__ void shared_variable_read(float* out, bool barrier) {
    __shared__ float total;
    if (threadIdx.x == 0) total = 0.0f;
    __syncthreads();
    if (threadIdx.x == 0) total = 3.0f;
    if (barrier) __syncthreads();
    own(out) = total;
}

// warp 0 stores a 16 x 16 tile with wmma; warp 1 (or lane 0 of warp 0) then reads it
__global__ void wmma_store_then_read(float* out, bool barrier, bool same_warp) {
    namespace wmma = nvcuda::wmma;
    extern __shared__ float tile[];
    const int warp = threadIdx.x / 32;
    for (int i = threadIdx.x; i < 256; i += blockDim.x) tile[i] = 0.0f;
    __syncthreads();
    if (warp == 0) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> sum;
        wmma::fill_fragment(sum, 1.0f);
        wmma::store_matrix_sync(tile, sum, 16, wmma::mem_row_major);
    }
    if (barrier) __syncthreads();
    if (same_warp && threadIdx.x == 0) out[0] = tile[17];  // element 17 belongs to another lane on a GPU
    if (!same_warp && warp == 1) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> copy;
        wmma::load_matrix_sync(copy, tile, 16, wmma::mem_row_major);
        wmma::store_matrix_sync(out + 256, copy, 16, wmma::mem_row_major);
    }
}

// Device memory: thread t writes element t of its block's part and reads element t + shift of the part
// of block blockIdx.x + blocks_apart, after a barrier or not.
__global__ void device_neighbour_read(float* data, int shift, int blocks_apart, bool barrier) {
    own(data) = float(threadIdx.x);
    if (barrier) __syncthreads();
    const float next = data[(blockIdx.x + blocks_apart) * THREADS + (threadIdx.x + shift) % THREADS];
    if (barrier) __syncthreads();
    own(data) += next;
}

// every block writes the same elements
__global__ void device_same_elements(float* out) { out[threadIdx.x] = float(blockIdx.x); }

// The first warp writes its elements, then every thread reads its own through fmaxf, which drops a NaN:
// the poison cannot show the second warp's reads of unwritten memory. With first_block_only, block 0 writes
// every element and later blocks none (on a GPU they may see block 0's values; still undefined).
__global__ void half_written(float* out, bool first_block_only) {
    extern __shared__ float values[];
    const bool writes = first_block_only ? blockIdx.x == 0 : threadIdx.x < 32;
    if (writes) values[threadIdx.x] = float(threadIdx.x);
    __syncthreads();
    own(out) = fmaxf(values[threadIdx.x], 0.0f);
}

// stderr of a launch, in a file, to read the detector's report back
struct CapturedStderr {
    FILE* file = std::tmpfile();
    int saved = dup(fileno(stderr));
    CapturedStderr() {
        std::fflush(stderr);
        dup2(fileno(file), fileno(stderr));
    }
    std::string text() {
        std::fflush(stderr);
        dup2(saved, fileno(stderr));
        close(saved);
        std::string result;
        std::rewind(file);
        char buffer[4096];
        while (size_t n = std::fread(buffer, 1, sizeof buffer, file)) result.append(buffer, n);
        std::fclose(file);
        return result;
    }
};

int failures = 0, passes = 0;

// What a launch must report (the start of the emulator's message), or CLEAN.
constexpr const char* CLEAN = nullptr;
constexpr const char* SHARED_RACE = "race on shared memory";
constexpr const char* DEVICE_RACE = "race on device memory";
constexpr const char* UNINITIALIZED = "uninitialized shared memory";

// Runs launch(out): it must fail with the finding, whose report names this file's source lines, or pass.
template <typename Launch>
void expect(const char* name, const char* finding, Launch launch) {
    float* out = nullptr;
    cudaMalloc(&out, 1024 * sizeof(float));
    CapturedStderr captured;
    launch(out);
    const cudaError_t error = cudaGetLastError();
    cudaDeviceSynchronize();
    const std::string report = captured.text();
    cudaFree(out);
    std::string result;
    if (!finding)
        result = error == cudaSuccess && report.empty() ? "" : "launch failed";
    else if (error != cudaErrorLaunchFailure || report.find(finding) == std::string::npos)
        result = "not reported";
    else if (report.find(" at test/test_race_detection.cu:") == std::string::npos)
        result = "reported without source lines";
    const bool ok = result.empty();
    std::printf("%s %s: %s\n", ok ? "ok" : "FAILED", name,
                ok ? (finding ? finding : "nothing reported") : (std::string(finding ? finding : "clean") + ": " + result).c_str());
    if (!ok || (finding && std::getenv("VERBOSE"))) std::fputs(report.c_str(), stderr);
    (ok ? passes : failures)++;
}

}  // namespace

int main() {
    const size_t bytes = 2 * THREADS * sizeof(float);
    expect("read of a neighbour's write without a barrier", SHARED_RACE,
           [&](float* out) { neighbour_read<<<2, THREADS, bytes>>>(out, false); });
    expect("read of a neighbour's write after __syncthreads", CLEAN,
           [&](float* out) { neighbour_read<<<2, THREADS, bytes>>>(out, true); });
    expect("one element written by every thread", SHARED_RACE,
           [&](float* out) { same_element_written<<<1, THREADS, bytes>>>(out); });
    expect("in-place shift without a barrier between read and write", SHARED_RACE,
           [&](float* out) { shift_in_place<<<1, THREADS, bytes>>>(out, false); });
    expect("in-place shift with a barrier between read and write", CLEAN,
           [&](float* out) { shift_in_place<<<1, THREADS, bytes>>>(out, true); });
    expect("lanes exchanging after __syncwarp", CLEAN,
           [&](float* out) { lane_exchange<<<1, THREADS, bytes>>>(out, true); });
    expect("lanes exchanging after a shuffle only", SHARED_RACE,
           [&](float* out) { lane_exchange<<<1, THREADS, bytes>>>(out, false); });
    expect("write, reads and a second write between barriers, in four blocks", CLEAN,
           [&](float* out) { broadcast_between_barriers<<<4, THREADS, bytes>>>(out); });
    expect("__shared__ variable read without a barrier", SHARED_RACE,
           [&](float* out) { shared_variable_read<<<1, THREADS>>>(out, false); });
    expect("__shared__ variable read after __syncthreads", CLEAN,
           [&](float* out) { shared_variable_read<<<3, THREADS>>>(out, true); });
    const size_t tile_bytes = 256 * sizeof(float);
    expect("wmma store, then another warp's wmma load without a barrier", SHARED_RACE,
           [&](float* out) { wmma_store_then_read<<<1, THREADS, tile_bytes>>>(out, false, false); });
    expect("wmma store, then another warp's wmma load after __syncthreads", CLEAN,
           [&](float* out) { wmma_store_then_read<<<1, THREADS, tile_bytes>>>(out, true, false); });
    expect("wmma store, then one lane's read without a barrier", SHARED_RACE,
           [&](float* out) { wmma_store_then_read<<<1, THREADS, tile_bytes>>>(out, false, true); });
    expect("wmma store, then one lane's read after __syncthreads", CLEAN,
           [&](float* out) { wmma_store_then_read<<<1, THREADS, tile_bytes>>>(out, true, true); });
    expect("device memory: a neighbour's element after __syncthreads", CLEAN,
           [&](float* out) { device_neighbour_read<<<4, THREADS>>>(out, 1, 0, true); });
    expect("device memory: a neighbour's element without a barrier", DEVICE_RACE,
           [&](float* out) { device_neighbour_read<<<4, THREADS>>>(out, 1, 0, false); });
    expect("device memory: another block's element, even after __syncthreads", DEVICE_RACE,
           [&](float* out) { device_neighbour_read<<<4, THREADS>>>(out, 0, 1, true); });
    expect("device memory: the same elements written by every block", DEVICE_RACE,
           [&](float* out) { device_same_elements<<<2, THREADS>>>(out); });
    expect("device memory: the same elements written by two launches", CLEAN, [&](float* out) {
        device_same_elements<<<1, THREADS>>>(out);
        device_same_elements<<<1, THREADS>>>(out);
    });
    expect("shared memory read where only half the threads wrote", UNINITIALIZED,
           [&](float* out) { half_written<<<1, THREADS, bytes>>>(out, false); });
    expect("shared memory value an earlier block left", UNINITIALIZED,
           [&](float* out) { half_written<<<2, THREADS, bytes>>>(out, true); });
    std::printf("race detection: %d passed, %d failed\n", passes, failures);
    return failures == 0 ? 0 : 1;
}
