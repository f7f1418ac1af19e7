// gpu_check.h: the harness the GPU test binary (test/test_gpu*.cu) shares: comparisons against the
// CPU reference with stated tolerances, a summary table, random inputs rounded to floatX, poisoned
// outputs. test_gpu.cu holds main() and the layer tests; test_gpu_attention.cu the attention kernels;
// test_gpu_model.cu a whole training step against the CPU trainer.
//
// For each kernel, at several shapes (including ones that are no multiple of any block size):
//  - random inputs from focus::Rng, rounded to floatX, so the CPU reference (run in double) and the
//    GPU see the same numbers and only the kernel's own arithmetic is measured;
//  - outputs the kernel writes are poisoned with NaN first (all bits set), so an element it misses
//    fails; gradients it accumulates into start from the same random values on both sides, which
//    checks the += as well;
//  - error = max |gpu - cpu| / max |cpu| over the tensor (an element near zero is judged at the
//    tensor's scale), against a tolerance:
//      fp32 build (-DFOCUS_FP32): 1e-5. One fp32 rounding is 6e-8; the longest sums here (a few
//        thousand terms of random sign) grow that by ~sqrt(length), to ~3e-6 at most.
//      bf16 build: 2e-2. A stored bf16 value is off by up to 2^-9 = 2e-3 relative (8-bit mantissa).
//        Every output is rounded once after an fp32 sum, and an accumulated gradient once more when
//        added, so errors stay a few times 2^-9; a wrong or missing term costs O(1).
//      Quantities kept in float in both builds (LayerNorm mean and rstd, losses, AdamW's master
//      weights and moments, the gradient norm) use 1e-5 in both.
//  - the reductions that must be deterministic (encoder and LayerNorm backward, the gradient norm)
//    run twice and must give identical bits.
// Prints each failure, then a table with one row per checked output (runs over all shapes, failures,
// the worst error) and "N passed, M failed"; exits 1 on any failure. -v prints every comparison.
// With no CUDA device it prints one "GPU tests skipped" line and exits 0 (1 with --require-gpu: an old
// driver also reads as no device, and a GPU check must not pass by skipping).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../layers/cuda_common.cuh"

namespace gpu_check {

using focus::format;
using focus::Rng;
using focus::gpu::DeviceBuffer;
using focus::gpu::floatX;
using Vector = std::vector<double>;

constexpr bool FP32_BUILD = std::is_same_v<floatX, float>;
constexpr double FP32_TOLERANCE = 1e-5;
constexpr double TOLERANCE = FP32_BUILD ? FP32_TOLERANCE : 2e-2;
// cuBLASLt's GELU epilogue is its own implementation of the tanh formula, of undocumented precision:
// in the fp32 build it is allowed the error of a hardware tanh approximation (~5e-4 relative).
constexpr double GELU_EPILOGUE_TOLERANCE = FP32_BUILD ? 1e-3 : TOLERANCE;

inline cudaStream_t stream;
inline bool verbose = false;  // -v: a line for every comparison, not only for failures

// The comparisons of one output of one kernel (e.g. "layernorm_forward mean") over all shapes.
struct Summary {
    std::string check;
    int runs = 0, failures = 0;
    double worst_error = 0, tolerance = 0;
};
inline std::vector<Summary> summaries;  // in the order the checks first ran

inline void record(const std::string& check, const std::string& shape, bool ok, double error, double tolerance,
            const std::string& detail) {
    auto it = std::find_if(summaries.begin(), summaries.end(), [&](const Summary& s) { return s.check == check; });
    Summary& summary = it != summaries.end() ? *it : summaries.emplace_back(Summary{check});
    summary.runs++;
    summary.failures += !ok;
    summary.worst_error = std::max(summary.worst_error, error);
    summary.tolerance = tolerance;
    if (!ok || verbose)
        std::printf("%s %s %s: %s\n", ok ? "ok" : "FAILED", check.c_str(), shape.c_str(), detail.c_str());
}

inline void expect_close(const std::string& check, const std::string& shape, const Vector& gpu, const Vector& cpu,
                  double tolerance) {
    if (gpu.size() != cpu.size())
        return record(check, shape, false, INFINITY, tolerance,
                      format("%zu elements, expected %zu", gpu.size(), cpu.size()));
    size_t not_finite = 0;
    double largest = 0, difference = 0;
    for (size_t i = 0; i < gpu.size(); i++) {
        largest = std::max(largest, std::fabs(cpu[i]));
        if (!std::isfinite(gpu[i]))
            not_finite++;
        else
            difference = std::max(difference, std::fabs(gpu[i] - cpu[i]));
    }
    const double error = not_finite ? INFINITY : largest > 0 ? difference / largest : difference;
    record(check, shape, error <= tolerance, error, tolerance,
           not_finite ? format("%zu elements not finite (unwritten, or NaN)", not_finite)
                      : format("error %.1e (tolerance %.0e)", error, tolerance));
}

template <typename T>
inline void expect_identical(const std::string& check, const std::string& shape, const DeviceBuffer<T>& first,
                      const DeviceBuffer<T>& second) {
    CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::vector<T> a = first.download(), b = second.download();
    const bool same = a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
    record(check + " bit-identical in two runs", shape, same, same ? 0 : INFINITY, 0,
           same ? "identical" : "the two runs differ");
}

inline double round_to_floatX(double x) { return float(floatX(float(x))); }

// n values from N(mean, std), rounded to what floatX can hold.
inline Vector random_vector(Rng& rng, size_t n, double std = 1.0, double mean = 0.0) {
    Vector v(n);
    for (double& x : v) x = round_to_floatX(rng.normal(mean, std));
    return v;
}

// The same for what float can hold, for the tensors kept in float in both builds.
inline Vector random_float_vector(Rng& rng, size_t n, double std) {
    Vector v(n);
    for (double& x : v) x = float(rng.normal(0.0, std));
    return v;
}

template <typename T>
DeviceBuffer<T> to_device(const Vector& host) {
    std::vector<T> converted(host.size());
    for (size_t i = 0; i < host.size(); i++) converted[i] = T(float(host[i]));
    return DeviceBuffer<T>(converted);
}

// Waits for the stream, then copies back.
template <typename T>
inline Vector to_host(const DeviceBuffer<T>& buffer) {
    CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::vector<T> host = buffer.download();
    Vector v(host.size());
    for (size_t i = 0; i < host.size(); i++) v[i] = float(host[i]);
    return v;
}

template <typename T>
DeviceBuffer<T> poisoned(size_t n) {
    DeviceBuffer<T> buffer(n);
    CUDA_CHECK(cudaMemset(buffer.data(), 0xFF, n * sizeof(T)));  // all bits set: a NaN in float and in bf16
    return buffer;
}


// Runs one test; an exception (a CUDA error, say) counts as a failure and the other tests still run.
// --small runs only the tests not marked large: what compute-sanitizer, which slows kernels by 10-100x,
// checks in `make gpu-check`, and what the emulator's race detector checks. --no-nccl also leaves out the
// test that uses NCCL (compute-sanitizer's run: NCCL's own kernels and memory are not what it checks; the
// emulator's NCCL is plain copies).
enum class Size { small, large };
inline bool small_only = false, without_nccl = false;

inline void run(const char* name, const std::function<void()>& test, Size size = Size::small) {
    if (small_only && size == Size::large) return;
    try {
        test();
    } catch (const std::exception& e) {
        record(format("%s: exception", name), "", false, INFINITY, 0, e.what());
    }
}

// The test groups in the other translation units, run by main() in test_gpu.cu.
void attention_tests();
void model_tests();

}  // namespace gpu_check
