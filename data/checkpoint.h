// checkpoint.h: what a training run saves and loads.
//
// A checkpoint is a directory holding three files:
//   model.bin   llm.c's GPT-2 model file: 256 int32 header, then fp32 parameters in llm.c's order.
//               header[0] = 20240326, [1] = 3 (fp32), [2] max_seq_len, [3] vocab_size,
//               [4] num_layers, [5] num_heads, [6] channels, [7] padded_vocab_size.
//               focusgpt's extension uses slots llm.c leaves at zero, so zeros mean "GPT-2 as llm.c
//               has it" and llm.c's gpt2_124M.bin loads unchanged:
//               [8] position (0 learned, 1 rope), [9] rope base, [10] attention kind (0 softmax,
//               1 elastic, 2 topk, 3 window, 4 block), [11] attention k, [12] global tokens,
//               [13] bias window. Tensors the model does not use are left out (wpe under RoPE);
//               theta [L, NH] and the bias table [L, NH, W] are appended.
//   state.bin   what --resume needs to continue bit-exactly: step, tokens seen, RNG, data
//               position, and the AdamW moments m and v (fp32, same order as the parameters).
//   config.json the same architecture in readable form, plus the training arguments, step,
//               tokens seen and the git commit (nlohmann/json).
// The directory is written under a temporary name and renamed into place, so an interrupted save
// never leaves a half-written checkpoint where --resume would find it.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../layers/gpt.h"
#include "io.h"

namespace focus {

constexpr int MODEL_MAGIC = 20240326;
constexpr int MODEL_VERSION_FP32 = 3;
constexpr int MODEL_VERSION_BF16 = 5;  // llm.c's bf16 files: recognised, refused with a clear message
constexpr int64_t STATE_MAGIC = 0x31545353554346;  // "FCUSST1"
constexpr int64_t STATE_VERSION = 1;

// ---- model.bin -------------------------------------------------------------------------------------

inline void model_header(int32_t header[256], const GPTConfig& c) {
    std::fill(header, header + 256, 0);
    const AttentionConfig& a = c.attention;
    header[0] = MODEL_MAGIC;
    header[1] = MODEL_VERSION_FP32;
    header[2] = c.max_seq_len;
    header[3] = c.vocab_size;
    header[4] = c.num_layers;
    header[5] = c.num_heads;
    header[6] = c.channels;
    header[7] = c.padded_vocab_size;
    header[8] = a.position == PositionKind::rope ? 1 : 0;
    header[9] = a.position == PositionKind::rope ? (int32_t)std::lround(a.rope_base) : 0;
    header[10] = static_cast<int32_t>(a.kind);
    header[11] = a.k;
    header[12] = a.global_tokens;
    header[13] = a.bias_window;
}

inline GPTConfig config_from_header(const int32_t header[256], const std::string& path) {
    check(header[0] == MODEL_MAGIC,
          format("%s is not a GPT-2 model file (magic %d, expected %d)", path.c_str(), header[0], MODEL_MAGIC));
    check(header[1] != MODEL_VERSION_BF16,
          format("%s holds bf16 weights (llm.c version 5); only fp32 model files (version 3) load", path.c_str()));
    check(header[1] == MODEL_VERSION_FP32,
          format("%s: unsupported model file version %d (expected 3)", path.c_str(), header[1]));
    GPTConfig c;
    c.max_seq_len = header[2];
    c.vocab_size = header[3];
    c.num_layers = header[4];
    c.num_heads = header[5];
    c.channels = header[6];
    c.padded_vocab_size = header[7];
    check(header[8] == 0 || header[8] == 1, format("%s: bad position kind %d", path.c_str(), header[8]));
    check(header[10] >= 0 && header[10] <= 4, format("%s: bad attention kind %d", path.c_str(), header[10]));
    AttentionConfig& a = c.attention;
    a.position = header[8] ? PositionKind::rope : PositionKind::learned;
    if (header[8]) a.rope_base = (float)header[9];
    a.kind = static_cast<AttentionKind>(header[10]);
    a.k = header[11];
    a.global_tokens = header[12];
    a.bias_window = header[13];
    try {
        validate(c);
    } catch (const Error& e) {
        throw Error(format("%s: invalid model header: %s", path.c_str(), e.what()));
    }
    return c;
}

template <typename Real>
void save_model(const std::string& path, const GPTConfig& config, const std::vector<Real>& params) {
    int32_t header[256];
    model_header(header, config);
    std::vector<float> fp32(params.begin(), params.end());
    AtomicFile file(path);
    file.write(header, sizeof header);
    file.write(fp32.data(), fp32.size() * sizeof(float));
    file.commit();
}

// The configuration a model file's header describes (`bytes` starts with the file's first 1024 bytes),
// checked against the file's size so that a truncated file is caught before anything is loaded.
inline GPTConfig model_file_config(const std::string& bytes, size_t file_size, const std::string& path) {
    int32_t header[256];
    check(bytes.size() >= sizeof header,
          format("%s is not a GPT-2 model file (%zu bytes, shorter than its header)", path.c_str(), bytes.size()));
    std::memcpy(header, bytes.data(), sizeof header);
    GPTConfig config = config_from_header(header, path);
    size_t count = parameter_count(parameter_layout(config));
    size_t expected = sizeof header + count * sizeof(float);
    check(file_size == expected,
          format("%s: %zu bytes, but its header describes %zu parameters (%zu bytes): truncated or corrupt",
                 path.c_str(), file_size, count, expected));
    return config;
}

// A model file's configuration without its parameters (eval_gpt checks every checkpoint this way first).
inline GPTConfig read_model_config(const std::string& path) {
    std::string header = read_file(path, 256 * sizeof(int32_t));
    return model_file_config(header, std::filesystem::file_size(path), path);
}

// Reads a model file's configuration and parameters (converted to Real).
template <typename Real>
GPTConfig load_model(const std::string& path, std::vector<Real>& params) {
    std::string bytes = read_file(path);
    GPTConfig config = model_file_config(bytes, bytes.size(), path);
    const float* data = reinterpret_cast<const float*>(bytes.data() + 256 * sizeof(int32_t));
    params.assign(data, data + parameter_count(parameter_layout(config)));
    return config;
}

// ---- state.bin -------------------------------------------------------------------------------------

struct TrainState {
    int64_t step = 0;         // optimizer steps done
    int64_t tokens_seen = 0;  // training tokens consumed
    Rng rng;
    int64_t data_epoch = 0, data_position = 0;  // the training data loader's place
    std::vector<float> m, v;  // AdamW moments, one per parameter
};

inline void save_state(const std::string& path, const TrainState& s) {
    check(s.m.size() == s.v.size(), "AdamW moment buffers differ in size");
    int64_t header[16] = {STATE_MAGIC, STATE_VERSION, s.step, s.tokens_seen, (int64_t)s.m.size(),
                          s.data_epoch, s.data_position};
    for (int i = 0; i < 4; i++) header[7 + i] = (int64_t)s.rng.s[i];
    AtomicFile file(path);
    file.write(header, sizeof header);
    file.write(s.m.data(), s.m.size() * sizeof(float));
    file.write(s.v.data(), s.v.size() * sizeof(float));
    file.commit();
}

inline TrainState load_state(const std::string& path, size_t num_params) {
    std::string bytes = read_file(path);
    int64_t header[16];
    check(bytes.size() >= sizeof header, format("%s is not a training state file (too short)", path.c_str()));
    std::memcpy(header, bytes.data(), sizeof header);
    check(header[0] == STATE_MAGIC, format("%s is not a training state file (bad magic)", path.c_str()));
    check(header[1] == STATE_VERSION,
          format("%s: unsupported state version %lld", path.c_str(), (long long)header[1]));
    check(header[4] == (int64_t)num_params,
          format("%s holds optimizer state for %lld parameters, the model has %zu", path.c_str(),
                 (long long)header[4], num_params));
    size_t expected = sizeof header + 2 * num_params * sizeof(float);
    check(bytes.size() == expected, format("%s: %zu bytes, expected %zu: truncated or corrupt", path.c_str(),
                                           bytes.size(), expected));
    TrainState s;
    s.step = header[2];
    s.tokens_seen = header[3];
    s.data_epoch = header[5];
    s.data_position = header[6];
    for (int i = 0; i < 4; i++) s.rng.s[i] = (uint64_t)header[7 + i];
    const float* moments = reinterpret_cast<const float*>(bytes.data() + sizeof header);
    s.m.assign(moments, moments + num_params);
    s.v.assign(moments + num_params, moments + 2 * num_params);
    return s;
}

// ---- config.json -----------------------------------------------------------------------------------

inline nlohmann::json to_json(const GPTConfig& c) {
    const AttentionConfig& a = c.attention;
    return {{"max_seq_len", c.max_seq_len},
            {"vocab_size", c.vocab_size},
            {"padded_vocab_size", c.padded_vocab_size},
            {"num_layers", c.num_layers},
            {"num_heads", c.num_heads},
            {"channels", c.channels},
            {"attention",
             {{"kind", to_string(a.kind)},
              {"k", a.k},
              {"global_tokens", a.global_tokens},
              {"position", to_string(a.position)},
              {"rope_base", a.rope_base},
              {"bias_window", a.bias_window}}}};
}

// ---- checkpoint directories --------------------------------------------------------------------------

namespace fs = std::filesystem;

inline std::string checkpoint_name(int64_t step) { return format("ckpt_%08lld", (long long)step); }

// Writes DIR/{model.bin,state.bin,config.json} atomically as a whole: into DIR.tmp.<pid>, then
// renamed over DIR (a previous DIR is moved aside first and removed after).
template <typename Real>
void save_checkpoint(const std::string& dir, const GPTConfig& config, const std::vector<Real>& params,
                     const TrainState& state, const nlohmann::json& config_json) {
    fs::path target(dir), tmp(dir + ".tmp." + std::to_string(getpid()));
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp, ec);
    check(!ec, format("cannot create %s: %s", tmp.c_str(), ec.message().c_str()));
    save_model((tmp / "model.bin").string(), config, params);
    save_state((tmp / "state.bin").string(), state);
    AtomicFile json_file((tmp / "config.json").string());
    std::string text = config_json.dump(2) + "\n";
    json_file.write(text.data(), text.size());
    json_file.commit();
    fs::path old(dir + ".old." + std::to_string(getpid()));
    bool replaced = fs::exists(target);
    if (replaced) fs::rename(target, old, ec);
    check(!ec, format("cannot move the old %s aside: %s", dir.c_str(), ec.message().c_str()));
    fs::rename(tmp, target, ec);
    check(!ec, format("cannot rename %s to %s: %s", tmp.c_str(), dir.c_str(), ec.message().c_str()));
    if (replaced) fs::remove_all(old, ec);
}

// --resume takes a checkpoint directory or a run's --out directory; for the latter, its newest
// complete ckpt_* (temporary directories from interrupted saves are ignored).
inline std::string resolve_checkpoint(const std::string& path) {
    check(fs::is_directory(path), format("--resume %s: no such directory", path.c_str()));
    if (fs::exists(fs::path(path) / "model.bin")) return path;
    std::string best;
    for (const auto& entry : fs::directory_iterator(path)) {
        std::string name = entry.path().filename().string();
        if (name.size() == 13 && name.rfind("ckpt_", 0) == 0 && entry.is_directory() &&
            fs::exists(entry.path() / "model.bin") && name > fs::path(best).filename().string())
            best = entry.path().string();
    }
    check(!best.empty(), format("--resume %s: neither a checkpoint (model.bin) nor a run directory with "
                                "ckpt_* checkpoints", path.c_str()));
    return best;
}

}  // namespace focus
