// evaluation.h: the numbers a checkpoint is judged by, computed by the same code in the trainer's
// in-loop evaluations and in eval_gpt, so the two always agree.
//   validation: mean cross-entropy per target token over the first N batches of the validation
//               data, perplexity exp(loss), next-token accuracy, and bits per byte
//               = sum of NLL / ln 2 / (UTF-8 bytes of the target tokens), which compares models
//               with different tokenizers; only defined for GPT-2 vocabulary data.
//   zero-shot:  the multiple-choice benchmarks of data/benchmarks.h, by name or name=path.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "benchmarks.h"
#include "sources.h"

namespace focus {

// The functions below take the CPU model GPT<Real> or the GPU model gpu::GPT (layers/gpt.cuh).

// Next-token accuracy of the last forward() (before backward(), which overwrites the logits): the
// argmax rule of tasks.h's accuracy(), on predictions() (benchmarks.h; computed on the GPU for gpu::GPT).
template <typename Model>
Accuracy accuracy_of(Model& model, const std::vector<int>& targets) {
    const std::vector<int> predicted = predictions(model, targets.size());
    Accuracy a;
    for (size_t i = 0; i < targets.size(); i++) {
        if (targets[i] < 0) continue;
        a.correct += predicted[i] == targets[i];
        a.counted++;
    }
    return a;
}

struct Evaluation {
    double loss = NAN;           // mean NLL per target token
    double bits_per_byte = NAN;  // NaN without byte lengths
    Accuracy accuracy;
    size_t tokens = 0;           // target tokens scored
};

// UTF-8 bytes of every GPT-2 token, for bits per byte.
inline std::vector<int> token_byte_lengths(const Tokenizer& tokenizer) {
    std::vector<int> bytes(tokenizer.vocab_size());
    for (int id = 0; id < tokenizer.vocab_size(); id++) bytes[id] = (int)tokenizer.decode_token(id).size();
    return bytes;
}

// The first `batches` batches of the validation data (fewer if it has fewer). token_bytes empty:
// no bits per byte. With a RankShare each rank runs its share of the batches and the sums are added
// over the ranks (the same batches as one process, so the same numbers up to the order of the sum).
template <typename Model>
Evaluation evaluate(Model& model, DataLoader& val, int batches, int B, int T,
                    const std::vector<int>& token_bytes = {}, const RankShare& share = {}) {
    std::vector<int> inputs((size_t)B * T), targets((size_t)B * T);
    val.set_position(0, 0);
    int n = (int)std::min<size_t>(batches, val.batches_per_epoch());
    double nll = 0.0;
    size_t bytes = 0, tokens = 0;
    Accuracy accuracy;
    for (int i = 0; i < n; i++) {
        val.next_batch(inputs.data(), targets.data());
        if (!share.mine(i)) continue;
        model.forward(inputs.data(), targets.data(), B, T);
        accuracy += accuracy_of(model, targets);
        for (size_t j = 0; j < targets.size(); j++) {
            if (targets[j] < 0) continue;
            nll += model.losses()[j];
            tokens++;
            if (!token_bytes.empty()) bytes += token_bytes.at(targets[j]);
        }
    }
    // counts below 2^53 add up exactly as doubles
    std::vector<double> totals = {nll, double(tokens), double(bytes), double(accuracy.correct), double(accuracy.counted)};
    share.add_up(totals);
    Evaluation result;
    result.tokens = size_t(totals[1]);
    result.accuracy.correct = size_t(totals[3]);
    result.accuracy.counted = size_t(totals[4]);
    result.loss = totals[0] / totals[1];
    if (totals[2] > 0) result.bits_per_byte = totals[0] / std::log(2.0) / totals[2];
    return result;
}

// "hellaswag,piqa=my/piqa.jsonl": (name, file) pairs, the file empty for a task's default one; an unknown
// name is an error. Nothing is read.
inline std::vector<std::pair<std::string, std::string>> parse_task_list(const std::string& list) {
    std::vector<std::pair<std::string, std::string>> items;
    size_t start = 0;
    while (start <= list.size()) {
        size_t end = list.find(',', start);
        if (end == std::string::npos) end = list.size();
        std::string item = list.substr(start, end - start);
        if (!item.empty()) {
            size_t eq = item.find('=');
            items.emplace_back(item.substr(0, eq), eq == std::string::npos ? "" : item.substr(eq + 1));
            task_spec(items.back().first);  // throws for an unknown name
        }
        start = end + 1;
    }
    return items;
}

inline std::vector<Task> load_tasks(const std::string& list, const std::string& data_dir) {
    std::vector<Task> tasks;
    for (const auto& [name, file] : parse_task_list(list)) tasks.push_back(load_task(name, file, data_dir));
    return tasks;
}

template <typename Model>
std::vector<TaskResult> evaluate_tasks(Model& model, const std::vector<Task>& tasks, const Tokenizer& tokenizer,
                                       size_t limit, const RankShare& share = {}) {
    check(tasks.empty() || model.config().vocab_size == Tokenizer::VOCAB_SIZE,
          format("zero-shot tasks need a GPT-2 vocabulary model (this one has %d tokens)", model.config().vocab_size));
    ModelScorer<Model> scorer(model);
    std::vector<TaskResult> results;
    for (const Task& task : tasks) results.push_back(evaluate_task(task, scorer, tokenizer, limit, share));
    return results;
}

inline nlohmann::json to_json(const TaskResult& r) {
    nlohmann::json j = {{"acc", r.acc}, {"count", r.count}, {"skipped", r.skipped}, {"too_long", r.too_long}};
    if (std::isnan(r.acc_norm)) j["ppl"] = r.ppl;
    else j["acc_norm"] = r.acc_norm;
    return j;
}

}  // namespace focus
