// eval_gpt.cu: scores checkpoints and measures how their attention is allocated.
//
//   eval_gpt --ckpt DIR [DIR ...] [--val SPEC] [--tasks hellaswag,piqa,...] [--json OUT]
//
// For each checkpoint (a ckpt_* directory, a run's --out directory, or a bare model.bin such as
// llm.c's gpt2_124M.bin):
//   validation  loss, perplexity, next-token accuracy and bits per byte on --val, or on the
//               validation data recorded in the checkpoint's config.json (data/evaluation.h, the
//               code the trainer's in-loop evaluation runs, so the numbers agree)
//   tasks       zero-shot multiple-choice accuracy (acc, acc_norm) and LAMBADA (data/benchmarks.h)
//   attention   sparsity, sinks, row mass, entropy, logit dispersion per layer and head, the
//               representational-collapse measures, learned tau and bias (attention/statistics.h)
//   maps        with --maps L:H,... the attention weights of those heads on --map-text, for
//               scripts/plot.py heatmap
// Several checkpoints print one comparison table, one column per checkpoint. --json writes every
// number in one document.
// Built by nvcc, the model runs on the GPU when there is one (layers/gpt.cuh: the fused attention kernels
// for the loss and the tasks; the straightforward ones, which keep the attention probabilities, for the
// statistics and maps) and on the CPU otherwise (--device chooses); compiled as C++ it runs on the CPU.
// Both run the same evaluation code, so their numbers agree to the GPU's precision (bf16).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>
#include <nlohmann/json.hpp>
#include <omp.h>

#include "attention/statistics.h"
#include "data/checkpoint.h"
#include "data/evaluation.h"
#ifdef __CUDACC__
#include "layers/gpt.cuh"
#endif

using namespace focus;
using nlohmann::json;
namespace fs = std::filesystem;

struct Options {
    std::vector<std::string> checkpoints, labels;
    std::string val, tasks, task_dir = "../shared/data", json_out, maps, map_text, device = "auto";
    int val_batches = 20, batch = 0, seq = 0, task_limit = 0, attention_batches = 2, threads = 0;
};

// A checkpoint on disk: its model file, the configuration in that file's header and, for our own
// checkpoints, its config.json.
struct Checkpoint {
    std::string path, label;
    GPTConfig model;
    json config;  // empty for a bare model file
};

static Checkpoint open_checkpoint(const std::string& path, const std::string& label) {
    Checkpoint c;
    if (fs::is_regular_file(path)) {
        c.path = path;
    } else {
        std::string dir = resolve_checkpoint(path);
        c.path = dir + "/model.bin";
        if (fs::exists(dir + "/config.json")) {
            try {
                c.config = json::parse(read_file(dir + "/config.json"));
            } catch (const json::exception& e) {
                throw Error(format("%s/config.json: %s", dir.c_str(), e.what()));
            }
        }
    }
    c.model = read_model_config(c.path);
    // The run's name reads better than ckpt_00000300: runs/lazy/ckpt_00000300 -> "lazy".
    fs::path p = fs::path(c.path).parent_path();
    std::string run = p.filename().string().rfind("ckpt_", 0) == 0 ? p.parent_path().filename().string() : "";
    c.label = !label.empty() ? label : !run.empty() ? run : fs::path(path).filename().string();
    return c;
}

// --maps "L:H,L:H,...": the (layer, head) pairs, checked against the model.
static std::vector<std::pair<int, int>> map_heads(const std::string& maps, const GPTConfig& c) {
    std::vector<std::pair<int, int>> heads;
    std::stringstream list(maps);
    for (std::string item; std::getline(list, item, ',');) {
        int layer = -1, head = -1;
        check(std::sscanf(item.c_str(), "%d:%d", &layer, &head) == 2 && layer >= 0 && layer < c.num_layers &&
                  head >= 0 && head < c.num_heads,
              format("--maps: '%s' is not LAYER:HEAD with layer < %d and head < %d", item.c_str(), c.num_layers,
                     c.num_heads));
        heads.emplace_back(layer, head);
    }
    return heads;
}

// The options that depend on the model, checked for every checkpoint before any slow work (loading
// benchmark files, evaluating an earlier checkpoint).
static void check_options_fit(const Checkpoint& ckpt, const Options& o) {
    const GPTConfig& c = ckpt.model;
    const bool gpt2_vocabulary = c.vocab_size == Tokenizer::VOCAB_SIZE;
    check(o.tasks.empty() || gpt2_vocabulary, format("--tasks needs models with GPT-2's vocabulary (%s has %d tokens)",
                                                     ckpt.label.c_str(), c.vocab_size));
    check(o.map_text.empty() || gpt2_vocabulary, format("--map-text needs models with GPT-2's vocabulary (%s has %d tokens)",
                                                        ckpt.label.c_str(), c.vocab_size));
    check(o.seq <= c.max_seq_len, format("--seq %d exceeds %s's maximum sequence length %d", o.seq, ckpt.label.c_str(),
                                         c.max_seq_len));
    map_heads(o.maps, c);
}

// The attention weights of the heads --maps names, on --map-text (GPT-2 vocabulary) or, for other
// vocabularies, on the first validation sequence.
template <typename Model>
static json attention_maps(Model& model, const Options& o, const Tokenizer* tokenizer,
                           const std::vector<int>& first_sequence) {
    json maps = json::array();
    if (o.maps.empty()) return maps;
    const GPTConfig& c = model.config();
    std::vector<int> tokens = o.map_text.empty() ? first_sequence : tokenizer->encode(o.map_text);
    check(!tokens.empty(), "--maps: no tokens to show");
    if ((int)tokens.size() > c.max_seq_len) tokens.resize(c.max_seq_len);
    const int T = (int)tokens.size(), NH = c.num_heads;
    model.forward(tokens.data(), nullptr, 1, T);
    std::vector<std::string> labels;
    for (int id : tokens) labels.push_back(tokenizer ? tokenizer->decode_token(id) : std::to_string(id));
    const std::vector<float> params = model.parameters();
    ParameterTensors<const float> p(params.data(), model.layout());
    std::vector<float> weights((size_t)NH * T * T);
    for (const auto& [layer, head] : map_heads(o.maps, c)) {
        const auto probs = model.attention_probs(layer);
        attention_weights(c.attention, weights.data(), host_data(probs), p.theta ? p.theta + (size_t)layer * NH : nullptr,
                          1, T, NH);
        json rows = json::array();
        for (int t = 0; t < T; t++) {
            const float* row = weights.data() + ((size_t)head * T + t) * T;
            rows.push_back(std::vector<float>(row, row + T));
        }
        maps.push_back({{"layer", layer}, {"head", head}, {"tokens", labels}, {"weights", rows}});
    }
    return maps;
}

// The attention statistics and maps read every layer's probabilities: the CPU model always keeps them,
// the GPU model only on request (its fused kernels keep none).
static void keep_attention_probs(GPT<float>&) {}
#ifdef __CUDACC__
static void keep_attention_probs(gpu::GPT& model) { model.keep_attention_probs(); }
#endif

template <typename Model>
static json evaluate_checkpoint(const Checkpoint& ckpt, const Options& o, const std::vector<Task>& tasks) {
    std::vector<float> params;
    GPTConfig config = load_model(ckpt.path, params);
    auto model = std::make_unique<Model>(config);
    model->load_parameters(params);
    const json training = ckpt.config.value("training", json::object());
    const int T = o.seq ? o.seq : training.value("seq", std::min(config.max_seq_len, 1024));
    const int B = o.batch ? o.batch : training.value("batch", 8);
    check(T <= config.max_seq_len, format("%s: sequence length %d exceeds the model's maximum %d", ckpt.label.c_str(), T,
                                          config.max_seq_len));

    std::unique_ptr<Tokenizer> tokenizer;
    if (config.vocab_size == Tokenizer::VOCAB_SIZE) tokenizer = std::make_unique<Tokenizer>(Tokenizer::find());

    json result = {{"path", ckpt.path},
                   {"label", ckpt.label},
                   {"step", ckpt.config.value("step", 0)},
                   {"config", ckpt.config.empty() ? json{{"model", to_json(config)}} : ckpt.config},
                   {"parameters", params.size()}};
    std::printf("== %s (%s): %d layers, %d heads, %d channels, attention %s\n", ckpt.label.c_str(), ckpt.path.c_str(),
                config.num_layers, config.num_heads, config.channels, describe(config.attention).c_str());

    std::string train_spec = training.value("data", ""), val_spec = o.val.empty() ? training.value("val", "") : o.val;
    check(!train_spec.empty() || !val_spec.empty(),
          format("%s has no config.json naming its data: give --val", ckpt.path.c_str()));
    std::unique_ptr<TokenData> val = validation_data(train_spec, val_spec);
    check(val != nullptr, format("%s: its run had no validation data: give --val", ckpt.label.c_str()));
    check(val->vocab_size() <= config.vocab_size,
          format("%s: the validation data's vocabulary (%d) is larger than the model's (%d)", ckpt.label.c_str(),
                 val->vocab_size(), config.vocab_size));
    DataLoader loader(*val, B, T, 0, /*shuffle=*/false);
    std::vector<int> token_bytes = tokenizer ? token_byte_lengths(*tokenizer) : std::vector<int>{};
    Evaluation e = evaluate(*model, loader, o.val_batches, B, T, token_bytes);
    result["validation"] = {{"data", val->description()},  {"loss", e.loss},
                            {"perplexity", std::exp(e.loss)}, {"bits_per_byte", e.bits_per_byte},
                            {"accuracy", e.accuracy.fraction()}, {"tokens", e.tokens}};
    std::printf("validation on %s: loss %.4f | perplexity %.2f | accuracy %.4f%s (%zu tokens)\n",
                val->description().c_str(), e.loss, std::exp(e.loss), e.accuracy.fraction(),
                std::isnan(e.bits_per_byte) ? "" : format(" | %.4f bits/byte", e.bits_per_byte).c_str(), e.tokens);

    json task_results = json::object();
    if (!tasks.empty()) {
        for (const TaskResult& r : evaluate_tasks(*model, tasks, *tokenizer, o.task_limit)) {
            std::printf("%s\n", summary(r).c_str());
            task_results[r.task] = to_json(r);
        }
    }
    result["tasks"] = task_results;

    // The attention statistics run on the first validation batches.
    std::vector<std::vector<int>> batches;
    std::vector<int> inputs((size_t)B * T), targets((size_t)B * T);
    loader.set_position(0, 0);
    for (size_t i = 0; i < std::min<size_t>(o.attention_batches, loader.batches_per_epoch()); i++) {
        loader.next_batch(inputs.data(), targets.data());
        batches.push_back(inputs);
    }
    model.reset();  // before the next one is made, so that the two never hold the GPU's memory together
    model = std::make_unique<Model>(config);
    keep_attention_probs(*model);
    model->load_parameters(params);
    AttentionReport report = measure_attention(*model, batches, B, T);
    result["attention"] = report;
    std::printf("attention on %zu sequences of %d tokens:\n%s", batches.size() * B, T, attention_table(report).c_str());
    result["attention_maps"] = attention_maps(*model, o, tokenizer.get(), std::vector<int>(batches[0].begin(), batches[0].begin() + T));
    std::printf("\n");
    return result;
}

// One row per number, one column per checkpoint.
static void print_comparison(const json& checkpoints) {
    struct Row {
        std::string name, pointer;
        const char* fmt;
    };
    std::vector<Row> rows = {{"step", "/step", "%.0f"},
                             {"parameters", "/parameters", "%.0f"},
                             {"val loss", "/validation/loss", "%.4f"},
                             {"perplexity", "/validation/perplexity", "%.2f"},
                             {"bits/byte", "/validation/bits_per_byte", "%.4f"},
                             {"val accuracy", "/validation/accuracy", "%.4f"}};
    std::set<std::string> task_names;
    for (const json& c : checkpoints)
        for (const auto& [task, value] : c["tasks"].items()) task_names.insert(task);
    for (const std::string& task : task_names) {
        rows.push_back({task + " acc", "/tasks/" + task + "/acc", "%.4f"});
        rows.push_back({task == "lambada" ? task + " ppl" : task + " acc_norm",
                        "/tasks/" + task + (task == "lambada" ? "/ppl" : "/acc_norm"), "%.4f"});
    }
    std::vector<Row> attention = {{"sparsity", "/attention/overall/sparsity", "%.4f"},
                                  {"sink (first-token weight)", "/attention/overall/sink", "%.4f"},
                                  {"share of sink heads", "/attention/overall/sink_head_share", "%.3f"},
                                  {"row mass", "/attention/overall/row_mass", "%.4f"},
                                  {"empty rows", "/attention/overall/empty_rows", "%.4f"},
                                  {"entropy", "/attention/overall/entropy", "%.3f"},
                                  {"normalised entropy", "/attention/overall/normalised_entropy", "%.3f"},
                                  {"logit dispersion", "/attention/overall/dispersion", "%.3f"},
                                  {"hidden cosine", "/attention/hidden/mean_pairwise_cosine", "%.4f"},
                                  {"hidden variance", "/attention/hidden/mean_feature_variance", "%.4f"}};
    rows.insert(rows.end(), attention.begin(), attention.end());

    const int name_width = 28, width = 16;
    std::printf("%-*s", name_width, "");
    for (const json& c : checkpoints) std::printf("%*s", width, c["label"].get<std::string>().substr(0, width - 1).c_str());
    std::printf("\n%-*s", name_width, "attention");
    for (const json& c : checkpoints)
        std::printf("%*s", width, c["config"]["model"]["attention"]["kind"].get<std::string>().c_str());
    std::printf("\n");
    for (const Row& row : rows) {
        std::printf("%-*s", name_width, row.name.c_str());
        for (const json& c : checkpoints) {
            json::json_pointer at(row.pointer);
            const json* value = c.contains(at) ? &c[at] : nullptr;
            bool known = value && value->is_number() && !std::isnan(value->get<double>());
            std::printf("%*s", width, known ? format(row.fmt, value->get<double>()).c_str() : "-");
        }
        std::printf("\n");
    }
}

// --device: whether the models run on the GPU; prints where they run.
static bool use_gpu(const std::string& device) {
#ifdef __CUDACC__
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    const bool present = status == cudaSuccess && count > 0;
    check(present || device != "gpu", format("--device gpu: no usable CUDA device (%s)",
                                             status != cudaSuccess ? cudaGetErrorString(status) : "the driver reports none"));
    if (present && device != "cpu") {
        cudaDeviceProp prop;
        CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
        std::printf("device: %s (sm_%d%d), %s\n", prop.name, prop.major, prop.minor, gpu::PRECISION);
        return true;
    }
#else
    check(device != "gpu", "--device gpu: this eval_gpt was compiled without CUDA (build it with nvcc installed)");
#endif
    std::printf("device: CPU, %d threads, fp32\n", omp_get_max_threads());
    return false;
}

static int run(int argc, char** argv) {
    Options o;
    CLI::App app("focusgpt evaluation: loss, zero-shot tasks and attention allocation of checkpoints", "eval_gpt");
    app.add_option("--ckpt", o.checkpoints, "checkpoint directories, run directories or model.bin files")->required();
    app.add_option("--labels", o.labels, "column names for the checkpoints (default: the run directory names)");
    app.add_option("--val", o.val, "validation data (default: what the checkpoint's run validated on)");
    app.add_option("--val-batches", o.val_batches, "validation batches")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--batch", o.batch, "sequences per batch (default: the run's --batch)")->check(CLI::PositiveNumber);
    app.add_option("--seq", o.seq, "sequence length (default: the run's --seq)")->check(CLI::PositiveNumber);
    app.add_option("--tasks", o.tasks, "zero-shot tasks: hellaswag,piqa,winogrande,arc_easy,arc_challenge,openbookqa,boolq,lambada (NAME=FILE for another file)");
    app.add_option("--task-dir", o.task_dir, "folder holding the benchmark files")->capture_default_str();
    app.add_option("--task-limit", o.task_limit, "items per task (0 = all)")->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--attention-batches", o.attention_batches, "validation batches for the attention statistics")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--maps", o.maps, "attention maps of LAYER:HEAD[,LAYER:HEAD...] into the JSON");
    app.add_option("--map-text", o.map_text, "text the maps are drawn on (default: the first validation sequence)");
    app.add_option("--json", o.json_out, "write every number to this JSON file");
    app.add_option("--threads", o.threads, "CPU threads (0 = OpenMP's default)")->check(CLI::NonNegativeNumber);
    app.add_option("--device", o.device, "auto (the GPU when there is one), gpu or cpu")->check(CLI::IsMember({"auto", "gpu", "cpu"}))->capture_default_str();
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
        std::printf("%s", app.help().c_str());
        return 0;
    } catch (const CLI::ParseError& e) {
        throw Error(format("%s (see --help)", e.what()));
    }
    check(o.labels.empty() || o.labels.size() == o.checkpoints.size(),
          format("--labels names %zu columns for %zu checkpoints", o.labels.size(), o.checkpoints.size()));
    if (o.threads > 0) omp_set_num_threads(o.threads);

    [[maybe_unused]] const bool gpu = use_gpu(o.device);
    // Every option and checkpoint is checked, and the benchmark files read, before the first evaluation.
    parse_task_list(o.tasks);
    std::vector<Checkpoint> opened;
    for (size_t i = 0; i < o.checkpoints.size(); i++) {
        opened.push_back(open_checkpoint(o.checkpoints[i], o.labels.empty() ? "" : o.labels[i]));
        check_options_fit(opened.back(), o);
    }
    std::vector<Task> tasks = load_tasks(o.tasks, o.task_dir);
    json checkpoints = json::array();
    for (const Checkpoint& ckpt : opened) {
        try {
#ifdef __CUDACC__
            if (gpu) {
                checkpoints.push_back(evaluate_checkpoint<gpu::GPT>(ckpt, o, tasks));
                continue;
            }
#endif
            checkpoints.push_back(evaluate_checkpoint<GPT<float>>(ckpt, o, tasks));
        } catch (const json::exception& e) {
            throw Error(format("%s: config.json: %s", ckpt.path.c_str(), e.what()));
        }
    }
    if (checkpoints.size() > 1) print_comparison(checkpoints);
    if (!o.json_out.empty()) {
        // a map token may be part of a UTF-8 character: replace such bytes rather than fail
        std::string text = json{{"checkpoints", checkpoints}}.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
        AtomicFile file(o.json_out);
        file.write(text.data(), text.size());
        file.commit();
        std::printf("wrote %s\n", o.json_out.c_str());
    }
    return 0;
}

int main(int argc, char** argv) { return run_reporting_errors(run, argc, argv); }
