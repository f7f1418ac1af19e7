// statistics.h: how a model allocates its attention, measured on batches of text (ATTENTION_SPEC.md §4).
//
// For layer l and head h, over every sequence b and query row t (1-based i = t + 1: keys j <= t are
// visible), from the weights a_ij the output uses (attention_weights()) and the softmax probabilities p_ij:
//   sparsity            #{j <= t : a_ij = 0} / #{j <= t}
//   sink                mean of a_i0 over rows t >= 1 (row 0 sees key 0 alone, so it tells nothing)
//   sink heads          heads whose sink exceeds 0.3: a count per layer, a share of all heads overall
//   row mass            mean over rows of m_i = sum_j a_ij (1 for softmax kinds, <= 1 for elastic)
//   empty rows          share of rows with m_i = 0: the rows that attend to nothing
//   entropy             H_i = -sum_j q_ij log q_ij, q_ij = a_ij / m_i; mean over non-empty rows
//   normalised entropy  H_i / log i, mean over non-empty rows with t >= 1. 1 = spread evenly over the
//                       whole causal context, 0 = on one key. H_i alone grows with log i, so its mean
//                       mostly reflects T; this one compares across lengths. The denominator is the
//                       causal context for every kind (not the k keys topk/window/block keep), so all
//                       kinds sit on one scale.
//   dispersion          max - min of the kept scores of a row. The scores are not saved, but for kept keys
//                       (p > 0) s_j - s_k = log p_j - log p_k, so it is log max p - log min_{p > 0} p;
//                       mean over rows with >= 2 kept keys (a score that underflowed to p = 0 is missed).
// and from the last layer's hidden states x_bt [B, T, C] (representational collapse):
//   cosine              mean over pairs s != t of cos(x_bs, x_bt) within a sequence, mean over sequences
//                       with T >= 2. With u_t = x_bt / |x_bt| (0 for a zero vector, i.e. cosine 0),
//                       sum_{s != t} u_s . u_t = |sum_t u_t|^2 - sum_t |u_t|^2: O(T C), not O(T^2 C).
//   feature variance    (1/C) sum_c (x_btc - mean_c x_bt)^2, mean over tokens
// A value with nothing to average (say, entropy of a head whose rows are all empty) is NaN: null in JSON.
//
// Per-layer and overall values pool their heads' sums (a ratio of sums, not a mean of ratios), so every row
// weighs the same whichever head it belongs to.
//
// Work split: AttentionStatistics keeps running sums in double per layer and head, so an eval can stream
// any number of batches. add_layer() runs OpenMP over the (b, h) pairs into one partial sum each, then adds
// the partials in increasing b: results are identical for any thread count, and streaming two batches gives
// to the bit what one batch holding both gives. add_hidden() splits the same way over sequences.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../layers/gpt.h"

namespace focus {

// A head counts as a sink head when its mean weight on the first token exceeds this.
constexpr double sink_head_threshold = 0.3;

// Running sums for one head; added together, for a layer or the whole model.
struct AttentionSums {
    int64_t causal_weights = 0, zero_weights = 0;
    double sink_weight = 0;
    int64_t sink_rows = 0;
    double mass = 0;
    int64_t rows = 0, empty_rows = 0;
    double entropy = 0, normalised_entropy = 0;
    int64_t entropy_rows = 0, normalised_rows = 0;
    double dispersion = 0;
    int64_t dispersion_rows = 0;

    AttentionSums& operator+=(const AttentionSums& o) {
        causal_weights += o.causal_weights;
        zero_weights += o.zero_weights;
        sink_weight += o.sink_weight;
        sink_rows += o.sink_rows;
        mass += o.mass;
        rows += o.rows;
        empty_rows += o.empty_rows;
        entropy += o.entropy;
        normalised_entropy += o.normalised_entropy;
        entropy_rows += o.entropy_rows;
        normalised_rows += o.normalised_rows;
        dispersion += o.dispersion;
        dispersion_rows += o.dispersion_rows;
        return *this;
    }
};

// The means the sums stand for (see the top of the file).
struct AttentionMeasures {
    double sparsity, sink, row_mass, empty_rows, entropy, normalised_entropy, dispersion;
};

inline double mean_of(double sum, int64_t count) {
    return count > 0 ? sum / double(count) : std::numeric_limits<double>::quiet_NaN();
}

inline AttentionMeasures measures_of(const AttentionSums& s) {
    return {mean_of(double(s.zero_weights), s.causal_weights),
            mean_of(s.sink_weight, s.sink_rows),
            mean_of(s.mass, s.rows),
            mean_of(double(s.empty_rows), s.rows),
            mean_of(s.entropy, s.entropy_rows),
            mean_of(s.normalised_entropy, s.normalised_rows),
            mean_of(s.dispersion, s.dispersion_rows)};
}

// Adds query row t (weights a and probabilities p, indexed by key position) to the sums.
template <typename Real>
void add_attention_row(AttentionSums& sums, const Real* a, const Real* p, int t) {
    const int visible = t + 1;
    double mass = 0, max_p = 0, min_p = INFINITY;
    int zeros = 0, kept = 0;
    for (int j = 0; j < visible; j++) {
        mass += a[j];
        zeros += a[j] == 0;
        if (p[j] > 0) {
            max_p = std::max(max_p, double(p[j]));
            min_p = std::min(min_p, double(p[j]));
            kept++;
        }
    }
    sums.causal_weights += visible;
    sums.zero_weights += zeros;
    if (t >= 1) {
        sums.sink_weight += a[0];
        sums.sink_rows++;
    }
    sums.mass += mass;
    sums.rows++;
    if (mass == 0) {
        sums.empty_rows++;
    } else {
        double entropy = 0;
        for (int j = 0; j < visible; j++) {
            if (a[j] == 0) continue;  // 0 log 0 = 0
            double q = a[j] / mass;
            entropy -= q * std::log(q);
        }
        sums.entropy += entropy;
        sums.entropy_rows++;
        if (t >= 1) {
            sums.normalised_entropy += entropy / std::log(double(visible));
            sums.normalised_rows++;
        }
    }
    if (kept >= 2) {
        sums.dispersion += std::log(max_p) - std::log(min_p);
        sums.dispersion_rows++;
    }
}

struct LayerReport {
    AttentionMeasures pooled;               // over the layer's heads
    std::vector<AttentionMeasures> heads;   // [NH]
    int sink_heads = 0;                     // heads with sink > sink_head_threshold
    std::vector<double> tau;                // [NH] tau_h = |theta_h + 1|; elastic models only
    std::vector<std::vector<double>> bias;  // [NH][W] the distance-bias tables; when the model has them
};

struct AttentionReport {
    std::vector<LayerReport> layers;  // [L]
    AttentionMeasures overall;        // pooled over every layer and head
    int sink_heads = 0;               // over all layers
    double sink_head_share = 0;       // sink heads / (L * NH)
    double hidden_cosine = 0;         // mean pairwise cosine of the last hidden states
    double hidden_variance = 0;       // mean variance across features of a last hidden state
    int64_t rows_per_head = 0, sequences = 0, tokens = 0;  // how much was measured
};

class AttentionStatistics {
public:
    AttentionStatistics(int num_layers, int num_heads)
        : num_layers_(num_layers), num_heads_(num_heads), sums_(size_t(num_layers) * num_heads) {
        check(num_layers >= 1 && num_heads >= 1,
              format("attention statistics: bad shape L=%d NH=%d", num_layers, num_heads));
    }

    // Adds layer l of one batch: weights and probs are [B, NH, T, T] (zero above the diagonal).
    template <typename Real>
    void add_layer(int l, const Real* weights, const Real* probs, int B, int T) {
        check(l >= 0 && l < num_layers_ && B >= 1 && T >= 1,
              format("attention statistics: bad layer %d of %d, or shape B=%d T=%d", l, num_layers_, B, T));
        const int NH = num_heads_;
        std::vector<AttentionSums> parts(size_t(B) * NH);  // [B, NH]
#pragma omp parallel for
        for (int bh = 0; bh < B * NH; bh++) {
            for (int t = 0; t < T; t++) {
                size_t row = (size_t(bh) * T + t) * T;
                add_attention_row(parts[bh], weights + row, probs + row, t);
            }
        }
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) sums_[size_t(l) * NH + h] += parts[size_t(b) * NH + h];
    }

    // Adds the last layer's hidden states [B, T, C] of one batch.
    template <typename Real>
    void add_hidden(const Real* hidden, int B, int T, int C) {
        check(B >= 1 && T >= 1 && C >= 1, format("attention statistics: bad shape B=%d T=%d C=%d", B, T, C));
        std::vector<double> cosine(B), variance(size_t(B) * T);
#pragma omp parallel for
        for (int b = 0; b < B; b++) {
            std::vector<double> unit_sum(C, 0.0);
            double unit_squares = 0;  // sum_t |u_t|^2
            for (int t = 0; t < T; t++) {
                const Real* x = hidden + (size_t(b) * T + t) * C;
                double mean = 0, squares = 0;
                for (int c = 0; c < C; c++) mean += x[c];
                mean /= C;
                for (int c = 0; c < C; c++) squares += (x[c] - mean) * (x[c] - mean);
                variance[size_t(b) * T + t] = squares / C;

                double norm = 0;
                for (int c = 0; c < C; c++) norm += double(x[c]) * x[c];
                norm = std::sqrt(norm);
                if (norm == 0) continue;
                for (int c = 0; c < C; c++) {
                    double u = x[c] / norm;
                    unit_sum[c] += u;
                    unit_squares += u * u;
                }
            }
            double sum_squared = 0;
            for (int c = 0; c < C; c++) sum_squared += unit_sum[c] * unit_sum[c];
            cosine[b] = (sum_squared - unit_squares) / (double(T) * (T - 1));  // used only when T >= 2
        }
        for (int b = 0; b < B && T >= 2; b++) {
            cosine_sum_ += cosine[b];
            sequences_++;
        }
        for (double v : variance) variance_sum_ += v;
        tokens_ += int64_t(B) * T;
    }

    // The means of everything added so far; tau and bias stay empty (copy_learned_parameters fills them).
    AttentionReport report() const {
        const int NH = num_heads_;
        AttentionReport r;
        AttentionSums all;
        for (int l = 0; l < num_layers_; l++) {
            LayerReport layer;
            AttentionSums pooled;
            for (int h = 0; h < NH; h++) {
                const AttentionSums& head = sums_[size_t(l) * NH + h];
                pooled += head;
                layer.heads.push_back(measures_of(head));
                layer.sink_heads += layer.heads.back().sink > sink_head_threshold;
            }
            layer.pooled = measures_of(pooled);
            all += pooled;
            r.sink_heads += layer.sink_heads;
            r.layers.push_back(layer);
        }
        r.overall = measures_of(all);
        r.sink_head_share = double(r.sink_heads) / (double(num_layers_) * NH);
        r.hidden_cosine = mean_of(cosine_sum_, sequences_);
        r.hidden_variance = mean_of(variance_sum_, tokens_);
        r.rows_per_head = sums_[0].rows;
        r.sequences = sequences_;
        r.tokens = tokens_;
        return r;
    }

private:
    int num_layers_, num_heads_;
    std::vector<AttentionSums> sums_;  // [L, NH]
    double cosine_sum_ = 0, variance_sum_ = 0;
    int64_t sequences_ = 0, tokens_ = 0;  // sequences with T >= 2; tokens
};

// Copies the model's tau_h = |theta_h + 1| (computed in the parameters' type, as the model does) and
// bias tables into the report's layers. Model: GPT<Real> or gpu::GPT (anything with parameters()).
template <typename Model>
void copy_learned_parameters(AttentionReport& report, const Model& model) {
    const GPTConfig& c = model.config();
    const int NH = c.num_heads, W = c.attention.bias_window;
    check(report.layers.size() == size_t(c.num_layers),
          format("attention report has %d layers, the model %d", int(report.layers.size()), c.num_layers));
    const auto params = model.parameters();
    using Real = typename decltype(params)::value_type;
    ParameterTensors<const Real> p(params.data(), model.layout());
    for (int l = 0; l < c.num_layers; l++) {
        LayerReport& layer = report.layers[l];
        layer.tau.clear();
        layer.bias.clear();
        for (int h = 0; h < NH && p.theta; h++) layer.tau.push_back(std::fabs(p.theta[l * NH + h] + Real(1)));
        for (int h = 0; h < NH && p.bias; h++) {
            const Real* table = p.bias + (size_t(l) * NH + h) * W;
            layer.bias.emplace_back(table, table + W);
        }
    }
}

// The CPU model hands out pointers into its activations, the GPU model host copies; both read as pointers.
template <typename Real>
const Real* host_data(const Real* pointer) { return pointer; }
template <typename Real>
const Real* host_data(const std::vector<Real>& copy) { return copy.data(); }

// Runs the model (no targets) on each batch of B * T tokens and measures every layer's attention and the
// last hidden states; the report carries the learned tau and bias too. A gpu::GPT must keep its attention
// probabilities (keep_attention_probs()).
template <typename Model>
AttentionReport measure_attention(Model& model, const std::vector<std::vector<int>>& batches, int B, int T) {
    const GPTConfig& c = model.config();
    const int NH = c.num_heads;
    check(!batches.empty(), "measure_attention: no batches");
    AttentionStatistics statistics(c.num_layers, NH);
    const auto params = model.parameters();
    using Real = typename decltype(params)::value_type;
    ParameterTensors<const Real> p(params.data(), model.layout());
    std::vector<Real> weights(size_t(B) * NH * T * T);
    for (const std::vector<int>& tokens : batches) {
        check(tokens.size() == size_t(B) * T,
              format("measure_attention: a batch has %zu tokens, B * T = %d", tokens.size(), B * T));
        model.forward(tokens.data(), nullptr, B, T);
        for (int l = 0; l < c.num_layers; l++) {
            const Real* theta = p.theta ? p.theta + size_t(l) * NH : nullptr;
            const auto probs = model.attention_probs(l);
            attention_weights(c.attention, weights.data(), host_data(probs), theta, B, T, NH);
            statistics.add_layer(l, weights.data(), host_data(probs), B, T);
        }
        const auto hidden = model.last_hidden();
        statistics.add_hidden(host_data(hidden), B, T, c.channels);
    }
    AttentionReport report = statistics.report();
    copy_learned_parameters(report, model);
    return report;
}

// JSON through nlohmann's to_json convention: `nlohmann::json j = report;`. NaN is written as null.
inline void to_json(nlohmann::json& j, const AttentionMeasures& m) {
    j = {{"sparsity", m.sparsity},     {"sink", m.sink},
         {"row_mass", m.row_mass},     {"empty_rows", m.empty_rows},
         {"entropy", m.entropy},       {"normalised_entropy", m.normalised_entropy},
         {"dispersion", m.dispersion}};
}

inline void to_json(nlohmann::json& j, const AttentionReport& r) {
    nlohmann::json layers = nlohmann::json::array();
    for (size_t l = 0; l < r.layers.size(); l++) {
        const LayerReport& layer = r.layers[l];
        nlohmann::json entry = layer.pooled;
        entry["layer"] = l;
        entry["sink_heads"] = layer.sink_heads;
        entry["heads"] = layer.heads;
        if (!layer.tau.empty()) entry["tau"] = layer.tau;
        if (!layer.bias.empty()) entry["bias"] = layer.bias;
        layers.push_back(entry);
    }
    nlohmann::json overall = r.overall;
    overall["sink_heads"] = r.sink_heads;
    overall["sink_head_share"] = r.sink_head_share;
    j = {{"sink_head_threshold", sink_head_threshold},
         {"overall", overall},
         {"layers", layers},
         {"hidden", {{"mean_pairwise_cosine", r.hidden_cosine}, {"mean_feature_variance", r.hidden_variance}}},
         {"counts", {{"rows_per_head", r.rows_per_head}, {"sequences", r.sequences}, {"tokens", r.tokens}}}};
}

// A per-layer table and the overall line, for stdout. "-" stands for a value with nothing to average.
inline std::string attention_table(const AttentionReport& r) {
    auto cell = [](double value, int width, int decimals) {
        return std::isnan(value) ? format("%*s", width, "-") : format("%*.*f", width, decimals, value);
    };
    auto line = [&](const std::string& name, const AttentionMeasures& m, int sink_heads, int heads) {
        return format("%5s", name.c_str()) + cell(m.sparsity, 10, 4) + cell(m.sink, 8, 4) +
               format("%10s", format("%d/%d", sink_heads, heads).c_str()) + cell(m.row_mass, 8, 4) +
               cell(m.empty_rows, 8, 4) + cell(m.entropy, 9, 3) + cell(m.normalised_entropy, 10, 3) +
               cell(m.dispersion, 12, 3) + "\n";
    };
    std::string text = format("%5s%10s%8s%10s%8s%8s%9s%10s%12s\n", "layer", "sparsity", "sink", "heads>0.3", "mass",
                              "empty", "entropy", "norm.ent", "dispersion");
    int heads = 0;
    for (size_t l = 0; l < r.layers.size(); l++) {
        const LayerReport& layer = r.layers[l];
        text += line(std::to_string(l), layer.pooled, layer.sink_heads, int(layer.heads.size()));
        heads += int(layer.heads.size());
    }
    text += line("all", r.overall, r.sink_heads, heads);
    text += "last hidden states: mean pairwise cosine " + cell(r.hidden_cosine, 0, 4) +
            ", mean feature variance " + cell(r.hidden_variance, 0, 4) + "\n";
    return text;
}

}  // namespace focus
