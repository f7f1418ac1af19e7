// sparse.h: which keys a query row keeps, for every kind (t is the 0-based query position).
//
//   softmax, elastic, topk   all j <= t
//   window(k)                t - k < j <= t
//   block(k)                 floor(j / k) == floor(t / k), j <= t
//   global tokens g          window/block also keep j < g (j <= t)
//   topk(k)                  then only the k_eff = min(k, t + 1) largest scores among those (scores
//                            including rope and bias); a tie goes to the earlier key (smaller j).
// A row's keys are listed in increasing j, so every sum over them runs in one fixed order.
#pragma once
#include <algorithm>

#include "config.h"

namespace focus {

// The first key of the contiguous range of keys ending at t that row t sees (0 but for window and block).
FOCUS_HOST_DEVICE inline int local_start(const AttentionConfig& cfg, int t) {
    if (cfg.kind == AttentionKind::window) return t - cfg.k + 1 > 0 ? t - cfg.k + 1 : 0;
    if (cfg.kind == AttentionKind::block) return t / cfg.k * cfg.k;
    return 0;
}

// May row t see key j before any score is looked at? (The CPU reference, the straightforward kernels and
// the fused ones all ask this.)
FOCUS_HOST_DEVICE inline bool is_candidate(const AttentionConfig& cfg, int t, int j) {
    return j <= t && (j >= local_start(cfg, t) || j < cfg.global_tokens);
}

// Fills keys[] with the keys row t may see before any score is looked at (is_candidate's, in increasing
// j, without visiting the others); returns how many.
inline int candidate_keys(const AttentionConfig& cfg, int t, int* keys) {
    const int start = local_start(cfg, t);
    int n = 0;
    for (int j = 0; j < std::min(cfg.global_tokens, start); j++) keys[n++] = j;
    for (int j = start; j <= t; j++) keys[n++] = j;
    return n;
}

// topk: keeps the k highest-scoring of the n keys (scores indexed by key position), still in
// increasing j; returns the new count. The selection is a step function: it has no gradient.
template <typename Real>
int keep_largest(int k, int* keys, int n, const Real* scores) {
    if (k >= n) return n;
    auto ranks_before = [scores](int a, int b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a < b); };
    std::nth_element(keys, keys + k - 1, keys + n, ranks_before);
    std::sort(keys, keys + k);
    return k;
}

}  // namespace focus
