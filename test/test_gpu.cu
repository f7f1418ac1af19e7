// test_gpu.cu: the GPU test binary's main() and the tests of the CUDA layers (layers/*.cuh) against
// their CPU references (layers/*.h). The harness, its tolerances and their reasons: gpu_check.h.
// The binary also links test_gpu_attention.cu (attention/) and test_gpu_model.cu (a training step).
// With no CUDA device it prints one "GPU tests skipped" line and exits 0 (1 with --require-gpu).
// --small skips the shapes marked large, --no-nccl the NCCL test (both for compute-sanitizer); -v prints
// every comparison.
#include "../layers/adamw.cuh"
#include "../layers/crossentropy.cuh"
#include "../layers/crossentropy.h"
#include "../data/tasks.h"
#include "../layers/encoder.cuh"
#include "../layers/encoder.h"
#include "../layers/gelu.cuh"
#include "../layers/gelu.h"
#include "../layers/layernorm.cuh"
#include "../layers/layernorm.h"
#include "../layers/matmul.cuh"
#include "../layers/matmul.h"
#include "gpu_check.h"

using namespace gpu_check;

namespace {


void test_encoder(int B, int T, int C, int V, bool learned_positions) {
    const std::string shape = format("B=%d T=%d C=%d V=%d%s", B, T, C, V, learned_positions ? "" : " (no wpe)");
    const int N = B * T;
    Rng rng(1000 + N + C + V);
    std::vector<int> tokens(N);
    for (int& token : tokens) token = int(rng.below(V));
    const Vector wte = random_vector(rng, size_t(V) * C), wpe = random_vector(rng, size_t(T) * C);
    Vector out(size_t(N) * C);
    focus::encoder_forward(out.data(), tokens.data(), wte.data(), learned_positions ? wpe.data() : nullptr, B, T, C);
    DeviceBuffer<int> d_tokens(tokens);
    auto d_wte = to_device<floatX>(wte), d_wpe = to_device<floatX>(wpe);
    auto d_out = poisoned<floatX>(out.size());
    focus::gpu::encoder_forward(d_out.data(), d_tokens.data(), d_wte.data(), learned_positions ? d_wpe.data() : nullptr,
                                B, T, C, stream);
    expect_close("encoder_forward out", shape, to_host(d_out), out, TOLERANCE);

    const Vector dout = random_vector(rng, size_t(N) * C);
    const Vector dwte_start = random_vector(rng, wte.size()), dwpe_start = random_vector(rng, wpe.size());
    Vector dwte = dwte_start, dwpe = dwpe_start;
    focus::encoder_backward(dwte.data(), learned_positions ? dwpe.data() : nullptr, dout.data(), tokens.data(), B, T,
                            C);
    auto d_dout = to_device<floatX>(dout);
    auto run_backward = [&](DeviceBuffer<floatX>& d_dwte, DeviceBuffer<floatX>& d_dwpe) {
        focus::gpu::encoder_backward(d_dwte.data(), learned_positions ? d_dwpe.data() : nullptr, d_dout.data(),
                                     tokens.data(), B, T, C, stream);
    };
    auto d_dwte = to_device<floatX>(dwte_start), d_dwpe = to_device<floatX>(dwpe_start);
    run_backward(d_dwte, d_dwpe);
    expect_close("encoder_backward dwte", shape, to_host(d_dwte), dwte, TOLERANCE);
    if (learned_positions) expect_close("encoder_backward dwpe", shape, to_host(d_dwpe), dwpe, TOLERANCE);
    auto d_dwte_again = to_device<floatX>(dwte_start), d_dwpe_again = to_device<floatX>(dwpe_start);
    run_backward(d_dwte_again, d_dwpe_again);
    expect_identical("encoder_backward dwte", shape, d_dwte, d_dwte_again);
}

void test_layernorm(int N, int C) {
    const std::string shape = format("N=%d C=%d", N, C);
    Rng rng(2000 + N + C);
    Vector inp(size_t(N) * C);
    for (int row = 0; row < N; row++) {  // rows with their own mean far from zero, so centring matters
        const double shift = rng.normal(0.0, 2.0);
        for (int c = 0; c < C; c++) inp[size_t(row) * C + c] = round_to_floatX(rng.normal(shift, 1.5));
    }
    const Vector weight = random_vector(rng, C, 0.2, 1.0), bias = random_vector(rng, C, 0.2);
    auto d_inp = to_device<floatX>(inp), d_weight = to_device<floatX>(weight), d_bias = to_device<floatX>(bias);

    Vector out(inp.size()), mean(N), rstd(N);
    focus::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(), N, C);
    auto d_out = poisoned<floatX>(out.size());
    auto d_mean = poisoned<float>(N), d_rstd = poisoned<float>(N);
    focus::gpu::layernorm_forward(d_out.data(), d_mean.data(), d_rstd.data(), d_inp.data(), d_weight.data(),
                                  d_bias.data(), N, C, stream);
    expect_close("layernorm_forward out", shape, to_host(d_out), out, TOLERANCE);
    expect_close("layernorm_forward mean", shape, to_host(d_mean), mean, FP32_TOLERANCE);
    expect_close("layernorm_forward rstd", shape, to_host(d_rstd), rstd, FP32_TOLERANCE);

    // fused: the residual as stored in floatX is what gets normalised
    const Vector inp2 = random_vector(rng, inp.size());
    Vector residual(inp.size());
    for (size_t i = 0; i < inp.size(); i++) residual[i] = round_to_floatX(inp[i] + inp2[i]);
    focus::layernorm_forward(out.data(), mean.data(), rstd.data(), residual.data(), weight.data(), bias.data(), N, C);
    auto d_inp2 = to_device<floatX>(inp2);
    auto d_residual = poisoned<floatX>(residual.size());
    d_out = poisoned<floatX>(out.size());
    d_mean = poisoned<float>(N);
    d_rstd = poisoned<float>(N);
    focus::gpu::fused_residual_layernorm_forward(d_residual.data(), d_out.data(), d_mean.data(), d_rstd.data(),
                                                 d_inp.data(), d_inp2.data(), d_weight.data(), d_bias.data(), N, C,
                                                 stream);
    expect_close("fused_residual_layernorm_forward residual", shape, to_host(d_residual), residual, TOLERANCE);
    expect_close("fused_residual_layernorm_forward out", shape, to_host(d_out), out, TOLERANCE);
    expect_close("fused_residual_layernorm_forward mean", shape, to_host(d_mean), mean, FP32_TOLERANCE);
    expect_close("fused_residual_layernorm_forward rstd", shape, to_host(d_rstd), rstd, FP32_TOLERANCE);

    // backward, with the statistics as the GPU stores them (float) on both sides
    for (int row = 0; row < N; row++) {
        mean[row] = float(mean[row]);
        rstd[row] = float(rstd[row]);
    }
    const Vector dout = random_vector(rng, inp.size());
    const Vector dinp_start = random_vector(rng, inp.size()), dweight_start = random_vector(rng, C),
                 dbias_start = random_vector(rng, C);
    Vector dinp = dinp_start, dweight = dweight_start, dbias = dbias_start;
    focus::layernorm_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), residual.data(), weight.data(),
                              mean.data(), rstd.data(), N, C);
    auto d_dout = to_device<floatX>(dout);
    auto d_stat_mean = to_device<float>(mean), d_stat_rstd = to_device<float>(rstd);
    auto run_backward = [&](DeviceBuffer<floatX>& d_dinp, DeviceBuffer<floatX>& d_dweight,
                            DeviceBuffer<floatX>& d_dbias) {
        focus::gpu::layernorm_backward(d_dinp.data(), d_dweight.data(), d_dbias.data(), d_dout.data(),
                                       d_residual.data(), d_weight.data(), d_stat_mean.data(), d_stat_rstd.data(), N, C,
                                       stream);
    };
    auto d_dinp = to_device<floatX>(dinp_start), d_dweight = to_device<floatX>(dweight_start),
         d_dbias = to_device<floatX>(dbias_start);
    run_backward(d_dinp, d_dweight, d_dbias);
    expect_close("layernorm_backward dinp", shape, to_host(d_dinp), dinp, TOLERANCE);
    expect_close("layernorm_backward dweight", shape, to_host(d_dweight), dweight, TOLERANCE);
    expect_close("layernorm_backward dbias", shape, to_host(d_dbias), dbias, TOLERANCE);
    auto d_dinp_again = to_device<floatX>(dinp_start), d_dweight_again = to_device<floatX>(dweight_start),
         d_dbias_again = to_device<floatX>(dbias_start);
    run_backward(d_dinp_again, d_dweight_again, d_dbias_again);
    expect_identical("layernorm_backward dweight", shape, d_dweight, d_dweight_again);
}

void test_gelu(size_t n) {
    const std::string shape = format("n=%zu", n);
    Rng rng(3000 + n);
    const Vector inp = random_vector(rng, n, 2.0), dout = random_vector(rng, n), dinp_start = random_vector(rng, n);
    Vector out(n), dinp = dinp_start;
    focus::gelu_forward(out.data(), inp.data(), n);
    focus::gelu_backward(dinp.data(), inp.data(), dout.data(), n);
    auto d_inp = to_device<floatX>(inp), d_dout = to_device<floatX>(dout), d_dinp = to_device<floatX>(dinp_start);
    auto d_out = poisoned<floatX>(n);
    focus::gpu::gelu_forward(d_out.data(), d_inp.data(), n, stream);
    focus::gpu::gelu_backward(d_dinp.data(), d_inp.data(), d_dout.data(), n, stream);
    expect_close("gelu_forward out", shape, to_host(d_out), out, TOLERANCE);
    expect_close("gelu_backward dinp", shape, to_host(d_dinp), dinp, TOLERANCE);
}

void test_matmul(int N, int C, int OC, bool with_bias) {
    const std::string shape = format("N=%d C=%d OC=%d%s", N, C, OC, with_bias ? "" : " (no bias)");
    Rng rng(4000 + N + C + OC);
    const Vector inp = random_vector(rng, size_t(N) * C), weight = random_vector(rng, size_t(OC) * C, 1 / std::sqrt(C)),
                 bias = random_vector(rng, OC, 0.5);
    auto d_inp = to_device<floatX>(inp), d_weight = to_device<floatX>(weight), d_bias = to_device<floatX>(bias);
    const floatX* d_bias_or_null = with_bias ? d_bias.data() : nullptr;

    Vector out(size_t(N) * OC);
    focus::matmul_forward(out.data(), inp.data(), weight.data(), with_bias ? bias.data() : nullptr, N, C, OC);
    auto d_out = poisoned<floatX>(out.size());
    focus::gpu::matmul_forward(d_out.data(), d_inp.data(), d_weight.data(), d_bias_or_null, N, C, OC, stream);
    expect_close("matmul_forward out", shape, to_host(d_out), out, TOLERANCE);

    Vector out_gelu(out.size());
    focus::gelu_forward(out_gelu.data(), out.data(), out.size());
    auto d_pre_gelu = poisoned<floatX>(out.size());
    d_out = poisoned<floatX>(out.size());
    focus::gpu::matmul_gelu_forward(d_out.data(), d_pre_gelu.data(), d_inp.data(), d_weight.data(), d_bias_or_null, N,
                                    C, OC, stream);
    expect_close("matmul_gelu_forward pre_gelu", shape, to_host(d_pre_gelu), out, TOLERANCE);
    expect_close("matmul_gelu_forward out", shape, to_host(d_out), out_gelu, GELU_EPILOGUE_TOLERANCE);

    const Vector dout = random_vector(rng, out.size());
    Vector dinp = random_vector(rng, inp.size()), dweight = random_vector(rng, weight.size()),
           dbias = random_vector(rng, OC);
    auto d_dout = to_device<floatX>(dout), d_dinp = to_device<floatX>(dinp), d_dweight = to_device<floatX>(dweight),
         d_dbias = to_device<floatX>(dbias);
    focus::matmul_backward(dinp.data(), dweight.data(), with_bias ? dbias.data() : nullptr, dout.data(), inp.data(),
                           weight.data(), N, C, OC);
    focus::gpu::matmul_backward(d_dinp.data(), d_dweight.data(), with_bias ? d_dbias.data() : nullptr, d_dout.data(),
                                d_inp.data(), d_weight.data(), N, C, OC, stream);
    expect_close("matmul_backward dinp", shape, to_host(d_dinp), dinp, TOLERANCE);
    expect_close("matmul_backward dweight", shape, to_host(d_dweight), dweight, TOLERANCE);
    expect_close("matmul_backward dbias", shape, to_host(d_dbias), dbias, TOLERANCE);  // untouched without bias
}

void test_crossentropy(int N, int V, int Vp) {
    const std::string shape = format("N=%d V=%d Vp=%d", N, V, Vp);
    Rng rng(5000 + N + V);
    const Vector logits = random_vector(rng, size_t(N) * Vp, 2.0);  // padding columns hold values too: ignored
    std::vector<int> targets(N);
    int counted = 0;
    for (int i = 0; i < N; i++) {
        targets[i] = i % 4 == 3 ? -1 : int(rng.below(V));  // every fourth row has no target
        counted += targets[i] != -1;
    }
    const double dloss = 1.0 / std::max(counted, 1);
    Vector losses(N), dlogits(logits.size());
    focus::softmax_crossentropy(losses.data(), dlogits.data(), logits.data(), targets.data(), dloss, N, V, Vp);
    DeviceBuffer<int> d_targets(targets);

    // separate dlogits buffer: the logits must stay as they were
    auto d_logits = to_device<floatX>(logits);
    auto d_dlogits = poisoned<floatX>(logits.size());
    auto d_losses = poisoned<float>(N);
    focus::gpu::softmax_crossentropy(d_losses.data(), d_dlogits.data(), d_logits.data(), d_targets.data(), float(dloss),
                                     N, V, Vp, stream);
    expect_close("softmax_crossentropy losses", shape, to_host(d_losses), losses, FP32_TOLERANCE);
    expect_close("softmax_crossentropy dlogits", shape, to_host(d_dlogits), dlogits, TOLERANCE);
    expect_close("softmax_crossentropy logits unchanged", shape, to_host(d_logits), logits, 0.0);

    // in place, as the trainer calls it
    d_losses = poisoned<float>(N);
    focus::gpu::softmax_crossentropy(d_losses.data(), d_logits.data(), d_logits.data(), d_targets.data(), float(dloss),
                                     N, V, Vp, stream);
    expect_close("softmax_crossentropy in place losses", shape, to_host(d_losses), losses, FP32_TOLERANCE);
    expect_close("softmax_crossentropy in place dlogits", shape, to_host(d_logits), dlogits, TOLERANCE);

    // losses only
    d_logits = to_device<floatX>(logits);
    d_losses = poisoned<float>(N);
    focus::gpu::softmax_crossentropy(d_losses.data(), nullptr, d_logits.data(), d_targets.data(), float(dloss), N, V,
                                     Vp, stream);
    expect_close("softmax_crossentropy losses only", shape, to_host(d_losses), losses, FP32_TOLERANCE);
}

void test_crossentropy_bad_target() {
    const int V = 10, Vp = 16;
    Rng rng(5999);
    auto d_logits = to_device<floatX>(random_vector(rng, Vp));
    DeviceBuffer<int> d_target(std::vector<int>{V});
    auto d_dlogits = to_device<floatX>(Vector(Vp, 0.0));
    auto d_loss = to_device<float>(Vector(1, 0.0));
    focus::gpu::softmax_crossentropy(d_loss.data(), d_dlogits.data(), d_logits.data(), d_target.data(), 1.0f, 1, V, Vp,
                                     stream);
    bool all_nan = std::isnan(to_host(d_loss)[0]);
    for (double g : to_host(d_dlogits)) all_nan = all_nan && std::isnan(g);
    record("softmax_crossentropy target outside [0, V) gives NaN", format("V=%d Vp=%d", V, Vp), all_nan,
           all_nan ? 0 : INFINITY, 0, all_nan ? "NaN loss and gradient row" : "a finite loss or gradient");
}

// argmax_rows against data/tasks.h's accuracy (the CPU's argmax, ties to the lowest id): taken as the targets,
// the GPU's predictions must all be right. Every row holds a tie for its maximum (two copies of one value),
// and the last row is all equal, so the tie rule is checked, not only the maximum.
void test_argmax(int N, int V, int Vp) {
    const std::string shape = format("N=%d V=%d Vp=%d", N, V, Vp);
    Rng rng(5500 + N + V);
    Vector logits = random_vector(rng, size_t(N) * Vp, 2.0);
    for (int i = 0; i < N; i++) {
        double* row = logits.data() + size_t(i) * Vp;
        const int first = int(rng.below(V)), second = int(rng.below(V));
        row[first] = row[second] = 9.0;  // (almost surely) the row's maximum, twice
        for (int v = V; v < Vp; v++) row[v] = 100.0;  // padding never wins
    }
    std::fill(logits.end() - Vp, logits.end() - (Vp - V), 1.0);
    auto d_logits = to_device<floatX>(logits);
    auto d_predictions = poisoned<int>(N);
    focus::gpu::argmax_rows(d_predictions.data(), d_logits.data(), N, V, Vp, stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::vector<int> predictions = d_predictions.download();
    const focus::Accuracy right = focus::accuracy(logits.data(), predictions.data(), N, V, Vp);
    const bool ok = right.correct == size_t(N);
    record("argmax_rows predictions", shape, ok, ok ? 0 : INFINITY, 0,
           format("%zu of %d rows agree with the CPU argmax", right.correct, N));
}

void test_adamw(size_t n) {
    const std::string shape = format("n=%zu", n);
    Rng rng(6000 + n);
    const Vector master_start = random_float_vector(rng, n, 0.05), grad = random_vector(rng, n),
                 m_start = random_float_vector(rng, n, 0.1);
    Vector v_start(n);
    for (double& x : v_start) x = float(0.01 * rng.uniform());
    const focus::AdamWConfig config{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f};
    const int step = 5;
    const float grad_scale = 0.7f;
    Vector master = master_start, m = m_start, v = v_start;
    focus::adamw_update(master.data(), grad.data(), m.data(), v.data(), n, step, config, grad_scale);

    auto d_master = to_device<float>(master_start), d_m = to_device<float>(m_start), d_v = to_device<float>(v_start);
    auto d_grad = to_device<floatX>(grad);
    auto d_param = poisoned<floatX>(n);
    focus::gpu::adamw_update(d_master.data(), d_param.data(), d_grad.data(), d_m.data(), d_v.data(), n, step, config,
                             grad_scale, stream);
    // the update itself is compared: the parameters would hide its error behind their own size
    Vector update = to_host(d_master), expected_update(n), param_rounded(n);
    for (size_t i = 0; i < n; i++) {
        param_rounded[i] = round_to_floatX(update[i]);
        update[i] -= master_start[i];
        expected_update[i] = master[i] - master_start[i];
    }
    expect_close("adamw_update master update", shape, update, expected_update, FP32_TOLERANCE);
    expect_close("adamw_update m", shape, to_host(d_m), m, FP32_TOLERANCE);
    expect_close("adamw_update v", shape, to_host(d_v), v, FP32_TOLERANCE);
    expect_close("adamw_update param == master rounded", shape, to_host(d_param), param_rounded, 0.0);
}

void test_sum_of_squares(size_t n) {
    const std::string shape = format("n=%zu", n);
    Rng rng(7000 + n);
    const Vector x = random_vector(rng, n);
    auto d_x = to_device<floatX>(x);
    auto d_result = poisoned<float>(1), d_result_again = poisoned<float>(1);
    focus::gpu::sum_of_squares(d_result.data(), d_x.data(), n, stream);
    focus::gpu::sum_of_squares(d_result_again.data(), d_x.data(), n, stream);
    expect_close("sum_of_squares", shape, to_host(d_result), Vector{focus::sum_of_squares(x.data(), n)},
                 FP32_TOLERANCE);
    expect_identical("sum_of_squares", shape, d_result, d_result_again);
}

// DeviceMemory counts what DeviceBuffers hold: up by an allocation, unchanged by a move, down by a free,
// the peak kept.
void test_device_memory_count() {
    using focus::gpu::DeviceMemory;
    const size_t before = DeviceMemory::in_use(), peak_before = DeviceMemory::peak();
    const size_t bytes = 1000 * sizeof(float) + 3 * sizeof(floatX);
    size_t held = 0, held_after_move = 0;
    {
        DeviceBuffer<float> a(1000);
        DeviceBuffer<floatX> b(3);
        held = DeviceMemory::in_use();
        DeviceBuffer<float> moved = std::move(a);
        DeviceBuffer<float> empty(0);
        held_after_move = DeviceMemory::in_use();
    }
    const bool ok = held == before + bytes && held_after_move == held && DeviceMemory::in_use() == before &&
                    DeviceMemory::peak() == std::max(peak_before, before + bytes);
    record("DeviceMemory in use and peak", "", ok, ok ? 0 : INFINITY, 0,
           format("in use %zu -> %zu (moved: %zu) -> %zu, peak %zu -> %zu", before, held, held_after_move,
                  DeviceMemory::in_use(), peak_before, DeviceMemory::peak()));
}

}  // namespace

int main(int argc, char** argv) {
    bool require_gpu = false;
    for (int i = 1; i < argc; i++) {
        verbose = verbose || std::strcmp(argv[i], "-v") == 0;
        small_only = small_only || std::strcmp(argv[i], "--small") == 0;
        without_nccl = without_nccl || std::strcmp(argv[i], "--no-nccl") == 0;
        require_gpu = require_gpu || std::strcmp(argv[i], "--require-gpu") == 0;
    }
    int devices = 0;
    const cudaError_t status = cudaGetDeviceCount(&devices);
    if (status != cudaSuccess || devices == 0) {
        std::printf("%s: no CUDA device (%s)\n", require_gpu ? "error" : "GPU tests skipped",
                    status != cudaSuccess ? cudaGetErrorString(status) : "the driver reports none");
        return require_gpu ? 1 : 0;
    }
    try {
        cudaDeviceProp device;
        CUDA_CHECK(cudaGetDeviceProperties(&device, 0));
        std::printf("GPU tests on %s (sm_%d%d), %s build\n", device.name, device.major, device.minor,
                    focus::gpu::PRECISION);
        CUDA_CHECK(cudaStreamCreate(&stream));
    } catch (const std::exception& e) {
        std::printf("error: %s\n", e.what());
        return 1;
    }

    // shapes: tiny, no multiple of any block size, few tokens repeated many times, GPT-2 124M widths and vocabulary
    run("encoder", [] { test_encoder(2, 5, 7, 3, true); });
    run("encoder", [] { test_encoder(3, 17, 100, 11, false); });
    run("encoder", [] { test_encoder(16, 256, 300, 2, true); }, Size::large);
    run("encoder", [] { test_encoder(4, 256, 96, 50257, true); }, Size::large);
    const std::pair<int, int> layernorm_shapes[] = {{1, 7}, {5, 20}, {37, 768}, {65, 33}, {300, 1000}, {1024, 768}};
    for (auto [N, C] : layernorm_shapes)
        run("layernorm", [N = N, C = C] { test_layernorm(N, C); }, N * C > 100000 ? Size::large : Size::small);
    for (size_t n : {size_t(1), size_t(1000), size_t(123457)})
        run("gelu", [n] { test_gelu(n); }, n > 100000 ? Size::large : Size::small);
    run("matmul", [] { test_matmul(1, 1, 1, true); });
    run("matmul", [] { test_matmul(17, 33, 65, true); });
    run("matmul", [] { test_matmul(20, 48, 30, false); });
    run("matmul", [] { test_matmul(17, 33, 64, true); });
    run("matmul", [] { test_matmul(64, 768, 2304, true); }, Size::large);
    run("matmul", [] { test_matmul(64, 3072, 768, true); }, Size::large);
    run("matmul", [] { test_matmul(32, 768, 1000, false); }, Size::large);
    run("crossentropy", [] { test_crossentropy(2, 1, 64); });
    run("crossentropy", [] { test_crossentropy(3, 10, 16); });
    run("crossentropy", [] { test_crossentropy(7, 1027, 1088); });
    run("crossentropy", [] { test_crossentropy(16, 50257, 50304); }, Size::large);
    run("crossentropy", [] { test_crossentropy_bad_target(); });
    run("argmax", [] { test_argmax(1, 1, 64); });
    run("argmax", [] { test_argmax(5, 10, 16); });
    run("argmax", [] { test_argmax(33, 50257, 50304); }, Size::large);
    for (size_t n : {size_t(1), size_t(1000), size_t(1000003)})
        run("adamw", [n] { test_adamw(n); }, n > 100000 ? Size::large : Size::small);
    for (size_t n : {size_t(1), size_t(1000), size_t(262145), size_t(3000001)})
        run("sum_of_squares", [n] { test_sum_of_squares(n); }, n > 100000 ? Size::large : Size::small);
    run("device memory count", test_device_memory_count);
    attention_tests();
    model_tests();

    std::printf("%-58s %5s %7s %12s %10s\n", "check", "runs", "failed", "worst error", "tolerance");
    int runs = 0, failures = 0;
    for (const Summary& s : summaries) {
        std::printf("%-58s %5d %7d %12.1e %10.0e\n", s.check.c_str(), s.runs, s.failures, s.worst_error, s.tolerance);
        runs += s.runs;
        failures += s.failures;
    }
    std::printf("%d passed, %d failed\n", runs - failures, failures);
    return failures == 0 ? 0 : 1;
}
