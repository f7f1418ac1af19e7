// gpt.cuh: the GPT-2 model of gpt.h on the GPU, for training: the same computation, the same parameter
// layout (parameter_layout: llm.c's order, theta and the bias table appended), so checkpoints move freely
// between train_gpt_cpu and train_gpt.
//
//   forward   encoder, then per layer: ln1 -> qkv matmul -> attention -> attproj matmul, then
//             residual2 = residual + attproj and ln2 in one kernel (fused_residual_layernorm_forward),
//             fc matmul with GELU in its epilogue (matmul_gelu_forward), fcproj matmul, and
//             residual3 = residual2 + fcproj fused with the next LayerNorm (the next layer's ln1, or lnf);
//             logits = lnf @ wte^T; losses = cross-entropy (float, [B, T], copied to the host).
//   backward  gpt.h's backward, kernel for kernel; dlogits overwrite the logits in place. It can hand
//             each layer's finished gradients to the caller (data parallel: their all-reduce runs while
//             the layers below compute).
//   attention the fused kernels of attention/flash_attention.cuh where they apply (every kind but topk,
//             head size 32, 64 or 128), the straightforward ones of attention/attention.cuh otherwise;
//             both through one dispatch (attention_forward/backward below).
//   update    AdamW per tensor of the layout (the trainer's rule: theta and bias at lr * lr_attn_mult,
//             decay on matrices and embeddings only), on fp32 master weights.
//   ZeRO-1    given a ShardExchange (the other ranks: distributed.cuh's Communicator), the model keeps
//             master, m and v for its own shard of the parameters only (distributed.h's ShardLayout),
//             updates that shard and all-gathers the parameters; the gradient norm adds up the ranks'
//             shards. The caller averages the gradients onto their shards' owners before gradient_norm()
//             (Communicator::reduce_to_owners_async, from backward's bucket callback). Without one, the
//             layout is a single shard: the whole vector, the single-GPU model.
// Memory, all on the device, one allocation per buffer:
//   parameters  master (float) and params (floatX, what the kernels read: master rounded), grads
//               (floatX, accumulated over micro-batches), AdamW m and v (float), in layout order. params
//               and grads hold the shards end to end (P rounded up to the shards, zero past P), master, m
//               and v one shard (P rounded up to SHARD_ALIGNMENT with one shard).
//   activations one buffer per kind, [L, ...] for the per-layer ones (layer l's slice at l * its size for
//               the current B, T), sized for the largest B * T (and B * T * T for probs) seen so far:
//               ln1, ln2, atty, residual2, residual3 [L, N, C]; LayerNorm mean/rstd [L, N] (float);
//               qkv [L, N, 3C]; fch (pre-GELU), fch_gelu [L, N, 4C]; what the attention backward reads:
//               the fused kernels' row state [L, B, NH, T, 2] (float), or else qkv_rot [L, N, 3C] and
//               probs [L, B, NH, T, T] (float); and once: encoded, a branch output (attproj, then
//               fcproj), lnf [N, C];
//               logits [N, Vp]; losses [N] (float); tokens, targets, predictions [N] (int).
//   gradients   one layer's scratch, reused on the way down: dresidual, dln, datty [N, C], dqkv [N, 3C],
//               dfch, dfch_gelu [N, 4C].
// Everything runs on one stream, with deterministic kernels (no atomics): the same step twice gives the
// same bits. An allocation that does not fit throws focus::Error naming the tensor and its size.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "../attention/attention.cuh"
#include "../attention/flash_attention.cuh"
#include "adamw.cuh"
#include "crossentropy.cuh"
#include "distributed.h"
#include "encoder.cuh"
#include "gelu.cuh"
#include "gpt.h"
#include "layernorm.cuh"
#include "matmul.cuh"

namespace focus::gpu {

// What gpu::GPT needs from the other ranks when its optimizer state is sharded (ZeRO-1). Communicator
// (distributed.cuh) is the one implementation; the model sees only this, so that this file, and every
// program that includes it, builds and links without NCCL.
class ShardExchange {
public:
    virtual ~ShardExchange() = default;
    virtual const ProcessGroup& group() const = 0;
    // values (device, count floats) summed over the ranks, in place, ordered on stream
    virtual void all_reduce_sum(float* values, size_t count, cudaStream_t stream) = 0;
    // every rank's shard of params (padded_count() values) to every rank, in place
    virtual void all_gather_params(floatX* params, const ShardLayout& shards, cudaStream_t stream) = 0;
    // the full vector (parameter_count values) from every rank's shard; every rank must call it
    virtual std::vector<float> gather_shards(const float* shard, const ShardLayout& shards, cudaStream_t stream) = 0;
};

class GPT {
public:
    // sharded_over: the ranks that share the optimizer state (ZeRO-1), or nullptr to keep all of it.
    explicit GPT(const GPTConfig& config, ShardExchange* sharded_over = nullptr)
        : config_(config), layout_(parameter_layout(config)), exchange_(sharded_over) {
        validate(config_);
        flash_ = flash_attention_supports(config_.attention, config_.head_size());
        rank_ = exchange_ ? exchange_->group().rank : 0;
        shards_ = shard_layout(parameter_count(layout_), exchange_ ? exchange_->group().world_size : 1);
        segments_ = shard_segments(layout_, shards_, rank_);
        buckets_ = gradient_buckets(layout_, config_.num_layers);
        CUDA_CHECK(cudaStreamCreate(&stream_));
        const size_t padded = shards_.padded_count(), shard = shards_.shard_size;
        const char* advice = "the model does not fit this GPU";
        master_ = allocate<float>("parameters.master", shard, advice);
        params_ = allocate<floatX>("parameters.params", padded, advice);
        grads_ = allocate<floatX>("parameters.grads", padded, advice);
        m_ = allocate<float>("optimizer.m", shard, advice);
        v_ = allocate<float>("optimizer.v", shard, advice);
        norm_ = allocate<float>("optimizer.norm", 1, advice);
        CUDA_CHECK(cudaMemsetAsync(m_.data(), 0, shard * sizeof(float), stream_));
        CUDA_CHECK(cudaMemsetAsync(v_.data(), 0, shard * sizeof(float), stream_));
        zero_grad();
    }
    ~GPT() { cudaStreamDestroy(stream_); }
    GPT(const GPT&) = delete;
    GPT& operator=(const GPT&) = delete;

    const GPTConfig& config() const { return config_; }
    const std::vector<ParamTensor>& layout() const { return layout_; }
    size_t num_parameters() const { return shards_.parameter_count; }
    // For the trainer's collectives: the gradient buffer (padded_count() values), its stream, the shards.
    floatX* grads() { return grads_.data(); }
    cudaStream_t stream() const { return stream_; }
    const ShardLayout& shards() const { return shards_; }

    // gpt.h's initialisation (on the host, the same numbers as GPT<float>::init), then uploaded.
    void init(uint64_t seed) {
        std::vector<float> host(num_parameters());
        init_parameters(host.data(), layout_, config_.num_layers, seed);
        load_parameters(host);
    }
    void load_parameters(const std::vector<float>& host) {
        check(host.size() == num_parameters(),
              format("%zu parameters given to a model of %zu", host.size(), num_parameters()));
        master_.upload(shard_slice(host, shards_, rank_));
        std::vector<floatX> padded(shards_.padded_count(), floatX(0.0f));
        std::copy(host.begin(), host.end(), padded.begin());
        params_.upload(padded);
    }
    // Under ZeRO-1 every rank must call parameters() and optimizer_state(): they gather the shards.
    std::vector<float> parameters() const { return whole(master_); }
    // The accumulated gradients (under ZeRO-1, once reduced to the owners, only this rank's shard is current).
    std::vector<float> gradients() const { return download(grads_.data(), num_parameters()); }
    // AdamW's moments, for checkpoints (state.bin): always the full vectors, whatever the world size.
    void load_optimizer_state(const std::vector<float>& m, const std::vector<float>& v) {
        m_.upload(shard_slice(m, shards_, rank_));
        v_.upload(shard_slice(v, shards_, rank_));
    }
    void optimizer_state(std::vector<float>& m, std::vector<float>& v) const {
        m = whole(m_);
        v = whole(v_);
    }

    void zero_grad() { CUDA_CHECK(cudaMemsetAsync(grads_.data(), 0, grads_.size() * sizeof(floatX), stream_)); }

    // gpt.h's forward: tokens [B, T] and targets (-1 = no loss there, nullptr = none) on the host; returns
    // the mean loss over the positions with a target (NaN without targets). Per-position losses: losses().
    double forward(const int* tokens, const int* targets, int B, int T) {
        const GPTConfig& c = config_;
        check(T >= 1 && T <= c.max_seq_len,
              format("sequence length %d outside 1..%d (the model's maximum)", T, c.max_seq_len));
        const size_t N = size_t(B) * T;
        for (size_t i = 0; i < N; i++) {  // the message is formatted only for a bad id: this runs per token
            if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
                throw Error(format("token %d outside the vocabulary 0..%d", tokens[i], c.vocab_size - 1));
            if (targets && targets[i] != -1 && (targets[i] < 0 || targets[i] >= c.vocab_size))
                throw Error(format("target %d of position %zu is outside [0, %d)", targets[i], i, c.vocab_size));
        }
        reserve(B, T);
        B_ = B;
        T_ = T;
        tokens_.assign(tokens, tokens + N);
        CUDA_CHECK(cudaMemcpyAsync(acts_.tokens.data(), tokens, N * sizeof(int), cudaMemcpyHostToDevice, stream_));
        has_targets_ = targets != nullptr;
        if (targets) {
            targets_.assign(targets, targets + N);
            CUDA_CHECK(cudaMemcpyAsync(acts_.targets.data(), targets, N * sizeof(int), cudaMemcpyHostToDevice, stream_));
        }

        const int C = c.channels, L = c.num_layers, Vp = c.padded_vocab_size;
        ParameterTensors<floatX> p(params_.data(), layout_);
        Activations& a = acts_;
        encoder_forward(a.encoded.data(), a.tokens.data(), p.wte, p.wpe, B, T, C, stream_);
        layernorm_forward(layer(0).ln1, layer(0).ln1_mean, layer(0).ln1_rstd, a.encoded.data(), p.ln1w, p.ln1b, N, C,
                          stream_);
        for (int l = 0; l < L; l++) {
            const LayerActs x = layer(l);
            const floatX* residual = l == 0 ? a.encoded.data() : layer(l - 1).residual3;
            matmul_forward(x.qkv, x.ln1, p.qkvw + size_t(l) * 3 * C * C, p.qkvb + size_t(l) * 3 * C, N, C, 3 * C,
                           stream_);
            attention_forward(l, p);
            matmul_forward(a.branch.data(), x.atty, p.attprojw + size_t(l) * C * C, p.attprojb + size_t(l) * C, N, C,
                           C, stream_);
            fused_residual_layernorm_forward(x.residual2, x.ln2, x.ln2_mean, x.ln2_rstd, residual, a.branch.data(),
                                             p.ln2w + size_t(l) * C, p.ln2b + size_t(l) * C, N, C, stream_);
            matmul_gelu_forward(x.fch_gelu, x.fch, x.ln2, p.fcw + size_t(l) * 4 * C * C, p.fcb + size_t(l) * 4 * C,
                                N, C, 4 * C, stream_);
            matmul_forward(a.branch.data(), x.fch_gelu, p.fcprojw + size_t(l) * 4 * C * C, p.fcprojb + size_t(l) * C,
                           N, 4 * C, C, stream_);
            // residual3 with the LayerNorm that reads it next: layer l + 1's ln1, or lnf after the last layer
            const bool last = l == L - 1;
            const LayerActs next = last ? x : layer(l + 1);
            fused_residual_layernorm_forward(
                x.residual3, last ? a.lnf.data() : next.ln1, last ? a.lnf_mean.data() : next.ln1_mean,
                last ? a.lnf_rstd.data() : next.ln1_rstd, x.residual2, a.branch.data(),
                last ? p.lnfw : p.ln1w + size_t(l + 1) * C, last ? p.lnfb : p.ln1b + size_t(l + 1) * C, N, C, stream_);
        }
        matmul_forward(a.logits.data(), a.lnf.data(), p.wte, nullptr, N, C, Vp, stream_);
        has_logits_ = true;
        if (!targets) return NAN;

        softmax_crossentropy(a.losses.data(), nullptr, a.logits.data(), a.targets.data(), 1.0f, N, c.vocab_size, Vp,
                             stream_);
        losses_.resize(N);
        CUDA_CHECK(cudaMemcpyAsync(losses_.data(), a.losses.data(), N * sizeof(float), cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        double sum = 0.0;  // in double and in order, as the CPU model adds them
        for (size_t i = 0; i < N; i++) sum += losses_[i];
        const size_t counted = target_count();
        return counted ? sum / counted : NAN;
    }

    // gpt.h's backward: accumulates d(loss_scale * mean loss)/d(params) into the gradients. Consumes the
    // logits of the last forward (they are overwritten by their gradient). done, if given, is called with
    // each bucket of gradient_buckets as soon as its kernels are queued: layer L-1 first, the embeddings last.
    void backward(double loss_scale = 1.0, const GradientsDone& done = nullptr) {
        check(has_targets_, "backward() needs a forward() with targets");
        const size_t counted = target_count();
        check(counted > 0, "backward() with no position that has a target");
        const GPTConfig& c = config_;
        const int B = B_, T = T_, C = c.channels, L = c.num_layers, Vp = c.padded_vocab_size;
        const size_t N = size_t(B) * T;
        ParameterTensors<floatX> p(params_.data(), layout_), g(grads_.data(), layout_);
        Activations& a = acts_;
        GradScratch& d = scratch_;

        floatX* dlogits = a.logits.data();
        softmax_crossentropy(a.losses.data(), dlogits, a.logits.data(), a.targets.data(), float(loss_scale / counted),
                             N, c.vocab_size, Vp, stream_);
        has_logits_ = false;
        zero(d.dresidual);
        zero(d.dln);
        matmul_backward(d.dln.data(), g.wte, nullptr, dlogits, a.lnf.data(), p.wte, N, C, Vp, stream_);
        layernorm_backward(d.dresidual.data(), g.lnfw, g.lnfb, d.dln.data(), layer(L - 1).residual3, p.lnfw,
                           a.lnf_mean.data(), a.lnf_rstd.data(), N, C, stream_);
        // d.dresidual holds dloss/dx at the top of the residual stream; each layer adds its branches' share
        for (int l = L - 1; l >= 0; l--) {
            const LayerActs x = layer(l);
            const floatX* residual = l == 0 ? a.encoded.data() : layer(l - 1).residual3;
            zero(d.dfch_gelu);
            zero(d.dfch);
            zero(d.dln);
            matmul_backward(d.dfch_gelu.data(), g.fcprojw + size_t(l) * 4 * C * C, g.fcprojb + size_t(l) * C,
                            d.dresidual.data(), x.fch_gelu, p.fcprojw + size_t(l) * 4 * C * C, N, 4 * C, C, stream_);
            gelu_backward(d.dfch.data(), x.fch, d.dfch_gelu.data(), N * 4 * C, stream_);
            matmul_backward(d.dln.data(), g.fcw + size_t(l) * 4 * C * C, g.fcb + size_t(l) * 4 * C, d.dfch.data(),
                            x.ln2, p.fcw + size_t(l) * 4 * C * C, N, C, 4 * C, stream_);
            layernorm_backward(d.dresidual.data(), g.ln2w + size_t(l) * C, g.ln2b + size_t(l) * C, d.dln.data(),
                               x.residual2, p.ln2w + size_t(l) * C, x.ln2_mean, x.ln2_rstd, N, C, stream_);
            zero(d.datty);
            zero(d.dqkv);
            zero(d.dln);
            matmul_backward(d.datty.data(), g.attprojw + size_t(l) * C * C, g.attprojb + size_t(l) * C,
                            d.dresidual.data(), x.atty, p.attprojw + size_t(l) * C * C, N, C, C, stream_);
            attention_backward(l, p, g);
            matmul_backward(d.dln.data(), g.qkvw + size_t(l) * 3 * C * C, g.qkvb + size_t(l) * 3 * C, d.dqkv.data(),
                            x.ln1, p.qkvw + size_t(l) * 3 * C * C, N, C, 3 * C, stream_);
            layernorm_backward(d.dresidual.data(), g.ln1w + size_t(l) * C, g.ln1b + size_t(l) * C, d.dln.data(),
                               residual, p.ln1w + size_t(l) * C, x.ln1_mean, x.ln1_rstd, N, C, stream_);
            if (done) done(buckets_.layers[l]);
        }
        encoder_backward(g.wte, g.wpe, d.dresidual.data(), tokens_.data(), B, T, C, stream_);
        if (done) done(buckets_.rest);
        has_targets_ = false;
    }

    // sqrt(sum of squared gradients), the global norm that clipping uses. Under ZeRO-1 each rank adds up
    // its own shard of the averaged gradients, and the ranks' sums are added.
    double gradient_norm() {
        if (exchange_) {
            sum_of_squares(norm_.data(), grads_.data() + shards_.shard_size * rank_, shards_.shard_size, stream_);
            exchange_->all_reduce_sum(norm_.data(), 1, stream_);
        } else {
            sum_of_squares(norm_.data(), grads_.data(), num_parameters(), stream_);
        }
        float sum = 0.0f;
        CUDA_CHECK(cudaMemcpyAsync(&sum, norm_.data(), sizeof(float), cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        return std::sqrt(double(sum));
    }

    // AdamW on every tensor of the layout (of this rank's shard under ZeRO-1, then the all-gather):
    // adamw.lr for most, adamw.lr * lr_attn_mult for theta and the distance bias; adamw.weight_decay on
    // matrices and embeddings, none on the rest (segment_adamw).
    void update(const AdamWConfig& adamw, float lr_attn_mult, int step, float grad_scale) {
        adamw_update_shard(master_.data(), params_.data(), grads_.data(), m_.data(), v_.data(), segments_, step,
                           adamw, lr_attn_mult, grad_scale, stream_);
        if (exchange_) exchange_->all_gather_params(params_.data(), shards_, stream_);
    }

    // After forward(): per-position losses [B, T] on the host (0 where the target is -1).
    const float* losses() const { return losses_.data(); }
    // After forward() and before backward(): the argmax over the real vocabulary of every position
    // (ties to the lowest id), computed on the GPU.
    std::vector<int> predictions() {
        check(has_logits_, "predictions() needs the logits of a forward() (backward() consumes them)");
        const size_t N = size_t(B_) * T_;
        argmax_rows(acts_.predictions.data(), acts_.logits.data(), int(N), config_.vocab_size,
                    config_.padded_vocab_size, stream_);
        std::vector<int> host(N);
        CUDA_CHECK(cudaMemcpyAsync(host.data(), acts_.predictions.data(), N * sizeof(int), cudaMemcpyDeviceToHost,
                                   stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        return host;
    }
    // After forward() and before backward(): the logits [Vp] of one position, for sampling.
    std::vector<float> logits_at(size_t position) {
        check(has_logits_, "logits_at() needs the logits of a forward() (backward() consumes them)");
        const size_t Vp = config_.padded_vocab_size;
        return download(acts_.logits.data() + position * Vp, Vp);
    }

    // For eval_gpt's attention statistics: the straightforward attention kernels, which keep every layer's
    // probabilities [B, NH, T, T] for attention_probs(). Call before the first forward().
    void keep_attention_probs() {
        check(capacity_.tokens == 0, "keep_attention_probs() must come before the first forward()");
        flash_ = false;
    }
    // Whether attention runs in the fused kernels (flash_attention.cuh) or the straightforward ones.
    bool fused_attention() const { return flash_; }
    // After forward(): host copies of layer l's attention probabilities [B, NH, T, T] (needs
    // keep_attention_probs()) and of the last hidden state, the residual stream before lnf, [B, T, C].
    std::vector<float> attention_probs(int l) const {
        check(!flash_, "attention_probs() needs keep_attention_probs() (the fused kernels keep no probabilities)");
        return download(layer(l).probs, size_t(B_) * config_.num_heads * T_ * T_);
    }
    std::vector<float> last_hidden() const {
        return download(layer(config_.num_layers - 1).residual3, size_t(B_) * T_ * config_.channels);
    }

    // Allocates the activations for B x T tokens now (forward() does it on first use).
    void reserve(int B, int T) {
        const size_t N = size_t(B) * T, score_rows = N * T;
        if (N <= capacity_.tokens && score_rows <= capacity_.score_rows) return;
        capacity_.tokens = std::max(capacity_.tokens, N);
        capacity_.score_rows = std::max(capacity_.score_rows, score_rows);
        acts_ = Activations();  // free the old buffers before allocating the larger ones
        scratch_ = GradScratch();
        allocate_activations();
    }

    // The most bytes this process has held in device buffers (DeviceMemory): parameters, gradients,
    // optimizer state, activations, scratch, cuBLASLt's workspace; not the CUDA context or NCCL's own.
    static size_t device_memory_peak() { return DeviceMemory::peak(); }

private:
    struct LayerActs {
        floatX *ln1, *qkv, *qkv_rot, *atty, *residual2, *ln2, *fch, *fch_gelu, *residual3;
        float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd, *probs, *row_state;
    };
    struct Activations {
        DeviceBuffer<floatX> encoded, ln1, qkv, qkv_rot, atty, branch, residual2, ln2, fch, fch_gelu, residual3;
        DeviceBuffer<floatX> lnf, logits;
        DeviceBuffer<float> ln1_mean, ln1_rstd, ln2_mean, ln2_rstd, probs, row_state, lnf_mean, lnf_rstd, losses;
        DeviceBuffer<int> tokens, targets, predictions;
    };
    struct GradScratch {
        DeviceBuffer<floatX> dresidual, dln, datty, dqkv, dfch, dfch_gelu;
    };

    void allocate_activations() {
        const size_t N = capacity_.tokens, L = config_.num_layers, C = config_.channels, NH = config_.num_heads;
        const size_t Vp = config_.padded_vocab_size;
        const char* advice = "reduce --batch or --seq";
        Activations& a = acts_;
        auto floats = [&](DeviceBuffer<floatX>& buffer, const char* name, size_t count) {
            buffer = allocate<floatX>(std::string("activations.") + name, count, advice);
        };
        auto stats = [&](DeviceBuffer<float>& buffer, const char* name, size_t count) {
            buffer = allocate<float>(std::string("activations.") + name, count, advice);
        };
        auto ints = [&](DeviceBuffer<int>& buffer, const char* name) {
            buffer = allocate<int>(std::string("activations.") + name, N, advice);
        };
        floats(a.encoded, "encoded", N * C);
        floats(a.ln1, "ln1", L * N * C);
        floats(a.qkv, "qkv", L * N * 3 * C);
        floats(a.atty, "atty", L * N * C);
        floats(a.branch, "branch", N * C);
        floats(a.residual2, "residual2", L * N * C);
        floats(a.ln2, "ln2", L * N * C);
        floats(a.fch, "fch", L * N * 4 * C);
        floats(a.fch_gelu, "fch_gelu", L * N * 4 * C);
        floats(a.residual3, "residual3", L * N * C);
        floats(a.lnf, "lnf", N * C);
        floats(a.logits, "logits", N * Vp);
        stats(a.ln1_mean, "ln1_mean", L * N);
        stats(a.ln1_rstd, "ln1_rstd", L * N);
        stats(a.ln2_mean, "ln2_mean", L * N);
        stats(a.ln2_rstd, "ln2_rstd", L * N);
        if (flash_) {
            stats(a.row_state, "row_state", L * 2 * NH * N);
        } else {
            floats(a.qkv_rot, "qkv_rot", L * N * 3 * C);
            stats(a.probs, "probs", L * NH * capacity_.score_rows);
        }
        stats(a.lnf_mean, "lnf_mean", N);
        stats(a.lnf_rstd, "lnf_rstd", N);
        stats(a.losses, "losses", N);
        ints(a.tokens, "tokens");
        ints(a.targets, "targets");
        ints(a.predictions, "predictions");
        GradScratch& d = scratch_;
        floats(d.dresidual, "dresidual", N * C);
        floats(d.dln, "dln", N * C);
        floats(d.datty, "datty", N * C);
        floats(d.dqkv, "dqkv", N * 3 * C);
        floats(d.dfch, "dfch", N * 4 * C);
        floats(d.dfch_gelu, "dfch_gelu", N * 4 * C);
    }

    // Layer l's slices for the current B, T (nullptr for the attention buffers the dispatch does not use).
    LayerActs layer(int l) const {
        const size_t N = size_t(B_) * T_, C = config_.channels, NH = config_.num_heads;
        const Activations& a = acts_;
        auto slice = [l](const auto& buffer, size_t layer_size) {
            return buffer.size() ? buffer.data() + l * layer_size : nullptr;
        };
        return {a.ln1.data() + l * N * C,       a.qkv.data() + l * N * 3 * C,      slice(a.qkv_rot, N * 3 * C),
                a.atty.data() + l * N * C,      a.residual2.data() + l * N * C,    a.ln2.data() + l * N * C,
                a.fch.data() + l * N * 4 * C,   a.fch_gelu.data() + l * N * 4 * C, a.residual3.data() + l * N * C,
                a.ln1_mean.data() + l * N,      a.ln1_rstd.data() + l * N,         a.ln2_mean.data() + l * N,
                a.ln2_rstd.data() + l * N,      slice(a.probs, NH * N * T_),       slice(a.row_state, 2 * NH * N)};
    }

    // The one place the model calls attention: the fused kernels where they apply, else the straightforward ones.
    void attention_forward(int l, const ParameterTensors<floatX>& p) {
        const LayerActs x = layer(l);
        const int C = config_.channels, NH = config_.num_heads;
        if (flash_)
            flash_attention_forward(config_.attention, x.atty, x.row_state, x.qkv, theta(p.theta, l), bias(p.bias, l),
                                    B_, T_, C, NH, stream_);
        else
            gpu::attention_forward(config_.attention, x.atty, x.probs, x.qkv_rot, x.qkv, theta(p.theta, l),
                                   bias(p.bias, l), B_, T_, C, NH, stream_);
    }
    void attention_backward(int l, const ParameterTensors<floatX>& p, const ParameterTensors<floatX>& g) {
        const LayerActs x = layer(l);
        const int C = config_.channels, NH = config_.num_heads;
        floatX *dqkv = scratch_.dqkv.data(), *datty = scratch_.datty.data();
        if (flash_)
            flash_attention_backward(config_.attention, dqkv, theta(g.theta, l), bias(g.bias, l), datty, x.atty,
                                     x.row_state, x.qkv, theta(p.theta, l), bias(p.bias, l), B_, T_, C, NH, stream_);
        else
            gpu::attention_backward(config_.attention, dqkv, theta(g.theta, l), bias(g.bias, l), datty, x.probs,
                                    x.qkv_rot, theta(p.theta, l), bias(p.bias, l), B_, T_, C, NH, stream_);
    }

    // The full per-parameter vector (parameter_count values) from a shard-sized buffer: master, m or v.
    std::vector<float> whole(const DeviceBuffer<float>& shard) const {
        if (exchange_) return exchange_->gather_shards(shard.data(), shards_, stream_);
        return download(shard.data(), num_parameters());
    }

    // count elements from the device, as floats, once the stream has finished writing them.
    template <typename T>
    std::vector<float> download(const T* device, size_t count) const {
        std::vector<T> host(count);
        CUDA_CHECK(cudaMemcpyAsync(host.data(), device, count * sizeof(T), cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        return std::vector<float>(host.begin(), host.end());
    }

    // Layer l's slice of the Lazy-Attention tensors (nullptr when the model has none).
    floatX* theta(floatX* all, int l) const { return all ? all + size_t(l) * config_.num_heads : nullptr; }
    floatX* bias(floatX* all, int l) const {
        return all ? all + size_t(l) * config_.num_heads * config_.attention.bias_window : nullptr;
    }
    size_t target_count() const { return targets_.size() - std::count(targets_.begin(), targets_.end(), -1); }
    void zero(DeviceBuffer<floatX>& buffer) {
        CUDA_CHECK(cudaMemsetAsync(buffer.data(), 0, buffer.size() * sizeof(floatX), stream_));
    }

    GPTConfig config_;
    std::vector<ParamTensor> layout_;
    ShardExchange* exchange_;  // nullptr: one shard, the whole optimizer state on this GPU
    int rank_ = 0;
    ShardLayout shards_;
    std::vector<ShardSegment> segments_;  // this rank's shard, by tensor
    GradientBuckets buckets_;
    bool flash_ = false;  // attention by the fused kernels
    cudaStream_t stream_ = nullptr;
    DeviceBuffer<float> master_, m_, v_, norm_;
    DeviceBuffer<floatX> params_, grads_;
    struct {
        size_t tokens = 0, score_rows = 0;  // the largest B * T and B * T * T allocated for
    } capacity_;
    Activations acts_;
    GradScratch scratch_;
    std::vector<int> tokens_, targets_;  // host copies: encoder_backward groups tokens on the host
    std::vector<float> losses_;
    int B_ = 0, T_ = 0;
    bool has_targets_ = false, has_logits_ = false;
};

// The predictions of the last forward(), for data/evaluation.h and data/benchmarks.h (the CPU model's
// overload reads its logits on the host).
inline std::vector<int> predictions(GPT& model, size_t positions) {
    std::vector<int> all = model.predictions();
    check(positions <= all.size(), format("predictions of %zu positions after a forward of %zu", positions, all.size()));
    all.resize(positions);
    return all;
}

}  // namespace focus::gpu
