// test_bank_conflicts.cu: the emulator's count of shared-memory bank conflicts
// (dev/cuda_emulation/shared_memory_banks.cpp) on access patterns whose cost the hardware rule fixes:
// each kernel makes one read per thread of interest (its setup writes are conflict-free), and the extra
// wavefronts per warp must be what the rule says. Emulation only (it reads the emulator's counters):
// built with -fsanitize=thread as build/test_bank_conflicts, in `make emulate-check`.
#include <cuda_runtime.h>

#include <cstdio>

namespace {

constexpr int THREADS = 64;  // two warps
constexpr int SHARED_FLOATS = 32 * THREADS + 64;

// Fills the whole shared array, thread t the words t, t + THREADS, ...: every request conflict-free.
__device__ void fill(float* values) {
    for (int i = threadIdx.x; i < SHARED_FLOATS; i += THREADS) values[i] = float(i);
    __syncthreads();
}

// thread t reads float t * stride: stride 1 and 33 are conflict-free, 2 two-way, 32 thirty-two-way
__global__ void strided_read(float* out, int stride) {
    extern __shared__ float values[];
    fill(values);
    out[threadIdx.x] = values[threadIdx.x * stride];
}

// every thread reads the same word: a broadcast, one wavefront
__global__ void broadcast_read(float* out) {
    extern __shared__ float values[];
    fill(values);
    out[threadIdx.x] = values[5];
}

// consecutive 16-byte reads: four phases of 8 lanes, each conflict-free
__global__ void vector_read(float* out) {
    extern __shared__ float values[];
    fill(values);
    const float4 v = reinterpret_cast<const float4*>(values)[threadIdx.x];
    out[threadIdx.x] = v.x + v.y + v.z + v.w;
}

// 16-byte reads two vectors apart: each phase of 8 lanes covers 256 bytes, two words per bank
__global__ void spread_vector_read(float* out) {
    extern __shared__ float values[];
    fill(values);
    const float4 v = reinterpret_cast<const float4*>(values)[2 * threadIdx.x];
    out[threadIdx.x] = v.x + v.y + v.z + v.w;
}

// two threads per row of a tile with `pitch` floats per row, thread t row t / 2 and column t % 2 (the
// fused attention kernels' element phase): a warp reads 16 rows, two-way conflicts when pitch = 68
// (rows r and r + 8 share banks), none when pitch = 66
__global__ void row_pair_read(float* out, int pitch) {
    extern __shared__ float values[];
    fill(values);
    out[threadIdx.x] = values[threadIdx.x / 2 * pitch + threadIdx.x % 2];
}

int failures = 0, passes = 0;

// Runs launch(out) and checks the extra wavefronts its warps' requests took, per warp.
template <typename Launch>
void expect(const char* name, unsigned long long extra_per_warp, Launch launch) {
    namespace banks = cuda_emulation::shared_memory_banks;
    float* out = nullptr;
    cudaMalloc(&out, THREADS * sizeof(float));
    const banks::Totals before = banks::totals();
    launch(out);
    const cudaError_t error = cudaDeviceSynchronize();
    const banks::Totals after = banks::totals();
    cudaFree(out);
    const unsigned long long extra = (after.wavefronts - before.wavefronts) - (after.ideal_wavefronts - before.ideal_wavefronts);
    const unsigned long long expected = extra_per_warp * (THREADS / 32);
    const bool ok = error == cudaSuccess && extra == expected;
    std::printf("%s %s: %llu extra wavefronts (expected %llu)%s\n", ok ? "ok" : "FAILED", name, extra, expected,
                error == cudaSuccess ? "" : ", the launch failed");
    (ok ? passes : failures)++;
}

}  // namespace

int main() {
    cuda_emulation::shared_memory_banks::enabled = true;
    const size_t bytes = SHARED_FLOATS * sizeof(float);
    expect("consecutive floats", 0, [&](float* out) { strided_read<<<1, THREADS, bytes>>>(out, 1); });
    expect("floats 2 apart: two-way", 1, [&](float* out) { strided_read<<<1, THREADS, bytes>>>(out, 2); });
    expect("floats 32 apart: 32-way", 31, [&](float* out) { strided_read<<<1, THREADS, bytes>>>(out, 32); });
    expect("floats 33 apart", 0, [&](float* out) { strided_read<<<1, THREADS, bytes>>>(out, 33); });
    expect("one word for every lane", 0, [&](float* out) { broadcast_read<<<1, THREADS, bytes>>>(out); });
    expect("consecutive float4", 0, [&](float* out) { vector_read<<<1, THREADS, bytes>>>(out); });
    expect("float4 two apart: two-way in each of 4 phases", 4,
           [&](float* out) { spread_vector_read<<<1, THREADS, bytes>>>(out); });
    expect("two threads per row, pitch 68: two-way", 1, [&](float* out) { row_pair_read<<<1, THREADS, bytes>>>(out, 68); });
    expect("two threads per row, pitch 66", 0, [&](float* out) { row_pair_read<<<1, THREADS, bytes>>>(out, 66); });
    std::printf("bank conflicts: %d passed, %d failed\n", passes, failures);
    return failures == 0 ? 0 : 1;
}
