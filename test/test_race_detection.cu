// test_race_detection.cu: the emulator's race detector (dev/cuda_emulation/race_detection.cpp) against
// small kernels on shared and device memory whose answer is known: each racy kernel must fail its launch with a report that names the
// race and the source lines of both accesses, and each correct one must pass. Built only for the
// emulation with -fsanitize=thread (build/test_race_detection, in `make emulate-check`); on a GPU the same
// question is compute-sanitizer's racecheck (dev/sanitize.sh).
#include <cuda_runtime.h>
#include <mma.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace {

constexpr int THREADS = 64;  // two warps

// This thread's own element of a kernel's output.
__device__ float& own(float* out) { return out[blockIdx.x * blockDim.x + threadIdx.x]; }

// thread t writes its element, then reads its neighbour's: needs the barrier
__global__ void neighbour_read(float* out, bool barrier) {
    extern __shared__ float values[];
    const int t = threadIdx.x;
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

// a `__shared__` variable, set by thread 0 and read by all
__global__ void shared_variable_read(float* out, bool barrier) {
    __shared__ float total;
    if (threadIdx.x == 0) total = 3.0f;
    if (barrier) __syncthreads();
    own(out) = total;
}

// warp 0 stores a 16 x 16 tile with wmma; warp 1 (or lane 0 of warp 0) then reads it
__global__ void wmma_store_then_read(float* out, bool barrier, bool same_warp) {
    namespace wmma = nvcuda::wmma;
    extern __shared__ float tile[];
    const int warp = threadIdx.x / 32;
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

// Runs launch(out); a race is expected or not. A report must name this file's source lines.
template <typename Launch>
void expect(const char* name, bool race, Launch launch) {
    float* out = nullptr;
    cudaMalloc(&out, 1024 * sizeof(float));
    CapturedStderr captured;
    launch(out);
    const cudaError_t error = cudaGetLastError();
    cudaDeviceSynchronize();
    const std::string report = captured.text();
    cudaFree(out);
    const bool reported = error == cudaErrorLaunchFailure && report.find("race on ") != std::string::npos;
    const bool located = report.find(" at test/test_race_detection.cu:") != std::string::npos;
    const bool ok = race ? reported && located : error == cudaSuccess && report.empty();
    std::printf("%s %s: %s\n", ok ? "ok" : "FAILED", name,
                race ? (reported ? (located ? "race reported" : "race reported without source lines")
                                 : "no race reported")
                     : (error == cudaSuccess ? "no race reported" : "launch failed"));
    if (!ok || (race && std::getenv("VERBOSE"))) std::fputs(report.c_str(), stderr);
    (ok ? passes : failures)++;
}

}  // namespace

int main() {
    const size_t bytes = 2 * THREADS * sizeof(float);
    expect("read of a neighbour's write without a barrier", true,
           [&](float* out) { neighbour_read<<<2, THREADS, bytes>>>(out, false); });
    expect("read of a neighbour's write after __syncthreads", false,
           [&](float* out) { neighbour_read<<<2, THREADS, bytes>>>(out, true); });
    expect("one element written by every thread", true,
           [&](float* out) { same_element_written<<<1, THREADS, bytes>>>(out); });
    expect("in-place shift without a barrier between read and write", true,
           [&](float* out) { shift_in_place<<<1, THREADS, bytes>>>(out, false); });
    expect("in-place shift with a barrier between read and write", false,
           [&](float* out) { shift_in_place<<<1, THREADS, bytes>>>(out, true); });
    expect("lanes exchanging after __syncwarp", false,
           [&](float* out) { lane_exchange<<<1, THREADS, bytes>>>(out, true); });
    expect("lanes exchanging after a shuffle only", true,
           [&](float* out) { lane_exchange<<<1, THREADS, bytes>>>(out, false); });
    expect("write, reads and a second write between barriers, in four blocks", false,
           [&](float* out) { broadcast_between_barriers<<<4, THREADS, bytes>>>(out); });
    expect("__shared__ variable read without a barrier", true,
           [&](float* out) { shared_variable_read<<<1, THREADS>>>(out, false); });
    expect("__shared__ variable read after __syncthreads", false,
           [&](float* out) { shared_variable_read<<<3, THREADS>>>(out, true); });
    const size_t tile_bytes = 256 * sizeof(float);
    expect("wmma store, then another warp's wmma load without a barrier", true,
           [&](float* out) { wmma_store_then_read<<<1, THREADS, tile_bytes>>>(out, false, false); });
    expect("wmma store, then another warp's wmma load after __syncthreads", false,
           [&](float* out) { wmma_store_then_read<<<1, THREADS, tile_bytes>>>(out, true, false); });
    expect("wmma store, then one lane's read without a barrier", true,
           [&](float* out) { wmma_store_then_read<<<1, THREADS, tile_bytes>>>(out, false, true); });
    expect("wmma store, then one lane's read after __syncthreads", false,
           [&](float* out) { wmma_store_then_read<<<1, THREADS, tile_bytes>>>(out, true, true); });
    expect("device memory: a neighbour's element after __syncthreads", false,
           [&](float* out) { device_neighbour_read<<<4, THREADS>>>(out, 1, 0, true); });
    expect("device memory: a neighbour's element without a barrier", true,
           [&](float* out) { device_neighbour_read<<<4, THREADS>>>(out, 1, 0, false); });
    expect("device memory: another block's element, even after __syncthreads", true,
           [&](float* out) { device_neighbour_read<<<4, THREADS>>>(out, 0, 1, true); });
    expect("device memory: the same elements written by every block", true,
           [&](float* out) { device_same_elements<<<2, THREADS>>>(out); });
    expect("device memory: the same elements written by two launches", false, [&](float* out) {
        device_same_elements<<<1, THREADS>>>(out);
        device_same_elements<<<1, THREADS>>>(out);
    });
    std::printf("race detection: %d passed, %d failed\n", passes, failures);
    return failures == 0 ? 0 : 1;
}
