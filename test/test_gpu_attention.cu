// test_gpu_attention.cu: the CUDA attention kernels (attention/*.cuh) against the CPU reference
// (attention/attention.h): the naive kernels, every kind x position x bias at a small odd shape and at
// T = 128; the flash kernels, softmax and elastic x position x bias at T from 1 to 1024, and window and
// block attention.
#include "../attention/attention.cuh"
#include "../attention/attention.h"
#include "../attention/flash_attention.cuh"
#include "gpu_check.h"

namespace gpu_check {

namespace {

// Gradients in double on the host: the values a backward starts from (it accumulates), or the expected ones.
struct HostGradients {
    Vector dqkv, dtheta, dbias;
};

// Runs backward(dqkv, dtheta, dbias) on device copies of `start` twice; the first result must match
// `expected` and the second the first, bit for bit. dtheta is checked (and passed) for elastic only,
// dbias with a bias window only; the others get nullptr.
template <typename Backward>
void check_backward(const std::string& kernel, const std::string& shape, const HostGradients& start,
                    const HostGradients& expected, bool elastic, bool bias, Backward backward) {
    struct DeviceGradients {
        DeviceBuffer<floatX> dqkv, dtheta, dbias;
    };
    auto run = [&] {
        DeviceGradients g{to_device<floatX>(start.dqkv), to_device<floatX>(start.dtheta),
                          to_device<floatX>(start.dbias)};
        backward(g.dqkv.data(), elastic ? g.dtheta.data() : nullptr, bias ? g.dbias.data() : nullptr);
        return g;
    };
    const DeviceGradients first = run(), second = run();
    expect_close(kernel + " dqkv", shape, to_host(first.dqkv), expected.dqkv, TOLERANCE);
    expect_identical(kernel + " dqkv", shape, first.dqkv, second.dqkv);
    if (elastic) {
        expect_close(kernel + " dtheta", shape, to_host(first.dtheta), expected.dtheta, TOLERANCE);
        expect_identical(kernel + " dtheta", shape, first.dtheta, second.dtheta);
    }
    if (bias) {
        expect_close(kernel + " dbias", shape, to_host(first.dbias), expected.dbias, TOLERANCE);
        expect_identical(kernel + " dbias", shape, first.dbias, second.dbias);
    }
}

// Attention: the forward's qkv_rot against the CPU's; then every later step against the CPU reference
// run on the GPU's own intermediates, so that the bf16 rounding of qkv_rot cannot flip a topk
// selection or an elastic mask between the two sides (a flip is a jump, not a rounding error):
//  - out and probs against the CPU forward on the GPU's qkv_rot with learned positions (the rotation is
//    then a plain copy); with learned positions that is the same as the CPU forward on qkv itself;
//  - dqkv, dtheta and dbias against the CPU backward fed the GPU's probs and qkv_rot (same p, so the
//    same mask m = p > c but for p within one float rounding of c).
// What is left differs only by float-vs-double arithmetic on identical inputs; a topk flip would then
// need two scores within ~1e-6 of each other, which these random inputs do not produce. probs is float
// in both builds, so it is held to the fp32 tolerance.
// Inputs as test_attention.cpp: q and k scaled by 1.5, theta giving tau = 0.65 and 0.8 on both sides of
// the kink theta = -1, bias ~ N(0, 0.5).
void test_attention(const focus::AttentionConfig& cfg, int B, int T, int NH, int hs) {
    using focus::AttentionKind;
    const std::string shape = format("%s k=%d g=%d %s W=%d B=%d T=%d NH=%d hs=%d", focus::to_string(cfg.kind), cfg.k,
                                     cfg.global_tokens, focus::to_string(cfg.position), cfg.bias_window, B, T, NH, hs);
    const int C = NH * hs, W = cfg.bias_window;
    const bool elastic = cfg.kind == AttentionKind::elastic;
    Rng rng(8000 + 97 * int(cfg.kind) + 13 * int(cfg.position) + W + T + NH + hs);
    Vector qkv(size_t(B) * T * 3 * C);
    for (size_t e = 0; e < qkv.size(); e++)
        qkv[e] = round_to_floatX(rng.normal() * (int(e % (3 * C)) < 2 * C ? 1.5 : 1.0));
    Vector theta(NH);
    for (int h = 0; h < NH; h++) theta[h] = round_to_floatX(h % 2 == 0 ? -0.35 : -1.8);
    const Vector bias = random_vector(rng, size_t(NH) * std::max(W, 1), 0.5);  // W = 0: one unused column
    const double* theta_or_null = elastic ? theta.data() : nullptr;
    const double* bias_or_null = W > 0 ? bias.data() : nullptr;
    auto d_qkv = to_device<floatX>(qkv), d_theta = to_device<floatX>(theta), d_bias = to_device<floatX>(bias);
    const floatX* d_theta_or_null = elastic ? d_theta.data() : nullptr;
    const floatX* d_bias_or_null = W > 0 ? d_bias.data() : nullptr;

    const size_t out_count = size_t(B) * T * C, probs_count = size_t(B) * NH * T * T;
    Vector out(out_count), probs(probs_count), qkv_rot(qkv.size());
    focus::attention_forward(cfg, out.data(), probs.data(), qkv_rot.data(), qkv.data(), theta_or_null, bias_or_null, B,
                             T, C, NH);
    auto d_out = poisoned<floatX>(out_count), d_qkv_rot = poisoned<floatX>(qkv.size());
    auto d_probs = poisoned<float>(probs_count);
    focus::gpu::attention_forward(cfg, d_out.data(), d_probs.data(), d_qkv_rot.data(), d_qkv.data(), d_theta_or_null,
                                  d_bias_or_null, B, T, C, NH, stream);
    const Vector gpu_qkv_rot = to_host(d_qkv_rot), gpu_probs = to_host(d_probs);
    expect_close("attention_forward qkv_rot", shape, gpu_qkv_rot, qkv_rot, TOLERANCE);

    focus::AttentionConfig unrotated = cfg;
    unrotated.position = focus::PositionKind::learned;
    Vector qkv_copy(qkv.size());
    focus::attention_forward(unrotated, out.data(), probs.data(), qkv_copy.data(), gpu_qkv_rot.data(), theta_or_null,
                             bias_or_null, B, T, C, NH);
    expect_close("attention_forward out", shape, to_host(d_out), out, TOLERANCE);
    expect_close("attention_forward probs", shape, gpu_probs, probs, FP32_TOLERANCE);

    const Vector dout = random_vector(rng, out_count);
    const HostGradients start{random_vector(rng, qkv.size()), random_vector(rng, NH),
                              random_vector(rng, bias.size())};
    HostGradients expected = start;
    focus::attention_backward(cfg, expected.dqkv.data(), elastic ? expected.dtheta.data() : nullptr,
                              W > 0 ? expected.dbias.data() : nullptr, dout.data(), gpu_probs.data(),
                              gpu_qkv_rot.data(), theta_or_null, bias_or_null, B, T, C, NH);
    auto d_dout = to_device<floatX>(dout);
    check_backward("attention_backward", shape, start, expected, elastic, W > 0,
                   [&](floatX* dqkv, floatX* dtheta, floatX* dbias) {
                       focus::gpu::attention_backward(cfg, dqkv, dtheta, dbias, d_dout.data(), d_probs.data(),
                                                      d_qkv_rot.data(), d_theta_or_null, d_bias_or_null, B, T, C, NH,
                                                      stream);
                   });
}

// Flash attention against the CPU reference. The reference runs on what the kernels' tile products see,
// so that only their own arithmetic is measured:
//  - RoPE: the kernels rotate q and k in float as they load a tile (flash_attention.h's rotated_first
//    and rotated_second, the same bits on the host) and round to floatX; the reference gets that
//    rotated, rounded qkv with learned positions, and its dq, dk (gradients of the rotated vectors) go
//    through R_t^T (rope.h, double) before they are compared with the kernels' unrotated gradients.
//  - elastic: the mask m = 1[p > c] jumps where p crosses c, so a p within rounding of c could be cut
//    on one side and kept on the other (a jump of p g in dS, not a rounding error). The GPU's p differs
//    from the reference's by the fp32 sums of the scores, ~1e-6 relative; the test redraws the q of
//    every row that has a p within 1e-4 (relative) of its cut until none has.
// Gradients start from random values (the += is checked); out and row_state start poisoned; the
// backward runs twice and must give the same bits. Inputs as test_attention: q and k scaled by 1.5,
// tau = 0.65 and 0.8 on both sides of the kink, bias ~ N(0, 0.5).
void test_flash_attention(const focus::AttentionConfig& cfg, int B, int T, int NH, int hs) {
    const std::string shape = format("%s k=%d g=%d %s W=%d B=%d T=%d NH=%d hs=%d", focus::to_string(cfg.kind), cfg.k,
                                     cfg.global_tokens, focus::to_string(cfg.position), cfg.bias_window, B, T, NH, hs);
    const int C = NH * hs, W = cfg.bias_window;
    const bool elastic = cfg.kind == focus::AttentionKind::elastic, rope = cfg.position == focus::PositionKind::rope;
    const focus::AttentionLayout L{B, T, C, NH, hs};
    Rng rng(9000 + 97 * int(cfg.kind) + 13 * int(cfg.position) + W + T + hs);
    auto random_q_or_k = [&] { return round_to_floatX(rng.normal() * 1.5); };
    Vector qkv(size_t(B) * T * 3 * C);
    for (size_t e = 0; e < qkv.size(); e++)
        qkv[e] = int(e % (3 * C)) < 2 * C ? random_q_or_k() : round_to_floatX(rng.normal());
    Vector theta(NH);
    for (int h = 0; h < NH; h++) theta[h] = round_to_floatX(h % 2 == 0 ? -0.35 : -1.8);
    const Vector bias = random_vector(rng, size_t(NH) * std::max(W, 1), 0.5);  // W = 0: one unused column
    const double* theta_or_null = elastic ? theta.data() : nullptr;
    const double* bias_or_null = W > 0 ? bias.data() : nullptr;
    focus::AttentionConfig unrotated = cfg;
    unrotated.position = focus::PositionKind::learned;

    // qkv as the kernels' tiles hold it
    auto tile_qkv = [&] {
        Vector rotated = qkv;
        for (int bt = 0; bt < B * T && rope; bt++) {
            const int b = bt / T, t = bt % T;
            for (int h = 0; h < NH; h++) {
                for (size_t at : {L.q(b, t, h), L.k(b, t, h)}) {
                    for (int m = 0; m < hs / 2; m++) {
                        const double angle = t * std::pow(double(cfg.rope_base), -2.0 * m / hs);
                        const float cosine = float(std::cos(angle)), sine = float(std::sin(angle));
                        const float x0 = float(qkv[at + 2 * m]), x1 = float(qkv[at + 2 * m + 1]);
                        rotated[at + 2 * m] = round_to_floatX(focus::flash::rotated_first(x0, x1, cosine, sine));
                        rotated[at + 2 * m + 1] = round_to_floatX(focus::flash::rotated_second(x0, x1, cosine, sine));
                    }
                }
            }
        }
        return rotated;
    };
    const size_t out_count = size_t(B) * T * C;
    Vector out(out_count), probs(size_t(B) * NH * T * T), qkv_rot, copy(qkv.size());
    for (int round = 0;; round++) {
        qkv_rot = tile_qkv();
        focus::attention_forward(unrotated, out.data(), probs.data(), copy.data(), qkv_rot.data(), theta_or_null,
                                 bias_or_null, B, T, C, NH);
        if (!elastic) break;
        int redrawn = 0;
        for (int bh = 0; bh < B * NH; bh++) {
            for (int t = 0; t < T; t++) {
                const double cut = std::fabs(theta[bh % NH] + 1) / (t + 1);
                const double* p = &probs[(size_t(bh) * T + t) * T];
                if (!std::any_of(p, p + t + 1, [cut](double x) { return std::fabs(x - cut) <= 1e-4 * cut; })) continue;
                for (int c = 0; c < hs; c++) qkv[L.q(bh / NH, t, bh % NH) + c] = random_q_or_k();
                redrawn++;
            }
        }
        if (redrawn == 0) break;
        if (round == 20)
            return record("flash_attention inputs", shape, false, INFINITY, 0,
                          format("%d rows still have a p within 1e-4 of the cut after 20 redraws", redrawn));
    }

    auto d_qkv = to_device<floatX>(qkv), d_theta = to_device<floatX>(theta), d_bias = to_device<floatX>(bias);
    const floatX* d_theta_or_null = elastic ? d_theta.data() : nullptr;
    const floatX* d_bias_or_null = W > 0 ? d_bias.data() : nullptr;
    const size_t state_count = focus::gpu::flash_attention_row_floats(B, T, NH);
    auto d_out = poisoned<floatX>(out_count), d_out_again = poisoned<floatX>(out_count);
    auto d_state = poisoned<float>(state_count), d_state_again = poisoned<float>(state_count);
    focus::gpu::flash_attention_forward(cfg, d_out.data(), d_state.data(), d_qkv.data(), d_theta_or_null,
                                        d_bias_or_null, B, T, C, NH, stream);
    focus::gpu::flash_attention_forward(cfg, d_out_again.data(), d_state_again.data(), d_qkv.data(), d_theta_or_null,
                                        d_bias_or_null, B, T, C, NH, stream);
    expect_close("flash_attention_forward out", shape, to_host(d_out), out, TOLERANCE);
    expect_identical("flash_attention_forward out", shape, d_out, d_out_again);
    expect_identical("flash_attention_forward row_state", shape, d_state, d_state_again);

    // the reference backward: gradients of the rotated q, k (and of v) from zero, then through R_t^T
    const Vector dout = random_vector(rng, out_count);
    const HostGradients start{random_vector(rng, qkv.size()), random_vector(rng, NH),
                              random_vector(rng, bias.size())};
    HostGradients expected = start;
    Vector dqkv_rot(qkv.size(), 0.0);
    focus::attention_backward(unrotated, dqkv_rot.data(), elastic ? expected.dtheta.data() : nullptr,
                              W > 0 ? expected.dbias.data() : nullptr, dout.data(), probs.data(), qkv_rot.data(),
                              theta_or_null, bias_or_null, B, T, C, NH);
    const focus::RopeAngles<double> angles(rope ? T : 0, hs, cfg.rope_base);
    for (size_t e = 0; e < expected.dqkv.size(); e++)
        if (!rope || int(e % (3 * C)) >= 2 * C) expected.dqkv[e] += dqkv_rot[e];
    for (int bt = 0; bt < B * T && rope; bt++)
        for (int h = 0; h < NH; h++)
            for (size_t at : {L.q(bt / T, bt % T, h), L.k(bt / T, bt % T, h)})
                focus::rope_backward(&expected.dqkv[at], &dqkv_rot[at], angles, bt % T);

    auto d_dout = to_device<floatX>(dout);
    check_backward("flash_attention_backward", shape, start, expected, elastic, W > 0,
                   [&](floatX* dqkv, floatX* dtheta, floatX* dbias) {
                       focus::gpu::flash_attention_backward(cfg, dqkv, dtheta, dbias, d_dout.data(), d_out.data(),
                                                            d_state.data(), d_qkv.data(), d_theta_or_null,
                                                            d_bias_or_null, B, T, C, NH, stream);
                   });
}

}  // namespace

void attention_tests() {
    // attention: every kind x {learned, rope} x {no bias, bias} at a small shape that is no multiple of
    // any block size (k, g and the block size chosen so that rows see partial windows and blocks), then
    // a longer sequence with a larger head
    using focus::AttentionKind;
    using focus::PositionKind;
    const focus::AttentionConfig attention_kinds[] = {
        focus::attention_config(AttentionKind::softmax),
        focus::attention_config(AttentionKind::elastic),
        focus::attention_config(AttentionKind::topk, 5),
        focus::attention_config(AttentionKind::window, 6, PositionKind::learned, 0, 2),
        focus::attention_config(AttentionKind::block, 8, PositionKind::learned, 0, 3)};
    for (focus::AttentionConfig cfg : attention_kinds) {
        for (PositionKind position : {PositionKind::learned, PositionKind::rope}) {
            for (int bias_window : {0, 4}) {
                cfg.position = position;
                cfg.bias_window = bias_window;
                run("attention", [cfg] { test_attention(cfg, 2, 37, 3, 16); });
            }
        }
    }
    const focus::AttentionConfig long_attention[] = {
        focus::attention_config(AttentionKind::softmax, 0, PositionKind::rope, 8),
        focus::attention_config(AttentionKind::elastic, 0, PositionKind::rope, 8),
        focus::attention_config(AttentionKind::topk, 16, PositionKind::rope, 8),
        focus::attention_config(AttentionKind::window, 32, PositionKind::learned, 8, 4),
        focus::attention_config(AttentionKind::block, 32, PositionKind::rope, 0, 1)};
    for (const focus::AttentionConfig& cfg : long_attention)
        run("attention", [cfg] { test_attention(cfg, 2, 128, 2, 64); });

    // flash attention: softmax and elastic x {learned, rope} x {no bias, a window of 100 (longer than a
    // tile, and than T at the short lengths)}, at lengths on and off the tile sizes (64 for head size
    // 64 in bf16, 32 otherwise); head size 128 on fewer lengths (its CPU reference is the slow part).
    // Up to T = 100 at head size 64 (a few tiles each way) counts as small, for the sanitizers.
    auto flash_size = [](int T, int hs) { return T * hs > 100 * 64 ? Size::large : Size::small; };
    for (AttentionKind kind : {AttentionKind::softmax, AttentionKind::elastic}) {
        for (PositionKind position : {PositionKind::learned, PositionKind::rope}) {
            for (int bias_window : {0, 100}) {
                const focus::AttentionConfig cfg = focus::attention_config(kind, 0, position, bias_window);
                for (int T : {1, 37, 64, 100, 257, 1024})
                    run("flash_attention", [cfg, T] { test_flash_attention(cfg, 2, T, 3, 64); }, flash_size(T, 64));
                for (int T : {1, 37, 100, 257})
                    run("flash_attention", [cfg, T] { test_flash_attention(cfg, 2, T, 3, 128); },
                        flash_size(T, 128));
            }
        }
    }
    // window and block: a window shorter than a tile and one longer with global tokens, blocks that do
    // not divide a tile, with one global token and with more than a tile of them. Key tiles that no row
    // of a query tile sees are skipped: at head size 64 from T = 257 on, at head size 32 (tiles of 32)
    // already at the small lengths.
    const focus::AttentionConfig local_kinds[] = {
        focus::attention_config(AttentionKind::window, 7, PositionKind::rope),
        focus::attention_config(AttentionKind::window, 45, PositionKind::learned, 100, 2),
        focus::attention_config(AttentionKind::block, 24, PositionKind::learned, 0, 1),
        focus::attention_config(AttentionKind::block, 64, PositionKind::rope, 100, 40)};
    for (const focus::AttentionConfig& cfg : local_kinds) {
        for (int T : {37, 100, 257, 1024})
            run("flash_attention", [cfg, T] { test_flash_attention(cfg, 2, T, 3, 64); }, flash_size(T, 64));
        for (int T : {37, 100})
            run("flash_attention", [cfg, T] { test_flash_attention(cfg, 2, T, 3, 32); }, flash_size(T, 32));
    }
}

}  // namespace gpu_check
