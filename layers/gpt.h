// gpt.h: the GPT-2 model assembled from the layers, on the CPU (the reference every CUDA kernel is
// checked against).
//
//   x_0      = wte[token] + wpe[t]                         (wpe absent with --pos rope)
//   for each layer l:
//     qkv    = ln1(x) @ qkvw^T + qkvb
//     x      = x + attention(qkv) @ attprojw^T + attprojb  (the variant chosen by AttentionConfig)
//     x      = x + gelu(ln2(x) @ fcw^T + fcb) @ fcprojw^T + fcprojb
//   logits   = lnf(x) @ wte^T                              (tied LM head over the padded vocabulary)
//   loss     = mean over rows with a target of cross_entropy(logits[:V], target)
//
// Parameters live in one flat buffer in llm.c's GPT-2 order (so llm.c's checkpoints load as they
// are), followed by the Lazy-Attention parameters (tau's theta per layer and head, the distance-bias
// table). The model is templated on the float type: the trainer uses float, the gradient tests
// double, and both run exactly this code.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "../attention/attention.h"
#include "common.h"
#include "crossentropy.h"
#include "encoder.h"
#include "gelu.h"
#include "layernorm.h"
#include "matmul.h"

namespace focus {

struct GPTConfig {
    int max_seq_len = 0;
    int vocab_size = 0;
    int padded_vocab_size = 0;  // vocab_size rounded up to a multiple of 64 (llm.c: 50257 -> 50304)
    int num_layers = 0;
    int num_heads = 0;
    int channels = 0;
    AttentionConfig attention;

    int head_size() const { return channels / num_heads; }
};

inline int padded_vocab(int vocab_size) { return (vocab_size + 63) / 64 * 64; }

inline void validate(const GPTConfig& c) {
    check(c.vocab_size > 0 && c.vocab_size <= 65536,
          format("vocabulary size %d out of range (1..65536: tokens are stored as uint16)", c.vocab_size));
    check(c.padded_vocab_size >= c.vocab_size,
          format("padded vocabulary %d smaller than vocabulary %d", c.padded_vocab_size, c.vocab_size));
    check(c.max_seq_len > 0, format("--seq must be positive (got %d)", c.max_seq_len));
    check(c.num_layers > 0, format("--layers must be positive (got %d)", c.num_layers));
    check(c.num_heads > 0, format("--heads must be positive (got %d)", c.num_heads));
    check(c.channels > 0 && c.channels % c.num_heads == 0,
          format("--dim %d must be a positive multiple of --heads %d", c.channels, c.num_heads));
    validate(c.attention, c.head_size());
}

// One parameter tensor inside the flat buffer.
struct ParamTensor {
    std::string name;
    size_t offset = 0, count = 0;
    std::vector<size_t> shape;
    bool weight_decay = false;  // AdamW decays the matrices and embeddings only
    bool attention_param = false;  // theta and bias: they take --lr-attn-mult
};

// llm.c's order; tensors the configuration does not use are left out (wpe under RoPE), the
// Lazy-Attention tensors are appended.
inline std::vector<ParamTensor> parameter_layout(const GPTConfig& c) {
    size_t V = c.padded_vocab_size, C = c.channels, L = c.num_layers, NH = c.num_heads;
    std::vector<ParamTensor> layout;
    size_t offset = 0;
    auto add = [&](const char* name, std::vector<size_t> shape, bool decay, bool attention = false) {
        size_t count = 1;
        for (size_t d : shape) count *= d;
        layout.push_back({name, offset, count, shape, decay, attention});
        offset += count;
    };
    add("wte", {V, C}, true);
    if (c.attention.position == PositionKind::learned) add("wpe", {(size_t)c.max_seq_len, C}, true);
    add("ln1w", {L, C}, false);
    add("ln1b", {L, C}, false);
    add("qkvw", {L, 3 * C, C}, true);
    add("qkvb", {L, 3 * C}, false);
    add("attprojw", {L, C, C}, true);
    add("attprojb", {L, C}, false);
    add("ln2w", {L, C}, false);
    add("ln2b", {L, C}, false);
    add("fcw", {L, 4 * C, C}, true);
    add("fcb", {L, 4 * C}, false);
    add("fcprojw", {L, C, 4 * C}, true);
    add("fcprojb", {L, C}, false);
    add("lnfw", {C}, false);
    add("lnfb", {C}, false);
    if (c.attention.kind == AttentionKind::elastic) add("theta", {L, NH}, false, true);
    if (c.attention.bias_window > 0) add("bias", {L, NH, (size_t)c.attention.bias_window}, false, true);
    return layout;
}

inline size_t parameter_count(const std::vector<ParamTensor>& layout) {
    return layout.empty() ? 0 : layout.back().offset + layout.back().count;
}

// Named pointers into a flat parameter (or gradient) buffer; absent tensors are nullptr.
template <typename Real>
struct ParameterTensors {
    Real *wte = nullptr, *wpe = nullptr, *ln1w = nullptr, *ln1b = nullptr, *qkvw = nullptr, *qkvb = nullptr;
    Real *attprojw = nullptr, *attprojb = nullptr, *ln2w = nullptr, *ln2b = nullptr, *fcw = nullptr;
    Real *fcb = nullptr, *fcprojw = nullptr, *fcprojb = nullptr, *lnfw = nullptr, *lnfb = nullptr;
    Real *theta = nullptr, *bias = nullptr;

    ParameterTensors(Real* base, const std::vector<ParamTensor>& layout) {
        using Field = Real* ParameterTensors::*;
        static const std::pair<const char*, Field> fields[] = {
            {"wte", &ParameterTensors::wte},         {"wpe", &ParameterTensors::wpe},
            {"ln1w", &ParameterTensors::ln1w},       {"ln1b", &ParameterTensors::ln1b},
            {"qkvw", &ParameterTensors::qkvw},       {"qkvb", &ParameterTensors::qkvb},
            {"attprojw", &ParameterTensors::attprojw}, {"attprojb", &ParameterTensors::attprojb},
            {"ln2w", &ParameterTensors::ln2w},       {"ln2b", &ParameterTensors::ln2b},
            {"fcw", &ParameterTensors::fcw},         {"fcb", &ParameterTensors::fcb},
            {"fcprojw", &ParameterTensors::fcprojw}, {"fcprojb", &ParameterTensors::fcprojb},
            {"lnfw", &ParameterTensors::lnfw},       {"lnfb", &ParameterTensors::lnfb},
            {"theta", &ParameterTensors::theta},     {"bias", &ParameterTensors::bias}};
        for (const ParamTensor& t : layout)
            for (const auto& [name, field] : fields)
                if (t.name == name) this->*field = base + t.offset;
    }
};

// GPT-2's initialisation: N(0, 0.02) for matrices and embeddings, the two residual projections
// scaled by 1/sqrt(2 L) so the residual stream's variance does not grow with depth, LayerNorm
// weights 1, biases 0. Lazy Attention: theta = 0 (tau = 1), distance bias N(0, 1e-3).
template <typename Real>
void init_parameters(Real* params, const std::vector<ParamTensor>& layout, int num_layers, uint64_t seed) {
    Rng rng(seed);
    for (const ParamTensor& t : layout) {
        Real* p = params + t.offset;
        const std::string& n = t.name;
        double std = 0.0, fill = 0.0;
        if (n == "ln1w" || n == "ln2w" || n == "lnfw") fill = 1.0;
        else if (n == "attprojw" || n == "fcprojw") std = 0.02 / std::sqrt(2.0 * num_layers);
        else if (n == "bias") std = 1e-3;
        else if (t.weight_decay) std = 0.02;
        for (size_t i = 0; i < t.count; i++) p[i] = Real(std > 0 ? rng.normal(0.0, std) : fill);
    }
}

template <typename Real>
class GPT {
public:
    explicit GPT(const GPTConfig& config) : config_(config), layout_(parameter_layout(config)) {
        validate(config_);
        params.assign(parameter_count(layout_), Real(0));
        grads.assign(params.size(), Real(0));
    }

    const GPTConfig& config() const { return config_; }
    const std::vector<ParamTensor>& layout() const { return layout_; }
    void init(uint64_t seed) { init_parameters(params.data(), layout_, config_.num_layers, seed); }
    // The same accessors as the GPU model's (layers/gpt.cuh), so the trainer and eval_gpt serve both.
    size_t num_parameters() const { return params.size(); }
    void load_parameters(const std::vector<Real>& values) {
        check(values.size() == params.size(),
              format("%zu parameters given to a model of %zu", values.size(), params.size()));
        params = values;
    }
    std::vector<Real> parameters() const { return params; }
    void zero_grad() { std::fill(grads.begin(), grads.end(), Real(0)); }

    // Runs the model on tokens [B, T]. With targets (-1 = no loss on that position) returns the mean
    // cross-entropy over positions that have one, else NaN. Logits stay in logits() until backward().
    double forward(const int* tokens, const int* targets, int B, int T) {
        check(T >= 1 && T <= config_.max_seq_len,
              format("sequence length %d outside 1..%d (the model's maximum)", T, config_.max_seq_len));
        for (size_t i = 0; i < (size_t)B * T; i++) {
            check(tokens[i] >= 0 && tokens[i] < config_.vocab_size,
                  format("token %d outside the vocabulary 0..%d", tokens[i], config_.vocab_size - 1));
        }
        resize_activations(B, T);
        B_ = B;
        T_ = T;
        has_targets_ = targets != nullptr;
        tokens_.assign(tokens, tokens + (size_t)B * T);
        if (targets) targets_.assign(targets, targets + (size_t)B * T);

        const GPTConfig& c = config_;
        const int C = c.channels, NH = c.num_heads, L = c.num_layers, Vp = c.padded_vocab_size;
        const size_t N = (size_t)B * T, BTC = N * C;
        ParameterTensors<Real> p(params.data(), layout_);

        encoder_forward(acts_.encoded.data(), tokens, p.wte, p.wpe, B, T, C);
        for (int l = 0; l < L; l++) {
            LayerActs a = layer(l);
            const Real* residual = l == 0 ? acts_.encoded.data() : layer(l - 1).residual3;
            layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, residual, p.ln1w + l * C, p.ln1b + l * C, N, C);
            matmul_forward(a.qkv, a.ln1, p.qkvw + (size_t)l * 3 * C * C, p.qkvb + l * 3 * C, N, C, 3 * C);
            attention_forward(c.attention, a.atty, a.probs, a.qkv_rot, a.qkv, theta(p.theta, l),
                              bias(p.bias, l), B, T, C, NH);
            matmul_forward(a.attproj, a.atty, p.attprojw + (size_t)l * C * C, p.attprojb + l * C, N, C, C);
            for (size_t i = 0; i < BTC; i++) a.residual2[i] = residual[i] + a.attproj[i];
            layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.residual2, p.ln2w + l * C, p.ln2b + l * C, N, C);
            matmul_forward(a.fch, a.ln2, p.fcw + (size_t)l * 4 * C * C, p.fcb + l * 4 * C, N, C, 4 * C);
            gelu_forward(a.fch_gelu, a.fch, N * 4 * C);
            matmul_forward(a.fcproj, a.fch_gelu, p.fcprojw + (size_t)l * C * 4 * C, p.fcprojb + l * C, N, 4 * C, C);
            for (size_t i = 0; i < BTC; i++) a.residual3[i] = a.residual2[i] + a.fcproj[i];
        }
        layernorm_forward(acts_.lnf.data(), acts_.lnf_mean.data(), acts_.lnf_rstd.data(),
                          layer(L - 1).residual3, p.lnfw, p.lnfb, N, C);
        matmul_forward(acts_.logits.data(), acts_.lnf.data(), p.wte, (const Real*)nullptr, N, C, Vp);
        if (!targets) return NAN;

        softmax_crossentropy(acts_.losses.data(), (Real*)nullptr, acts_.logits.data(), targets, Real(1), N,
                             c.vocab_size, Vp);
        double sum = 0.0;
        for (size_t i = 0; i < N; i++) sum += acts_.losses[i];
        size_t counted = target_count();
        return counted ? sum / counted : NAN;
    }

    // Accumulates d(loss_scale * mean loss)/d(params) into grads (zero them first with zero_grad();
    // gradient accumulation over micro-batches passes loss_scale = 1 / micro_batches). Consumes the
    // logits of the last forward (they are overwritten by their gradient).
    void backward(double loss_scale = 1.0) {
        check(has_targets_, "backward() needs a forward() with targets");
        const GPTConfig& c = config_;
        const int B = B_, T = T_, C = c.channels, NH = c.num_heads, L = c.num_layers, Vp = c.padded_vocab_size;
        const size_t N = (size_t)B * T;
        ParameterTensors<Real> p(params.data(), layout_);
        ParameterTensors<Real> g(grads.data(), layout_);
        GradScratch& d = scratch_;
        size_t counted = target_count();
        check(counted > 0, "backward() with no position that has a target");

        Real* dlogits = acts_.logits.data();  // the classifier writes dlogits over the logits
        softmax_crossentropy(acts_.losses.data(), dlogits, acts_.logits.data(), targets_.data(),
                             Real(loss_scale / counted), N, c.vocab_size, Vp);
        zero(d.dresidual);
        zero(d.dln);
        matmul_backward(d.dln.data(), g.wte, (Real*)nullptr, dlogits, acts_.lnf.data(), p.wte, N, C, Vp);
        layernorm_backward(d.dresidual.data(), g.lnfw, g.lnfb, d.dln.data(), layer(L - 1).residual3, p.lnfw,
                           acts_.lnf_mean.data(), acts_.lnf_rstd.data(), N, C);
        // d.dresidual now holds dloss/dx at the top of the residual stream; walk down the layers,
        // adding each branch's contribution to it.
        for (int l = L - 1; l >= 0; l--) {
            LayerActs a = layer(l);
            const Real* residual = l == 0 ? acts_.encoded.data() : layer(l - 1).residual3;
            zero(d.dfch_gelu);
            zero(d.dfch);
            zero(d.dln);
            matmul_backward(d.dfch_gelu.data(), g.fcprojw + (size_t)l * C * 4 * C, g.fcprojb + l * C,
                            d.dresidual.data(), a.fch_gelu, p.fcprojw + (size_t)l * C * 4 * C, N, 4 * C, C);
            gelu_backward(d.dfch.data(), a.fch, d.dfch_gelu.data(), N * 4 * C);
            matmul_backward(d.dln.data(), g.fcw + (size_t)l * 4 * C * C, g.fcb + l * 4 * C, d.dfch.data(), a.ln2,
                            p.fcw + (size_t)l * 4 * C * C, N, C, 4 * C);
            layernorm_backward(d.dresidual.data(), g.ln2w + l * C, g.ln2b + l * C, d.dln.data(), a.residual2,
                               p.ln2w + l * C, a.ln2_mean, a.ln2_rstd, N, C);
            zero(d.datty);
            zero(d.dqkv);
            zero(d.dln);
            matmul_backward(d.datty.data(), g.attprojw + (size_t)l * C * C, g.attprojb + l * C, d.dresidual.data(),
                            a.atty, p.attprojw + (size_t)l * C * C, N, C, C);
            attention_backward(c.attention, d.dqkv.data(), theta(g.theta, l), bias(g.bias, l), d.datty.data(),
                               a.probs, a.qkv_rot, theta(p.theta, l), bias(p.bias, l), B, T, C, NH);
            matmul_backward(d.dln.data(), g.qkvw + (size_t)l * 3 * C * C, g.qkvb + l * 3 * C, d.dqkv.data(), a.ln1,
                            p.qkvw + (size_t)l * 3 * C * C, N, C, 3 * C);
            layernorm_backward(d.dresidual.data(), g.ln1w + l * C, g.ln1b + l * C, d.dln.data(), residual,
                               p.ln1w + l * C, a.ln1_mean, a.ln1_rstd, N, C);
        }
        encoder_backward(g.wte, g.wpe, d.dresidual.data(), tokens_.data(), B, T, C);
        has_targets_ = false;  // the logits are gone
    }

    std::vector<Real> params, grads;

    // Read access for evaluation: logits [B, T, Vp] after forward(), per-position losses [B, T],
    // the saved attention probabilities [B, NH, T, T] of layer l, and the last hidden state
    // (the residual stream before the final LayerNorm) [B, T, C].
    const Real* logits() const { return acts_.logits.data(); }
    const Real* losses() const { return acts_.losses.data(); }
    const Real* attention_probs(int l) const { return const_cast<GPT*>(this)->layer(l).probs; }
    const Real* last_hidden() const { return const_cast<GPT*>(this)->layer(config_.num_layers - 1).residual3; }

private:
    // The per-layer activations the backward pass reads, one slice per layer of each buffer.
    struct LayerActs {
        Real *ln1, *ln1_mean, *ln1_rstd, *qkv, *qkv_rot, *probs, *atty, *attproj, *residual2;
        Real *ln2, *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *fcproj, *residual3;
    };
    struct Activations {
        std::vector<Real> encoded, ln1, ln1_mean, ln1_rstd, qkv, qkv_rot, probs, atty, attproj, residual2;
        std::vector<Real> ln2, ln2_mean, ln2_rstd, fch, fch_gelu, fcproj, residual3;
        std::vector<Real> lnf, lnf_mean, lnf_rstd, logits, losses;
    };
    // Gradient buffers for one layer, reused by every layer on the way down.
    struct GradScratch {
        std::vector<Real> dresidual, dln, dqkv, datty, dfch, dfch_gelu;
    };

    void resize_activations(int B, int T) {
        if (B == B_ && T == T_ && !acts_.encoded.empty()) return;
        const size_t L = config_.num_layers, C = config_.channels, NH = config_.num_heads;
        const size_t N = (size_t)B * T;
        Activations& a = acts_;
        a.encoded.resize(N * C);
        for (auto* buffer : {&a.ln1, &a.atty, &a.attproj, &a.residual2, &a.ln2, &a.fcproj, &a.residual3})
            buffer->resize(L * N * C);
        for (auto* buffer : {&a.ln1_mean, &a.ln1_rstd, &a.ln2_mean, &a.ln2_rstd}) buffer->resize(L * N);
        a.qkv.resize(L * N * 3 * C);
        a.qkv_rot.resize(L * N * 3 * C);
        a.probs.resize(L * B * NH * T * T);
        a.fch.resize(L * N * 4 * C);
        a.fch_gelu.resize(L * N * 4 * C);
        a.lnf.resize(N * C);
        a.lnf_mean.resize(N);
        a.lnf_rstd.resize(N);
        a.logits.resize(N * config_.padded_vocab_size);
        a.losses.resize(N);
        GradScratch& d = scratch_;
        for (auto* buffer : {&d.dresidual, &d.dln, &d.datty}) buffer->resize(N * C);
        d.dqkv.resize(N * 3 * C);
        d.dfch.resize(N * 4 * C);
        d.dfch_gelu.resize(N * 4 * C);
    }

    LayerActs layer(int l) {
        const size_t N = (size_t)B_ * T_, C = config_.channels, NH = config_.num_heads;
        Activations& a = acts_;
        return {a.ln1.data() + l * N * C,      a.ln1_mean.data() + l * N,  a.ln1_rstd.data() + l * N,
                a.qkv.data() + l * N * 3 * C,  a.qkv_rot.data() + l * N * 3 * C,
                a.probs.data() + l * B_ * NH * T_ * T_,
                a.atty.data() + l * N * C,     a.attproj.data() + l * N * C, a.residual2.data() + l * N * C,
                a.ln2.data() + l * N * C,      a.ln2_mean.data() + l * N,  a.ln2_rstd.data() + l * N,
                a.fch.data() + l * N * 4 * C,  a.fch_gelu.data() + l * N * 4 * C,
                a.fcproj.data() + l * N * C,   a.residual3.data() + l * N * C};
    }

    // Layer l's slice of the Lazy-Attention tensors (nullptr when the model has none).
    Real* theta(Real* all, int l) const { return all ? all + (size_t)l * config_.num_heads : nullptr; }
    Real* bias(Real* all, int l) const {
        return all ? all + (size_t)l * config_.num_heads * config_.attention.bias_window : nullptr;
    }
    size_t target_count() const {
        size_t n = 0;
        for (int t : targets_) n += t != -1;
        return n;
    }
    static void zero(std::vector<Real>& v) { std::fill(v.begin(), v.end(), Real(0)); }

    GPTConfig config_;
    std::vector<ParamTensor> layout_;
    Activations acts_;
    GradScratch scratch_;
    std::vector<int> tokens_, targets_;
    int B_ = 0, T_ = 0;
    bool has_targets_ = false;
};

}  // namespace focus
