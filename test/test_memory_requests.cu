// test_memory_requests.cu: the emulator's cost of memory requests (dev/cuda_emulation/memory_requests.cpp)
// on access patterns whose cost the hardware rules fix: shared-memory bank conflicts (extra wavefronts)
// and device-memory requests touching more 32-byte sectors than their bytes need. Each kernel makes one
// access per thread of interest (its setup is conflict-free and its output coalesced), and the extra cost
// per warp must be what the rule says. Emulation only (it reads the emulator's counters): built with
// -fsanitize=thread as build/test_memory_requests, in `make emulate-check`.
#include <cuda_bf16.h>
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

// thread t reads float `offset + t * stride` of device memory: consecutive floats take 4 sectors per
// warp, floats two apart 8, eight apart (one per sector) 32, consecutive from one float past a sector 5
__global__ void device_strided_read(float* out, const float* in, int stride, int offset) {
    out[threadIdx.x] = in[offset + threadIdx.x * stride];
}

// consecutive bf16 values: 64 bytes, 2 sectors per warp
__global__ void device_half_read(float* out, const __nv_bfloat16* in) { out[threadIdx.x] = float(in[threadIdx.x]); }

// 16 bytes a thread from device to shared memory and back out, as the attention kernels move tiles (g++
// may split each copy and put stores between the loads): 16 sectors per warp, no conflicts
__global__ void device_vector_copy(float* out, const float4* in) {
    extern __shared__ float4 tile[];
    tile[threadIdx.x] = in[threadIdx.x];
    __syncthreads();
    const float4 v = tile[(threadIdx.x + 1) % THREADS];
    out[threadIdx.x] = v.x + v.y + v.z + v.w;
}

int failures = 0, passes = 0;

// Runs launch(out) and checks the extra wavefronts (shared) and sectors (device) its warps' requests took,
// per warp.
template <typename Launch>
void expect(const char* name, unsigned long long extra_wavefronts, unsigned long long extra_sectors, Launch launch) {
    namespace requests = cuda_emulation::memory_requests;
    float* out = nullptr;
    cudaMalloc(&out, THREADS * sizeof(float));
    const requests::Totals before = requests::totals();
    launch(out);
    const cudaError_t error = cudaDeviceSynchronize();
    const requests::Totals after = requests::totals();
    cudaFree(out);
    const unsigned long long wavefronts =
        (after.wavefronts - before.wavefronts) - (after.ideal_wavefronts - before.ideal_wavefronts);
    const unsigned long long sectors = (after.sectors - before.sectors) - (after.ideal_sectors - before.ideal_sectors);
    const unsigned long long warps = THREADS / 32;
    const bool ok = error == cudaSuccess && wavefronts == extra_wavefronts * warps && sectors == extra_sectors * warps;
    std::printf("%s %s: %llu extra wavefronts, %llu extra sectors (expected %llu, %llu)%s\n", ok ? "ok" : "FAILED",
                name, wavefronts, sectors, extra_wavefronts * warps, extra_sectors * warps,
                error == cudaSuccess ? "" : ", the launch failed");
    (ok ? passes : failures)++;
}

}  // namespace

int main() {
    cuda_emulation::memory_requests::enabled = true;
    const size_t bytes = SHARED_FLOATS * sizeof(float);
    expect("shared: consecutive floats", 0, 0, [&](float* out) { strided_read<<<1, THREADS, bytes>>>(out, 1); });
    expect("shared: floats 2 apart, two-way", 1, 0, [&](float* out) { strided_read<<<1, THREADS, bytes>>>(out, 2); });
    expect("shared: floats 32 apart, 32-way", 31, 0, [&](float* out) { strided_read<<<1, THREADS, bytes>>>(out, 32); });
    expect("shared: floats 33 apart", 0, 0, [&](float* out) { strided_read<<<1, THREADS, bytes>>>(out, 33); });
    expect("shared: one word for every lane", 0, 0, [&](float* out) { broadcast_read<<<1, THREADS, bytes>>>(out); });
    expect("shared: consecutive float4", 0, 0, [&](float* out) { vector_read<<<1, THREADS, bytes>>>(out); });
    expect("shared: float4 two apart, two-way in each of 4 phases", 4, 0,
           [&](float* out) { spread_vector_read<<<1, THREADS, bytes>>>(out); });
    expect("shared: two threads per row, pitch 68, two-way", 1, 0,
           [&](float* out) { row_pair_read<<<1, THREADS, bytes>>>(out, 68); });
    expect("shared: two threads per row, pitch 66", 0, 0,
           [&](float* out) { row_pair_read<<<1, THREADS, bytes>>>(out, 66); });

    float* in = nullptr;
    cudaMalloc(&in, 8 * THREADS * sizeof(float) + 64);
    cudaMemset(in, 0, 8 * THREADS * sizeof(float) + 64);
    expect("device: consecutive floats", 0, 0, [&](float* out) { device_strided_read<<<1, THREADS>>>(out, in, 1, 0); });
    expect("device: floats 2 apart", 0, 4, [&](float* out) { device_strided_read<<<1, THREADS>>>(out, in, 2, 0); });
    expect("device: one float per sector", 0, 28,
           [&](float* out) { device_strided_read<<<1, THREADS>>>(out, in, 8, 0); });
    expect("device: consecutive floats from one past a sector", 0, 1,
           [&](float* out) { device_strided_read<<<1, THREADS>>>(out, in, 1, 1); });
    expect("device: consecutive bf16", 0, 0,
           [&](float* out) { device_half_read<<<1, THREADS>>>(out, reinterpret_cast<const __nv_bfloat16*>(in)); });
    expect("device to shared: 16 bytes a thread", 0, 0, [&](float* out) {
        device_vector_copy<<<1, THREADS, THREADS * sizeof(float4)>>>(out, reinterpret_cast<const float4*>(in));
    });
    cudaFree(in);
    std::printf("memory requests: %d passed, %d failed\n", passes, failures);
    return failures == 0 ? 0 : 1;
}
