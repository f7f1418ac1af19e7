// benchmarks.h: zero-shot benchmarks scored by the log-likelihood a language model gives a completion.
// Loaders for HellaSwag, PIQA, WinoGrande, ARC-Easy, ARC-Challenge, OpenBookQA, BoolQ and LAMBADA, a
// registry of task names and default files, and the scoring loop.
//
// Every item is a list of choices, each a (context, continuation) pair. A choice's score is
//   loglik = sum over the continuation's tokens c_i of log p(c_i | context, c_<i)
// and an item counts as correct when its gold choice has the highest score (the first one on ties):
//   acc       by loglik
//   acc_norm  by loglik / (continuation length in characters), lm-eval-harness's normalisation, which
//             removes the advantage a short continuation has (characters are UTF-8 code points, as
//             Python's len() counts them; bytes would differ only for non-ASCII text)
// LAMBADA items have a single choice (the passage without its last word | " " + that word):
//   acc       the model's greedy (argmax) prediction reproduces every token of the word
//   ppl       exp(mean over items of the word's summed negative log-likelihood): a per-word
//             perplexity, lm-eval-harness's lambada_openai convention, so it compares with its
//             published numbers (a per-token perplexity would be lower)
//
// What each file becomes (context | continuation):
//   hellaswag   "{activity_label}: {ctx}"        | " {ending}"  x4
//   piqa        "Question: {goal}\nAnswer:"      | " {sol1}", " {sol2}"
//   winogrande  sentence before "_" + option     | " " + the rest of the sentence after "_"
//               (partial scoring: the contexts differ, the continuation is the same)
//   arc_easy, arc_challenge
//               "Question: {stem}\nAnswer:"      | " {choice}"
//   openbookqa  "{stem}"                         | " {choice}"
//   boolq       "Passage: ...\nQuestion: ...?\nAnswer:" | " no", " yes"
//   lambada     text before its last word        | " {last word}"
// Accepted layouts: HellaSwag as 6 lines per task (the shared hellaswag_val_full.txt) or the original
// jsonl (activity_label, ctx or ctx_a + ctx_b, endings, label), whose bracket tags are removed as that
// text file's were; PIQA's jsonl with its labels file; WinoGrande's jsonl; ARC, OpenBookQA and BoolQ in
// llm-foundry's {"query", "choices", "gold"} (its ARC queries already start "Question: "), ARC and
// OpenBookQA also in their original layout (question.stem, question.choices[].text/label, answerKey);
// LAMBADA as {"text"} lines.
//
// A missing file throws focus::Error. A malformed record is skipped and counted, keeping the line
// number and reason of the first few, so a damaged file evaluates what it can and says what it left out.
#pragma once
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../layers/gpt.h"
#include "io.h"
#include "tokenizer.h"

namespace focus {

// ---- tasks ----------------------------------------------------------------------------------------

struct Choice {
    std::string context, continuation;
};

struct Item {
    std::vector<Choice> choices;
    int gold = 0;  // index of the correct choice
};

struct SkippedRecord {
    size_t line;  // 1-based, in the file the record came from
    std::string reason;
};

struct SkippedRecords {
    static constexpr size_t KEPT = 5;  // records whose line and reason are kept
    size_t count = 0;
    std::vector<SkippedRecord> first;

    void add(size_t line, const std::string& reason) {
        count++;
        if (first.size() < KEPT) first.push_back({line, reason});
    }

    // "line 7: label line \"7\" is not 0-3; line 19: ...", then "; 3 more" past the kept ones
    std::string describe() const {
        std::string text;
        for (const SkippedRecord& record : first)
            text += format("%sline %zu: %s", text.empty() ? "" : "; ", record.line, record.reason.c_str());
        if (count > first.size()) text += format("; %zu more", count - first.size());
        return text;
    }
};

struct Task {
    explicit Task(std::string name = "", std::string path = "") : name(std::move(name)), path(std::move(path)) {}

    std::string name, path;
    bool last_word = false;  // LAMBADA: one choice, scored by greedy accuracy and perplexity
    std::vector<Item> items;
    SkippedRecords skipped;
};

// ---- reading files --------------------------------------------------------------------------------

namespace benchmarks_detail {

using nlohmann::json;

// The file's lines without their line endings (LF or CRLF); no empty last line for a final newline.
inline std::vector<std::string> read_lines(const std::string& path) {
    std::string text = read_file(path);
    std::vector<std::string> lines;
    for (size_t start = 0; start < text.size();) {
        size_t newline = std::min(text.find('\n', start), text.size());
        size_t end = newline > start && text[newline - 1] == '\r' ? newline - 1 : newline;
        lines.push_back(text.substr(start, end - start));
        start = newline + 1;
    }
    return lines;
}

inline bool is_blank(const std::string& line) { return line.find_first_not_of(" \t") == std::string::npos; }

// A record's field, with an error that names it when it is missing or of another type.
inline const json& field(const json& record, const char* key) {
    auto found = record.find(key);
    check(found != record.end(), format("no \"%s\" field", key));
    return *found;
}

inline std::string text_field(const json& record, const char* key) {
    const json& value = field(record, key);
    check(value.is_string(), format("\"%s\" is a %s, not a string", key, value.type_name()));
    return value.get<std::string>();
}

inline std::vector<std::string> text_list(const json& record, const char* key) {
    const json& value = field(record, key);
    check(value.is_array(), format("\"%s\" is a %s, not a list", key, value.type_name()));
    std::vector<std::string> texts;
    for (const json& element : value) {
        check(element.is_string(), format("\"%s\" holds a %s, not a string", key, element.type_name()));
        texts.push_back(element.get<std::string>());
    }
    return texts;
}

// A choice number given as a number or as one digit ("3"), minus `base` (WinoGrande counts from 1),
// which must be an index into `count` choices.
inline int index_field(const json& record, const char* key, size_t count, int base = 0) {
    const json& value = field(record, key);
    int index = -1;
    if (value.is_number_integer()) {
        index = value.get<int>();
    } else if (value.is_string()) {
        const std::string& digit = value.get_ref<const std::string&>();
        if (digit.size() == 1 && digit[0] >= '0' && digit[0] <= '9') index = digit[0] - '0';
    }
    index -= base;
    check(index >= 0 && index < (int)count,
          format("\"%s\" is %s, not a choice number %d..%d", key, value.dump().c_str(), base, (int)count - 1 + base));
    return index;
}

// One item per non-blank line of a jsonl file: parse(record, line_number) builds it and throws
// focus::Error to reject a record, which is then skipped with its line number and reason.
template <typename Parse>
Task load_jsonl(const std::string& name, const std::string& path, Parse parse) {
    Task task(name, path);
    std::vector<std::string> lines = read_lines(path);
    for (size_t i = 0; i < lines.size(); i++) {
        if (is_blank(lines[i])) continue;
        try {
            json record = json::parse(lines[i]);
            check(record.is_object(), format("a JSON %s, not an object", record.type_name()));
            task.items.push_back(parse(record, i + 1));
        } catch (const json::parse_error& e) {
            task.skipped.add(i + 1, format("invalid JSON at byte %zu", e.byte));
        } catch (const Error& e) {
            task.skipped.add(i + 1, e.what());
        }
    }
    return task;
}

// The same context before every continuation: " " + each answer text.
inline Item shared_context(const std::string& context, const std::vector<std::string>& answers, int gold) {
    check(answers.size() >= 2, format("%zu choices; a question needs at least 2", answers.size()));
    Item item{{}, gold};
    for (const std::string& answer : answers) item.choices.push_back({context, " " + answer});
    return item;
}

inline void replace_all(std::string& text, const std::string& from, const std::string& to) {
    for (size_t pos = text.find(from); pos != std::string::npos; pos = text.find(from, pos + to.size()))
        text.replace(pos, from.size(), to);
}

// The cleaning that made hellaswag_val_full.txt from the original jsonl (WikiHow items carry
// bracket tags): drop [header], [step], [substeps]; " [title]" ends a sentence, other [title]s go;
// double spaces become one (a single pass, as lm-eval-harness does); one space trimmed at each end.
inline std::string clean_hellaswag(std::string text) {
    for (const char* tag : {"[header]", "[step]", "[substeps]"}) replace_all(text, tag, "");
    replace_all(text, " [title]", ". ");
    replace_all(text, "[title]", "");
    replace_all(text, "  ", " ");
    if (!text.empty() && text.front() == ' ') text.erase(0, 1);
    if (!text.empty() && text.back() == ' ') text.pop_back();
    return text;
}

inline void check_hellaswag_texts(const std::string& context, const std::vector<std::string>& endings) {
    check(!context.empty(), "empty context");
    check(endings.size() == 4, format("%zu endings, not 4", endings.size()));
    for (const std::string& ending : endings) check(!ending.empty(), "an empty ending");
}

// 6 lines a task: "{activity_label}: {ctx}", the gold label 0-3, the four endings.
inline Task load_hellaswag_text(const std::string& path) {
    Task task("hellaswag", path);
    std::vector<std::string> lines = read_lines(path);
    for (size_t first = 0; first < lines.size(); first += 6) {
        try {
            check(first + 6 <= lines.size(), format("the last task has %zu of its 6 lines", lines.size() - first));
            const std::string& label = lines[first + 1];
            check(label.size() == 1 && label[0] >= '0' && label[0] <= '3',
                  format("label line \"%s\" is not 0-3", label.c_str()));
            std::vector<std::string> endings(lines.begin() + first + 2, lines.begin() + first + 6);
            check_hellaswag_texts(lines[first], endings);
            task.items.push_back(shared_context(lines[first], endings, label[0] - '0'));
        } catch (const Error& e) {
            task.skipped.add(first + 1, e.what());
        }
    }
    return task;
}

inline Task load_hellaswag_jsonl(const std::string& path) {
    return load_jsonl("hellaswag", path, [](const json& record, size_t) {
        // "ctx" is ctx_a + " " + ctx_b; the text file was made from it, so prefer it
        std::string ctx = record.contains("ctx") ? text_field(record, "ctx")
                                                 : text_field(record, "ctx_a") + " " + text_field(record, "ctx_b");
        std::string context = clean_hellaswag(text_field(record, "activity_label") + ": " + ctx);
        std::vector<std::string> endings = text_list(record, "endings");
        for (std::string& ending : endings) ending = clean_hellaswag(ending);
        check_hellaswag_texts(context, endings);
        return shared_context(context, endings, index_field(record, "label", endings.size()));
    });
}

// How a question-answering task turns its question into a context: the prefix goes before the
// stem of a record in the original layout (llm-foundry's queries already carry it), the cue after.
struct QuestionFormat {
    const char* stem_prefix;
    const char* answer_cue;
};

// llm-foundry's {"query", "choices", "gold"}, or the original ARC / OpenBookQA layout
// {"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}.
inline Task load_question_answering(const std::string& name, const std::string& path, QuestionFormat form) {
    return load_jsonl(name, path, [form](const json& record, size_t) {
        if (record.contains("query")) {
            std::vector<std::string> choices = text_list(record, "choices");
            int gold = index_field(record, "gold", choices.size());
            return shared_context(text_field(record, "query") + form.answer_cue, choices, gold);
        }
        const json& question = field(record, "question");
        check(question.is_object(), format("\"question\" is a %s, not an object", question.type_name()));
        const json& options = field(question, "choices");
        check(options.is_array(), format("\"choices\" is a %s, not a list", options.type_name()));
        std::string answer_key = text_field(record, "answerKey");
        std::vector<std::string> choices;
        int gold = -1;
        for (const json& option : options) {
            check(option.is_object(), "a choice that is not an object");
            if (text_field(option, "label") == answer_key) gold = (int)choices.size();
            choices.push_back(text_field(option, "text"));
        }
        check(gold >= 0, format("answerKey \"%s\" is none of the choices' labels", answer_key.c_str()));
        return shared_context(form.stem_prefix + text_field(question, "stem") + form.answer_cue, choices, gold);
    });
}

}  // namespace benchmarks_detail

// ---- loaders --------------------------------------------------------------------------------------

// The text layout, or the original jsonl when the file starts with '{'.
inline Task load_hellaswag(const std::string& path) {
    bool is_jsonl = std::ifstream(path).peek() == '{';  // a missing file goes on to read_file's error
    return is_jsonl ? benchmarks_detail::load_hellaswag_jsonl(path) : benchmarks_detail::load_hellaswag_text(path);
}

// labels_path: one 0/1 a line, aligned with the jsonl's lines; by default the file next to it with
// ".jsonl" replaced by "-labels.lst" (valid.jsonl -> valid-labels.lst).
inline Task load_piqa(const std::string& path, std::string labels_path = "") {
    using namespace benchmarks_detail;
    if (labels_path.empty()) {
        std::filesystem::path p(path);
        labels_path = (p.parent_path() / (p.stem().string() + "-labels.lst")).string();
    }
    std::vector<std::string> labels = read_lines(labels_path);
    return load_jsonl("piqa", path, [&](const json& record, size_t line) {
        check(line <= labels.size(), format("no label: %s has %zu lines", labels_path.c_str(), labels.size()));
        const std::string& label = labels[line - 1];
        check(label == "0" || label == "1",
              format("label \"%s\" in %s is not 0 or 1", label.c_str(), labels_path.c_str()));
        std::string context = "Question: " + text_field(record, "goal") + "\nAnswer:";
        return shared_context(context, {text_field(record, "sol1"), text_field(record, "sol2")}, label[0] - '0');
    });
}

inline Task load_winogrande(const std::string& path) {
    using namespace benchmarks_detail;
    return load_jsonl("winogrande", path, [](const json& record, size_t) {
        std::string sentence = text_field(record, "sentence");
        size_t blank = sentence.find('_');
        check(blank != std::string::npos, "the sentence has no \"_\" blank");
        std::string rest = sentence.substr(blank + 1);
        rest.erase(0, rest.find_first_not_of(' '));  // " " + rest, whatever spacing the blank had
        std::string continuation = " " + rest.substr(0, rest.find_last_not_of(' ') + 1);
        Item item{{}, index_field(record, "answer", 2, 1)};
        for (const char* option : {"option1", "option2"})
            item.choices.push_back({sentence.substr(0, blank) + text_field(record, option), continuation});
        return item;
    });
}

inline Task load_arc(const std::string& name, const std::string& path) {
    return benchmarks_detail::load_question_answering(name, path, {"Question: ", "\nAnswer:"});
}

inline Task load_openbookqa(const std::string& path) {
    return benchmarks_detail::load_question_answering("openbookqa", path, {"", ""});
}

// llm-foundry's layout only: its query is "Passage: ...\nQuestion: ...?", its choices "no", "yes".
inline Task load_boolq(const std::string& path) {
    return benchmarks_detail::load_question_answering("boolq", path, {"", "\nAnswer:"});
}

// The target is the last whitespace-separated word. Seven passages of OpenAI's file have a line
// break before it; their context ends at the word before, as if a space separated them.
inline Task load_lambada(const std::string& path) {
    using namespace benchmarks_detail;
    Task task = load_jsonl("lambada", path, [](const json& record, size_t) {
        const char* whitespace = " \t\n";
        std::string text = text_field(record, "text");
        text.erase(text.find_last_not_of(whitespace) + 1);  // npos + 1 == 0: all of a blank text
        size_t gap = text.find_last_of(whitespace);
        std::string context =
            gap == std::string::npos ? "" : text.substr(0, text.find_last_not_of(whitespace, gap) + 1);
        check(!context.empty(), "fewer than two words");
        Item item;
        item.choices.push_back({context, " " + text.substr(gap + 1)});
        return item;
    });
    task.last_word = true;
    return task;
}

// ---- registry -------------------------------------------------------------------------------------

struct TaskSpec {
    const char* name;
    const char* file;  // default file name inside the data directory
    std::function<Task(const std::string& path)> load;
};

inline const std::vector<TaskSpec>& task_specs() {
    static const std::vector<TaskSpec> specs = {
        {"hellaswag", "hellaswag_val_full.txt", load_hellaswag},
        {"piqa", "piqa_valid.jsonl", [](const std::string& path) { return load_piqa(path); }},
        {"winogrande", "winogrande_dev.jsonl", load_winogrande},
        {"arc_easy", "llmfoundry_arc_easy.jsonl", [](const std::string& path) { return load_arc("arc_easy", path); }},
        {"arc_challenge", "llmfoundry_arc_challenge.jsonl",
         [](const std::string& path) { return load_arc("arc_challenge", path); }},
        {"openbookqa", "llmfoundry_openbook_qa.jsonl", load_openbookqa},
        {"boolq", "llmfoundry_boolq.jsonl", load_boolq},
        {"lambada", "lambada_test.jsonl", load_lambada},
    };
    return specs;
}

inline std::vector<std::string> task_names() {
    std::vector<std::string> names;
    for (const TaskSpec& spec : task_specs()) names.push_back(spec.name);
    return names;
}

inline const TaskSpec& task_spec(const std::string& name) {
    std::string valid;
    for (const TaskSpec& spec : task_specs()) {
        if (name == spec.name) return spec;
        valid += (valid.empty() ? "" : ", ") + std::string(spec.name);
    }
    throw Error(format("unknown benchmark task '%s' (valid: %s)", name.c_str(), valid.c_str()));
}

// Loads task `name` from `path`, or by default from its file in data_dir.
inline Task load_task(const std::string& name, const std::string& path = "",
                      const std::string& data_dir = "../shared/data") {
    const TaskSpec& spec = task_spec(name);
    return spec.load(path.empty() ? data_dir + "/" + spec.file : path);
}

// ---- scoring --------------------------------------------------------------------------------------

// One choice as tokens: the model reads tokens[0 .. n-2] and is asked for the log-probabilities of
// the last `continuation` tokens, each given everything before it.
struct Sequence {
    std::vector<int> tokens;
    int continuation = 0;
};

struct TokenScore {
    double logprob;  // log p(token | the tokens before it)
    bool greedy;     // the token is the model's argmax prediction at its position
};

// What evaluate_task() needs from a model, so that any model (the CPU GPT, a GPU one, a test's fake)
// can be scored.
class Scorer {
public:
    virtual ~Scorer() = default;
    // The most tokens the model reads at once; a Sequence holds at most max_seq_len() + 1 tokens.
    virtual int max_seq_len() const = 0;
    // One TokenScore for each continuation token of each sequence, in order.
    virtual std::vector<std::vector<TokenScore>> score(const std::vector<Sequence>& sequences) = 0;
};

// context + continuation, with the context cut from the left so that the model reads at most
// max_seq_len tokens; the continuation is kept whole. An empty context becomes EOT, which gives
// the first continuation token something to be predicted from.
inline Sequence make_sequence(std::vector<int> context, const std::vector<int>& continuation, int max_seq_len) {
    check(!continuation.empty(), "empty continuation");
    check((int)continuation.size() <= max_seq_len,
          format("a continuation of %zu tokens does not fit the model's %d positions", continuation.size(),
                 max_seq_len));
    if (context.empty()) context.push_back(Tokenizer::EOT);
    size_t context_kept = std::min(context.size(), max_seq_len + 1 - continuation.size());
    Sequence sequence{std::vector<int>(context.end() - context_kept, context.end()), (int)continuation.size()};
    sequence.tokens.insert(sequence.tokens.end(), continuation.begin(), continuation.end());
    return sequence;
}

// UTF-8 code points: every byte but the continuation bytes 10xxxxxx.
inline size_t character_count(const std::string& text) {
    auto starts_character = [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; };
    return std::count_if(text.begin(), text.end(), starts_character);
}

// The first index of the largest value.
inline int argmax(const std::vector<double>& values) {
    return int(std::max_element(values.begin(), values.end()) - values.begin());
}

struct TaskResult {
    std::string task;
    size_t count = 0;     // items scored
    size_t skipped = 0;   // malformed records the loader left out
    size_t too_long = 0;  // items left out: a continuation longer than the model's context
    double acc = NAN;
    double acc_norm = NAN;  // choice tasks only
    double ppl = NAN;       // LAMBADA only
};

// An evaluation split over data-parallel ranks: this process does the items (or validation batches) i
// with i % world == rank, and `sum` adds a vector of partial sums over the ranks in place, so that every
// rank ends with the totals (train_gpt passes NCCL's all-reduce). The default: one process does it all.
struct RankShare {
    int rank = 0, world = 1;
    std::function<void(std::vector<double>&)> sum;  // empty: nothing to add

    bool mine(size_t i) const { return i % size_t(world) == size_t(rank); }
    void add_up(std::vector<double>& partial) const {
        if (sum) sum(partial);
    }
};

// Scores the first `limit` items (0: all), leaving out (and counting) those with a continuation the
// model cannot read whole, such as a 246-token PIQA solution for a model of 128 positions. With a
// RankShare, each rank scores its share of those items and the counts are added over the ranks.
// Encoder is anything with std::vector<int> encode(std::string_view) const, such as focus::Tokenizer;
// context and continuation are encoded separately, so a continuation has the same tokens in every
// context.
template <typename Encoder>
TaskResult evaluate_task(const Task& task, Scorer& scorer, const Encoder& encoder, size_t limit = 0,
                         const RankShare& share = {}) {
    TaskResult result{task.name};
    result.skipped = task.skipped.count;
    const size_t end = limit == 0 ? task.items.size() : std::min(limit, task.items.size());
    size_t count = 0, correct = 0, correct_norm = 0, too_long = 0;
    double word_nll = 0;
    for (size_t i = 0; i < end; i++) {
        if (!share.mine(i)) continue;
        const Item& item = task.items[i];
        const int max_seq_len = scorer.max_seq_len();
        std::vector<std::vector<int>> continuations;
        for (const Choice& choice : item.choices) continuations.push_back(encoder.encode(choice.continuation));
        auto fits = [&](const std::vector<int>& tokens) { return (int)tokens.size() <= max_seq_len; };
        if (!std::all_of(continuations.begin(), continuations.end(), fits)) {
            too_long++;
            continue;
        }
        std::vector<Sequence> sequences;
        for (size_t c = 0; c < item.choices.size(); c++)
            sequences.push_back(make_sequence(encoder.encode(item.choices[c].context), continuations[c], max_seq_len));
        std::vector<std::vector<TokenScore>> scores = scorer.score(sequences);
        check(scores.size() == sequences.size(), "the scorer returned the wrong number of sequences");

        std::vector<double> loglik, loglik_per_char;
        bool all_greedy = true;
        for (size_t c = 0; c < scores.size(); c++) {
            check((int)scores[c].size() == sequences[c].continuation,
                  "the scorer returned the wrong number of token scores");
            double sum = 0;
            for (const TokenScore& token : scores[c]) {
                sum += token.logprob;
                all_greedy = all_greedy && token.greedy;
            }
            loglik.push_back(sum);
            loglik_per_char.push_back(sum / character_count(item.choices[c].continuation));
        }
        count++;
        if (task.last_word) {
            correct += all_greedy;
            word_nll -= loglik[0];
        } else {
            correct += argmax(loglik) == item.gold;
            correct_norm += argmax(loglik_per_char) == item.gold;
        }
    }
    // counts below 2^53 add up exactly as doubles
    std::vector<double> totals = {double(count), double(too_long), double(correct), double(correct_norm), word_nll};
    share.add_up(totals);
    result.count = size_t(totals[0]);
    result.too_long = size_t(totals[1]);
    if (result.count == 0) return result;
    result.acc = totals[2] / totals[0];
    if (task.last_word) result.ppl = std::exp(totals[4] / totals[0]);
    else result.acc_norm = totals[3] / totals[0];
    return result;
}

// "hellaswag: acc 0.2955 acc_norm 0.3102 (10042 items, 0 skipped)", with ", N too long" when some were
inline std::string summary(const TaskResult& r) {
    std::string metrics = std::isnan(r.ppl) ? format("acc %.4f acc_norm %.4f", r.acc, r.acc_norm)
                                            : format("acc %.4f ppl %.3f", r.acc, r.ppl);
    std::string too_long = r.too_long ? format(", %zu too long", r.too_long) : "";
    return format("%s: %s (%zu items, %zu skipped%s)", r.task.c_str(), metrics.c_str(), r.count, r.skipped,
                  too_long.c_str());
}

// ---- a model as a Scorer ----------------------------------------------------------------------------

// The argmax over the real vocabulary (ties to the lowest id) at the first `positions` positions of the
// CPU model's last forward(), from its logits. The GPU model has its own overload (layers/gpt.cuh), which
// computes them on the device rather than copying [B, T, Vp] logits to the host.
template <typename Real>
std::vector<int> predictions(const GPT<Real>& model, size_t positions) {
    const int V = model.config().vocab_size, Vp = model.config().padded_vocab_size;
    std::vector<int> best(positions);
    for (size_t i = 0; i < positions; i++) {
        const Real* row = model.logits() + i * Vp;
        best[i] = int(std::max_element(row, row + V) - row);  // the first of equal maxima
    }
    return best;
}

// All sequences of one call go through one forward pass: B = number of sequences, T = the longest
// input. Shorter rows are padded at the end; causal attention keeps padding out of the positions
// before it, and padded positions have no target. A token is greedy when it is the model's argmax
// prediction (predictions() above). Model is GPT<Real> or gpu::GPT: anything with config(),
// forward() and losses() and a predictions() overload.
template <typename Model>
class ModelScorer : public Scorer {
public:
    explicit ModelScorer(Model& model) : model_(model) {}

    int max_seq_len() const override { return model_.config().max_seq_len; }

    std::vector<std::vector<TokenScore>> score(const std::vector<Sequence>& sequences) override {
        const int B = (int)sequences.size(), V = model_.config().vocab_size;
        int T = 1;
        for (const Sequence& s : sequences) T = std::max(T, (int)s.tokens.size() - 1);
        const int pad = V > Tokenizer::EOT ? Tokenizer::EOT : 0;  // any id in the vocabulary would do
        std::vector<int> inputs((size_t)B * T, pad), targets((size_t)B * T, -1);
        for (int b = 0; b < B; b++) {
            const std::vector<int>& tokens = sequences[b].tokens;
            const int n = (int)tokens.size();
            check(n >= 2 && sequences[b].continuation >= 1 && sequences[b].continuation < n,
                  "a sequence needs a context and a continuation");
            std::copy(tokens.begin(), tokens.end() - 1, inputs.begin() + (size_t)b * T);
            for (int t = n - 1 - sequences[b].continuation; t < n - 1; t++) targets[(size_t)b * T + t] = tokens[t + 1];
        }
        model_.forward(inputs.data(), targets.data(), B, T);
        const std::vector<int> predicted = predictions(model_, targets.size());

        // losses() holds -log p(target) at every position that has one
        std::vector<std::vector<TokenScore>> scores(B);
        for (size_t position = 0; position < targets.size(); position++) {
            const int target = targets[position];
            if (target == -1) continue;
            scores[position / T].push_back({-double(model_.losses()[position]), predicted[position] == target});
        }
        return scores;
    }

private:
    Model& model_;
};

// The CPU model's scorer under its own name.
template <typename Real>
using GPTScorer = ModelScorer<GPT<Real>>;

}  // namespace focus
