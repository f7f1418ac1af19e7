// crossentropy.cuh: fused softmax + cross-entropy on the GPU, over logits[N, Vp] of which the first V
// columns are real (the CPU version and the formulas: crossentropy.h).
//   losses[i] = logsumexp(logits[i, :V]) - logits[i, targets[i]]                      (float)
//   dlogits[i, :V] = dloss * (softmax(logits[i, :V]) - onehot(targets[i])),  dlogits[i, V:Vp] = 0
// targets[i] == -1: loss 0 and a zero gradient row. A target outside [0, V) otherwise gives a NaN loss
// and a NaN gradient row, so a bad target shows instead of reading outside the row. dlogits is
// written, not accumulated; it may be nullptr (losses only) or alias logits (the gradient overwrites
// the logits in place, so no second [N, Vp] buffer and no probability matrix is ever stored).
// How the work is split: one block of CLASSIFIER_THREADS per row. Pass 1: each thread keeps a running
// (max, sum of exp(x - max)) over its strided columns, rescaling the sum when the max grows (the online
// softmax), and the block merges the threads' pairs in a fixed tree. Pass 2: each thread writes the
// gradient of the columns it read. In place is safe: every column is read and written by one thread,
// and all pass-1 reads (including the target's logit) come before the block's barrier.
//   argmax_rows: predictions[i] = the first index of the largest of logits[i, :V] (ties go to the lowest
//   id, as in data/tasks.h's accuracy), for next-token accuracy and greedy scoring without copying the
//   logits off the GPU. One block of ARGMAX_THREADS per row; each thread keeps the best (value, index) of
//   its strided columns and the block merges them. The result is unique, so the order does not matter.
#pragma once
#include <cfloat>

#include "cuda_common.cuh"

namespace focus::gpu {

constexpr int CLASSIFIER_THREADS = 1024;

// The softmax statistics of a set of logits: their max, and the sum of exp(x - max).
struct SoftmaxStats {
    float max, sum;
};

// The stats of no logits. The max is finite, so merging two of them computes 0 * exp(0), not exp(NaN).
__device__ inline SoftmaxStats no_logits() { return {-FLT_MAX, 0.0f}; }

__device__ inline SoftmaxStats merge(SoftmaxStats a, SoftmaxStats b) {
    const float max = fmaxf(a.max, b.max);
    return {max, a.sum * expf(a.max - max) + b.sum * expf(b.max - max)};
}

__device__ inline SoftmaxStats add_logit(SoftmaxStats stats, float x) {
    if (x > stats.max) return {x, stats.sum * expf(stats.max - x) + 1.0f};
    return {stats.max, stats.sum + expf(x - stats.max)};
}

// The merge of every thread's stats, returned to every thread (all must call; blockDim.x % 32 == 0).
__device__ inline SoftmaxStats block_merge(SoftmaxStats stats) {
    __shared__ SoftmaxStats warp_stats[WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    auto warp_merge = [](SoftmaxStats s) {
        for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
            SoftmaxStats other{__shfl_xor_sync(0xffffffffu, s.max, offset),
                               __shfl_xor_sync(0xffffffffu, s.sum, offset)};
            s = merge(s, other);
        }
        return s;
    };
    stats = warp_merge(stats);
    if (lane == 0) warp_stats[warp] = stats;
    __syncthreads();
    return warp_merge(lane < int(blockDim.x / WARP_SIZE) ? warp_stats[lane] : no_logits());
}

static __global__ void softmax_crossentropy_kernel(float* losses, floatX* dlogits, const floatX* logits,
                                                   const int* targets, float dloss, int V, int Vp) {
    const int row = blockIdx.x;
    const floatX* x = logits + size_t(row) * Vp;
    floatX* dx = dlogits ? dlogits + size_t(row) * Vp : nullptr;
    const int target = targets[row];
    if (target < 0 || target >= V) {  // the same for the whole block, so no thread is left at a barrier
        const float fill = target == -1 ? 0.0f : NAN;
        if (threadIdx.x == 0) losses[row] = fill;
        if (dx)
            for (int v = threadIdx.x; v < Vp; v += blockDim.x) dx[v] = floatX(fill);
        return;
    }
    const float target_logit = float(x[target]);
    SoftmaxStats stats = no_logits();
    for (int v = threadIdx.x; v < V; v += blockDim.x) stats = add_logit(stats, float(x[v]));
    stats = block_merge(stats);
    const float logsumexp = stats.max + logf(stats.sum);
    if (threadIdx.x == 0) losses[row] = logsumexp - target_logit;
    if (!dx) return;
    for (int v = threadIdx.x; v < Vp; v += blockDim.x) {
        const float gradient = v < V ? dloss * (expf(float(x[v]) - logsumexp) - float(v == target)) : 0.0f;
        dx[v] = floatX(gradient);
    }
}

inline void softmax_crossentropy(float* losses, floatX* dlogits, const floatX* logits, const int* targets, float dloss,
                                 int N, int V, int Vp, cudaStream_t stream) {
    check(V >= 1 && V <= Vp, format("cross-entropy: vocabulary %d does not fit the padded width %d", V, Vp));
    softmax_crossentropy_kernel<<<N, CLASSIFIER_THREADS, 0, stream>>>(losses, dlogits, logits, targets, dloss, V, Vp);
    CUDA_CHECK_LAUNCH();
}

constexpr int ARGMAX_THREADS = 256;

// The better of two (value, index) candidates: the larger value, or on a tie the lower index.
__device__ inline void keep_better(float& value, int& index, float other_value, int other_index) {
    if (other_value > value || (other_value == value && other_index < index)) {
        value = other_value;
        index = other_index;
    }
}

static __global__ void argmax_rows_kernel(int* predictions, const floatX* logits, int V, int Vp) {
    __shared__ float warp_values[WARP_SIZE];
    __shared__ int warp_indices[WARP_SIZE];
    const floatX* x = logits + size_t(blockIdx.x) * Vp;
    float value = -INFINITY;
    int index = V;  // loses every tie against a real column
    for (int v = threadIdx.x; v < V; v += blockDim.x) keep_better(value, index, float(x[v]), v);
    auto warp_best = [&]() {
        for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2)
            keep_better(value, index, __shfl_xor_sync(0xffffffffu, value, offset),
                        __shfl_xor_sync(0xffffffffu, index, offset));
    };
    warp_best();
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    if (lane == 0) {
        warp_values[warp] = value;
        warp_indices[warp] = index;
    }
    __syncthreads();
    if (warp != 0) return;
    const bool has_warp = lane < int(blockDim.x / WARP_SIZE);
    value = has_warp ? warp_values[lane] : -INFINITY;
    index = has_warp ? warp_indices[lane] : V;
    warp_best();
    if (lane == 0) predictions[blockIdx.x] = min(index, V - 1);  // an all -inf (or NaN) row predicts the last id
}

inline void argmax_rows(int* predictions, const floatX* logits, int N, int V, int Vp, cudaStream_t stream) {
    check(V >= 1 && V <= Vp, format("argmax: vocabulary %d does not fit the padded width %d", V, Vp));
    argmax_rows_kernel<<<N, ARGMAX_THREADS, 0, stream>>>(predictions, logits, V, Vp);
    CUDA_CHECK_LAUNCH();
}

}  // namespace focus::gpu
