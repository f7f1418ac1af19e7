// attention.cuh: causal multi-head attention for every kind, on the GPU; the straightforward version,
// with the T x T scores materialised (the math, the layouts and the CPU reference: attention.h).
//   rotate    qkv_rot = qkv with q and k rotated by RoPE (rope.h), v copied; a plain copy for learned
//   forward   s_ij = q_i . k_j / sqrt(hs) (+ b_h[i - j]) over the keys row i may see (sparse.h),
//             topk keeps the k largest (a tie goes to the earlier key), p = softmax over the kept keys,
//             a_ij = max(0, p_ij - c_i) with c_i = tau_h / i for elastic and 0 otherwise, o_i = sum_j a_ij v_j
//   backward  g_ij = dO_i . v_j,  m_ij = 1[p_ij > c_i],  dS_ij = p_ij (m_ij g_ij - sum_k m_ik p_ik g_ik),
//             dq_i = sum_j dS_ij k_j / sqrt(hs),  dk_j = sum_i dS_ij q_i / sqrt(hs),  dv_j = sum_i a_ij dO_i,
//             dtau_h = -sum_i (1/i) sum_j m_ij g_ij,  db_h[r] = sum_i dS_i,i-r; then the inverse rotation.
// How the work is split (all sums in float; probs [B, NH, T, T] is float in both builds):
//   rope_forward_kernel       one thread per element of qkv_rot.
//   attention_forward_kernel  one block per query row (b, h, t): the threads share the row's keys for
//                             the scores, topk ranks, max and sum (block reductions), then its channels
//                             for the output. The row's scores live in shared memory (T floats).
//   backward_rows_kernel      one block per query row: dS of the row (saved in scratch, [B, NH, T, T]),
//                             the row's dtau term, and dq (channels over threads, keys in order).
//   backward_columns_kernel   one block per key (b, h, j): dk_j and dv_j, channels over threads, each
//                             summing the rows i >= j in order.
//   parameter_partials_kernel one block per (b, h): that pair's dbias (a thread per distance, rows in
//                             order) and dtau (a block sum); parameter_gradients_kernel then adds the
//                             batch's partials in order, one block per head.
// Every output element has a single writer and every sum a fixed order: no atomics, deterministic.
// The forward ranks topk keys by counting, for each key, the keys that beat it: O(T) per key and O(T^2)
// per row, simple and exact, and the slow part of topk at long T (the fused kernels, which need no
// materialised scores, serve every kind but topk).
#pragma once
#include "../layers/cuda_common.cuh"
#include "attention.h"

namespace focus::gpu {

constexpr int ATTENTION_THREADS = 128;

// attention.h's AttentionLayout, with its index functions callable on the device.
struct DeviceAttentionLayout {
    int B, T, C, NH, hs;
    __device__ size_t q(int b, int t, int h) const { return (size_t(b) * T + t) * 3 * C + size_t(h) * hs; }
    __device__ size_t k(int b, int t, int h) const { return q(b, t, h) + C; }
    __device__ size_t v(int b, int t, int h) const { return q(b, t, h) + 2 * size_t(C); }
    __device__ size_t out(int b, int t, int h) const { return (size_t(b) * T + t) * C + size_t(h) * hs; }
    // row (b, h, t) of probs and of the scratch dS, numbered bh * T + t
    __device__ size_t row(int bh, int t) const { return (size_t(bh) * T + t) * T; }
};

// tau_h = |theta_h + 1| for elastic, 0 otherwise; the cut of row t is tau / (t + 1), in float always.
__device__ inline float elastic_tau(const AttentionConfig& cfg, const floatX* theta, int h) {
    return cfg.kind == AttentionKind::elastic ? fabsf(float(theta[h]) + 1.0f) : 0.0f;
}

// phi_{t,m} = t * base^(-2m/hs), the angle of pair m at position t (rope.h), in double as rope.h.
__device__ inline double rope_angle(int t, int m, int hs, float base) { return t * pow(double(base), -2.0 * m / hs); }

// Channel `parity` (0 or 1) of pair m of a head vector at position t after the rotation by
// sin_sign * phi_{t,m} (rope.h); (x0, x1) is the pair.
__device__ inline float rotate_channel(float x0, float x1, int parity, int t, int m, int hs, float base,
                                       float sin_sign) {
    const double angle = rope_angle(t, m, hs, base);
    const float cosine = float(cos(angle)), sine = sin_sign * float(sin(angle));
    return parity == 0 ? x0 * cosine - x1 * sine : x0 * sine + x1 * cosine;
}

// grad[d] += (R_t^T d_rot)[d] for a head vector (rope), or grad[d] += d_rot[d] (learned); d_rot is in
// shared memory, channels over the block's threads.
__device__ inline void add_unrotated(floatX* grad, const float* d_rot, int t, int hs, bool rope, float base) {
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        const int pair = d - d % 2;
        const float value =
            rope ? rotate_channel(d_rot[pair], d_rot[pair + 1], d % 2, t, d / 2, hs, base, -1.0f) : d_rot[d];
        grad[d] = floatX(float(grad[d]) + value);
    }
}

// sum_d x[d] * y[d], x in float (shared memory), y a head vector in floatX.
__device__ inline float head_dot(const float* x, const floatX* y, int hs) {
    float sum = 0.0f;
    for (int d = 0; d < hs; d++) sum += x[d] * float(y[d]);
    return sum;
}

// The maximum of value over the block, returned to every thread (the shape of block_sum).
__device__ inline float block_max(float value) {
    __shared__ float warp_maxima[WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2)
        value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
    if (lane == 0) warp_maxima[warp] = value;
    __syncthreads();
    value = lane < int(blockDim.x / WARP_SIZE) ? warp_maxima[lane] : -INFINITY;
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2)
        value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
    __syncthreads();
    return value;
}

// ---- forward ------------------------------------------------------------------------------------

// qkv_rot = qkv with pair m of every q and k head vector at position t rotated by phi_{t,m}; v copied.
static __global__ void rope_forward_kernel(floatX* qkv_rot, const floatX* qkv, size_t count, int T, int C, int hs,
                                           float base) {
    const size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e >= count) return;
    const int c = int(e % (3 * size_t(C)));  // channel within the token's q|k|v
    if (c >= 2 * C) {
        qkv_rot[e] = qkv[e];
        return;
    }
    const int t = int(e / (3 * size_t(C)) % T), d = c % hs;
    const size_t pair = e - d % 2;
    qkv_rot[e] = floatX(rotate_channel(float(qkv[pair]), float(qkv[pair + 1]), d % 2, t, d / 2, hs, base, 1.0f));
}

// One block per query row (b, h, t). Shared memory: q [hs] and the row's scores [T] (floats), then the
// topk keep flags [T] (bytes).
static __global__ void attention_forward_kernel(floatX* out, float* probs, const floatX* qkv_rot, const floatX* theta,
                                                const floatX* bias, AttentionConfig cfg, DeviceAttentionLayout L) {
    extern __shared__ float shared[];
    float* q = shared;
    float* scores = q + L.hs;  // score, then exp(score - max), then p; -inf for keys not kept
    unsigned char* keep = reinterpret_cast<unsigned char*>(scores + L.T);
    const int t = blockIdx.x % L.T, bh = blockIdx.x / L.T, b = bh / L.NH, h = bh % L.NH;
    const int W = cfg.bias_window;

    for (int d = threadIdx.x; d < L.hs; d += blockDim.x) q[d] = float(qkv_rot[L.q(b, t, h) + d]);
    __syncthreads();
    const float scale = 1.0f / sqrtf(float(L.hs));
    for (int j = threadIdx.x; j <= t; j += blockDim.x) {
        float score = -INFINITY;
        if (is_candidate(cfg, t, j)) {
            score = head_dot(q, qkv_rot + L.k(b, j, h), L.hs) * scale;
            if (t - j < W) score += float(bias[h * W + t - j]);
        }
        scores[j] = score;
    }
    __syncthreads();

    if (cfg.kind == AttentionKind::topk) {
        // key j stays if fewer than k candidates beat it (a higher score, or an equal one earlier)
        for (int j = threadIdx.x; j <= t; j += blockDim.x) {
            int beaten_by = 0;
            for (int i = 0; i <= t; i++) beaten_by += scores[i] > scores[j] || (scores[i] == scores[j] && i < j);
            keep[j] = scores[j] != -INFINITY && beaten_by < cfg.k;
        }
        __syncthreads();
        for (int j = threadIdx.x; j <= t; j += blockDim.x)
            if (!keep[j]) scores[j] = -INFINITY;
        __syncthreads();
    }

    // softmax over the kept keys (key t is always a candidate, so the maximum is finite)
    float local_max = -INFINITY;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) local_max = fmaxf(local_max, scores[j]);
    const float row_max = block_max(local_max);
    float local_sum = 0.0f;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) {
        scores[j] = scores[j] == -INFINITY ? 0.0f : expf(scores[j] - row_max);
        local_sum += scores[j];
    }
    const float sum = block_sum(local_sum);  // its barrier also publishes the exponentials
    float* p_row = probs + L.row(bh, t);
    for (int j = threadIdx.x; j < L.T; j += blockDim.x) {
        const float p = j <= t ? scores[j] / sum : 0.0f;
        if (j <= t) scores[j] = p;
        p_row[j] = p;
    }
    __syncthreads();

    // o_i = sum_j max(0, p_ij - c_i) v_j, keys in order
    const float cut = elastic_tau(cfg, theta, h) / float(t + 1);
    floatX* o = out + L.out(b, t, h);
    for (int d = threadIdx.x; d < L.hs; d += blockDim.x) {
        float sum_v = 0.0f;
        for (int j = 0; j <= t; j++) {
            const float weight = fmaxf(0.0f, scores[j] - cut);
            if (weight > 0.0f) sum_v += weight * float(qkv_rot[L.v(b, j, h) + d]);
        }
        o[d] = floatX(sum_v);
    }
}

// ---- backward -----------------------------------------------------------------------------------

// One block per query row (b, h, t): dS of the row into dscores, the row's term of dtau into
// dtau_rows[bh * T + t], and dqkv's q += the unrotated dq. Shared memory: dO [hs], dq_rot [hs], dS [T].
static __global__ void backward_rows_kernel(floatX* dqkv, float* dscores, float* dtau_rows, const floatX* dout,
                                            const float* probs, const floatX* qkv_rot, const floatX* theta,
                                            AttentionConfig cfg, DeviceAttentionLayout L) {
    extern __shared__ float shared[];
    float* dO = shared;
    float* dq_rot = dO + L.hs;
    float* dS = dq_rot + L.hs;
    const int t = blockIdx.x % L.T, bh = blockIdx.x / L.T, b = bh / L.NH, h = bh % L.NH;
    const float* p = probs + L.row(bh, t);
    const float cut = elastic_tau(cfg, theta, h) / float(t + 1);

    for (int d = threadIdx.x; d < L.hs; d += blockDim.x) dO[d] = float(dout[L.out(b, t, h) + d]);
    __syncthreads();
    // dP_ij = m_ij g_ij: keys under the cut (and keys not kept, p = 0) pass no gradient to p
    float passed = 0.0f, weighted = 0.0f;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) {
        const float dP = p[j] > cut ? head_dot(dO, qkv_rot + L.v(b, j, h), L.hs) : 0.0f;
        dS[j] = dP;
        passed += dP;
        weighted += p[j] * dP;
    }
    passed = block_sum(passed);
    weighted = block_sum(weighted);
    if (threadIdx.x == 0) dtau_rows[size_t(bh) * L.T + t] = -passed / float(t + 1);
    for (int j = threadIdx.x; j <= t; j += blockDim.x) {
        dS[j] = p[j] * (dS[j] - weighted);
        dscores[L.row(bh, t) + j] = dS[j];
    }
    __syncthreads();

    const float scale = 1.0f / sqrtf(float(L.hs));
    for (int d = threadIdx.x; d < L.hs; d += blockDim.x) {
        float sum = 0.0f;
        for (int j = 0; j <= t; j++)
            if (dS[j] != 0.0f) sum += dS[j] * float(qkv_rot[L.k(b, j, h) + d]);
        dq_rot[d] = sum * scale;
    }
    __syncthreads();
    add_unrotated(dqkv + L.q(b, t, h), dq_rot, t, L.hs, cfg.position == PositionKind::rope, cfg.rope_base);
}

// One block per key (b, h, j): dqkv's v += dv_j and k += the unrotated dk_j, each channel summing the
// rows i >= j in order. Shared memory: dk_rot [hs].
static __global__ void backward_columns_kernel(floatX* dqkv, const float* dscores, const floatX* dout,
                                               const float* probs, const floatX* qkv_rot, const floatX* theta,
                                               AttentionConfig cfg, DeviceAttentionLayout L) {
    extern __shared__ float shared[];
    float* dk_rot = shared;
    const int j = blockIdx.x % L.T, bh = blockIdx.x / L.T, b = bh / L.NH, h = bh % L.NH;
    const float tau = elastic_tau(cfg, theta, h), scale = 1.0f / sqrtf(float(L.hs));

    for (int d = threadIdx.x; d < L.hs; d += blockDim.x) {
        float dv = 0.0f, dk = 0.0f;
        for (int i = j; i < L.T; i++) {
            const size_t at = L.row(bh, i) + j;
            if (probs[at] == 0.0f) continue;  // a key row i did not keep: no gradient either way
            dv += fmaxf(0.0f, probs[at] - tau / float(i + 1)) * float(dout[L.out(b, i, h) + d]);
            dk += dscores[at] * float(qkv_rot[L.q(b, i, h) + d]);
        }
        floatX* grad_v = dqkv + L.v(b, j, h);
        grad_v[d] = floatX(float(grad_v[d]) + dv);
        dk_rot[d] = dk * scale;
    }
    __syncthreads();
    add_unrotated(dqkv + L.k(b, j, h), dk_rot, j, L.hs, cfg.position == PositionKind::rope, cfg.rope_base);
}

// One block per (b, h): bias_partials[bh, r] = sum over rows t >= r of dS_t,t-r (in order), for r < W;
// dtau_partials[bh] = the block sum of the rows' dtau terms.
static __global__ void parameter_partials_kernel(float* bias_partials, float* dtau_partials, const float* dscores,
                                                 const float* dtau_rows, DeviceAttentionLayout L, int W) {
    const int bh = blockIdx.x;
    for (int r = threadIdx.x; r < W; r += blockDim.x) {
        float sum = 0.0f;
        for (int t = r; t < L.T; t++) sum += dscores[L.row(bh, t) + t - r];
        bias_partials[size_t(bh) * W + r] = sum;
    }
    float dtau = 0.0f;
    for (int t = threadIdx.x; t < L.T; t += blockDim.x) dtau += dtau_rows[size_t(bh) * L.T + t];
    dtau = block_sum(dtau);
    if (threadIdx.x == 0) dtau_partials[bh] = dtau;
}

// One block per head h: dbias[h, r] += sum over b of the partials, in order; for elastic, dtheta_h +=
// sign(theta_h + 1) * sum over b of dtau (0 at the kink), as elastic.h's theta_gradient.
static __global__ void parameter_gradients_kernel(floatX* dbias, floatX* dtheta, const float* bias_partials,
                                                  const float* dtau_partials, const floatX* theta, int B, int NH,
                                                  int W) {
    const int h = blockIdx.x;
    for (int r = threadIdx.x; r < W; r += blockDim.x) {
        float sum = 0.0f;
        for (int b = 0; b < B; b++) sum += bias_partials[(size_t(b) * NH + h) * W + r];
        dbias[h * W + r] = floatX(float(dbias[h * W + r]) + sum);
    }
    if (dtheta == nullptr || threadIdx.x != 0) return;
    float dtau = 0.0f;
    for (int b = 0; b < B; b++) dtau += dtau_partials[b * NH + h];
    const float x = float(theta[h]) + 1.0f;
    dtheta[h] = floatX(float(dtheta[h]) + (x > 0.0f ? dtau : x < 0.0f ? -dtau : 0.0f));
}

// ---- the interface (attention.h's, on the device) -------------------------------------------------

inline DeviceAttentionLayout device_layout(const AttentionLayout& L) { return {L.B, L.T, L.C, L.NH, L.hs}; }

// The dynamic shared memory of a kernel, checked against the default limit (48 KiB) every device has.
inline size_t attention_shared_bytes(size_t bytes) {
    check(bytes <= 48 * 1024, format("attention: %zu bytes of shared memory per block (T too large)", bytes));
    return bytes;
}

// out [B, T, C], probs [B, NH, T, T] (float), qkv_rot [B, T, 3C] from qkv [B, T, 3C]; theta [NH] for
// elastic, bias [NH, W] for a bias window (either may be nullptr otherwise).
inline void attention_forward(const AttentionConfig& cfg, floatX* out, float* probs, floatX* qkv_rot,
                              const floatX* qkv, const floatX* theta, const floatX* bias, int B, int T, int C, int NH,
                              cudaStream_t stream) {
    const AttentionLayout L = check_attention_arguments(cfg, theta, bias, B, T, C, NH);
    const size_t qkv_count = size_t(B) * T * 3 * C;
    if (cfg.position == PositionKind::rope) {
        rope_forward_kernel<<<ceil_div(qkv_count, 256), 256, 0, stream>>>(qkv_rot, qkv, qkv_count, T, C, L.hs,
                                                                          cfg.rope_base);
        CUDA_CHECK_LAUNCH();
    } else {
        CUDA_CHECK(cudaMemcpyAsync(qkv_rot, qkv, qkv_count * sizeof(floatX), cudaMemcpyDeviceToDevice, stream));
    }
    const size_t shared = attention_shared_bytes((size_t(L.hs) + T) * sizeof(float) + T);
    attention_forward_kernel<<<unsigned(B * NH * T), ATTENTION_THREADS, shared, stream>>>(
        out, probs, qkv_rot, theta, bias, cfg, device_layout(L));
    CUDA_CHECK_LAUNCH();
}

// Accumulates (+=) into dqkv [B, T, 3C], dtheta [NH] (elastic) and dbias [NH, W] (a bias window), from
// dout [B, T, C] and the forward's probs and qkv_rot. bias is unused (as on the CPU: the interface is
// the same). Uses Context scratch: (B NH T (T + 1) + B NH (W + 1)) floats.
inline void attention_backward(const AttentionConfig& cfg, floatX* dqkv, floatX* dtheta, floatX* dbias,
                               const floatX* dout, const float* probs, const floatX* qkv_rot, const floatX* theta,
                               const floatX* bias, int B, int T, int C, int NH, cudaStream_t stream) {
    const AttentionLayout L = check_attention_arguments(cfg, theta, bias, B, T, C, NH);
    const bool elastic = cfg.kind == AttentionKind::elastic;
    check(!elastic || dtheta != nullptr, "attention: elastic needs dtheta");
    check(cfg.bias_window == 0 || dbias != nullptr, "attention: a bias window needs dbias");
    const int W = cfg.bias_window;
    const size_t rows = size_t(B) * NH * T, pairs = size_t(B) * NH;

    float* dscores = Context::get().scratch<float>(rows * T + rows + pairs * (W + 1));
    float* dtau_rows = dscores + rows * T;
    float* bias_partials = dtau_rows + rows;
    float* dtau_partials = bias_partials + pairs * W;

    const DeviceAttentionLayout layout = device_layout(L);
    const size_t row_shared = attention_shared_bytes((2 * size_t(L.hs) + T) * sizeof(float));
    backward_rows_kernel<<<unsigned(rows), ATTENTION_THREADS, row_shared, stream>>>(
        dqkv, dscores, dtau_rows, dout, probs, qkv_rot, theta, cfg, layout);
    CUDA_CHECK_LAUNCH();
    backward_columns_kernel<<<unsigned(rows), ATTENTION_THREADS, L.hs * sizeof(float), stream>>>(
        dqkv, dscores, dout, probs, qkv_rot, theta, cfg, layout);
    CUDA_CHECK_LAUNCH();
    if (W == 0 && !elastic) return;
    parameter_partials_kernel<<<unsigned(pairs), ATTENTION_THREADS, 0, stream>>>(bias_partials, dtau_partials,
                                                                                  dscores, dtau_rows, layout, W);
    CUDA_CHECK_LAUNCH();
    parameter_gradients_kernel<<<NH, ATTENTION_THREADS, 0, stream>>>(dbias, elastic ? dtheta : nullptr, bias_partials,
                                                                     dtau_partials, theta, B, NH, W);
    CUDA_CHECK_LAUNCH();
}

}  // namespace focus::gpu
