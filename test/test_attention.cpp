// test_attention.cpp: the CPU reference of every attention variant (attention/attention.h), in double.
//  - gradients: finite differences of dqkv, dtheta and dbias for every kind x {learned, rope} x
//    {no bias, bias window < T} (x {no global tokens, 2} for window/block);
//  - known answers from ATTENTION_SPEC.md (elastic limits, sparse limits, causality, RoPE geometry, the
//    bias window, keep sets, the weights the output uses);
//  - configuration errors, float against double, and independence of the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <omp.h>
#include <vector>

#include <doctest/doctest.h>

#include "../attention/attention.h"
#include "gradcheck.h"

using namespace focus;

namespace {

const AttentionKind all_kinds[] = {AttentionKind::softmax, AttentionKind::elastic, AttentionKind::topk,
                                   AttentionKind::window, AttentionKind::block};

// One attention call's inputs, in double; the runners below convert them to the Real under test.
struct Problem {
    AttentionConfig cfg;
    int B, T, NH, hs;
    std::vector<double> qkv, theta, bias;
    int C() const { return NH * hs; }
};

// qkv ~ N(0, 1) with q and k scaled by 1.5 (sharper rows: some keys above the elastic cut, some
// below); theta gives tau = 0.65 and 0.8, alternating sides of the kink theta = -1 so both signs of
// dtheta/dtau are exercised; bias ~ N(0, 0.5), large enough to reorder scores.
Problem make_problem(const AttentionConfig& cfg, uint64_t seed, int T = 8, int NH = 2, int hs = 4) {
    const double qk_scale = 1.5;
    Problem p{cfg, 2, T, NH, hs, {}, {}, {}};
    Rng rng(seed);
    const int C = p.C();
    p.qkv.resize(size_t(p.B) * T * 3 * C);
    for (size_t e = 0; e < p.qkv.size(); e++) p.qkv[e] = rng.normal() * (int(e % (3 * C)) < 2 * C ? qk_scale : 1.0);
    for (int h = 0; h < NH; h++) p.theta.push_back(h % 2 == 0 ? -0.35 : -1.8);
    for (int e = 0; e < NH * cfg.bias_window; e++) p.bias.push_back(rng.normal(0.0, 0.5));
    return p;
}

template <typename Real>
struct Saved {
    std::vector<Real> out, probs, qkv_rot;
};

template <typename Real>
struct Gradients {
    std::vector<Real> dqkv, dtheta, dbias;
};

template <typename Real>
std::vector<Real> convert(const std::vector<double>& x) {
    return std::vector<Real>(x.begin(), x.end());
}

// nullptr where the interface allows it (theta for non-elastic kinds, bias for W = 0), so that path is
// what every test runs.
template <typename Real>
const Real* theta_or_null(const Problem& p, const std::vector<Real>& theta) {
    return p.cfg.kind == AttentionKind::elastic ? theta.data() : nullptr;
}

template <typename Real>
Saved<Real> run_forward(const Problem& p) {
    std::vector<Real> qkv = convert<Real>(p.qkv), theta = convert<Real>(p.theta), bias = convert<Real>(p.bias);
    Saved<Real> s;
    s.out.resize(size_t(p.B) * p.T * p.C());
    s.probs.resize(size_t(p.B) * p.NH * p.T * p.T);
    s.qkv_rot.resize(qkv.size());
    attention_forward<Real>(p.cfg, s.out.data(), s.probs.data(), s.qkv_rot.data(), qkv.data(),
                            theta_or_null(p, theta), bias.empty() ? nullptr : bias.data(), p.B, p.T, p.C(), p.NH);
    return s;
}

template <typename Real>
Gradients<Real> run_backward(const Problem& p, const Saved<Real>& s, const std::vector<double>& dout) {
    std::vector<Real> theta = convert<Real>(p.theta), bias = convert<Real>(p.bias), dout_real = convert<Real>(dout);
    Gradients<Real> g{std::vector<Real>(p.qkv.size()), std::vector<Real>(p.theta.size()),
                      std::vector<Real>(p.bias.size())};
    attention_backward<Real>(p.cfg, g.dqkv.data(), p.cfg.kind == AttentionKind::elastic ? g.dtheta.data() : nullptr,
                             g.dbias.empty() ? nullptr : g.dbias.data(), dout_real.data(), s.probs.data(),
                             s.qkv_rot.data(), theta_or_null(p, theta), bias.empty() ? nullptr : bias.data(), p.B,
                             p.T, p.C(), p.NH);
    return g;
}

std::vector<double> weights_of(const Problem& p, const Saved<double>& s) {
    std::vector<double> w(s.probs.size());
    attention_weights<double>(p.cfg, w.data(), s.probs.data(), theta_or_null(p, p.theta), p.B, p.T, p.NH);
    return w;
}

std::vector<double> random_vector(size_t n, uint64_t seed) {
    Rng rng(seed);
    std::vector<double> x(n);
    for (double& e : x) e = rng.normal();
    return x;
}

double max_abs_diff(const std::vector<double>& x, const std::vector<double>& y) {
    REQUIRE(x.size() == y.size());
    double d = 0;
    for (size_t e = 0; e < x.size(); e++) d = std::max(d, std::fabs(x[e] - y[e]));
    return d;
}

double dot(const std::vector<double>& x, const std::vector<double>& y) {
    double sum = 0;
    for (size_t e = 0; e < x.size(); e++) sum += x[e] * y[e];
    return sum;
}

// The score s_tj the forward saw, recomputed here from its rotated q, k and the bias.
double score(const Problem& p, const Saved<double>& s, int b, int h, int t, int j) {
    AttentionLayout L{p.B, p.T, p.C(), p.NH, p.hs};
    double qk = 0;
    for (int c = 0; c < p.hs; c++) qk += s.qkv_rot[L.q(b, t, h) + c] * s.qkv_rot[L.k(b, j, h) + c];
    double bias = t - j < p.cfg.bias_window ? p.bias[h * p.cfg.bias_window + t - j] : 0.0;
    return qk / std::sqrt(double(p.hs)) + bias;
}

// How far the data sit from the kinks of the piecewise kinds, over every row: for elastic the smallest
// |p_tj - tau/i| (j <= t), for topk the smallest gap between the k-th and (k+1)-th largest score. Also
// counts the keys on each side of the kink, so a test can insist both sides are exercised.
struct KinkMargin {
    double margin = std::numeric_limits<double>::infinity();
    int kept = 0, dropped = 0;
};

KinkMargin kink_margin(const Problem& p, const Saved<double>& s) {
    KinkMargin m;
    for (int b = 0; b < p.B; b++) {
        for (int h = 0; h < p.NH; h++) {
            for (int t = 0; t < p.T; t++) {
                if (p.cfg.kind == AttentionKind::elastic) {
                    double cut = std::fabs(p.theta[h] + 1) / (t + 1);
                    for (int j = 0; j <= t; j++) {
                        double prob = s.probs[((size_t(b) * p.NH + h) * p.T + t) * p.T + j];
                        m.margin = std::min(m.margin, std::fabs(prob - cut));
                        (prob > cut ? m.kept : m.dropped)++;
                    }
                } else if (p.cfg.kind == AttentionKind::topk && t + 1 > p.cfg.k) {
                    std::vector<double> row;
                    for (int j = 0; j <= t; j++) row.push_back(score(p, s, b, h, t, j));
                    std::sort(row.rbegin(), row.rend());
                    m.margin = std::min(m.margin, row[p.cfg.k - 1] - row[p.cfg.k]);
                    m.kept += p.cfg.k;
                    m.dropped += t + 1 - p.cfg.k;
                }
            }
        }
    }
    return m;
}

// Every configuration the gradient and weight tests sweep: each kind x {learned, rope} x {no bias,
// bias window 3 < T}, and window/block also with 2 global tokens. k = 3 (T = 8 keeps some keys out).
std::vector<AttentionConfig> sweep_configs() {
    std::vector<AttentionConfig> configs;
    for (AttentionKind kind : all_kinds) {
        int k = keeps_k_keys(kind) ? 3 : 0;
        bool has_globals = kind == AttentionKind::window || kind == AttentionKind::block;
        for (PositionKind position : {PositionKind::learned, PositionKind::rope})
            for (int bias_window : {0, 3})
                for (int globals : {0, 2})
                    if (globals == 0 || has_globals)
                        configs.push_back(attention_config(kind, k, position, bias_window, globals));
    }
    return configs;
}

// Problems with rope and a bias on, one per kind: the settings where most can go wrong.
std::vector<Problem> full_problems(uint64_t seed, int T = 9, int NH = 2, int hs = 4) {
    std::vector<Problem> problems;
    for (AttentionKind kind : all_kinds) {
        int k = keeps_k_keys(kind) ? 3 : 0;
        int globals = kind == AttentionKind::window || kind == AttentionKind::block ? 1 : 0;
        problems.push_back(make_problem(attention_config(kind, k, PositionKind::rope, 3, globals), seed, T, NH, hs));
    }
    return problems;
}

// Sets the OpenMP thread count for one scope.
struct ThreadCount {
    int saved = omp_get_max_threads();
    explicit ThreadCount(int threads) { omp_set_num_threads(threads); }
    ~ThreadCount() { omp_set_num_threads(saved); }
};

}  // namespace

TEST_CASE("attention: gradients match finite differences for every configuration") {
    // ~20k forward calls on tiny shapes: OpenMP fork/join would cost more than the math (seconds on a
    // busy machine). The thread-count test below covers the parallel paths.
    ThreadCount serial(1);
    for (const AttentionConfig& cfg : sweep_configs()) {
        INFO(describe(cfg));
        Problem p = make_problem(cfg, 8);  // seed 8: its data clear the margin below for every config
        Saved<double> s = run_forward<double>(p);

        // The loss is piecewise smooth for elastic and topk: a kink closer than 1e-3 to the data could
        // be crossed by the 1e-5 finite-difference step (which moves scores by ~1e-5) and wreck the
        // comparison, so insist on the margin, and on keys on both sides of the kink.
        KinkMargin m = kink_margin(p, s);
        INFO("kink margin " << m.margin << ", kept " << m.kept << ", dropped " << m.dropped);
        REQUIRE(m.margin > 1e-3);
        if (cfg.kind == AttentionKind::elastic || cfg.kind == AttentionKind::topk) {
            REQUIRE(m.kept > 0);
            REQUIRE(m.dropped > 0);
        }

        std::vector<double> dout = random_vector(s.out.size(), 11);  // loss = sum(out * dout)
        Gradients<double> g = run_backward(p, s, dout);
        auto loss = [&] { return dot(run_forward<double>(p).out, dout); };
        CHECK_GRADIENT("dqkv", p.qkv, g.dqkv, loss, 1e-4);
        if (cfg.kind == AttentionKind::elastic) CHECK_GRADIENT("dtheta", p.theta, g.dtheta, loss, 1e-4);
        if (cfg.bias_window > 0) CHECK_GRADIENT("dbias", p.bias, g.dbias, loss, 1e-4);
    }
}

TEST_CASE("attention: backward accumulates into the gradient buffers") {
    Problem p = make_problem(attention_config(AttentionKind::elastic, 0, PositionKind::rope, 3), 3);
    Saved<double> s = run_forward<double>(p);
    std::vector<double> dout = random_vector(s.out.size(), 4);
    Gradients<double> once = run_backward(p, s, dout);
    Gradients<double> twice = once;
    attention_backward<double>(p.cfg, twice.dqkv.data(), twice.dtheta.data(), twice.dbias.data(), dout.data(),
                               s.probs.data(), s.qkv_rot.data(), p.theta.data(), p.bias.data(), p.B, p.T, p.C(), p.NH);
    // twice = 2 once up to the rounding of adding the terms again onto nonzero values (~1e-15); a
    // missed or doubled accumulation is off by a whole gradient, O(1).
    for (auto [a, b] : {std::pair(&once.dqkv, &twice.dqkv), std::pair(&once.dtheta, &twice.dtheta),
                        std::pair(&once.dbias, &twice.dbias)}) {
        std::vector<double> doubled = *a;
        for (double& e : doubled) e *= 2;
        CHECK(max_abs_diff(doubled, *b) < 1e-12);
    }
}

// "Equal" below, for two paths that compute the same math, means within 1e-12 absolute on outputs of
// order 1: double rounding leaves ~1e-15, a real difference (a wrong key or weight) is >= 1e-3.
TEST_CASE("attention: elastic with tau = 0 equals softmax, forward and backward") {
    Problem softmax = make_problem(attention_config(AttentionKind::softmax, 0, PositionKind::rope, 3), 5);
    Problem elastic = softmax;
    elastic.cfg.kind = AttentionKind::elastic;
    elastic.theta.assign(elastic.NH, -1.0);
    Saved<double> s_soft = run_forward<double>(softmax), s_elastic = run_forward<double>(elastic);
    CHECK(max_abs_diff(s_soft.out, s_elastic.out) < 1e-12);
    std::vector<double> dout = random_vector(s_soft.out.size(), 6);
    Gradients<double> g_soft = run_backward(softmax, s_soft, dout), g_elastic = run_backward(elastic, s_elastic, dout);
    CHECK(max_abs_diff(g_soft.dqkv, g_elastic.dqkv) < 1e-12);
    CHECK(max_abs_diff(g_soft.dbias, g_elastic.dbias) < 1e-12);
}

TEST_CASE("attention: elastic with tau = 1 outputs exactly zero for uniform rows (q = 0)") {
    for (PositionKind position : {PositionKind::learned, PositionKind::rope}) {
        INFO(to_string(position));
        Problem p = make_problem(attention_config(AttentionKind::elastic, 0, position), 8);
        p.theta.assign(p.NH, 0.0);
        AttentionLayout L{p.B, p.T, p.C(), p.NH, p.hs};
        for (int b = 0; b < p.B; b++)
            for (int t = 0; t < p.T; t++) std::fill_n(&p.qkv[L.q(b, t, 0)], p.C(), 0.0);
        Saved<double> s = run_forward<double>(p);
        for (double o : s.out) CHECK(o == 0.0);
        for (double w : weights_of(p, s)) CHECK(w == 0.0);
    }
}

TEST_CASE("attention: elastic with tau >= 1 outputs exactly zero at the first position") {
    for (PositionKind position : {PositionKind::learned, PositionKind::rope}) {
        INFO(to_string(position));
        Problem p = make_problem(attention_config(AttentionKind::elastic, 0, position, 3), 9);
        p.theta = {0.0, -2.5};  // tau = 1 and 1.5
        Saved<double> s = run_forward<double>(p);
        for (int b = 0; b < p.B; b++)
            for (int c = 0; c < p.C(); c++) CHECK(s.out[size_t(b) * p.T * p.C() + c] == 0.0);
        CHECK(s.out[p.C()] != 0.0);  // the next position is not zero: the data are not trivially zero
    }
}

TEST_CASE("attention: row mass is 1 for softmax and at most 1 for elastic") {
    for (AttentionKind kind : {AttentionKind::softmax, AttentionKind::elastic}) {
        INFO(to_string(kind));
        Problem p = make_problem(attention_config(kind, 0, PositionKind::rope, 3), 10);
        Saved<double> s = run_forward<double>(p);
        std::vector<double> w = weights_of(p, s);
        double lightest = 1.0;
        for (size_t row = 0; row < w.size() / p.T; row++) {
            double mass = 0;
            for (int j = 0; j < p.T; j++) {
                CHECK(w[row * p.T + j] >= 0.0);
                mass += w[row * p.T + j];
            }
            CHECK(mass <= 1.0 + 1e-12);  // 1e-12: rounding of a sum of <= 9 terms
            lightest = std::min(lightest, mass);
        }
        if (kind == AttentionKind::softmax) CHECK(lightest > 1.0 - 1e-12);
        else CHECK(lightest < 0.9);  // the cut really removed mass somewhere
    }
}

TEST_CASE("attention: topk, window and block with k >= T equal softmax") {
    const int T = 8;
    Problem softmax = make_problem(attention_config(AttentionKind::softmax, 0, PositionKind::rope, 3), 12, T);
    Saved<double> reference = run_forward<double>(softmax);
    for (auto [kind, k] : {std::pair(AttentionKind::topk, T), std::pair(AttentionKind::topk, T + 5),
                           std::pair(AttentionKind::window, T), std::pair(AttentionKind::block, T)}) {
        Problem p = softmax;
        p.cfg.kind = kind;
        p.cfg.k = k;
        INFO(describe(p.cfg));
        CHECK(max_abs_diff(run_forward<double>(p).out, reference.out) < 1e-12);
    }
}

TEST_CASE("attention: window with k = 1 returns v_i") {
    Problem p = make_problem(attention_config(AttentionKind::window, 1, PositionKind::rope, 3), 13);
    Saved<double> s = run_forward<double>(p);
    AttentionLayout L{p.B, p.T, p.C(), p.NH, p.hs};
    // p = 1 on the only key, so o_i = 1 * v_i exactly.
    for (int b = 0; b < p.B; b++)
        for (int t = 0; t < p.T; t++)
            for (int c = 0; c < p.C(); c++) CHECK(s.out[L.out(b, t, 0) + c] == p.qkv[L.v(b, t, 0) + c]);
}

TEST_CASE("attention: a future token never changes an earlier output") {
    const int changed = 5;  // token of batch 0 whose q, k and v all change
    for (Problem p : full_problems(14)) {
        INFO(describe(p.cfg));
        Saved<double> before = run_forward<double>(p);
        AttentionLayout L{p.B, p.T, p.C(), p.NH, p.hs};
        Rng rng(15);
        for (int c = 0; c < 3 * p.C(); c++) p.qkv[L.q(0, changed, 0) + c] += rng.normal();
        Saved<double> after = run_forward<double>(p);
        auto rows = [&](const Saved<double>& s, int t_begin, int t_end) {  // rows [t_begin, t_end) of batch 0
            return std::vector<double>(s.out.begin() + L.out(0, t_begin, 0), s.out.begin() + L.out(0, t_end, 0));
        };
        // Bitwise: the earlier rows never read the changed token, so not even rounding may differ.
        CHECK(rows(after, 0, changed) == rows(before, 0, changed));
        CHECK(max_abs_diff(rows(after, changed, changed + 1), rows(before, changed, changed + 1)) > 1e-3);
    }
}

TEST_CASE("attention: RoPE convention, relative positions and norms") {
    AttentionConfig cfg = attention_config(AttentionKind::softmax, 0, PositionKind::rope);
    cfg.rope_base = 100.0f;
    Problem p = make_problem(cfg, 16);
    AttentionLayout L{p.B, p.T, p.C(), p.NH, p.hs};

    SUBCASE("pairs (2m, 2m+1) rotate by t * base^(-2m/hs)") {
        const int t = 3;
        const double x[4] = {1, 2, 3, 4};
        std::copy(x, x + 4, &p.qkv[L.q(0, t, 0)]);
        Saved<double> s = run_forward<double>(p);
        const double* y = &s.qkv_rot[L.q(0, t, 0)];
        const double angle0 = 3.0, angle1 = 3.0 * std::pow(100.0, -2.0 / 4);  // m = 0 and m = 1 with hs = 4
        CHECK(y[0] == doctest::Approx(x[0] * std::cos(angle0) - x[1] * std::sin(angle0)).epsilon(1e-14));
        CHECK(y[1] == doctest::Approx(x[0] * std::sin(angle0) + x[1] * std::cos(angle0)).epsilon(1e-14));
        CHECK(y[2] == doctest::Approx(x[2] * std::cos(angle1) - x[3] * std::sin(angle1)).epsilon(1e-14));
        CHECK(y[3] == doctest::Approx(x[2] * std::sin(angle1) + x[3] * std::cos(angle1)).epsilon(1e-14));
    }
    SUBCASE("scores depend only on i - j, and rotation keeps norms") {
        // The same q and k at every position: any dependence on absolute position would show.
        for (int t = 0; t < p.T; t++) {
            std::copy_n(&p.qkv[L.q(0, 0, 0)], p.C(), &p.qkv[L.q(0, t, 0)]);
            std::copy_n(&p.qkv[L.k(0, 0, 0)], p.C(), &p.qkv[L.k(0, t, 0)]);
        }
        Saved<double> s = run_forward<double>(p);
        for (int h = 0; h < p.NH; h++) {
            for (int i = 0; i < p.T; i++) {
                for (int j = 0; j <= i; j++) {
                    // 1e-12: scores of order 1 from 4-term dot products, cos/sin of angles < 8 rad.
                    CHECK(std::fabs(score(p, s, 0, h, i, j) - score(p, s, 0, h, i - j, 0)) < 1e-12);
                }
                double norm_in = 0, norm_rot = 0;
                for (int c = 0; c < p.hs; c++) {
                    norm_in += std::pow(p.qkv[L.q(0, i, h) + c], 2);
                    norm_rot += std::pow(s.qkv_rot[L.q(0, i, h) + c], 2);
                }
                CHECK(std::fabs(norm_rot - norm_in) < 1e-12 * norm_in);
            }
        }
        CHECK(s.qkv_rot[L.q(0, 1, 0)] != p.qkv[L.q(0, 1, 0)]);  // something did rotate
    }
}

TEST_CASE("attention: the bias beyond the window changes nothing") {
    const int T = 8;
    Problem narrow = make_problem(attention_config(AttentionKind::softmax, 0, PositionKind::rope, 3), 17, T);
    SUBCASE("W = 3 equals W = T with the bias beyond distance 3 set to zero") {
        Problem wide = narrow;
        wide.cfg.bias_window = T;
        wide.bias.assign(size_t(wide.NH) * T, 0.0);
        for (int h = 0; h < wide.NH; h++) std::copy_n(&narrow.bias[h * 3], 3, &wide.bias[h * T]);
        CHECK(max_abs_diff(run_forward<double>(narrow).out, run_forward<double>(wide).out) < 1e-12);
        wide.bias[T - 1] = 1.0;  // a nonzero bias at distance T - 1 does matter
        CHECK(max_abs_diff(run_forward<double>(narrow).out, run_forward<double>(wide).out) > 1e-3);
    }
    SUBCASE("W > T: entries at distances >= T are never read") {
        Problem wide = make_problem(attention_config(AttentionKind::softmax, 0, PositionKind::rope, T + 2), 17, T);
        Saved<double> reference = run_forward<double>(wide);
        for (int h = 0; h < wide.NH; h++) wide.bias[h * (T + 2) + T] = wide.bias[h * (T + 2) + T + 1] = 100.0;
        CHECK(max_abs_diff(run_forward<double>(wide).out, reference.out) == 0.0);
    }
}

TEST_CASE("attention: topk keeps exactly min(k, i) keys, ties to the earlier key") {
    const int k = 3;
    Problem p = make_problem(attention_config(AttentionKind::topk, k, PositionKind::rope, 3), 18);
    std::vector<double> w = weights_of(p, run_forward<double>(p));
    for (size_t row = 0; row < w.size() / p.T; row++) {
        int t = int(row % p.T);
        int nonzero = int(std::count_if(&w[row * p.T], &w[row * p.T] + p.T, [](double a) { return a != 0.0; }));
        CHECK(nonzero == std::min(k, t + 1));
    }
    SUBCASE("equal scores (q = 0, no bias) keep the first k keys") {
        Problem tied = make_problem(attention_config(AttentionKind::topk, k), 18);
        std::fill(tied.qkv.begin(), tied.qkv.end(), 0.0);
        std::vector<double> wt = weights_of(tied, run_forward<double>(tied));
        for (int t = 0; t < tied.T; t++) {
            int kept = std::min(k, t + 1);
            for (int j = 0; j < tied.T; j++) CHECK(wt[size_t(t) * tied.T + j] == (j < kept ? 1.0 / kept : 0.0));
        }
    }
}

TEST_CASE("attention: keep sets of every kind") {
    // Uniform scores (q = 0, no bias), so each kept key gets 1/n and the nonzero pattern is the keep set.
    const int T = 9, k = 3, g = 2;
    auto expected = [&](const AttentionConfig& cfg, int t, int j) {
        if (j > t) return false;
        if (j < cfg.global_tokens) return true;
        if (cfg.kind == AttentionKind::window) return j > t - k;
        if (cfg.kind == AttentionKind::block) return j / k == t / k;
        return true;
    };
    for (AttentionConfig cfg : {attention_config(AttentionKind::softmax), attention_config(AttentionKind::window, k),
                                attention_config(AttentionKind::window, k, PositionKind::learned, 0, g),
                                attention_config(AttentionKind::block, k),
                                attention_config(AttentionKind::block, k, PositionKind::learned, 0, g)}) {
        INFO(describe(cfg));
        Problem p = make_problem(cfg, 19, T);
        AttentionLayout L{p.B, p.T, p.C(), p.NH, p.hs};
        for (int b = 0; b < p.B; b++)
            for (int t = 0; t < T; t++) std::fill_n(&p.qkv[L.q(b, t, 0)], p.C(), 0.0);
        std::vector<double> w = weights_of(p, run_forward<double>(p));
        for (int t = 0; t < T; t++) {
            int n = 0;
            for (int j = 0; j < T; j++) n += expected(cfg, t, j);
            for (int j = 0; j < T; j++) {
                INFO("t=" << t << " j=" << j);
                CHECK(w[size_t(t) * T + j] == doctest::Approx(expected(cfg, t, j) ? 1.0 / n : 0.0).epsilon(1e-14));
            }
        }
    }
}

TEST_CASE("attention: attention_weights are the weights the output uses (out = weights @ v)") {
    for (const AttentionConfig& cfg : sweep_configs()) {
        INFO(describe(cfg));
        Problem p = make_problem(cfg, 20);
        Saved<double> s = run_forward<double>(p);
        std::vector<double> w = weights_of(p, s), product(s.out.size(), 0.0);
        AttentionLayout L{p.B, p.T, p.C(), p.NH, p.hs};
        for (int b = 0; b < p.B; b++)
            for (int h = 0; h < p.NH; h++)
                for (int t = 0; t < p.T; t++)
                    for (int j = 0; j < p.T; j++)
                        for (int c = 0; c < p.hs; c++)
                            product[L.out(b, t, h) + c] += w[L.probs_row(b, h, t) + j] * p.qkv[L.v(b, j, h) + c];
        CHECK(max_abs_diff(product, s.out) < 1e-12);
    }
}

TEST_CASE("attention: validate and the parsers reject bad values with a message") {
    auto rejects = [](AttentionConfig cfg, int head_size, const char* message) {
        INFO(describe(cfg) << " hs=" << head_size);
        CHECK_THROWS_WITH_AS(validate(cfg, head_size), doctest::Contains(message), Error);
    };
    rejects(attention_config(AttentionKind::topk, 0), 4, "topk attention needs k >= 1 (got 0)");
    rejects(attention_config(AttentionKind::window, -2), 4, "window attention needs k >= 1");
    rejects(attention_config(AttentionKind::block, 0), 4, "block attention needs k >= 1");
    rejects(attention_config(AttentionKind::softmax, 4), 4, "softmax attention takes no k");
    rejects(attention_config(AttentionKind::elastic, 1), 4, "elastic attention takes no k");
    rejects(attention_config(AttentionKind::softmax, 0, PositionKind::rope), 5, "rope needs an even head size (got 5)");
    rejects(attention_config(AttentionKind::softmax, 0, PositionKind::learned, -1), 4, "bias window must be >= 0");
    rejects(attention_config(AttentionKind::topk, 2, PositionKind::learned, 0, 1), 4,
            "window and block attention only");
    rejects(attention_config(AttentionKind::window, 2, PositionKind::learned, 0, -1), 4, "global tokens must be >= 0");
    rejects(attention_config(AttentionKind::softmax), 0, "head size must be >= 1");
    AttentionConfig low_base = attention_config(AttentionKind::softmax, 0, PositionKind::rope);
    low_base.rope_base = 1.0f;
    rejects(low_base, 4, "rope base must be > 1");

    CHECK_NOTHROW(validate(attention_config(AttentionKind::block, 4, PositionKind::rope, 64, 1), 64));
    CHECK_NOTHROW(validate(attention_config(AttentionKind::elastic, 0, PositionKind::learned, 8), 3));

    for (AttentionKind kind : all_kinds) CHECK(parse_attention_kind(to_string(kind)) == kind);
    for (PositionKind position : {PositionKind::learned, PositionKind::rope})
        CHECK(parse_position_kind(to_string(position)) == position);
    CHECK_THROWS_WITH_AS(parse_attention_kind("dense"),
                         "unknown attention kind 'dense' (valid: softmax, elastic, topk, window, block)", Error);
    CHECK_THROWS_WITH_AS(parse_position_kind("alibi"), "unknown position kind 'alibi' (valid: learned, rope)", Error);
    CHECK_THROWS_AS(parse_attention_kind("Softmax"), Error);  // names are case-sensitive
}

TEST_CASE("attention: the float forward agrees with double") {
    for (const Problem& p : full_problems(21, 64, 4, 16)) {
        INFO(describe(p.cfg));
        Saved<double> d = run_forward<double>(p);
        Saved<float> f = run_forward<float>(p);
        double largest = 0;
        for (double o : d.out) largest = std::max(largest, std::fabs(o));
        // 1e-5 of the largest output: float rounds to 6e-8 relative and a row sums 16-term dot products
        // and up to 64 softmax terms, ~1e-6 at worst; a float-only bug (overflow, a lost term) is far above.
        CHECK(max_abs_diff(std::vector<double>(f.out.begin(), f.out.end()), d.out) < 1e-5 * largest);
    }
}

TEST_CASE("attention: results do not depend on the thread count") {
    for (const Problem& p : full_problems(22, 16)) {
        INFO(describe(p.cfg));
        std::vector<double> dout = random_vector(size_t(p.B) * p.T * p.C(), 23);
        auto run = [&](int threads) {
            ThreadCount use(threads);
            Saved<double> s = run_forward<double>(p);
            return std::pair(s, run_backward(p, s, dout));
        };
        auto [s1, g1] = run(1);
        auto [s3, g3] = run(3);
        // Bitwise: every element has one writer and every sum a fixed order.
        CHECK(s1.out == s3.out);
        CHECK(s1.probs == s3.probs);
        CHECK(g1.dqkv == g3.dqkv);
        CHECK(g1.dtheta == g3.dtheta);
        CHECK(g1.dbias == g3.dbias);
    }
}

// ---- the tiled (flash) scheme of attention/flash_attention.cuh, on the CPU -----------------------
// A float re-enactment of the kernels' passes, tile by tile, with the per-element functions they share
// (attention/flash_attention.h): the forward's online softmax over key tiles, elastic's two passes and
// its skip of key tiles whose weights are all 0, the backward's query pass (delta, recomputed for
// elastic; dq; the bias gradient as per-(b, query tile) partial sums; dtau partials) and key pass (dk,
// dv), the parameter sums over the partials, and the inverse rotation. It leaves out only what the GPU
// adds to it: the split over threads (which reorders a few float sums) and the bf16 operands of the
// tile products. Compared with the double reference (attention.h), it checks the scheme's math now;
// test/test_gpu_attention.cu checks the kernels against the same reference on a GPU.

#include "../attention/flash_attention.h"

namespace {

// One (b, h)'s q, k and v ([T, hs] each, float), q and k rotated as the kernels' tile loads do: the
// angle in double, cos and sin rounded to float (rope_table_kernel), flash::rotated_first/second.
struct FlashHead {
    std::vector<float> q, k, v;
};

FlashHead flash_head(const Problem& p, const std::vector<float>& qkv, int b, int h) {
    const AttentionLayout L{p.B, p.T, p.C(), p.NH, p.hs};
    FlashHead head{std::vector<float>(size_t(p.T) * p.hs), std::vector<float>(size_t(p.T) * p.hs),
                   std::vector<float>(size_t(p.T) * p.hs)};
    for (int t = 0; t < p.T; t++) {
        for (int m = 0; m < p.hs / 2; m++) {
            const double angle = t * std::pow(double(p.cfg.rope_base), -2.0 * m / p.hs);
            const float cosine = float(std::cos(angle)), sine = float(std::sin(angle));
            for (auto [rotated, from] : {std::pair(&head.q, L.q(b, t, h)), std::pair(&head.k, L.k(b, t, h))}) {
                float x0 = qkv[from + 2 * m], x1 = qkv[from + 2 * m + 1];
                if (p.cfg.position == PositionKind::rope) {
                    const float y0 = flash::rotated_first(x0, x1, cosine, sine);
                    x1 = flash::rotated_second(x0, x1, cosine, sine);
                    x0 = y0;
                }
                (*rotated)[size_t(t) * p.hs + 2 * m] = x0;
                (*rotated)[size_t(t) * p.hs + 2 * m + 1] = x1;
            }
        }
        std::copy_n(&qkv[L.v(b, t, h)], p.hs, &head.v[size_t(t) * p.hs]);
    }
    return head;
}

float dot_float(const float* x, const float* y, int n) {
    float sum = 0.0f;
    for (int c = 0; c < n; c++) sum += x[c] * y[c];
    return sum;
}

// The inputs in float, and the pieces every pass of one (b, h) needs.
struct FlashCpu {
    const Problem& p;
    int tile;
    std::vector<float> qkv, theta, bias;
    float scale;

    FlashCpu(const Problem& problem, int tile_size)
        : p(problem),
          tile(tile_size),
          qkv(convert<float>(p.qkv)),
          theta(convert<float>(p.theta)),
          bias(convert<float>(p.bias)),
          scale(1.0f / std::sqrt(float(p.hs))) {}

    int query_tiles() const { return (p.T + tile - 1) / tile; }
    float tau(int h) const { return p.cfg.kind == AttentionKind::elastic ? std::fabs(theta[h] + 1.0f) : 0.0f; }
    // s_tj as the kernels form it: the tile's padding keys (j >= T) have zero vectors
    float score(const FlashHead& head, int h, int t, int j) const {
        const float qk = j < p.T ? dot_float(&head.q[size_t(t) * p.hs], &head.k[size_t(j) * p.hs], p.hs) : 0.0f;
        return flash::masked_score(qk, scale, t, j, p.T, p.cfg,
                                   bias.empty() ? nullptr : &bias[size_t(h) * p.cfg.bias_window]);
    }
    // the kernels' skip of a key tile that no row of the query tile sees (window, block)
    bool sees(int q0, int k0) const { return flash::key_tile_visible(p.cfg, q0, k0, tile); }
};

struct FlashForward {
    std::vector<float> out, row_state;  // row_state [B, NH, T, 2]: (max, sum)
    int tiles = 0, skipped = 0;         // elastic pass 2: (query tile, key tile) pairs, and those skipped
    int unseen = 0;                     // (query tile, causal key tile) pairs skipped as no row sees them
};

FlashForward flash_forward_cpu(const FlashCpu& f) {
    const Problem& p = f.p;
    const AttentionLayout L{p.B, p.T, p.C(), p.NH, p.hs};
    const bool elastic = p.cfg.kind == AttentionKind::elastic;
    const int hs = p.hs;
    FlashForward result{std::vector<float>(size_t(p.B) * p.T * p.C()),
                        std::vector<float>(size_t(2) * p.B * p.NH * p.T)};
    for (int b = 0; b < p.B; b++) {
        for (int h = 0; h < p.NH; h++) {
            const FlashHead vectors = flash_head(p, f.qkv, b, h);
            for (int q0 = 0; q0 < p.T; q0 += f.tile) {
                const int rows = std::min(f.tile, p.T - q0);
                std::vector<float> row_max(rows, -INFINITY), row_sum(rows, 0.0f), o(size_t(rows) * hs, 0.0f);
                for (int k0 = 0; k0 <= q0; k0 += f.tile) {  // the running maximum and sum (and softmax's o)
                    if (!f.sees(q0, k0)) {
                        result.unseen++;
                        continue;
                    }
                    for (int r = 0; r < rows; r++) {
                        const int t = q0 + r;
                        std::vector<float> s(f.tile);
                        float tile_max = -INFINITY;
                        for (int c = 0; c < f.tile; c++)
                            tile_max = std::max(tile_max, s[c] = f.score(vectors, h, t, k0 + c));
                        const float new_max = std::max(row_max[r], tile_max);
                        const float rescale = flash::rescale_factor(row_max[r], new_max);
                        float tile_sum = 0.0f;
                        if (!elastic)
                            for (int d = 0; d < hs; d++) o[size_t(r) * hs + d] *= rescale;
                        for (int c = 0; c < f.tile; c++) {
                            const float e = flash::exp_weight(s[c], new_max);
                            tile_sum += e;
                            if (!elastic && e > 0.0f)
                                head::add_scaled(&o[size_t(r) * hs], e, &vectors.v[size_t(k0 + c) * hs], hs);
                        }
                        row_sum[r] = rescale * row_sum[r] + tile_sum;
                        row_max[r] = new_max;
                    }
                }
                for (int k0 = 0; k0 <= q0 && elastic; k0 += f.tile) {  // pass 2: o = sum_j max(0, p - c) v_j
                    if (!f.sees(q0, k0)) continue;
                    std::vector<float> a(size_t(rows) * f.tile);
                    bool any_weight = false;
                    for (int r = 0; r < rows; r++) {
                        const float cut = flash::cut_of_row(f.tau(h), q0 + r);
                        for (int c = 0; c < f.tile; c++) {
                            const float prob =
                                flash::probability(f.score(vectors, h, q0 + r, k0 + c), row_max[r], row_sum[r]);
                            a[size_t(r) * f.tile + c] = flash::cut_weight(prob, cut);
                            any_weight |= a[size_t(r) * f.tile + c] > 0.0f;
                        }
                    }
                    result.tiles++;
                    if (!any_weight) {
                        result.skipped++;
                        continue;
                    }
                    for (int r = 0; r < rows; r++)
                        for (int c = 0; c < f.tile && k0 + c < p.T; c++)
                            head::add_scaled(&o[size_t(r) * hs], a[size_t(r) * f.tile + c],
                                             &vectors.v[size_t(k0 + c) * hs], hs);
                }
                for (int r = 0; r < rows; r++) {
                    const int t = q0 + r;
                    for (int d = 0; d < hs; d++)
                        result.out[L.out(b, t, h) + d] =
                            elastic ? o[size_t(r) * hs + d] : o[size_t(r) * hs + d] / row_sum[r];
                    result.row_state[2 * ((size_t(b) * p.NH + h) * p.T + t)] = row_max[r];
                    result.row_state[2 * ((size_t(b) * p.NH + h) * p.T + t) + 1] = row_sum[r];
                }
            }
        }
    }
    return result;
}

// Accumulates (+=) into g the gradients of the unrotated inputs, as the flash backward kernels do.
void flash_backward_cpu(const FlashCpu& f, const FlashForward& forward, const std::vector<float>& dout,
                        Gradients<float>& g) {
    const Problem& p = f.p;
    const AttentionLayout L{p.B, p.T, p.C(), p.NH, p.hs};
    const bool elastic = p.cfg.kind == AttentionKind::elastic;
    const int hs = p.hs, W = p.cfg.bias_window, query_tiles = f.query_tiles();
    // per (b, query tile) partial sums, [B, query tiles, NH, W] and [B, query tiles, NH]
    std::vector<float> bias_partials(size_t(p.B) * query_tiles * p.NH * W, 0.0f);
    std::vector<float> dtau_partials(size_t(p.B) * query_tiles * p.NH, 0.0f);
    for (int b = 0; b < p.B; b++) {
        for (int h = 0; h < p.NH; h++) {
            const FlashHead vectors = flash_head(p, f.qkv, b, h);
            const size_t row0 = (size_t(b) * p.NH + h) * p.T;
            auto prob = [&](int t, int j) {
                return flash::probability(f.score(vectors, h, t, j), forward.row_state[2 * (row0 + t)],
                                          forward.row_state[2 * (row0 + t) + 1]);
            };
            auto dO = [&](int t) { return &dout[L.out(b, t, h)]; };
            auto grad = [&](int t, int j) { return j < p.T ? dot_float(dO(t), &vectors.v[size_t(j) * hs], hs) : 0.0f; };
            std::vector<float> delta(p.T), dq(size_t(p.T) * hs, 0.0f), dk(dq.size(), 0.0f), dv(dq.size(), 0.0f);

            for (int qt = 0; qt < query_tiles; qt++) {  // the query pass
                const int q0 = qt * f.tile, rows = std::min(f.tile, p.T - q0);
                const size_t part = (size_t(b) * query_tiles + qt) * p.NH + h;
                for (int t = q0; t < q0 + rows; t++) {
                    const float cut = flash::cut_of_row(f.tau(h), t);
                    if (!elastic) {
                        delta[t] = dot_float(dO(t), &forward.out[L.out(b, t, h)], hs);
                        continue;
                    }
                    float weighted = 0.0f, passed = 0.0f;
                    for (int j = 0; j < q0 + f.tile; j++) {
                        if (!f.sees(q0, j / f.tile * f.tile)) continue;
                        const float pr = prob(t, j), gp = flash::passed_gradient(pr, cut, grad(t, j));
                        weighted += pr * gp;
                        passed += gp;
                    }
                    delta[t] = weighted;
                    dtau_partials[part] += -passed / float(t + 1);
                }
                for (int k0 = 0; k0 <= q0; k0 += f.tile) {
                    if (!f.sees(q0, k0)) continue;
                    for (int t = q0; t < q0 + rows; t++) {
                        const float cut = flash::cut_of_row(f.tau(h), t);
                        for (int j = k0; j < k0 + f.tile && j <= t; j++) {
                            const float ds = flash::score_gradient(prob(t, j), cut, grad(t, j), delta[t]);
                            head::add_scaled(&dq[size_t(t) * hs], ds, &vectors.k[size_t(j) * hs], hs);
                            if (t - j < W) bias_partials[part * W + t - j] += ds;
                        }
                    }
                }
            }
            for (int k0 = 0; k0 < p.T; k0 += f.tile) {  // the key pass
                for (int t = k0; t < p.T; t++) {
                    if (!f.sees(t / f.tile * f.tile, k0)) continue;
                    const float cut = flash::cut_of_row(f.tau(h), t);
                    for (int j = k0; j < std::min(k0 + f.tile, t + 1); j++) {
                        const float pr = prob(t, j);
                        head::add_scaled(&dv[size_t(j) * hs], elastic ? flash::cut_weight(pr, cut) : pr, dO(t), hs);
                        head::add_scaled(&dk[size_t(j) * hs], flash::score_gradient(pr, cut, grad(t, j), delta[t]),
                                         &vectors.q[size_t(t) * hs], hs);
                    }
                }
            }
            for (int t = 0; t < p.T; t++) {  // dq, dk through the scale and R_t^T; dv as it is
                for (int m = 0; m < hs / 2; m++) {
                    const double angle = t * std::pow(double(p.cfg.rope_base), -2.0 * m / hs);
                    const bool rope = p.cfg.position == PositionKind::rope;
                    const float cosine = rope ? float(std::cos(angle)) : 1.0f,
                                sine = rope ? float(std::sin(angle)) : 0.0f;
                    for (auto [rotated, to] : {std::pair(&dq, L.q(b, t, h)), std::pair(&dk, L.k(b, t, h))}) {
                        const float d0 = f.scale * (*rotated)[size_t(t) * hs + 2 * m];
                        const float d1 = f.scale * (*rotated)[size_t(t) * hs + 2 * m + 1];
                        g.dqkv[to + 2 * m] += flash::rotated_first(d0, d1, cosine, -sine);
                        g.dqkv[to + 2 * m + 1] += flash::rotated_second(d0, d1, cosine, -sine);
                    }
                }
                head::add_scaled(&g.dqkv[L.v(b, t, h)], 1.0f, &dv[size_t(t) * hs], hs);
            }
        }
    }
    for (int h = 0; h < p.NH; h++) {  // the partials over (b, query tile), in order
        for (int r = 0; r < W; r++) {
            float sum = 0.0f;
            for (int part = 0; part < p.B * query_tiles; part++)
                sum += bias_partials[(size_t(part) * p.NH + h) * W + r];
            g.dbias[size_t(h) * W + r] += sum;
        }
        if (!elastic) continue;
        float dtau = 0.0f;
        for (int part = 0; part < p.B * query_tiles; part++) dtau += dtau_partials[size_t(part) * p.NH + h];
        g.dtheta[h] += theta_gradient(f.theta[h], dtau);
    }
}

// max |x - reference| / max |reference|, the GPU harness's measure
double relative_error(const std::vector<float>& x, const std::vector<double>& reference) {
    double largest = 0;
    for (double r : reference) largest = std::max(largest, std::fabs(r));
    return max_abs_diff(std::vector<double>(x.begin(), x.end()), reference) / largest;
}

// The problem with every input rounded to float, so the double reference and the float scheme see the
// same numbers.
Problem float_problem(Problem p) {
    for (auto* tensor : {&p.qkv, &p.theta, &p.bias})
        for (double& x : *tensor) x = float(x);
    return p;
}

// Elastic's smallest |p_tj - c_t| / c_t over every row: the float scheme's p is within ~1e-6 of the
// reference's relative to p, so a margin above 1e-5 means both sides cut the same keys.
double relative_cut_margin(const Problem& p, const Saved<double>& s) {
    double margin = std::numeric_limits<double>::infinity();
    for (int bh = 0; bh < p.B * p.NH; bh++) {
        for (int t = 0; t < p.T; t++) {
            const double cut = std::fabs(p.theta[bh % p.NH] + 1) / (t + 1);
            for (int j = 0; j <= t; j++)
                margin = std::min(margin, std::fabs(s.probs[(size_t(bh) * p.T + t) * p.T + j] - cut) / cut);
        }
    }
    return margin;
}

}  // namespace

TEST_CASE("attention: the tiled flash scheme agrees with the reference, forward and backward") {
    // Tiles of 32 and 64 (what the kernels use), T on and off tile multiples (1 key; a partial first
    // tile; exactly one tile; several with a partial last), bias windows shorter and longer than a tile;
    // window and block attention with windows and blocks shorter than a tile, longer, and not dividing
    // it, with and without global tokens (more than a tile of them too), so that whole key tiles are
    // skipped as no row of a query tile sees them, and partly seen tiles are not.
    // Tolerance 2e-5 of each tensor's largest element: float rounds to 6e-8 and the longest sums here
    // are 32-term dot products and ~130-term row sums, ~1e-6 in the worst element; a wrong merge,
    // a lost tile or a wrong partial is O(1e-2) or more.
    const AttentionConfig kinds[] = {
        attention_config(AttentionKind::softmax),
        attention_config(AttentionKind::elastic),
        attention_config(AttentionKind::window, 7),
        attention_config(AttentionKind::window, 45, PositionKind::learned, 0, 2),
        attention_config(AttentionKind::block, 24, PositionKind::learned, 0, 1),
        attention_config(AttentionKind::block, 64, PositionKind::learned, 0, 40)};
    int skipped = 0, unseen = 0;
    for (const AttentionConfig& kind_config : kinds) {
        const AttentionKind kind = kind_config.kind;
        for (PositionKind position : {PositionKind::learned, PositionKind::rope}) {
            for (int W : {0, 5, 80}) {
                for (int T : {1, 37, 64, 100, 130}) {
                    // a mask flip is a jump, not a rounding error: the data come from the first seed (of
                    // ten) whose rows keep every p clear of the cut
                    AttentionConfig cfg = kind_config;
                    cfg.position = position;
                    cfg.bias_window = W;
                    Problem p;
                    Saved<double> s;
                    double margin = 0;
                    for (uint64_t seed = 31; seed < 41 && margin <= 1e-5; seed++) {
                        p = float_problem(make_problem(cfg, seed, T, 2, 32));
                        s = run_forward<double>(p);
                        margin = kind == AttentionKind::elastic ? relative_cut_margin(p, s) : 1.0;
                    }
                    std::vector<double> dout = random_vector(s.out.size(), 32);
                    for (double& x : dout) x = float(x);
                    Gradients<double> start{random_vector(p.qkv.size(), 33), random_vector(p.theta.size(), 34),
                                            random_vector(p.bias.size(), 35)};
                    for (auto* tensor : {&start.dqkv, &start.dtheta, &start.dbias})
                        for (double& x : *tensor) x = float(x);
                    Gradients<double> reference = run_backward(p, s, dout);
                    for (size_t e = 0; e < start.dqkv.size(); e++) reference.dqkv[e] += start.dqkv[e];
                    for (size_t e = 0; e < start.dtheta.size(); e++) reference.dtheta[e] += start.dtheta[e];
                    for (size_t e = 0; e < start.dbias.size(); e++) reference.dbias[e] += start.dbias[e];
                    for (int tile : {32, 64}) {
                        INFO(describe(p.cfg) << " T=" << T << " tile=" << tile << " cut margin " << margin);
                        REQUIRE(margin > 1e-5);
                        const FlashCpu f(p, tile);
                        const FlashForward forward = flash_forward_cpu(f);
                        skipped += forward.skipped;
                        unseen += forward.unseen;
                        CHECK(relative_error(forward.out, s.out) < 2e-5);
                        Gradients<float> g{convert<float>(start.dqkv), convert<float>(start.dtheta),
                                           convert<float>(start.dbias)};
                        flash_backward_cpu(f, forward, convert<float>(dout), g);
                        CHECK(relative_error(g.dqkv, reference.dqkv) < 2e-5);
                        if (kind == AttentionKind::elastic) CHECK(relative_error(g.dtheta, reference.dtheta) < 2e-5);
                        if (W > 0) CHECK(relative_error(g.dbias, reference.dbias) < 2e-5);
                    }
                }
            }
        }
    }
    CHECK(skipped > 0);  // the elastic tile skip was exercised (and the outputs above still match)
    CHECK(unseen > 0);   // and so was the skip of key tiles no row sees
}

TEST_CASE("attention: the tiled elastic scheme outputs exactly zero for uniform rows with tau = 1") {
    // p = exp(0) / i = 1 / i exactly (a sum of ones is exact) and the cut 1 / i is the same float, so
    // every weight is exactly 0 and every key tile is skipped.
    for (PositionKind position : {PositionKind::learned, PositionKind::rope}) {
        Problem p = make_problem(attention_config(AttentionKind::elastic, 0, position), 8, 100, 2, 32);
        p.theta.assign(p.NH, 0.0);
        const AttentionLayout L{p.B, p.T, p.C(), p.NH, p.hs};
        for (int b = 0; b < p.B; b++)
            for (int t = 0; t < p.T; t++) std::fill_n(&p.qkv[L.q(b, t, 0)], p.C(), 0.0);
        const FlashForward forward = flash_forward_cpu(FlashCpu(p, 32));
        for (float o : forward.out) CHECK(o == 0.0f);
        CHECK(forward.skipped == forward.tiles);
    }
}
