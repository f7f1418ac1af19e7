// bench_gpu_layers.cu: times every CUDA layer (layers/*.cuh) at GPT-2 124M's shapes, B=8 T=1024 C=768
// V=50257 (padded to 50304), and prints a table: milliseconds per call, and the rate:
//  - GB/s for the memory-bound kernels, counting the least traffic the kernel needs (every tensor read
//    or written once), so it compares directly with the device's memory bandwidth;
//  - TFLOP/s for the matmuls (2 flops per multiply-add; the backward is two products) and attention
//    (the causal pairs j <= i, for every kind: the dense count, so a sparse kind's rate is effective;
//    the forward is two products over them, q.k and p.v, the backward four; in the naive-vs-flash
//    rows, the backward five, FlashAttention's convention).
// Each kernel runs WARMUP times, then REPEATS times between two CUDA events (gpu_timing.cuh), on random
// inputs.
// encoder_backward includes its host part (grouping the positions by token, and the upload).
// With no CUDA device it prints one "skipped" line and exits 0 (1 with --require-gpu).
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "../attention/attention.cuh"
#include "../attention/flash_attention.cuh"
#include "../layers/adamw.cuh"
#include "../layers/crossentropy.cuh"
#include "../layers/encoder.cuh"
#include "../layers/gelu.cuh"
#include "../layers/layernorm.cuh"
#include "../layers/matmul.cuh"
#include "gpu_timing.cuh"

using namespace focus::gpu;
using focus::format;

namespace {

constexpr int B = 8, T = 1024, C = 768, V = 50257, Vp = 50304, L = 12;
constexpr int N = B * T;
constexpr int WARMUP = 3, REPEATS = 20;
constexpr double BYTES = sizeof(floatX);

cudaStream_t stream;

// x[i] = uniform in [-scale, scale), from a hash of (seed, i): random enough to time kernels on.
__global__ void fill_random_kernel(floatX* x, size_t n, float scale, unsigned seed) {
    const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned h = unsigned(i) * 0x9E3779B1u ^ seed;
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    x[i] = floatX(scale * (2.0f * (h >> 8) * 0x1.0p-24f - 1.0f));
}

DeviceBuffer<floatX> random_buffer(size_t n, float scale = 1.0f) {
    static unsigned seed = 1;
    DeviceBuffer<floatX> buffer(n);
    fill_random_kernel<<<ceil_div(n, 256), 256>>>(buffer.data(), n, scale, seed++);
    CUDA_CHECK_LAUNCH();
    return buffer;
}

template <typename T>
DeviceBuffer<T> zeros(size_t n) {
    DeviceBuffer<T> buffer(n);
    CUDA_CHECK(cudaMemset(buffer.data(), 0, n * sizeof(T)));
    return buffer;
}

// One table row: bytes for a memory-bound kernel, flops for a matmul (the other 0). Returns the ms.
double row(const std::string& kernel, const std::string& shape, double bytes, double flops,
           const std::function<void()>& launch) {
    const double ms = mean_ms_per_call(stream, WARMUP, REPEATS, launch);
    const std::string rate =
        bytes > 0 ? format("%8.0f GB/s", bytes / ms / 1e6) : format("%6.1f TFLOP/s", flops / ms / 1e9);
    std::printf("%-34s %-22s %9.3f %14s\n", kernel.c_str(), shape.c_str(), ms, rate.c_str());
    return ms;
}

void bench() {
    // activations and their gradients, sized for the widest layer
    std::vector<int> tokens_host(N);  // spread over the vocabulary: few repeats
    for (int i = 0; i < N; i++) tokens_host[i] = int((i * 2654435761u) % V);
    DeviceBuffer<int> tokens(tokens_host);
    auto wte = random_buffer(size_t(Vp) * C, 0.02f), wpe = random_buffer(size_t(T) * C, 0.02f);
    auto dwte = zeros<floatX>(wte.size()), dwpe = zeros<floatX>(wpe.size());
    auto a = random_buffer(size_t(N) * 4 * C), b = random_buffer(size_t(N) * 4 * C),
         c = random_buffer(size_t(N) * 4 * C);
    auto d = random_buffer(size_t(N) * 4 * C);
    auto weight = random_buffer(size_t(4) * C * C, 0.02f), bias = random_buffer(4 * C, 0.02f);
    auto dweight = zeros<floatX>(weight.size()), dbias = zeros<floatX>(bias.size());
    auto ln_weight = random_buffer(C), ln_bias = random_buffer(C);
    auto mean = zeros<float>(N), rstd = zeros<float>(N);
    const double NC = double(N) * C;

    std::printf("%-34s %-22s %9s %14s\n", "kernel", "shape", "ms", "rate");
    const std::string rows_by_channels = format("[%d, %d]", N, C), rows_by_hidden = format("[%d, %d]", N, 4 * C);
    row("encoder_forward", rows_by_channels, 3 * NC * BYTES, 0,
        [&] { encoder_forward(a.data(), tokens.data(), wte.data(), wpe.data(), B, T, C, stream); });
    // dout; a dwte row read and written per position (tokens rarely repeat here); dwpe read and written
    row("encoder_backward", rows_by_channels, (3 * NC + 2.0 * T * C) * BYTES, 0,
        [&] { encoder_backward(dwte.data(), dwpe.data(), a.data(), tokens_host.data(), B, T, C, stream); });
    row("layernorm_forward", rows_by_channels, 2 * NC * BYTES, 0, [&] {
        layernorm_forward(b.data(), mean.data(), rstd.data(), a.data(), ln_weight.data(), ln_bias.data(), N, C, stream);
    });
    row("fused_residual_layernorm_forward", rows_by_channels, 4 * NC * BYTES, 0, [&] {
        fused_residual_layernorm_forward(c.data(), b.data(), mean.data(), rstd.data(), a.data(), d.data(),
                                         ln_weight.data(), ln_bias.data(), N, C, stream);
    });
    row("layernorm_backward", rows_by_channels, 4 * NC * BYTES, 0, [&] {
        layernorm_backward(c.data(), dweight.data(), dbias.data(), b.data(), a.data(), ln_weight.data(), mean.data(),
                           rstd.data(), N, C, stream);
    });
    row("gelu_forward", rows_by_hidden, 2 * 4 * NC * BYTES, 0,
        [&] { gelu_forward(b.data(), a.data(), size_t(N) * 4 * C, stream); });
    row("gelu_backward", rows_by_hidden, 4 * 4 * NC * BYTES, 0,
        [&] { gelu_backward(c.data(), a.data(), b.data(), size_t(N) * 4 * C, stream); });

    struct Linear {
        const char* name;
        int in, out;
        bool bias;
    };
    auto logits = random_buffer(size_t(N) * Vp);
    auto losses = zeros<float>(N);
    for (Linear layer : {Linear{"qkv", C, 3 * C, true}, Linear{"attproj", C, C, true}, Linear{"fc", C, 4 * C, true},
                         Linear{"fcproj", 4 * C, C, true}, Linear{"lm head", C, Vp, false}}) {
        const bool lm_head = layer.out == Vp;  // the tied head: weight wte, output the logits, no bias
        floatX* w = lm_head ? wte.data() : weight.data();
        floatX* dw = lm_head ? dwte.data() : dweight.data();
        floatX* out = lm_head ? logits.data() : b.data();
        const floatX* layer_bias = layer.bias ? bias.data() : nullptr;
        floatX* layer_dbias = layer.bias ? dbias.data() : nullptr;
        const std::string shape = format("%d x %d -> %d", N, layer.in, layer.out);
        const double flops = 2.0 * N * layer.in * layer.out;
        if (layer.out == 4 * C)
            row("matmul_gelu_forward fc", shape, 0, flops,
                [&] { matmul_gelu_forward(out, c.data(), a.data(), w, layer_bias, N, layer.in, layer.out, stream); });
        else
            row(format("matmul_forward %s", layer.name), shape, 0, flops,
                [&] { matmul_forward(out, a.data(), w, layer_bias, N, layer.in, layer.out, stream); });
        row(format("matmul_backward %s", layer.name), shape, 0, 2 * flops,
            [&] { matmul_backward(c.data(), dw, layer_dbias, out, a.data(), w, N, layer.in, layer.out, stream); });
    }
    row("softmax_crossentropy (in place)", format("[%d, %d]", N, Vp), 2.0 * N * Vp * BYTES, 0, [&] {
        softmax_crossentropy(losses.data(), logits.data(), logits.data(), tokens.data(), 1.0f / N, N, V, Vp, stream);
    });

    // attention (the teaching kernels, scores materialised) over B x T with NH = 12 heads of 64 channels;
    // the shape column names the variant
    const int NH = 12;
    auto qkv = random_buffer(size_t(N) * 3 * C), qkv_rot = random_buffer(size_t(N) * 3 * C);
    auto dqkv = zeros<floatX>(qkv.size());
    auto probs = zeros<float>(size_t(B) * NH * T * T);
    auto theta = random_buffer(NH, 0.5f), dtheta = zeros<floatX>(NH);
    auto head_bias = random_buffer(size_t(NH) * 128, 0.5f), dhead_bias = zeros<floatX>(head_bias.size());
    const double attention_flops = 2.0 * 2 * B * NH * (C / NH) * (double(T) * (T + 1) / 2);
    using focus::AttentionKind;
    using focus::PositionKind;
    using focus::attention_config;
    struct AttentionVariant {
        const char* shape;
        focus::AttentionConfig cfg;
    };
    for (const AttentionVariant& variant :
         {AttentionVariant{"learned", attention_config(AttentionKind::softmax)},
          AttentionVariant{"rope, bias W=128", attention_config(AttentionKind::elastic, 0, PositionKind::rope, 128)},
          AttentionVariant{"k=64, rope", attention_config(AttentionKind::topk, 64, PositionKind::rope)},
          AttentionVariant{"k=128, g=4", attention_config(AttentionKind::window, 128, PositionKind::learned, 0, 4)},
          AttentionVariant{"k=128", attention_config(AttentionKind::block, 128)}}) {
        const focus::AttentionConfig& cfg = variant.cfg;
        const char* kind = focus::to_string(cfg.kind);
        row(format("attention_forward %s", kind), variant.shape, 0, attention_flops, [&] {
            focus::gpu::attention_forward(cfg, a.data(), probs.data(), qkv_rot.data(), qkv.data(), theta.data(),
                                          head_bias.data(), B, T, C, NH, stream);
        });
        row(format("attention_backward %s", kind), variant.shape, 0, 2 * attention_flops, [&] {
            focus::gpu::attention_backward(cfg, dqkv.data(), dtheta.data(), dhead_bias.data(), b.data(),
                                           probs.data(), qkv_rot.data(), theta.data(), head_bias.data(), B, T, C, NH,
                                           stream);
        });
    }

    // naive (attention.cuh) against flash (flash_attention.cuh) at the same shape, forward and forward +
    // backward: softmax and elastic with learned positions and no bias (their time ratio is printed
    // after), elastic with RoPE and a bias window of 128 (Lazy Attention), and a window of 128 keys with
    // 4 global tokens (the fused kernels skip the key tiles no query of a tile sees). Flops as above for the
    // forward; the backward counted as 2.5x the forward (FlashAttention's convention: five products over
    // the causal pairs), so forward + backward is 3.5x.
    auto row_state = zeros<float>(flash_attention_row_floats(B, T, NH));
    double naive_ms[2][2], flash_ms[2][2];  // [softmax, elastic][forward, forward + backward]
    for (const AttentionVariant& variant :
         {AttentionVariant{"learned", attention_config(AttentionKind::softmax)},
          AttentionVariant{"learned", attention_config(AttentionKind::elastic)},
          AttentionVariant{"rope, bias W=128", attention_config(AttentionKind::elastic, 0, PositionKind::rope, 128)},
          AttentionVariant{"k=128, g=4", attention_config(AttentionKind::window, 128, PositionKind::learned, 0, 4)}}) {
        const focus::AttentionConfig& cfg = variant.cfg;
        const char* kind = focus::to_string(cfg.kind);
        auto naive_forward = [&] {
            focus::gpu::attention_forward(cfg, a.data(), probs.data(), qkv_rot.data(), qkv.data(), theta.data(),
                                          head_bias.data(), B, T, C, NH, stream);
        };
        auto naive_backward = [&] {
            focus::gpu::attention_backward(cfg, dqkv.data(), dtheta.data(), dhead_bias.data(), b.data(), probs.data(),
                                           qkv_rot.data(), theta.data(), head_bias.data(), B, T, C, NH, stream);
        };
        auto flash_forward = [&] {
            flash_attention_forward(cfg, a.data(), row_state.data(), qkv.data(), theta.data(), head_bias.data(), B, T,
                                    C, NH, stream);
        };
        auto flash_backward = [&] {
            flash_attention_backward(cfg, dqkv.data(), dtheta.data(), dhead_bias.data(), b.data(), a.data(),
                                     row_state.data(), qkv.data(), theta.data(), head_bias.data(), B, T, C, NH, stream);
        };
        double ms[4] = {
            row(format("naive forward %s", kind), variant.shape, 0, attention_flops, naive_forward),
            row(format("naive forward+backward %s", kind), variant.shape, 0, 3.5 * attention_flops, [&] {
                naive_forward();
                naive_backward();
            }),
            row(format("flash forward %s", kind), variant.shape, 0, attention_flops, flash_forward),
            row(format("flash forward+backward %s", kind), variant.shape, 0, 3.5 * attention_flops, [&] {
                flash_forward();
                flash_backward();
            })};
        if (cfg.position == PositionKind::rope || cfg.kind == AttentionKind::window) continue;
        const int k = cfg.kind == AttentionKind::elastic;
        naive_ms[k][0] = ms[0], naive_ms[k][1] = ms[1], flash_ms[k][0] = ms[2], flash_ms[k][1] = ms[3];
    }
    std::printf("elastic / softmax time (learned, no bias): naive forward %.2f, forward+backward %.2f; flash forward "
                "%.2f, forward+backward %.2f\n",
                naive_ms[1][0] / naive_ms[0][0], naive_ms[1][1] / naive_ms[0][1], flash_ms[1][0] / flash_ms[0][0],
                flash_ms[1][1] / flash_ms[0][1]);

    // the optimizer over all of GPT-2 124M's parameters (wte padded, wpe, 12 layers, final LayerNorm)
    const size_t params = size_t(Vp) * C + size_t(T) * C + size_t(L) * (12 * C * C + 13 * C) + 2 * C;
    auto master = zeros<float>(params), m = zeros<float>(params), v = zeros<float>(params);
    auto param = random_buffer(params), grad = random_buffer(params, 1e-3f);
    auto norm = zeros<float>(1);
    const focus::AdamWConfig config{6e-4f, 0.9f, 0.95f, 1e-8f, 0.1f};
    const std::string parameters = format("%zu params", params);
    row("adamw_update", parameters, params * (24 + 2 * BYTES), 0, [&] {
        adamw_update(master.data(), param.data(), grad.data(), m.data(), v.data(), params, 1, config, 1.0f, stream);
    });
    row("sum_of_squares", parameters, params * BYTES, 0,
        [&] { sum_of_squares(norm.data(), grad.data(), params, stream); });
}

}  // namespace

int main(int argc, char** argv) {
    const bool require_gpu = argc > 1 && std::strcmp(argv[1], "--require-gpu") == 0;
    int devices = 0;
    const cudaError_t status = cudaGetDeviceCount(&devices);
    if (status != cudaSuccess || devices == 0) {
        std::printf("%s: no CUDA device (%s)\n", require_gpu ? "error" : "GPU benchmark skipped",
                    status != cudaSuccess ? cudaGetErrorString(status) : "the driver reports none");
        return require_gpu ? 1 : 0;
    }
    try {
        cudaDeviceProp device;
        CUDA_CHECK(cudaGetDeviceProperties(&device, 0));
        std::printf("GPU layers at GPT-2 124M shapes (B=%d T=%d C=%d V=%d, padded %d), %s, on %s\n", B, T, C, V, Vp,
                    PRECISION, device.name);
        CUDA_CHECK(cudaStreamCreate(&stream));
        bench();
    } catch (const std::exception& e) {
        std::printf("error: %s\n", e.what());
        return 1;
    }
    return 0;
}
