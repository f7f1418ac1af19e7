// cuda_emulation.h: runs the project's CUDA code on the CPU, to find indexing, synchronisation and logic
// bugs in the kernels and in gpu::GPT without a GPU. `make emulate-check` builds the GPU test binary this
// way (build/test_gpu_emulated, build/test_gpu_fp32_emulated, and with race detection
// build/test_gpu_racecheck, build/test_gpu_fp32_racecheck) and runs its small shapes.
//
// How: dev/cuda_emulation/preprocess.py copies the sources into build/emulation/, rewriting what is not
// C++ (kernel<<<grid, block, shared, stream>>>(args) becomes a call to launch() below, `__shared__`
// variables become block-shared storage, `extern __shared__` arrays a pointer to the block's dynamic
// shared memory, __CUDACC__ becomes CUDA_EMULATION); g++ compiles the copies with this header forced in
// (-include) and links cuda_emulation_runtime.cpp, which implements the runtime API the project calls.
// The real CUDA headers (cuda_runtime.h, cuda_bf16.h, cublasLt.h, nccl.h) supply every type, constant and
// declaration, so the code compiles against exactly what nvcc sees; no CUDA library is linked.
//
// What is emulated:
//  - Each block's threads are fibers (ucontext) run round-robin on one OS thread; blocks run in parallel
//    over OpenMP threads. threadIdx, blockIdx, blockDim and gridDim are per OS thread, switched with the
//    fiber. __syncthreads() (and _or/_and/_count) waits for every thread of the block that has not
//    exited; warp shuffles wait for every lane of their mask. Reported as a launch failure (the test
//    binary's CUDA_CHECK_LAUNCH throws, naming kernel, block, thread): a deadlock, threads of one block
//    waiting at __syncthreads on different source lines, a shuffle whose mask names an exited or missing
//    lane or whose lanes disagree on the mask, a kernel argument that is a non-null host pointer, an
//    invalid launch configuration (also an empty grid, or more than 48 KiB of dynamic shared memory
//    without cudaFuncSetAttribute), a wmma pointer or leading dimension that breaks wmma's alignment rules.
//  - Memory: cudaMalloc'd buffers end at a guard page and start filled with 0xFF (NaN in float and bf16);
//    so is the dynamic shared memory of every block, and `__shared__` variables start each block as 0xFF.
//    A read or write past the end of a device buffer (rounded up to 256 bytes) or of the dynamic shared
//    memory (rounded up to 128 bytes) stops the program with the kernel, block and thread. cudaMemcpy and
//    cudaMemset check direction and bounds against the live allocations.
//  - wmma (nvcuda::wmma, 16x16x16, bf16 operands, float accumulator): every lane holds the whole 16 x 16
//    tile and computes the product itself (the warp's first lane computes it, the others reuse the result
//    when their inputs are the same bits). load_matrix_sync and store_matrix_sync are warp barriers, so
//    every lane has read a tile before any lane overwrites it, as when the warp moves it at once. The
//    fragments' x[] element layout is not emulated (the project never indexes fragments).
//  - cuBLASLt (what layers/matmul.cuh uses): column-major D = epilogue(alpha op(A) op(B) + beta C + bias)
//    with fp32 accumulation, the BIAS, GELU_AUX and GELU_AUX_BIAS epilogues (tanh GELU), transposes,
//    shape, leading-dimension and aux-buffer rules checked as cublasLt.h documents them.
//  - NCCL with one rank (all-reduce, reduce, all-gather: copies; in-place layouts checked).
//  - Streams and events exist but every call is synchronous; the device reports itself as an sm_90 H100.
//  - Races, in code compiled with -fsanitize=thread (build/test_gpu_racecheck): every access to shared
//    and device memory is recorded, and two from different threads that nothing orders (no __syncthreads
//    or whole-warp __syncwarp between them; different blocks of one launch), one a write, fail the launch
//    with both source lines, as does a read of shared memory the block has not written (race_detection.cpp;
//    on a GPU, compute-sanitizer's racecheck in `make gpu-check` covers shared memory); from the same
//    record, with CUDA_EMULATION_REQUESTS set, the cost of the memory requests per source line at exit:
//    bank conflicts, uncoalesced sectors (memory_requests.cpp, `make memory-requests`). Without it, fibers
//    switch only at barriers and shuffles, so between two barriers a thread sees the writes of every thread
//    that ran before it, and a missing __syncthreads shows only when a read comes first (poison) or when
//    results change with the order: CUDA_EMULATION_ORDER=reverse or random runs the threads in that order
//    instead of thread 0 first.
// What is not:
//  - No memory model, no atomics, no warp-synchronous execution (lanes of a warp do not run in lockstep,
//    and code that relies on that is a bug anyway).
//  - Reads of memory that is inside an allocation but wrong are not found, nor out-of-bounds accesses to
//    `__shared__` variables, host memory or within the rounding slack above.
//  - Floating point: host libm and fp32 sums in a fixed order; tensor-core and cuBLASLt rounding differ
//    slightly from the real ones. Timing is meaningless.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#define CUDA_EMULATION 1
#define __launch_bounds__(...)

// The built-in variables, per OS thread; the scheduler sets them to the running fiber's values.
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

namespace cuda_emulation {

// ---- launches (the preprocessor's output calls these) -----------------------------------------------

struct LaunchConfig {
    dim3 grid, block;
    size_t shared_bytes;
    cudaStream_t stream;
};
inline LaunchConfig config(dim3 grid, dim3 block, size_t shared_bytes = 0, cudaStream_t stream = nullptr) {
    return {grid, block, shared_bytes, stream};
}

// Implemented in cuda_emulation_runtime.cpp.
// Validates the configuration (kernel: the function's address, or nullptr where the preprocessor could
// not name it); on failure sets the error cudaGetLastError returns and returns false.
bool valid_launch(const char* name, const void* kernel, const LaunchConfig& config);
// A non-null pointer argument must point into (or one past) a live device allocation.
bool valid_pointer_argument(const char* name, int index, const void* pointer);
// Runs body(context) as every thread of every block; a fault inside sets the launch error.
void run_grid(const char* name, const char* caller, const LaunchConfig& config, void (*body)(void*), void* context);
// This block's dynamic shared memory.
unsigned char* dynamic_shared_memory();
// Counts the blocks run on this OS thread: __shared__ storage is poisoned when it changes.
extern thread_local uint64_t block_serial;
// Reports a misuse in the running kernel and abandons the launch (never returns into the kernel).
[[noreturn]] void fault(const char* format, ...) __attribute__((format(printf, 1, 2)));
// The running emulated thread's threadIdx as one number (x fastest), or -1 outside a kernel.
int running_thread();

// The race detector (race_detection.cpp): active when some code was compiled with -fsanitize=thread.
namespace race_detection {
extern bool enabled;
// From the runtime: a launch starts (its blocks then run one at a time), a block starts (its dynamic
// shared memory and number of warps), a __syncthreads releases its threads, a __syncwarp (or wmma
// operation) completes for every lane of a warp, cudaMalloc and cudaFree make and free a buffer.
void launch_started();
void start_block(const unsigned char* dynamic_shared, size_t bytes, int warps);
void barrier_released();
void warp_synchronized(int warp);
void device_buffer_allocated(const void* begin, size_t bytes);
void device_buffer_freed(const void* begin);
// A `__shared__` variable's storage, when a block first uses it.
void register_shared_variable(const void* storage, size_t bytes);
// An access that the lanes of the running thread's warp make together (wmma); code: the caller.
void collective_access(const void* address, size_t bytes, bool write, const void* code);
// "file:line" of an instrumented instruction (an offset into the executable), through addr2line.
std::string source_of(uint32_t code);
}  // namespace race_detection

// What the kernels' memory requests would cost a GPU (memory_requests.cpp): shared-memory bank conflicts
// and device-memory sectors, from the accesses the race detector sees, when enabled (CUDA_EMULATION_REQUESTS
// set: reported per source line at exit).
namespace memory_requests {
extern bool enabled;
void block_started();
void barrier_released();
// An access by thread (threadIdx as one number) with instruction code: to bytes at offset into shared
// array `array` (numbered as the race detector numbers the block's arrays), or to device memory in the
// buffer that starts at `buffer`.
void record_shared(int thread, uint32_t code, size_t array, size_t offset, size_t bytes, bool write);
void record_device(int thread, uint32_t code, const void* buffer, const void* address, size_t bytes, bool write);
struct Totals {
    uint64_t shared_requests, wavefronts, ideal_wavefronts;
    uint64_t device_requests, sectors, ideal_sectors;
};
// So far (every block run): warp requests and their cost, against the least they could cost.
Totals totals();
}  // namespace memory_requests

void syncthreads(const char* file, int line);
enum class Vote { any, all, count };
int syncthreads_vote(int predicate, Vote vote, const char* file, int line);
void syncwarp(unsigned mask, const char* file, int line);
enum class Shuffle { index, up, down, exclusive_or };
uint64_t shuffle(unsigned mask, uint64_t bits, Shuffle kind, int operand, int width, const char* file, int line);

// kernel<<<config>>>(args...): the arguments are evaluated and copied once, as a launch does; each
// emulated thread then calls kernel with its own copies (kernel: a lambda the preprocessor writes around
// the kernel's name, so that templates are deduced from the arguments as in the original call).
// name: "kernel (file:line)", caller: the launching function (which instantiation of a template).
template <typename Kernel, typename... Args>
void launch(const char* name, const char* caller, const void* kernel_address, const LaunchConfig& config,
            Kernel kernel, const Args&... args) {
    int index = 0;
    bool pointers_valid = true;
    auto check = [&](const auto& argument) {
        if constexpr (std::is_pointer_v<std::decay_t<decltype(argument)>>)
            pointers_valid = valid_pointer_argument(name, index, argument) && pointers_valid;
        index++;
    };
    (check(args), ...);
    if (!pointers_valid || !valid_launch(name, kernel_address, config)) return;
    std::tuple<std::decay_t<Args>...> values(args...);
    auto body = [&] { std::apply(kernel, values); };
    run_grid(name, caller, config, [](void* context) { (*static_cast<decltype(body)*>(context))(); }, &body);
}

// `__shared__ T name;` becomes `auto& name = shared_variable<T>([] {});`: the lambda's type makes the
// storage unique to the declaration (and to each instantiation of an enclosing template). The fibers of a
// block share the OS thread, so thread_local storage is the block's; it is poisoned when a block starts.
template <typename T, typename Site>
T& shared_variable(Site) {
    static_assert(std::is_trivially_default_constructible_v<std::remove_all_extents_t<T>>,
                  "__shared__ variables of a type with a constructor are not emulated");
    alignas(16) static thread_local unsigned char storage[sizeof(T)];
    static thread_local uint64_t poisoned_in = 0;
    if (poisoned_in != block_serial) {
        std::memset(storage, 0xFF, sizeof(T));
        poisoned_in = block_serial;
        if (race_detection::enabled) race_detection::register_shared_variable(storage, sizeof(T));
    }
    return *reinterpret_cast<T*>(storage);
}

template <typename T>
T* dynamic_shared() {
    return reinterpret_cast<T*>(dynamic_shared_memory());
}

template <typename T>
T shuffle_value(unsigned mask, T value, Shuffle kind, int operand, int width, const char* file, int line) {
    static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>, "shuffles move up to 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    bits = shuffle(mask, bits, kind, operand, width, file, line);
    T result;
    std::memcpy(&result, &bits, sizeof(T));
    return result;
}

}  // namespace cuda_emulation

// cuda_runtime.h's template overload for kernels, declared for nvcc only.
template <typename... Parameters>
cudaError_t cudaFuncSetAttribute(void (*kernel)(Parameters...), cudaFuncAttribute attr, int value) {
    return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}

// ---- device intrinsics --------------------------------------------------------------------------------

#define __syncthreads() ::cuda_emulation::syncthreads(__FILE__, __LINE__)
#define __syncthreads_or(p) ::cuda_emulation::syncthreads_vote((p), ::cuda_emulation::Vote::any, __FILE__, __LINE__)
#define __syncthreads_and(p) ::cuda_emulation::syncthreads_vote((p), ::cuda_emulation::Vote::all, __FILE__, __LINE__)
#define __syncthreads_count(p) \
    ::cuda_emulation::syncthreads_vote((p), ::cuda_emulation::Vote::count, __FILE__, __LINE__)
#define __syncwarp(...) ::cuda_emulation::syncwarp(::cuda_emulation::full_mask(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_sync(mask, value, lane, ...) \
    ::cuda_emulation::shuffle_value((mask), (value), ::cuda_emulation::Shuffle::index, (lane), \
                                    ::cuda_emulation::width(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_up_sync(mask, value, delta, ...) \
    ::cuda_emulation::shuffle_value((mask), (value), ::cuda_emulation::Shuffle::up, (delta), \
                                    ::cuda_emulation::width(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_down_sync(mask, value, delta, ...) \
    ::cuda_emulation::shuffle_value((mask), (value), ::cuda_emulation::Shuffle::down, (delta), \
                                    ::cuda_emulation::width(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_xor_sync(mask, value, lane_mask, ...) \
    ::cuda_emulation::shuffle_value((mask), (value), ::cuda_emulation::Shuffle::exclusive_or, (lane_mask), \
                                    ::cuda_emulation::width(__VA_ARGS__), __FILE__, __LINE__)

namespace cuda_emulation {
// the optional arguments of the macros above
inline unsigned full_mask(unsigned mask = 0xffffffffu) { return mask; }
inline int width(int width = 32) { return width; }
}  // namespace cuda_emulation

// CUDA's integer and floating-point min and max, which device code calls unqualified.
#define CUDA_EMULATION_MIN_MAX(T)                      \
    inline T min(T a, T b) { return b < a ? b : a; } \
    inline T max(T a, T b) { return a < b ? b : a; }
CUDA_EMULATION_MIN_MAX(int)
CUDA_EMULATION_MIN_MAX(unsigned)
CUDA_EMULATION_MIN_MAX(long long)
CUDA_EMULATION_MIN_MAX(unsigned long long)
#undef CUDA_EMULATION_MIN_MAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// The fast-math intrinsics, at full precision.
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

// ---- nvcuda::wmma --------------------------------------------------------------------------------------

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <typename Use, int M, int N, int K>
struct Shape;
template <int M, int N, int K>
struct Shape<matrix_a, M, N, K> {
    static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct Shape<matrix_b, M, N, K> {
    static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct Shape<accumulator, M, N, K> {
    static constexpr int rows = M, cols = N;
};

// wmma's rules for load_matrix_sync/store_matrix_sync: a 256-bit aligned pointer, and a leading
// dimension that is a multiple of 16 bytes.
void check_operand(const void* pointer, size_t ldm_bytes, const char* what);
// A load or store is collective: every lane holds the whole tile, so all lanes must have read the memory
// before any lane overwrites it (C = C + A B in place), as the warp does it at once on a GPU.
void warp_collective(const char* what);
// d = a b + c for 16 x 16 tiles (d may be c)
void multiply(float d[16][16], const float a[16][16], const float b[16][16], const float c[16][16]);
}  // namespace detail

// The whole rows x cols tile, in every lane, row-major.
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "only the 16x16x16 shape is emulated");
    using Shape = detail::Shape<Use, M, N, K>;
    float tile[Shape::rows][Shape::cols];
};

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float value) {
    for (auto& row : f.tile)
        for (float& x : row) x = value;
}

namespace detail {
// The element (r, c) of a tile at p, in memory of either layout.
template <typename Element>
Element& tile_element(Element* p, unsigned ldm, bool row_major_memory, int r, int c) {
    return row_major_memory ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r];
}

// Under race detection the accesses are recorded as the warp's, once (every lane here moves the whole
// tile, a GPU lane only its share), and the element copies are not instrumented.
inline bool records_collective_access() {
    return cuda_emulation::race_detection::enabled && cuda_emulation::running_thread() % 32 == 0;
}

template <typename Use, int M, int N, int K, typename T, typename Layout, typename Element>
__attribute__((no_sanitize("thread"), noinline)) void load_tile(fragment<Use, M, N, K, T, Layout>& f, const Element* p,
                                                      unsigned ldm, bool row_major_memory) {
    static_assert(std::is_same_v<std::remove_cv_t<Element>, T>, "the fragment's element type");
    check_operand(p, size_t(ldm) * sizeof(Element), "load_matrix_sync");
    warp_collective("load_matrix_sync");
    using Shape = detail::Shape<Use, M, N, K>;
    const bool record = records_collective_access();
    for (int r = 0; r < Shape::rows; r++)
        for (int c = 0; c < Shape::cols; c++) {
            const Element& element = tile_element(p, ldm, row_major_memory, r, c);
            if (record)
                cuda_emulation::race_detection::collective_access(&element, sizeof(Element), false,
                                                                  __builtin_return_address(0));
            f.tile[r][c] = float(element);
        }
}
}  // namespace detail

// matrix_a and matrix_b: the layout is the fragment's
template <typename Use, int M, int N, int K, typename T, typename Layout, typename Element>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const Element* p, unsigned ldm) {
    static_assert(std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>,
                  "an operand fragment needs a layout");
    detail::load_tile(f, p, ldm, std::is_same_v<Layout, row_major>);
}

template <int M, int N, int K, typename T>
void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm, layout_t layout) {
    detail::load_tile(f, p, ldm, layout == mem_row_major);
}

template <int M, int N, int K, typename T>
__attribute__((no_sanitize("thread"), noinline)) void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f,
                                                                       unsigned ldm, layout_t layout) {
    detail::check_operand(p, size_t(ldm) * sizeof(T), "store_matrix_sync");
    detail::warp_collective("store_matrix_sync");
    const bool record = detail::records_collective_access();
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++) {
            T& element = detail::tile_element(p, ldm, layout == mem_row_major, r, c);
            if (record)
                cuda_emulation::race_detection::collective_access(&element, sizeof(T), true,
                                                                  __builtin_return_address(0));
            element = T(f.tile[r][c]);
        }
}

template <int M, int N, int K, typename T, typename LayoutA, typename LayoutB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LayoutA>& a,
              const fragment<matrix_b, M, N, K, T, LayoutB>& b, const fragment<accumulator, M, N, K, float>& c) {
    detail::multiply(d.tile, a.tile, b.tile, c.tile);
}

}  // namespace nvcuda::wmma
