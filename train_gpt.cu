// train_gpt.cu: trains a GPT-2-class model with the attention variant chosen by flags.
//
// Compiled by nvcc this is train_gpt, the GPU trainer (the model: layers/gpt.cuh); compiled by g++ as
// C++ it is train_gpt_cpu, the CPU reference trainer (layers/gpt.h). Both run the one training loop
// below, with the same flags, data, logging and checkpoints (which move freely between the two): the
// only differences are the Model type and the device setup.
//
// One optimizer step:
//   for each of the --total-batch / (B*T*ranks) micro-batches: forward, backward (gradients accumulate)
//   clip the global gradient norm to --grad-clip
//   AdamW with the cosine learning rate (warmup, then decay to lr * --lr-min-frac); matrices and
//   embeddings decay by --weight-decay; theta and the distance bias train at lr * --lr-attn-mult
// Every step the training batch's loss and next-token accuracy; every --eval-every steps the
// validation loss and accuracy; every --save-every steps and at the end a checkpoint under --out
// (see data/checkpoint.h); every --sample-every steps a sample from the model. Ctrl-C finishes the
// step, saves, and exits.
//
// Data parallel (train_gpt only; dev/DISTRIBUTED.md): one process per GPU, started by a launcher or with
// --rank/--world-size/--dist-init. Each rank reads its own B samples of every micro-batch, so
// --total-batch counts the tokens of all ranks. The gradients are averaged over the ranks before the
// norm and the update: under --zero 0 each layer's all-reduce is queued by the last micro-batch's
// backward pass as soon as the layer is done; under --zero 1 each layer's gradient is averaged onto the
// ranks that own its pieces, just as early, and gpu::GPT updates its shard of the optimizer state. The
// ranks agree on the logged loss and on stopping, and share each evaluation (each runs its part of the
// validation batches and benchmark items; the sums are added over the ranks). Rank 0 alone prints, logs,
// samples and writes checkpoints, which stay world-size independent (--resume on another GPU count
// re-positions the data and re-shards AdamW's moments).
//
// Model FLOPs utilisation (MFU, GPU only): model FLOPs per token are estimated as in PaLM (and llm.c)
// as 6 N + 12 L T C: 6 N for the forward and backward matmuls of N parameters (all of them, embeddings
// included), 12 L T C for the two attention products (q.k and a.v: 2 T C multiply-adds per token and
// layer, forward and backward = 3x, 2 FLOPs each), counted over all T keys whatever the variant keeps.
// MFU = FLOPs per token * tokens per second / the GPU's peak dense bf16 rate (looked up by name).
#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <omp.h>

#include "data/checkpoint.h"
#include "data/evaluation.h"
#include "layers/adamw.h"
#include "layers/distributed.h"
#include "layers/gpt.h"
#ifdef __CUDACC__
#include "layers/distributed.cuh"
#include "layers/gpt.cuh"
#endif

#ifndef GIT_COMMIT
#define GIT_COMMIT "unknown"
#endif

using namespace focus;
using nlohmann::json;

struct Options {
    std::string data = BUILTIN_RECALL, val, out, resume, init, log;
    int steps = 300, batch = 16, layers = 2, heads = 4, dim = 128;
    int seq = 0;  // 0 = the data's own length (task data) or DEFAULT_SEQ
    long long total_batch = 0;  // tokens per optimizer step; 0 = batch * seq
    float lr = 1e-3f, lr_min_frac = 0.1f, lr_attn_mult = 1.0f, weight_decay = 0.1f;
    float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, grad_clip = 1.0f;
    int warmup = 30, eval_every = 50, eval_batches = 20, save_every = 0, threads = 0;
    uint64_t seed = 1337;
    std::string attn = "softmax", pos = "learned", pos_bias = "none";
    int attn_k = 0, global_tokens = 0, bias_window = 0;
    float rope_base = 10000.0f;
    bool lazy = false;
    std::string eval_tasks, task_dir = "../shared/data";
    int eval_task_limit = 500;
    int sample_every = 0, sample_tokens = 32;
    DistributedFlags dist;
};

constexpr int DEFAULT_SEQ = 64;

// Flags that decide the model's architecture, each with the config.json fields it sets: on
// --resume/--init the checkpoint's architecture wins, and a flag given on the command line must agree.
static const std::pair<const char*, std::vector<const char*>> ARCHITECTURE_FLAGS[] = {
    {"--layers", {"/num_layers"}},
    {"--heads", {"/num_heads"}},
    {"--dim", {"/channels"}},
    {"--attn", {"/attention/kind"}},
    {"--attn-k", {"/attention/k"}},
    {"--global-tokens", {"/attention/global_tokens"}},
    {"--pos", {"/attention/position"}},
    {"--rope-base", {"/attention/rope_base"}},
    {"--pos-bias", {"/attention/has_bias"}},
    {"--bias-window", {"/attention/bias_window"}},
    {"--lazy", {"/attention/kind", "/attention/position", "/attention/has_bias"}}};

static void add_flags(CLI::App& app, Options& o) {
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app.add_option("--data", o.data, "training data: builtin:recall, task:NAME (data/tasks.h), a shard glob, or a text file")->capture_default_str();
    app.add_option("--val", o.val, "validation data (same forms as --data)");
    app.add_option("--out", o.out, "directory for checkpoints (ckpt_<step>/)");
    app.add_option("--resume", o.resume, "continue from a checkpoint or from the newest one in a --out directory");
    app.add_option("--init", o.init, "start from the weights of a model.bin (ours or llm.c's gpt2_124M.bin)");
    app.add_option("--log", o.log, "append one JSON line per step and evaluation to this file");
    app.add_option("--steps", o.steps, "optimizer steps")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--batch", o.batch, "sequences per micro-batch (B)")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--seq", o.seq, format("sequence length (T); default %d, or the task's length for task: data", DEFAULT_SEQ))->check(CLI::PositiveNumber);
    app.add_option("--total-batch", o.total_batch, "tokens per optimizer step (gradient accumulation)")->check(CLI::NonNegativeNumber);
    app.add_option("--layers", o.layers, "transformer layers")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--heads", o.heads, "attention heads")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--dim", o.dim, "channels")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--lr", o.lr, "peak learning rate")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--lr-min-frac", o.lr_min_frac, "final learning rate as a fraction of --lr")->check(CLI::Range(0.0, 1.0))->capture_default_str();
    app.add_option("--lr-attn-mult", o.lr_attn_mult, "learning-rate multiplier for theta (tau) and the distance bias")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--warmup", o.warmup, "linear warmup steps")->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay (matrices and embeddings)")->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--beta1", o.beta1, "AdamW beta1")->check(CLI::Range(0.0, 1.0))->capture_default_str();
    app.add_option("--beta2", o.beta2, "AdamW beta2")->check(CLI::Range(0.0, 1.0))->capture_default_str();
    app.add_option("--eps", o.eps, "AdamW epsilon")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--grad-clip", o.grad_clip, "clip the global gradient norm to this (0 = off)")->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--seed", o.seed, "seed for initialisation and data order")->capture_default_str();
    app.add_option("--eval-every", o.eval_every, "validation loss every N steps (0 = only at the end)")->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--eval-batches", o.eval_batches, "validation batches per evaluation")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--save-every", o.save_every, "checkpoint every N steps (0 = only at the end)")->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--threads", o.threads, "CPU threads (0 = OpenMP's default)")->check(CLI::NonNegativeNumber);
    app.add_option("--attn", o.attn, "attention: softmax|elastic|topk|window|block")->check(CLI::IsMember({"softmax", "elastic", "topk", "window", "block"}))->capture_default_str();
    app.add_option("--attn-k", o.attn_k, "k for topk (keys kept), window (last k keys), block (block size)")->check(CLI::NonNegativeNumber);
    app.add_option("--global-tokens", o.global_tokens, "window/block: first g positions visible to all queries")->check(CLI::NonNegativeNumber);
    app.add_option("--pos", o.pos, "positions: learned|rope")->check(CLI::IsMember({"learned", "rope"}))->capture_default_str();
    app.add_option("--rope-base", o.rope_base, "RoPE frequency base")->capture_default_str();
    app.add_option("--pos-bias", o.pos_bias, "learned per-head distance bias: none|head")->check(CLI::IsMember({"none", "head"}))->capture_default_str();
    app.add_option("--bias-window", o.bias_window, "distances with a bias (default min(512, --seq))")->check(CLI::PositiveNumber);
    app.add_flag("--lazy", o.lazy, "Lazy Attention: --attn elastic --pos rope --pos-bias head");
    app.add_option("--eval-tasks", o.eval_tasks, "zero-shot tasks at every evaluation, e.g. hellaswag or piqa=FILE (GPT-2 vocabulary)");
    app.add_option("--eval-task-limit", o.eval_task_limit, "items per zero-shot task (0 = all)")->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--task-dir", o.task_dir, "folder holding the benchmark files")->capture_default_str();
    app.add_option("--sample-every", o.sample_every, "print a sample from the model every N steps (0 = never)")->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--sample-tokens", o.sample_tokens, "tokens per sample")->check(CLI::PositiveNumber)->capture_default_str();
    add_distributed_flags(app, o.dist);
}

// Flags that belong to one launch, not to the run: a resume replays the saved command line without them
// (it may continue on another GPU count, from its own launcher's environment).
static const char* const PER_LAUNCH_FLAGS[] = {"--resume", "--init",      "--rank",  "--world-size",
                                               "--local-rank", "--dist-init", "--zero", "--nccl-timeout"};

// Parses argv into Options; a parse error becomes a focus::Error (one line), --help prints and exits.
static Options parse(const std::vector<std::string>& args, std::vector<std::string>* given = nullptr) {
    Options o;
    CLI::App app("focusgpt trainer. See README.md for every flag.", "train_gpt");
    add_flags(app, o);
    std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 consumes a reversed vector
    try {
        app.parse(reversed);
    } catch (const CLI::CallForHelp&) {
        std::printf("%s", app.help().c_str());
        std::exit(0);
    } catch (const CLI::ParseError& e) {
        throw Error(format("%s (see --help)", e.what()));
    }
    if (given)
        for (const auto& flag : ARCHITECTURE_FLAGS)
            if (app.count(flag.first)) given->push_back(flag.first);
    return o;
}

static AttentionConfig attention_from(const Options& o) {
    AttentionConfig a;
    a.kind = parse_attention_kind(o.lazy ? "elastic" : o.attn);
    a.position = parse_position_kind(o.lazy ? "rope" : o.pos);
    a.rope_base = o.rope_base;
    a.k = o.attn_k;
    a.global_tokens = o.global_tokens;
    if (o.lazy || o.pos_bias == "head") a.bias_window = o.bias_window ? o.bias_window : std::min(512, o.seq);
    else check(o.bias_window == 0, "--bias-window needs --pos-bias head (or --lazy)");
    check(!(o.lazy && (o.attn != "softmax" && o.attn != "elastic")), "--lazy sets --attn elastic; do not combine it with --attn " + o.attn);
    return a;
}

static GPTConfig config_from(const Options& o, int vocab_size) {
    GPTConfig c;
    c.max_seq_len = o.seq;
    c.vocab_size = vocab_size;
    c.padded_vocab_size = padded_vocab(vocab_size);
    c.num_layers = o.layers;
    c.num_heads = o.heads;
    c.channels = o.dim;
    c.attention = attention_from(o);
    validate(c);
    return c;
}

// The checkpoint's architecture against the architecture flags this command line gives.
static void check_architecture(const GPTConfig& file, const GPTConfig& flags, const std::vector<std::string>& given,
                               const std::string& path) {
    json a = to_json(file), b = to_json(flags);
    a["attention"]["has_bias"] = file.attention.bias_window > 0;
    b["attention"]["has_bias"] = flags.attention.bias_window > 0;
    for (const auto& [flag, fields] : ARCHITECTURE_FLAGS) {
        if (std::find(given.begin(), given.end(), flag) == given.end()) continue;
        for (const char* field : fields) {
            json::json_pointer at(field);
            check(a[at] == b[at], format("%s has %s = %s but %s says %s", path.c_str(), field + 1,
                                         a[at].dump().c_str(), flag, b[at].dump().c_str()));
        }
    }
}

// The CPU model with the members the training loop uses beyond GPT<float>'s, under the names gpu::GPT
// gives them (layers/gpt.cuh): the model owns AdamW's moments and makes the update itself.
class CpuGPT : public GPT<float> {
public:
    explicit CpuGPT(const GPTConfig& config)
        : GPT<float>(config), m_(params.size()), v_(params.size()),
          segments_(shard_segments(layout(), shard_layout(params.size(), 1), 0)) {}

    void load_optimizer_state(const std::vector<float>& m, const std::vector<float>& v) {
        m_ = m;
        v_ = v;
    }
    void optimizer_state(std::vector<float>& m, std::vector<float>& v) const {
        m = m_;
        v = v_;
    }
    // One process (run() refuses more), so there are no other ranks to hand finished gradients to.
    void backward(double loss_scale, const GradientsDone&) { GPT<float>::backward(loss_scale); }
    double gradient_norm() const { return std::sqrt(sum_of_squares(grads.data(), grads.size())); }
    void update(const AdamWConfig& adamw, float lr_attn_mult, int step, float grad_scale) {
        adamw_update_shard(params.data(), grads.data(), m_.data(), v_.data(), segments_, step, adamw, lr_attn_mult,
                           grad_scale);
    }
    std::vector<float> logits_at(size_t position) const {
        const float* row = logits() + position * config().padded_vocab_size;
        return std::vector<float>(row, row + config().padded_vocab_size);
    }
    void reserve(int, int) {}  // the CPU model sizes its activations in forward()
    static size_t device_memory_peak() { return 0; }

private:
    std::vector<float> m_, v_;
    std::vector<ShardSegment> segments_;  // one shard: every tensor whole
};

// The device: the model type, a line describing it, and its peak dense bf16 rate for MFU (0: unknown).
struct Device {
    std::string description;
    double peak_flops = 0;
};
#ifdef __CUDACC__
using Model = gpu::GPT;

static Device open_device() {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess || count == 0) {
        std::fprintf(stderr, "train_gpt: no usable CUDA device (%s): use build/train_gpt_cpu\n",
                     status != cudaSuccess ? cudaGetErrorString(status) : "the driver reports none");
        std::exit(1);
    }
    int current = 0;  // the Communicator's choice under data parallel, else 0
    CUDA_CHECK(cudaGetDevice(&current));
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, current));
    // NVIDIA's dense bf16 tensor-core peaks (SXM parts; the H100 PCIe card is slower). The fp32 build
    // runs no bf16 matmuls, so it reports no MFU.
    static const std::pair<const char*, double> peaks[] = {
        {"H100 PCIe", 756e12}, {"H100", 989e12}, {"H200", 989e12}, {"A100", 312e12}};
    Device device{format("%s (sm_%d%d, %.0f GiB), %s", prop.name, prop.major, prop.minor,
                         prop.totalGlobalMem / double(1 << 30), gpu::PRECISION)};
    for (const auto& [name, peak] : peaks)
        if (std::strstr(prop.name, name) && !std::is_same_v<gpu::floatX, float>) {
            device.peak_flops = peak;
            break;
        }
    return device;
}

// Which attention kernels the model runs, for the start-up line.
static const char* attention_kernels(const Model& model) {
    return model.fused_attention() ? " (fused kernels)" : " (straightforward kernels)";
}
#else
using Model = CpuGPT;

static Device open_device() { return {format("CPU, %d threads", omp_get_max_threads())}; }
static const char* attention_kernels(const Model&) { return ""; }
#endif

// --sample-every: `count` tokens after <|endoftext|> (token 0 for other vocabularies), each drawn from
// softmax(logits) at temperature 1 over the whole vocabulary, with the training state's RNG (saved in
// state.bin, so a resumed run draws the same samples). The model reads at most its max_seq_len last tokens.
static std::vector<int> sample(Model& model, Rng& rng, int count) {
    const GPTConfig& c = model.config();
    std::vector<int> tokens = {c.vocab_size == Tokenizer::VOCAB_SIZE ? Tokenizer::EOT : 0};
    for (int i = 0; i < count; i++) {
        const int T = std::min((int)tokens.size(), c.max_seq_len);
        model.forward(tokens.data() + tokens.size() - T, nullptr, 1, T);
        const std::vector<float> logits = model.logits_at(T - 1);
        const float max_logit = *std::max_element(logits.begin(), logits.begin() + c.vocab_size);
        std::vector<double> weights(c.vocab_size);
        double total = 0;
        for (int v = 0; v < c.vocab_size; v++) total += weights[v] = std::exp(double(logits[v]) - max_logit);
        double u = rng.uniform() * total;
        int next = c.vocab_size - 1;  // where rounding leaves u above the last cumulative sum
        for (int v = 0; v < c.vocab_size; v++)
            if ((u -= weights[v]) < 0) {
                next = v;
                break;
            }
        tokens.push_back(next);
    }
    return std::vector<int>(tokens.begin() + 1, tokens.end());
}

static volatile std::sig_atomic_t interrupted = 0;

static std::string human_count(double x) {
    return x >= 1e9 ? format("%.2fG", x / 1e9) : x >= 1e6 ? format("%.2fM", x / 1e6) : x >= 1e3 ? format("%.1fK", x / 1e3) : format("%.0f", x);
}

static std::string human_time(double seconds) {
    int s = (int)seconds;
    return s >= 3600 ? format("%dh%02dm", s / 3600, s / 60 % 60) : s >= 60 ? format("%dm%02ds", s / 60, s % 60) : format("%ds", s);
}

static int run(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc), given;
    Options o = parse(args, &given);
    std::string resume_dir;
    json resumed_config;
    if (!o.resume.empty()) {
        // The checkpoint's saved flags come first, this command line's after them and wins.
        resume_dir = resolve_checkpoint(o.resume);
        try {
            resumed_config = json::parse(read_file(resume_dir + "/config.json"));
            std::vector<std::string> merged = resumed_config.at("argv").get<std::vector<std::string>>();
            merged.insert(merged.end(), args.begin(), args.end());
            o = parse(merged);
        } catch (const json::exception& e) {
            throw Error(format("%s/config.json: %s", resume_dir.c_str(), e.what()));
        }
    }
    check(o.init.empty() || o.resume.empty(), "--init and --resume exclude each other (resume already has weights)");
    if (o.threads > 0) omp_set_num_threads(o.threads);

#ifdef __CUDACC__
    const ProcessGroup group = process_group(o.dist, launcher_environment());
    std::unique_ptr<gpu::Communicator> comm;  // only with several ranks: one process stays the plain trainer
    if (group.distributed()) comm = std::make_unique<gpu::Communicator>(group, o.dist.nccl_timeout);
#else
    const char* one_process = "train_gpt_cpu runs one process; data parallel over several GPUs needs build/train_gpt";
    // --world-size first: process_group() would ask for the --rank and --dist-init of no use here.
    check(o.dist.world_size <= 1, format("--world-size %d: %s", o.dist.world_size, one_process));
    const ProcessGroup group = process_group(o.dist, launcher_environment());
    check(!group.distributed(),
          format("world size %d (%s): %s", group.world_size, group.launcher.c_str(), one_process));
#endif
    const bool main_rank = group.rank == 0;  // prints, logs, samples and saves
    if (!main_rank) check(std::freopen("/dev/null", "w", stdout) != nullptr, "cannot silence the stdout of rank > 0");
    const Device device = open_device();

    DataSources data = load_data(o.data, o.val);
    if (data.example_length) {  // one sample must be exactly one example (its label last)
        check(o.seq == 0 || o.seq == data.example_length,
              format("--seq %d does not fit %s, whose examples are %d tokens long (leave --seq out)", o.seq,
                     o.data.c_str(), data.example_length));
        o.seq = data.example_length;
    } else if (o.seq == 0) {
        o.seq = DEFAULT_SEQ;
    }
    const int B = o.batch, T = o.seq;
    GPTConfig config = config_from(o, data.train->vocab_size());
    std::vector<float> loaded;
    std::string weights_path = !resume_dir.empty() ? resume_dir + "/model.bin" : o.init;
    if (!weights_path.empty()) {
        GPTConfig file = load_model(weights_path, loaded);
        if (!given.empty()) {
            Options current = parse(args);  // this command line alone, without the resumed run's flags
            current.seq = T;
            check_architecture(file, config_from(current, data.train->vocab_size()), given, weights_path);
        }
        check(T <= file.max_seq_len, format("--seq %d exceeds the model's maximum sequence length %d", T, file.max_seq_len));
        check(data.train->vocab_size() <= file.vocab_size, format("the data's vocabulary (%d) is larger than the model's (%d)",
                                                                  data.train->vocab_size(), file.vocab_size));
        config = file;
    }
#ifdef __CUDACC__
    Model model(config, comm && o.dist.zero ? comm.get() : nullptr);  // --zero 1: the ranks share the optimizer state
#else
    Model model(config);
#endif
    if (loaded.empty()) model.init(o.seed);
    else model.load_parameters(loaded);

    long long tokens_per_micro = (long long)B * T * group.world_size;  // one micro-batch of every rank
    long long total_batch = o.total_batch ? o.total_batch : tokens_per_micro;
    check(total_batch % tokens_per_micro == 0,
          format("--total-batch %lld is not a multiple of --batch * --seq%s = %lld", total_batch,
                 group.distributed() ? " * world size" : "", tokens_per_micro));
    const int micro_steps = (int)(total_batch / tokens_per_micro);

    DataLoader train_loader(*data.train, B, T, o.seed, /*shuffle=*/true, group.rank, group.world_size);
    std::unique_ptr<DataLoader> val_loader;
    if (data.val) val_loader = std::make_unique<DataLoader>(*data.val, B, T, o.seed, /*shuffle=*/false);

    // With GPT-2's vocabulary: bits per byte in the validation, and the zero-shot tasks if asked for.
    std::unique_ptr<Tokenizer> tokenizer;
    std::vector<int> token_bytes;
    std::vector<Task> eval_tasks;
    if (config.vocab_size == Tokenizer::VOCAB_SIZE) {
        try {
            tokenizer = std::make_unique<Tokenizer>(Tokenizer::find());
            token_bytes = token_byte_lengths(*tokenizer);
        } catch (const Error& e) {
            if (!o.eval_tasks.empty()) throw;
            std::printf("note: no bits per byte%s without GPT-2's vocabulary files (%s)\n",
                        o.sample_every ? " and samples as token ids" : "", e.what());
        }
    }
    if (!o.eval_tasks.empty()) {
        check(tokenizer != nullptr, format("--eval-tasks needs a model with GPT-2's vocabulary (this one has %d tokens)",
                                           config.vocab_size));
        eval_tasks = load_tasks(o.eval_tasks, o.task_dir);
    }

    TrainState state;
    state.rng.reseed(o.seed);
    if (!resume_dir.empty()) {
        state = load_state(resume_dir + "/state.bin", model.num_parameters());
        // The position counts batches of batch x world size samples, as saved; the same place in the
        // sample order under this run's batch and world size (unchanged when they are the same).
        const json& saved = resumed_config.at("training");
        const DataPosition position = data_position_for_world(
            {state.data_epoch, state.data_position}, saved.at("batch").get<int64_t>() * saved.value("world_size", 1),
            (int64_t)B * group.world_size, (int64_t)train_loader.batches_per_epoch());
        train_loader.set_position(position.epoch, position.position);
        model.load_optimizer_state(state.m, state.v);  // full m and v; under ZeRO-1 each rank keeps its shard
    }
    if (state.step >= o.steps) {
        std::printf("%s is at step %lld, --steps is %d: nothing to train\n", resume_dir.c_str(), (long long)state.step, o.steps);
        return 0;
    }

    // The command line a resume replays: the resumed run's, then this run's flags without PER_LAUNCH_FLAGS.
    std::vector<std::string> saved_argv;
    if (!resume_dir.empty()) saved_argv = resumed_config.at("argv").get<std::vector<std::string>>();
    for (size_t i = 0; i < args.size(); i++) {
        const std::string& arg = args[i];
        auto is = [&](const char* flag) { return arg == flag || arg.rfind(std::string(flag) + "=", 0) == 0; };
        if (std::none_of(std::begin(PER_LAUNCH_FLAGS), std::end(PER_LAUNCH_FLAGS), is)) saved_argv.push_back(arg);
        else if (arg.find('=') == std::string::npos) i++;  // skip its value too
    }

    FILE* log = nullptr;
    if (!o.log.empty() && main_rank) {
        std::filesystem::path parent = std::filesystem::path(o.log).parent_path();
        if (!parent.empty()) std::filesystem::create_directories(parent);
        log = std::fopen(o.log.c_str(), "a");
        check(log != nullptr, format("cannot open --log %s: %s", o.log.c_str(), std::strerror(errno)));
    }
    auto log_line = [&](const json& j) {
        if (!log) return;
        std::fprintf(log, "%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());  // a sample may end inside a UTF-8 character
        std::fflush(log);
    };
    auto save = [&](int64_t step) {
        if (o.out.empty()) return;
        model.optimizer_state(state.m, state.v);  // every rank: under ZeRO-1 these two gather the shards
        const std::vector<float> params = model.parameters();
        if (!main_rank) return;
        state.step = step;
        state.data_epoch = train_loader.epoch();
        state.data_position = train_loader.position();
        json cfg = {{"model", to_json(config)},
                    {"argv", saved_argv},
                    {"training", {{"data", o.data}, {"val", o.val}, {"steps", o.steps}, {"batch", B}, {"seq", T},
                                  {"total_batch", total_batch}, {"lr", o.lr}, {"lr_min_frac", o.lr_min_frac},
                                  {"lr_attn_mult", o.lr_attn_mult}, {"warmup", o.warmup},
                                  {"weight_decay", o.weight_decay}, {"beta1", o.beta1}, {"beta2", o.beta2},
                                  {"eps", o.eps}, {"grad_clip", o.grad_clip}, {"seed", o.seed},
                                  {"world_size", group.world_size}}},
                    {"step", step},
                    {"tokens_seen", state.tokens_seen},
                    {"git_commit", GIT_COMMIT}};
        std::string dir = o.out + "/" + checkpoint_name(step);
        std::filesystem::create_directories(o.out);
        save_checkpoint(dir, config, params, state, cfg);
        std::printf("saved %s\n", dir.c_str());
    };

    std::printf("model: %d layers, %d heads, %d channels, vocab %d, %s params | attention %s%s\n", config.num_layers,
                config.num_heads, config.channels, config.vocab_size, human_count((double)model.num_parameters()).c_str(),
                describe(config.attention).c_str(), attention_kernels(model));
    const std::string ranks =
        group.distributed() ? format(" x %d ranks%s", group.world_size, o.dist.zero ? " (ZeRO-1)" : "") : "";
    std::printf("data: %s (%s tokens), val: %s | batch %d x %d%s, %d micro-steps, %lld tokens/step | %d threads\n",
                data.train->description().c_str(), human_count((double)data.train->total_tokens()).c_str(),
                data.val ? data.val->description().c_str() : "none", B, T, ranks.c_str(), micro_steps, total_batch,
                omp_get_max_threads());
    model.reserve(B, T);
    const size_t memory_used = model.device_memory_peak();
    std::string memory = memory_used ? format(" | %sB of buffers with activations for %d x %d",
                                              human_count((double)memory_used).c_str(), B, T)
                                     : "";
    std::printf("device: %s%s\n", device.description.c_str(), memory.c_str());
    if (!resume_dir.empty()) std::printf("resumed from %s at step %lld\n", resume_dir.c_str(), (long long)state.step);
    // 6 N + 12 L T C model FLOPs per token (the header comment)
    const double flops_per_token = 6.0 * model.num_parameters() + 12.0 * config.num_layers * T * config.channels;

    std::signal(SIGINT, [](int) { interrupted = 1; });
    AdamWConfig adamw;
    adamw.beta1 = o.beta1;
    adamw.beta2 = o.beta2;
    adamw.eps = o.eps;
    adamw.weight_decay = o.weight_decay;
    // With several ranks (train_gpt): reduce_bucket queues the all-reduce (--zero 0) or the reduce to the
    // shard owners (--zero 1) of each bucket the last micro-batch's backward pass finishes,
    // average_gradients waits for them before the norm, mean_over_ranks is what the ranks agree on, and
    // share splits the evaluations over the ranks.
    GradientsDone reduce_bucket;
    std::function<void()> average_gradients = [] {};
    std::function<double(double)> mean_over_ranks = [](double value) { return value; };
    RankShare share;
#ifdef __CUDACC__
    if (comm) {
        reduce_bucket = [&](const std::vector<GradientRange>& ranges) {
            if (o.dist.zero) comm->reduce_to_owners_async(model.grads(), ranges, model.shards(), model.stream());
            else comm->reduce_gradients_async(model.grads(), ranges, model.stream());
        };
        average_gradients = [&] { comm->wait(model.stream()); };
        mean_over_ranks = [&](double value) { return comm->mean_over_ranks(value, model.stream()); };
        share = {group.rank, group.world_size, [&](std::vector<double>& sums) { comm->sum_over_ranks(sums, model.stream()); }};
    }
#endif
    std::vector<int> inputs((size_t)B * T), targets((size_t)B * T);
    const int64_t first_step = state.step;
    double elapsed = 0.0;
    int64_t step = first_step;
    bool stop = false;  // Ctrl-C on any rank: every rank stops after the same step
    for (; step < o.steps && !stop; step++) {
        auto start = std::chrono::steady_clock::now();
        float lr = cosine_lr((int)step, o.steps, o.warmup, o.lr, o.lr_min_frac);
        model.zero_grad();
        double loss = 0.0;
        Accuracy train_accuracy;
        for (int micro = 0; micro < micro_steps; micro++) {
            train_loader.next_batch(inputs.data(), targets.data());
            loss += model.forward(inputs.data(), targets.data(), B, T) / micro_steps;
            train_accuracy += accuracy_of(model, targets);
            model.backward(1.0 / micro_steps, micro == micro_steps - 1 ? reduce_bucket : GradientsDone());
        }
        average_gradients();
        double norm = model.gradient_norm();
        adamw.lr = lr;
        model.update(adamw, o.lr_attn_mult, (int)step + 1, clip_scale(norm, o.grad_clip));
        state.tokens_seen += total_batch;
        loss = mean_over_ranks(loss);
        // On the GPU the update may still be running: its time counts in the next step's (which waits for it).
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        elapsed += ms / 1000.0;
        double tokens_per_s = total_batch / (ms / 1000.0);
        double mfu = device.peak_flops ? flops_per_token * tokens_per_s / (device.peak_flops * group.world_size) : NAN;
        double eta = elapsed / (step - first_step + 1) * (o.steps - step - 1);
        std::printf("step %*lld/%d | loss %.4f | acc %.3f | lr %.2e | norm %.3f | %.1f ms | %s tok/s%s | eta %s\n",
                    (int)std::to_string(o.steps).size(), (long long)step + 1, o.steps, loss,
                    train_accuracy.fraction(), lr, norm, ms, human_count(tokens_per_s).c_str(),
                    std::isnan(mfu) ? "" : format(" | MFU %.1f%%", 100 * mfu).c_str(), human_time(eta).c_str());
        std::fflush(stdout);
        json step_line = {{"step", step + 1}, {"loss", loss}, {"acc", train_accuracy.fraction()}, {"lr", lr},
                          {"grad_norm", norm}, {"ms", ms}, {"tokens_per_s", tokens_per_s}, {"tokens", state.tokens_seen}};
        if (!std::isnan(mfu)) step_line["mfu"] = mfu;
        if (const size_t peak_memory = model.device_memory_peak()) step_line["gpu_memory_peak_bytes"] = peak_memory;
        log_line(step_line);
        if (main_rank && o.sample_every && (step + 1) % o.sample_every == 0) {
            std::vector<int> tokens = sample(model, state.rng, o.sample_tokens);
            std::string text;
            if (tokenizer) {
                text = tokenizer->decode(tokens);
            } else {
                for (int id : tokens) text += (text.empty() ? "" : " ") + std::to_string(id);
            }
            std::printf("step %lld | sample: %s\n", (long long)step + 1, text.c_str());
            log_line({{"step", step + 1}, {"sample", text}});
        }
        bool last = step + 1 == o.steps;
        const bool evaluate_now = (o.eval_every && (step + 1) % o.eval_every == 0) || last;
        if ((val_loader || !eval_tasks.empty()) && evaluate_now) {  // every rank: each does its share
            json line = {{"step", step + 1}};
            if (val_loader) {
                Evaluation val = evaluate(model, *val_loader, o.eval_batches, B, T, token_bytes, share);
                std::printf("step %lld | val loss %.4f | val acc %.4f%s\n", (long long)step + 1, val.loss,
                            val.accuracy.fraction(),
                            std::isnan(val.bits_per_byte) ? "" : format(" | %.4f bits/byte", val.bits_per_byte).c_str());
                line["val_loss"] = val.loss;
                line["val_acc"] = val.accuracy.fraction();
                if (!std::isnan(val.bits_per_byte)) line["val_bpb"] = val.bits_per_byte;
            }
            for (const TaskResult& r : evaluate_tasks(model, eval_tasks, *tokenizer, o.eval_task_limit, share)) {
                std::printf("step %lld | %s\n", (long long)step + 1, summary(r).c_str());
                line[r.task + "_acc"] = r.acc;
                if (!std::isnan(r.acc_norm)) line[r.task + "_acc_norm"] = r.acc_norm;
                if (!std::isnan(r.ppl)) line[r.task + "_ppl"] = r.ppl;
            }
            log_line(line);
        }
        if (o.save_every && (step + 1) % o.save_every == 0 && !last) save(step + 1);
        stop = mean_over_ranks(interrupted) > 0;
    }
    save(step);
    if (const size_t peak_memory = model.device_memory_peak())
        std::printf("peak GPU memory in this process's buffers: %sB\n", human_count((double)peak_memory).c_str());
    if (log) std::fclose(log);
    if (stop) {
        std::fprintf(stderr, "interrupted at step %lld%s\n", (long long)step, o.out.empty() ? "" : " (checkpoint saved)");
        return 130;
    }
    return 0;
}

int main(int argc, char** argv) { return run_reporting_errors(run, argc, argv); }
