// config.h: which attention a model uses, as a plain struct, plus the names the command line uses for
// it and the checks that reject an impossible combination before any work starts.
// The math of each kind is in /work/shared/docs/ATTENTION_SPEC.md; attention.h assembles it.
#pragma once
#include <initializer_list>
#include <string>

#include "../layers/common.h"

namespace focus {

enum class AttentionKind { softmax, elastic, topk, window, block };
enum class PositionKind { learned, rope };

struct AttentionConfig {
    AttentionKind kind = AttentionKind::softmax;
    int k = 0;                 // topk: keys kept per query row; window: the last k keys; block: block size
    int global_tokens = 0;     // window/block only: the first g positions stay visible to every query
    PositionKind position = PositionKind::learned;   // rope: rotate q and k inside attention
    float rope_base = 10000.0f;
    int bias_window = 0;       // > 0: learned per-head bias b_h[i - j] added to scores for 0 <= i-j < W
};

inline const char* to_string(AttentionKind kind) {
    switch (kind) {
        case AttentionKind::softmax: return "softmax";
        case AttentionKind::elastic: return "elastic";
        case AttentionKind::topk: return "topk";
        case AttentionKind::window: return "window";
        case AttentionKind::block: return "block";
    }
    return "?";
}

inline const char* to_string(PositionKind position) {
    switch (position) {
        case PositionKind::learned: return "learned";
        case PositionKind::rope: return "rope";
    }
    return "?";
}

// The choice whose to_string is `name`; otherwise an error that lists every valid name.
template <typename Enum>
Enum parse_choice(const std::string& name, std::initializer_list<Enum> choices, const char* what) {
    std::string valid;
    for (Enum choice : choices) {
        if (name == to_string(choice)) return choice;
        valid += (valid.empty() ? "" : ", ") + std::string(to_string(choice));
    }
    throw Error(format("unknown %s '%s' (valid: %s)", what, name.c_str(), valid.c_str()));
}

inline AttentionKind parse_attention_kind(const std::string& name) {
    return parse_choice(name,
                        {AttentionKind::softmax, AttentionKind::elastic, AttentionKind::topk,
                         AttentionKind::window, AttentionKind::block},
                        "attention kind");
}

inline PositionKind parse_position_kind(const std::string& name) {
    return parse_choice(name, {PositionKind::learned, PositionKind::rope}, "position kind");
}

// A configuration in one expression (tests and benchmarks build many).
inline AttentionConfig attention_config(AttentionKind kind, int k = 0, PositionKind position = PositionKind::learned,
                                        int bias_window = 0, int global_tokens = 0) {
    AttentionConfig cfg;
    cfg.kind = kind;
    cfg.k = k;
    cfg.position = position;
    cfg.bias_window = bias_window;
    cfg.global_tokens = global_tokens;
    return cfg;
}

// One line for logs and tables: "window k=128 g=4, rope, bias W=64".
inline std::string describe(const AttentionConfig& cfg) {
    std::string s = to_string(cfg.kind);
    if (cfg.k) s += format(" k=%d", cfg.k);
    if (cfg.global_tokens) s += format(" g=%d", cfg.global_tokens);
    s += std::string(", ") + to_string(cfg.position);
    if (cfg.bias_window) s += format(", bias W=%d", cfg.bias_window);
    return s;
}

inline bool keeps_k_keys(AttentionKind kind) {
    return kind == AttentionKind::topk || kind == AttentionKind::window || kind == AttentionKind::block;
}

// Throws focus::Error with a one-line message for a configuration no model can use.
inline void validate(const AttentionConfig& cfg, int head_size) {
    const char* kind = to_string(cfg.kind);
    check(head_size >= 1, format("attention: head size must be >= 1 (got %d)", head_size));
    if (keeps_k_keys(cfg.kind)) {
        check(cfg.k >= 1, format("%s attention needs k >= 1 (got %d)", kind, cfg.k));
    } else {
        check(cfg.k == 0, format("%s attention takes no k (got %d); k is for topk, window and block", kind,
                                 cfg.k));
    }
    check(cfg.global_tokens >= 0, format("global tokens must be >= 0 (got %d)", cfg.global_tokens));
    bool has_globals = cfg.kind == AttentionKind::window || cfg.kind == AttentionKind::block;
    check(cfg.global_tokens == 0 || has_globals,
          format("global tokens apply to window and block attention only, not %s", kind));
    check(cfg.bias_window >= 0, format("bias window must be >= 0 (got %d)", cfg.bias_window));
    check(cfg.rope_base > 1.0f, format("rope base must be > 1 (got %g)", cfg.rope_base));
    check(cfg.position != PositionKind::rope || head_size % 2 == 0,
          format("rope needs an even head size (got %d)", head_size));
}

}  // namespace focus
