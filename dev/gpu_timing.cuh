// gpu_timing.cuh: how the GPU benchmarks under dev/ time a piece of work. Two CUDA events on the stream
// around `repeats` calls, after `warmups` untimed calls (first-call setup: cuBLASLt's heuristics, NCCL's
// connections, cold caches), so the figure is the GPU's time per call, launch gaps included.
#pragma once
#include "../layers/cuda_common.cuh"

namespace focus::gpu {

// Mean milliseconds per call of run(), which enqueues its work on stream.
template <typename Run>
double mean_ms_per_call(cudaStream_t stream, int warmups, int repeats, Run run) {
    for (int i = 0; i < warmups; i++) run();
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    CUDA_CHECK(cudaEventRecord(start, stream));
    for (int i = 0; i < repeats; i++) run();
    CUDA_CHECK(cudaEventRecord(stop, stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(stop));
    return ms / repeats;
}

}  // namespace focus::gpu
