// cuda_common.cuh: what every CUDA layer shares.
//  - floatX, the type of activations, weights and gradients on the GPU: __nv_bfloat16, or float when
//    compiled with -DFOCUS_FP32 (the build that checks the kernels at fp32 precision). Kernels load
//    floatX, compute and accumulate in float, and round once when they store.
//  - CUDA_CHECK / CUBLAS_CHECK: a failed call throws focus::Error("file:line: ...") like check().
//  - DeviceBuffer<T>: an owned cudaMalloc allocation; allocate() makes one whose failure for lack of
//    memory says what it was for and how big ("out of GPU memory allocating activations.probs ...").
//    DeviceMemory counts the bytes all DeviceBuffers hold, now and at most: this process's own memory
//    (cudaMemGetInfo would count every process's, and the CUDA context's).
//  - warp_sum / block_sum: tree sums whose order is fixed by the block shape, so reductions are
//    deterministic (no atomics anywhere in the layers).
//  - column_sums: out[c] += sum over rows of element(row, c), deterministic, in two stages: blocks of
//    COLUMN_THREADS columns x COLUMN_CHUNK_ROWS rows write one partial sum per (chunk, column), then
//    one thread per column adds its chunks in order. Used for every bias and LayerNorm parameter
//    gradient.
//  - Context: the cuBLASLt handle, its workspace, and scratch memory for the partial sums of
//    two-stage reductions. One per process, made on first use. The layers reuse the scratch from call
//    to call, so they must be called from one stream at a time (the trainer uses one stream).
// The kernels in these headers are static: a __global__ function cannot be inline, so each translation
// unit that includes a header gets its own copy, and binaries of several .cu files still link.
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "common.h"

namespace focus::gpu {

#ifdef FOCUS_FP32
using floatX = float;
constexpr const char* PRECISION = "fp32";
#else
using floatX = __nv_bfloat16;
constexpr const char* PRECISION = "bf16";
#endif

#define CUDA_CHECK(call)                                                                                              \
    do {                                                                                                              \
        cudaError_t status_ = (call);                                                                                 \
        if (status_ != cudaSuccess)                                                                                   \
            throw focus::Error(                                                                                       \
                focus::format("%s:%d: CUDA error: %s (%s)", __FILE__, __LINE__, cudaGetErrorString(status_), #call)); \
    } while (0)

#define CUBLAS_CHECK(call)                                                                       \
    do {                                                                                         \
        cublasStatus_t status_ = (call);                                                         \
        if (status_ != CUBLAS_STATUS_SUCCESS)                                                    \
            throw focus::Error(focus::format("%s:%d: cuBLAS error: %s (%s)", __FILE__, __LINE__, \
                                             cublasLtGetStatusString(status_), #call));          \
    } while (0)

// After a kernel launch: reports a bad launch configuration at the launch rather than at a later call.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

constexpr int WARP_SIZE = 32;

inline unsigned ceil_div(size_t n, size_t d) { return unsigned((n + d - 1) / d); }

// The bytes held in DeviceBuffers by this process: now, and the most at any time.
class DeviceMemory {
public:
    static size_t in_use() { return in_use_; }
    static size_t peak() { return peak_; }

private:
    template <typename T>
    friend class DeviceBuffer;
    static void allocated(size_t bytes) {
        const size_t now = in_use_ += bytes;
        size_t before = peak_;
        while (now > before && !peak_.compare_exchange_weak(before, now)) {
        }
    }
    static void freed(size_t bytes) { in_use_ -= bytes; }
    static inline std::atomic<size_t> in_use_{0}, peak_{0};
};

template <typename T>
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t count) : count_(count) {
        if (!count) return;
        CUDA_CHECK(cudaMalloc(&data_, count * sizeof(T)));
        DeviceMemory::allocated(count * sizeof(T));
    }
    explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
    ~DeviceBuffer() {
        if (!data_) return;
        cudaFree(data_);  // a destructor cannot throw; a failure here has nothing left to free
        DeviceMemory::freed(count_ * sizeof(T));
    }
    DeviceBuffer(DeviceBuffer&& other) noexcept { swap(other); }
    DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
        DeviceBuffer(std::move(other)).swap(*this);
        return *this;
    }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

    T* data() const { return data_; }
    size_t size() const { return count_; }

    void upload(const std::vector<T>& host) {
        check(host.size() == count_, format("upload of %zu elements into a buffer of %zu", host.size(), count_));
        CUDA_CHECK(cudaMemcpy(data_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice));
    }
    std::vector<T> download() const {
        std::vector<T> host(count_);
        CUDA_CHECK(cudaMemcpy(host.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost));
        return host;
    }

private:
    void swap(DeviceBuffer& other) noexcept {
        std::swap(data_, other.data_);
        std::swap(count_, other.count_);
    }
    T* data_ = nullptr;
    size_t count_ = 0;
};

inline std::string human_bytes(size_t bytes) {
    return bytes >= (size_t(1) << 30) ? format("%.1f GiB", bytes / double(size_t(1) << 30))
                                      : format("%.1f MiB", bytes / double(size_t(1) << 20));
}

// A DeviceBuffer whose allocation failure names what it is for: "out of GPU memory allocating
// activations.probs (4.8 GiB); reduce --batch or --seq".
template <typename T>
DeviceBuffer<T> allocate(const std::string& name, size_t count, const char* advice) {
    try {
        return DeviceBuffer<T>(count);
    } catch (const Error&) {
        if (cudaGetLastError() != cudaErrorMemoryAllocation) throw;  // also clears the (non-sticky) error
        throw Error(format("out of GPU memory allocating %s (%s); %s", name.c_str(),
                           human_bytes(count * sizeof(T)).c_str(), advice));
    }
}

class Context {
public:
    // cuBLAS's recommendation for Hopper (sm_90); more than enough for sm_80.
    static constexpr size_t CUBLASLT_WORKSPACE_BYTES = size_t(32) << 20;

    static Context& get() {
        static Context context;
        return context;
    }

    cublasLtHandle_t cublaslt() const { return cublaslt_; }
    void* cublaslt_workspace() const { return workspace_.data(); }

    // Scratch for count elements of T, valid until the next layer call; grown on demand.
    template <typename T>
    T* scratch(size_t count) {
        const size_t bytes = count * sizeof(T);
        if (bytes > scratch_.size()) {
            CUDA_CHECK(cudaDeviceSynchronize());  // kernels still in flight may be reading the old buffer
            scratch_ = DeviceBuffer<unsigned char>();  // free it before allocating the larger one
            scratch_ = allocate<unsigned char>("the layers' scratch", bytes, "reduce --batch or --seq");
        }
        return reinterpret_cast<T*>(scratch_.data());  // cudaMalloc aligns to at least 256 bytes
    }

    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;

private:
    Context()
        : workspace_(allocate<unsigned char>("cuBLASLt's workspace", CUBLASLT_WORKSPACE_BYTES,
                                             "other processes may hold the GPU's memory")) {
        CUBLAS_CHECK(cublasLtCreate(&cublaslt_));
    }
    ~Context() { cublasLtDestroy(cublaslt_); }

    cublasLtHandle_t cublaslt_ = nullptr;
    DeviceBuffer<unsigned char> workspace_;
    DeviceBuffer<unsigned char> scratch_;
};

// The sum of value over the 32 lanes of a warp, returned to every lane (all lanes must take part).
__device__ inline float warp_sum(float value) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
    return value;
}

// The sum of value over the block, returned to every thread. Every thread must call it, and blockDim.x
// must be a multiple of 32.
__device__ inline float block_sum(float value) {
    __shared__ float warp_sums[WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    value = warp_sum(value);
    if (lane == 0) warp_sums[warp] = value;
    __syncthreads();
    // every warp adds up the per-warp sums, so every thread ends with the total
    value = warp_sum(lane < int(blockDim.x / WARP_SIZE) ? warp_sums[lane] : 0.0f);
    __syncthreads();  // warp_sums may be overwritten by the next call only after everyone has read it
    return value;
}

// ---- column_sums ---------------------------------------------------------------------------------

constexpr int COLUMN_THREADS = 256;
constexpr int COLUMN_CHUNK_ROWS = 32;

// partials[chunk, col] = sum of element(row, col) over the chunk's rows, in increasing row order.
template <typename Element>
static __global__ void column_partial_sums_kernel(float* partials, Element element, int rows, int width) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= width) return;
    const int row_begin = blockIdx.y * COLUMN_CHUNK_ROWS, row_end = min(rows, row_begin + COLUMN_CHUNK_ROWS);
    float sum = 0.0f;
    for (int row = row_begin; row < row_end; row++) sum += element(row, col);
    partials[size_t(blockIdx.y) * width + col] = sum;
}

// out[col] += sum of partials[:, col], chunks in order.
template <typename T>
static __global__ void add_column_partials_kernel(T* out, const float* partials, int chunks, int width) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= width) return;
    float sum = 0.0f;
    for (int chunk = 0; chunk < chunks; chunk++) sum += partials[size_t(chunk) * width + col];
    out[col] = T(float(out[col]) + sum);
}

// Element (row, col) of a row-major matrix with width columns: the summands of a bias gradient.
struct MatrixElements {
    const floatX* data;
    int width;
    __device__ float operator()(int row, int col) const { return float(data[size_t(row) * width + col]); }
};

// out[col] += sum over rows of element(row, col), for col < width. Element is a functor with
// `__device__ float operator()(int row, int col) const`.
template <typename T, typename Element>
void column_sums(T* out, Element element, int rows, int width, cudaStream_t stream) {
    const unsigned chunks = ceil_div(rows, COLUMN_CHUNK_ROWS);
    check(chunks <= 65535, format("column_sums: %d rows is more than one launch covers", rows));
    float* partials = Context::get().scratch<float>(size_t(chunks) * width);
    const unsigned column_blocks = ceil_div(width, COLUMN_THREADS);
    column_partial_sums_kernel<<<dim3(column_blocks, chunks), COLUMN_THREADS, 0, stream>>>(partials, element, rows,
                                                                                           width);
    CUDA_CHECK_LAUNCH();
    add_column_partials_kernel<<<column_blocks, COLUMN_THREADS, 0, stream>>>(out, partials, chunks, width);
    CUDA_CHECK_LAUNCH();
}

}  // namespace focus::gpu
