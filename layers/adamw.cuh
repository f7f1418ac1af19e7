// adamw.cuh: the optimizer step and the global gradient norm on the GPU (the CPU versions: adamw.h).
//   adamw_update: g = grad * grad_scale,  m = beta1 m + (1 - beta1) g,  v = beta2 v + (1 - beta2) g^2,
//                 mhat = m / (1 - beta1^step),  vhat = v / (1 - beta2^step)  (step is 1-based),
//                 master -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * master),  param = master
//     The parameters are updated in float (master, like m and v) and param, the floatX copy the forward
//     reads, is master rounded to nearest. In the fp32 build param may be master itself.
//   sum_of_squares: *result = sum x_i^2, for the global gradient norm.
// How the work is split: adamw_update is one thread per element. sum_of_squares is a deterministic
// two-stage reduction: NORM_BLOCKS blocks (a constant, not a count from the device, so the order of
// the additions depends on n alone) each walk the array with a grid stride and write a block sum; one
// block then adds the NORM_BLOCKS partial sums. Both stages add in a fixed tree (block_sum).
#pragma once
#include <cmath>

#include "adamw.h"
#include "cuda_common.cuh"
#include "distributed.h"

namespace focus::gpu {

constexpr int ADAMW_THREADS = 256;
constexpr int NORM_THREADS = 256;
constexpr int NORM_BLOCKS = 1024;  // also the thread count of the second stage, one partial sum each

static __global__ void adamw_kernel(float* master, floatX* param, const floatX* grad, float* m, float* v, size_t n,
                                    float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                                    float m_correction, float v_correction) {
    const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float g = float(grad[i]) * grad_scale;
    const float m_i = beta1 * m[i] + (1.0f - beta1) * g;
    const float v_i = beta2 * v[i] + (1.0f - beta2) * g * g;
    const float m_hat = m_i / m_correction, v_hat = v_i / v_correction;
    const float updated = master[i] - lr * (m_hat / (sqrtf(v_hat) + eps) + weight_decay * master[i]);
    m[i] = m_i;
    v[i] = v_i;
    master[i] = updated;
    param[i] = floatX(updated);
}

static __global__ void partial_sums_of_squares_kernel(float* partials, const floatX* x, size_t n) {
    float sum = 0.0f;
    for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        const float value = float(x[i]);
        sum += value * value;
    }
    sum = block_sum(sum);
    if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

static __global__ void add_partials_kernel(float* result, const float* partials) {
    const float sum = block_sum(partials[threadIdx.x]);  // launched with one thread per partial sum
    if (threadIdx.x == 0) *result = sum;
}

inline void adamw_update(float* master, floatX* param, const floatX* grad, float* m, float* v, size_t n, int step,
                         const AdamWConfig& config, float grad_scale, cudaStream_t stream) {
    check(step >= 1, format("adamw: step %d, but steps count from 1", step));
    const float m_correction = float(1.0 - std::pow(double(config.beta1), step));
    const float v_correction = float(1.0 - std::pow(double(config.beta2), step));
    adamw_kernel<<<ceil_div(n, ADAMW_THREADS), ADAMW_THREADS, 0, stream>>>(
        master, param, grad, m, v, n, config.lr, config.beta1, config.beta2, config.eps, config.weight_decay,
        grad_scale, m_correction, v_correction);
    CUDA_CHECK_LAUNCH();
}

// result is a device pointer.
inline void sum_of_squares(float* result, const floatX* x, size_t n, cudaStream_t stream) {
    float* partials = Context::get().scratch<float>(NORM_BLOCKS);
    partial_sums_of_squares_kernel<<<NORM_BLOCKS, NORM_THREADS, 0, stream>>>(partials, x, n);
    CUDA_CHECK_LAUNCH();
    add_partials_kernel<<<1, NORM_BLOCKS, 0, stream>>>(result, partials);
    CUDA_CHECK_LAUNCH();
}

// AdamW on the segments of one rank's shard, the GPU twin of focus::adamw_update_shard (the per-tensor
// rule, segment_adamw, is written once, in distributed.h): master, m and v hold the shard (indexed by
// shard_offset), params and grads are full buffers (indexed by offset). With one shard the segments are
// the whole tensors, so this is the single-GPU update.
inline void adamw_update_shard(float* master, floatX* params, const floatX* grads, float* m, float* v,
                               const std::vector<ShardSegment>& segments, int step, const AdamWConfig& base,
                               float lr_attn_mult, float grad_scale, cudaStream_t stream) {
    for (const ShardSegment& s : segments)
        adamw_update(master + s.shard_offset, params + s.offset, grads + s.offset, m + s.shard_offset,
                     v + s.shard_offset, s.count, step, segment_adamw(base, s, lr_attn_mult), grad_scale, stream);
}

}  // namespace focus::gpu
