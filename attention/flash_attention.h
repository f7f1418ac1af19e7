// flash_attention.h: the per-element math of the tiled (flash) attention kernels (flash_attention.cuh),
// as plain functions that compile for the host and the device, so that test_attention.cpp runs the
// kernels' tiled scheme on the CPU with exactly these formulas. All of it is in float, as on the GPU.
// The scheme itself (passes, tiles, who sums what) is described at the top of flash_attention.cuh.
// Notation as attention.h: query row t (0-based; i = t + 1 keys visible), key j, c_t the elastic cut.
#pragma once
#include <cmath>

#include "sparse.h"

namespace focus::flash {

// Pair (x0, x1) of a head vector rotated by the angle with this cosine and sine (rope.h's convention):
// (x0 cos - x1 sin, x0 sin + x1 cos); the inverse rotation is the same with -sine. Each channel is
// computed in double and rounded to float once: a product of two floats is exact in double, so the
// result does not depend on whether a compiler fuses the multiply and the add, and the host and the
// device get the same bits.
FOCUS_HOST_DEVICE inline float rotated_first(float x0, float x1, float cosine, float sine) {
    return float(double(x0) * cosine - double(x1) * sine);
}
FOCUS_HOST_DEVICE inline float rotated_second(float x0, float x1, float cosine, float sine) {
    return float(double(x0) * sine + double(x1) * cosine);
}

// s_tj = q_t . k_j / sqrt(hs) + b_h[t - j] (for t - j < W) from the dot product, or -inf for a key row t
// may not see (sparse.h: the causal mask, and window's or block's) and for the padding rows of the last
// query tile (t >= T), which must contribute nothing anywhere. bias_h is head h's row of the bias table
// (unused when W = 0).
template <typename BiasValue>
FOCUS_HOST_DEVICE inline float masked_score(float dot, float scale, int t, int j, int T, const AttentionConfig& cfg,
                                            const BiasValue* bias_h) {
    if (t >= T || !is_candidate(cfg, t, j)) return -INFINITY;
    const float score = dot * scale;
    return t - j < cfg.bias_window ? score + float(bias_h[t - j]) : score;
}

// Whether any row of the query tile [q0, q0 + tile) may see a key of the key tile [k0, k0 + tile): a
// tile of keys that none may see is skipped, which is what makes window and block attention cost O(T k)
// rather than O(T^2). Rows see a contiguous range from local_start(t), which never decreases with t,
// plus the global tokens; key tiles after the query tile are the caller's to leave out (causal).
FOCUS_HOST_DEVICE inline bool key_tile_visible(const AttentionConfig& cfg, int q0, int k0, int tile) {
    return k0 < cfg.global_tokens || k0 + tile > local_start(cfg, q0);
}

// Online softmax: when a row's running maximum grows from old_max to new_max, the sum and the output
// accumulated so far are multiplied by exp(old_max - new_max). A row that has seen only masked keys
// (new_max = -inf) has nothing accumulated; 1 keeps it so without computing exp(-inf + inf).
FOCUS_HOST_DEVICE inline float rescale_factor(float old_max, float new_max) {
    return new_max == -INFINITY ? 1.0f : expf(old_max - new_max);
}

// exp(s - max), 0 for a masked key (also when the whole row is masked, max = -inf).
FOCUS_HOST_DEVICE inline float exp_weight(float score, float row_max) {
    return score == -INFINITY ? 0.0f : expf(score - row_max);
}

// p_tj = exp(s_tj - max_t) / sum_t, the softmax from the row's final maximum and sum. Dividing (rather
// than multiplying by 1 / sum) keeps softmax.h's property that a uniform row holds exactly 1 / i.
FOCUS_HOST_DEVICE inline float probability(float score, float row_max, float row_sum) {
    return score == -INFINITY ? 0.0f : expf(score - row_max) / row_sum;
}

// c_t = tau_h / (t + 1) for elastic (tau = 0 for softmax, where the cut is a no-op), in float: with tau = 1
// a uniform row's p = 1 / i equals it exactly and the row's weights are exactly 0, as on the CPU.
FOCUS_HOST_DEVICE inline float cut_of_row(float tau, int t) { return tau / float(t + 1); }

// a_tj = max(0, p_tj - c_t)
FOCUS_HOST_DEVICE inline float cut_weight(float p, float cut) { return fmaxf(0.0f, p - cut); }

// g_tj = dO_t . v_j passes to p only where the cut kept the key: m_tj g_tj with m_tj = 1[p_tj > c_t].
FOCUS_HOST_DEVICE inline float passed_gradient(float p, float cut, float g) { return p > cut ? g : 0.0f; }

// dS_tj = p_tj (m_tj g_tj - delta_t), delta_t = sum_k m_tk p_tk g_tk.
FOCUS_HOST_DEVICE inline float score_gradient(float p, float cut, float g, float delta) {
    return p * (passed_gradient(p, cut, g) - delta);
}

}  // namespace focus::flash
