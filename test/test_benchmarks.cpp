// test_benchmarks.cpp: the zero-shot benchmarks (data/benchmarks.h).
//  - every loader on the hand-made files in test/fixtures/benchmarks/, malformed records included;
//  - the real files in ../shared/data: the record counts its README states, nothing skipped;
//  - acc, acc_norm, LAMBADA's acc and ppl from a fake scorer whose log-probabilities are set by hand;
//  - GPTScorer on a tiny random GPT<double> against log-softmax of the logits of each sequence alone.
// The ../shared/data test skips with a message when the folder is absent.
#include <doctest/doctest.h>

#include <cctype>
#include <filesystem>

#include "../data/benchmarks.h"
#include "../data/evaluation.h"

using namespace focus;

namespace {

const std::string FIXTURES = "test/fixtures/benchmarks/";
const std::string SHARED = "../shared/data";

std::vector<std::string> continuations(const Item& item) {
    std::vector<std::string> texts;
    for (const Choice& choice : item.choices) texts.push_back(choice.continuation);
    return texts;
}

// Token id = byte value, so a test can read a sequence as text.
struct ByteEncoder {
    std::vector<int> encode(std::string_view text) const {
        return std::vector<int>(text.begin(), text.end());
    }
};

// Every token has log-probability -1 except 'z' (-0.5); upper-case letters are not the greedy
// prediction. Keeps the sequences it was given.
struct FakeScorer : Scorer {
    int max_len = 64;
    std::vector<Sequence> seen;

    int max_seq_len() const override { return max_len; }
    std::vector<std::vector<TokenScore>> score(const std::vector<Sequence>& sequences) override {
        std::vector<std::vector<TokenScore>> scores;
        for (const Sequence& s : sequences) {
            seen.push_back(s);
            scores.emplace_back();
            for (size_t i = s.tokens.size() - s.continuation; i < s.tokens.size(); i++)
                scores.back().push_back({s.tokens[i] == 'z' ? -0.5 : -1.0, !std::isupper(s.tokens[i])});
        }
        return scores;
    }
};

Item choices_after(const std::string& context, const std::vector<std::string>& continuations, int gold) {
    Item item{{}, gold};
    for (const std::string& continuation : continuations) item.choices.push_back({context, continuation});
    return item;
}

// N simulated ranks: run(share) is called once per rank to record the partial sums it adds up, then
// again per rank with add_up answering the totals, as NCCL's all-reduce does; the second round's results.
template <typename Result, typename Run>
std::vector<Result> over_simulated_ranks(int world, Run run) {
    std::vector<double> totals;
    for (int r = 0; r < world; r++)
        run(RankShare{r, world, [&](std::vector<double>& partial) {
                          totals.resize(partial.size(), 0.0);
                          for (size_t i = 0; i < partial.size(); i++) totals[i] += partial[i];
                      }});
    std::vector<Result> results;
    for (int r = 0; r < world; r++)
        results.push_back(run(RankShare{r, world, [&](std::vector<double>& partial) { partial = totals; }}));
    return results;
}

}  // namespace

TEST_CASE("benchmarks: HellaSwag's text layout, with a bad label and a cut-off last task") {
    Task task = load_task("hellaswag", FIXTURES + "hellaswag.txt");
    CHECK(task.name == "hellaswag");
    REQUIRE(task.items.size() == 2);
    CHECK(task.items[0].choices[1].context == "Roofing: A man is on a roof. he");
    CHECK(continuations(task.items[0]) ==
          std::vector<std::string>{" sings.", " removes shingles.", " falls.", " waves."});
    CHECK(task.items[0].gold == 1);
    CHECK(task.items[1].choices[0].context == "Dogs: A dog runs. it");
    CHECK(task.items[1].gold == 0);
    CHECK(!task.last_word);

    CHECK(task.skipped.describe() ==
          "line 7: label line \"7\" is not 0-3; line 19: the last task has 2 of its 6 lines");
}

TEST_CASE("benchmarks: HellaSwag's original jsonl is cleaned as the text file was") {
    Task task = load_hellaswag(FIXTURES + "hellaswag.jsonl");
    REQUIRE(task.items.size() == 2);
    CHECK(task.items[0].choices[0].context ==
          "Making a cake: How to bake a cake. Preheat the oven. Set it to 180 degrees.");
    CHECK(continuations(task.items[0]) ==
          std::vector<std::string>{" Mix the flour.", " Eat it now.", " Wait.", " Sing."});
    CHECK(task.items[0].gold == 2);
    CHECK(task.items[1].choices[0].context == "Surfing: A man rides a wave. he");  // ctx_a + " " + ctx_b
    CHECK(task.items[1].gold == 3);                                               // label given as "3"

    CHECK(task.skipped.describe() == "line 3: 3 endings, not 4; line 4: invalid JSON at byte 2");
}

TEST_CASE("benchmarks: PIQA with its labels file, found by name or given") {
    Task task = load_task("piqa", FIXTURES + "piqa.jsonl");
    REQUIRE(task.items.size() == 2);
    CHECK(task.items[0].choices[0].context == "Question: Open a jar\nAnswer:");
    CHECK(continuations(task.items[0]) == std::vector<std::string>{" Twist the lid.", " Bake the jar."});
    CHECK(task.items[0].gold == 0);
    CHECK(task.items[1].choices[1].context == "Question: Cool soup\nAnswer:");
    CHECK(task.items[1].gold == 1);
    CHECK(task.skipped.describe() == "line 2: no \"sol2\" field; "
          "line 4: no label: test/fixtures/benchmarks/piqa-labels.lst has 3 lines");

    Task relabelled = load_piqa(FIXTURES + "piqa.jsonl", FIXTURES + "piqa-other-labels.lst");
    REQUIRE(relabelled.items.size() == 3);
    CHECK(relabelled.items[0].gold == 1);
    CHECK(relabelled.items[2].gold == 1);
    CHECK(relabelled.skipped.describe() == "line 2: no \"sol2\" field");

    CHECK_THROWS_AS(load_piqa(FIXTURES + "piqa.jsonl", FIXTURES + "no-such-labels.lst"), Error);
}

TEST_CASE("benchmarks: WinoGrande's partial scoring: the contexts differ, the continuation is shared") {
    Task task = load_task("winogrande", FIXTURES + "winogrande.jsonl");
    REQUIRE(task.items.size() == 2);
    const Item& first = task.items[0];
    CHECK(first.choices[0].context == "Sarah was a better surgeon than Maria so Sarah");
    CHECK(first.choices[1].context == "Sarah was a better surgeon than Maria so Maria");
    CHECK(continuations(first) == std::vector<std::string>(2, " always got the easier cases."));
    CHECK(first.gold == 1);
    CHECK(task.items[1].choices[1].context == "The trophy did not fit because the case");
    CHECK(task.items[1].gold == 0);  // answer given as the number 1
    CHECK(task.skipped.describe() == "line 2: the sentence has no \"_\" blank; "
          "line 3: \"answer\" is \"3\", not a choice number 1..2");
}

TEST_CASE("benchmarks: ARC, OpenBookQA and BoolQ in llm-foundry's layout and the original one") {
    Task foundry = load_task("arc_easy", FIXTURES + "llmfoundry_arc.jsonl");
    CHECK(foundry.name == "arc_easy");
    REQUIRE(foundry.items.size() == 1);
    CHECK(foundry.items[0].choices[0].context == "Question: What is 2+2?\nAnswer:");
    CHECK(continuations(foundry.items[0]) == std::vector<std::string>{" 3", " 4", " 5", " 22"});
    CHECK(foundry.items[0].gold == 1);
    CHECK(foundry.skipped.describe() == "line 3: 1 choices; a question needs at least 2; "  // line 2 is blank
                                        "line 4: \"gold\" is 2, not a choice number 0..1");

    Task original = load_task("arc_challenge", FIXTURES + "arc_original.jsonl");
    REQUIRE(original.items.size() == 2);
    CHECK(original.items[0].choices[0].context == "Question: Which is a gas?\nAnswer:");
    CHECK(continuations(original.items[0]) == std::vector<std::string>{" ice", " steam", " water"});
    CHECK(original.items[0].gold == 1);  // answerKey "B"
    CHECK(original.items[1].gold == 1);  // answerKey "2" among labels "1", "2"
    CHECK(original.skipped.describe() == "line 3: answerKey \"E\" is none of the choices' labels");

    Task openbook = load_task("openbookqa", FIXTURES + "arc_original.jsonl");
    CHECK(openbook.items[0].choices[0].context == "Which is a gas?");

    Task boolq = load_task("boolq", FIXTURES + "llmfoundry_boolq.jsonl");
    REQUIRE(boolq.items.size() == 1);
    CHECK(boolq.items[0].choices[0].context ==
          "Passage: Water boils at 100 C at sea level.\nQuestion: does water boil at 100 c?\nAnswer:");
    CHECK(continuations(boolq.items[0]) == std::vector<std::string>{" no", " yes"});
    CHECK(boolq.items[0].gold == 1);
}

TEST_CASE("benchmarks: LAMBADA's context is the passage without its last word") {
    Task task = load_task("lambada", FIXTURES + "lambada.jsonl");
    CHECK(task.last_word);
    REQUIRE(task.items.size() == 2);
    REQUIRE(task.items[0].choices.size() == 1);
    CHECK(task.items[0].choices[0].context == "He handed her the key and she opened the");
    CHECK(task.items[0].choices[0].continuation == " door");
    CHECK(task.items[1].choices[0].context == "The sign said");  // the line break before "Stop" is dropped
    CHECK(task.items[1].choices[0].continuation == " Stop");
    CHECK(task.skipped.describe() == "line 2: fewer than two words; line 4: no \"text\" field");
}

TEST_CASE("benchmarks: the report of skipped records names the first five") {
    SkippedRecords skipped;
    for (size_t line = 1; line <= 7; line++) skipped.add(line, "bad");
    CHECK(skipped.count == 7);
    CHECK(skipped.describe() == "line 1: bad; line 2: bad; line 3: bad; line 4: bad; line 5: bad; 2 more");
}

TEST_CASE("benchmarks: unknown task names and missing files are errors") {
    CHECK_THROWS_WITH_AS(load_task("hellaswagg"),
                         "unknown benchmark task 'hellaswagg' (valid: hellaswag, piqa, winogrande, arc_easy, "
                         "arc_challenge, openbookqa, boolq, lambada)",
                         Error);
    for (const std::string& name : task_names())
        CHECK_THROWS_AS(load_task(name, "", "/nonexistent"), Error);
}

TEST_CASE("benchmarks: --tasks lists are parsed, and their names checked, without reading a file") {
    using Items = std::vector<std::pair<std::string, std::string>>;
    CHECK(parse_task_list("") == Items{});
    CHECK(parse_task_list("piqa,lambada=/x/l.jsonl,") == Items{{"piqa", ""}, {"lambada", "/x/l.jsonl"}});
    CHECK_THROWS_WITH_AS(parse_task_list("piqa,nope=/x"), doctest::Contains("unknown benchmark task 'nope'"), Error);
    CHECK_THROWS_WITH_AS(load_tasks("piqa", "/nonexistent"), doctest::Contains("/nonexistent"), Error);
}

TEST_CASE("benchmarks: the real files in ../shared/data load whole") {
    if (!std::filesystem::is_directory(SHARED)) {
        MESSAGE("skipped: no " << SHARED);
        return;
    }
    // records, and how many have choice 0 as the gold one: the README's label counts (BoolQ's "no";
    // WinoGrande's from winogrande_dev-labels.lst)
    struct Expected {
        const char* task;
        size_t items, gold_first;
    };
    const Expected expected[] = {{"hellaswag", 10042, 2515}, {"piqa", 1838, 910},         {"winogrande", 1267, 628},
                                 {"arc_easy", 2376, 565},    {"arc_challenge", 1172, 261}, {"openbookqa", 500, 138},
                                 {"boolq", 3270, 1237},      {"lambada", 5153, 5153}};
    for (const auto& [name, count, gold_first] : expected) {
        Task task = load_task(name);
        CHECK_MESSAGE(task.items.size() == count, name);
        CHECK_MESSAGE(task.skipped.count == 0, name);
        auto first_is_gold = [](const Item& item) { return item.gold == 0; };
        CHECK_MESSAGE(std::count_if(task.items.begin(), task.items.end(), first_is_gold) == (long)gold_first, name);
        if (task.name == "hellaswag") {
            CHECK(task.items[0].choices[0].context == "Roof shingle removal: A man is sitting on a roof. he");
            CHECK(task.items[0].choices[0].continuation == " is using wrap to wrap a pair of skis.");
            CHECK(task.items[0].gold == 3);
        }
        if (task.name == "winogrande") CHECK(task.items[0].gold == 1);  // answer "2"
        if (task.name == "lambada") CHECK(task.items[0].choices[0].continuation == " signs");
    }
}

TEST_CASE("benchmarks: sequences are cut from the left and keep the whole continuation") {
    Sequence cut = make_sequence({1, 2, 3, 4, 5, 6}, {7, 8}, 4);  // the model reads 4 of these 5 tokens
    CHECK(cut.tokens == std::vector<int>{4, 5, 6, 7, 8});
    CHECK(cut.continuation == 2);
    CHECK(make_sequence({1}, {7, 8}, 4).tokens == std::vector<int>{1, 7, 8});
    CHECK(make_sequence({}, {7}, 4).tokens == std::vector<int>{Tokenizer::EOT, 7});
    CHECK_THROWS_AS(make_sequence({1}, {1, 2, 3, 4, 5}, 4), Error);
}

TEST_CASE("benchmarks: acc and acc_norm from known log-probabilities") {
    // Each token scores -1, a 'z' -0.5, so a continuation's loglik and its loglik per character are:
    Task task("test");
    task.items = {
        choices_after("ctx", {" ab", " zzzzzzz"}, 1),  // -3 (-1/char) vs -4.5 (-0.56/char): acc_norm only
        choices_after("ctx", {" a", " zz"}, 0),        // -2 (-1) vs -2 (-0.67): a tie goes to the first: acc only
        choices_after("ctx", {" z", " abc"}, 0),       // -1.5 (-0.75) vs -4 (-1): both
        choices_after("ctx", {" a", " zzzz"}, 1),      // -2 (-1) vs -3 (-0.6): acc_norm only
    };
    task.skipped.add(9, "made up");
    FakeScorer scorer;
    TaskResult result = evaluate_task(task, scorer, ByteEncoder{});
    CHECK(result.count == 4);
    CHECK(result.skipped == 1);
    CHECK(result.acc == doctest::Approx(0.5));
    CHECK(result.acc_norm == doctest::Approx(0.75));
    CHECK(std::isnan(result.ppl));
    CHECK(summary(result) == "test: acc 0.5000 acc_norm 0.7500 (4 items, 1 skipped)");
    // what the scorer saw: context tokens, then the continuation's
    CHECK(scorer.seen[0].tokens == ByteEncoder{}.encode("ctx ab"));
    CHECK(scorer.seen[0].continuation == 3);

    TaskResult first_only = evaluate_task(task, scorer, ByteEncoder{}, 1);
    CHECK(first_only.count == 1);
    CHECK(first_only.acc == 0);
    CHECK(first_only.acc_norm == 1);

    scorer.max_len = 5;  // " zzzzzzz" (item 0) no longer fits, " zzzz" (item 3) still does
    TaskResult short_model = evaluate_task(task, scorer, ByteEncoder{});
    CHECK(short_model.too_long == 1);
    CHECK(short_model.count == 3);
    CHECK(summary(short_model) == "test: acc 0.6667 acc_norm 0.6667 (3 items, 1 skipped, 1 too long)");

    CHECK(character_count(" n\xC3\xA9") == 3);  // " né": 4 bytes, 3 characters
}

TEST_CASE("benchmarks: LAMBADA's acc (greedy on every token) and per-word perplexity") {
    Task task("lambada");
    task.last_word = true;
    for (const char* word : {" word", " Word", " zz"}) task.items.push_back(choices_after("ctx", {word}, 0));
    FakeScorer scorer;
    TaskResult result = evaluate_task(task, scorer, ByteEncoder{});
    CHECK(result.count == 3);
    CHECK(result.acc == doctest::Approx(2.0 / 3));          // " Word": 'W' is not the greedy token
    CHECK(result.ppl == doctest::Approx(std::exp(4.0)));     // summed NLL 5, 5, 2
    CHECK(std::isnan(result.acc_norm));
    CHECK(summary(result) == "lambada: acc 0.6667 ppl 54.598 (3 items, 0 skipped)");
}

TEST_CASE("evaluation shared by N ranks gives one process's numbers") {
    // tasks: items i % N == rank on each rank, counts added up
    Task task("test");
    for (int i = 0; i < 11; i++)
        task.items.push_back(choices_after("ctx", {i % 3 ? " a" : " zz", i % 4 ? " zzz" : " zzzzzzz", " Abc"}, i % 3));
    task.skipped.add(4, "made up");
    FakeScorer scorer;
    Task lambada("lambada");
    lambada.last_word = true;
    for (const char* word : {" word", " Word", " zz", " q", " Qz"}) lambada.items.push_back(choices_after("ctx", {word}, 0));
    for (const Task* t : {&task, &lambada}) {
        for (int max_len : {10, 5}) {  // 5: the items with " zzzzzzz" (8 tokens) are too long
            scorer.max_len = max_len;
            const TaskResult alone = evaluate_task(*t, scorer, ByteEncoder{});
            CHECK(alone.count > 0);
            for (int world : {1, 2, 3, 4, 16}) {
                CAPTURE(world);
                const auto shared = over_simulated_ranks<TaskResult>(
                    world, [&](const RankShare& share) { return evaluate_task(*t, scorer, ByteEncoder{}, 0, share); });
                for (const TaskResult& r : shared) {
                    CHECK(summary(r) == summary(alone));
                    CHECK(r.acc == alone.acc);
                    CHECK((r.acc_norm == alone.acc_norm || (std::isnan(r.acc_norm) && std::isnan(alone.acc_norm))));
                    CHECK((r.ppl == doctest::Approx(alone.ppl).epsilon(1e-12) || (std::isnan(r.ppl) && std::isnan(alone.ppl))));
                }
            }
        }
    }

    // validation: batches i % N == rank, NLL, tokens and accuracy added up
    GPTConfig config{16, 50, padded_vocab(50), 2, 2, 8, AttentionConfig{}};
    GPT<double> model(config);
    model.init(5);
    Rng rng(3);
    std::vector<uint16_t> tokens(3000);
    for (uint16_t& t : tokens) t = uint16_t(rng.below(config.vocab_size));
    TokenData data("random tokens", config.vocab_size);
    data.add_tokens(tokens, "random tokens");
    DataLoader val(data, 2, 16, 0, /*shuffle=*/false);
    const std::vector<int> token_bytes(config.vocab_size, 3);
    const Evaluation alone = evaluate(model, val, 7, 2, 16, token_bytes);
    CHECK(alone.tokens == 7 * 2 * 16);
    for (int world : {2, 3, 7, 9}) {  // 9: two ranks without a batch
        CAPTURE(world);
        const auto shared = over_simulated_ranks<Evaluation>(
            world, [&](const RankShare& share) { return evaluate(model, val, 7, 2, 16, token_bytes, share); });
        for (const Evaluation& e : shared) {
            CHECK(e.tokens == alone.tokens);
            CHECK(e.accuracy.correct == alone.accuracy.correct);
            CHECK(e.accuracy.counted == alone.accuracy.counted);
            CHECK(e.loss == doctest::Approx(alone.loss).epsilon(1e-12));  // only the order of the sum differs
            CHECK(e.bits_per_byte == doctest::Approx(alone.bits_per_byte).epsilon(1e-12));
        }
    }
}

TEST_CASE("benchmarks: GPTScorer's log-probabilities are those of each sequence run alone") {
    // 8 positions, a vocabulary of 11 (padded to 64), 2 layers, 2 heads, 8 channels
    GPTConfig config{8, 11, padded_vocab(11), 2, 2, 8, AttentionConfig{}};
    for (bool lazy : {false, true}) {
        CAPTURE(lazy);
        if (lazy) {
            config.attention.kind = AttentionKind::elastic;
            config.attention.position = PositionKind::rope;
            config.attention.bias_window = 3;
        }
        GPT<double> model(config);
        Rng rng(11);
        for (double& p : model.params) p = rng.normal(0.0, 0.5);  // far from uniform predictions

        // the token the model predicts after {1, 2, 3}, as a continuation that must come out greedy
        const std::vector<int> context = {1, 2, 3};
        model.forward(context.data(), nullptr, 1, 3);
        const double* last_row = model.logits() + 2 * config.padded_vocab_size;
        const int predicted = int(std::max_element(last_row, last_row + config.vocab_size) - last_row);

        // three lengths, so rows are padded; the third is cut to the model's 8 positions
        std::vector<Sequence> sequences = {make_sequence(context, {4, 5}, 8), make_sequence({6}, {7}, 8),
                                           make_sequence({9, 10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {10, 0, 3}, 8),
                                           make_sequence(context, {predicted}, 8)};
        CHECK(sequences[2].tokens == std::vector<int>{4, 5, 6, 7, 8, 9, 10, 0, 3});
        GPTScorer<double> scorer(model);
        std::vector<std::vector<TokenScore>> scores = scorer.score(sequences);
        REQUIRE(scores.size() == sequences.size());
        CHECK(scores[3][0].greedy);

        for (size_t s = 0; s < sequences.size(); s++) {
            const std::vector<int>& tokens = sequences[s].tokens;
            const int n = (int)tokens.size(), first = n - 1 - sequences[s].continuation;
            model.forward(tokens.data(), nullptr, 1, n - 1);
            REQUIRE((int)scores[s].size() == sequences[s].continuation);
            for (int t = first; t < n - 1; t++) {
                const double* row = model.logits() + (size_t)t * config.padded_vocab_size;
                double max_logit = *std::max_element(row, row + config.vocab_size), sum = 0;
                for (int v = 0; v < config.vocab_size; v++) sum += std::exp(row[v] - max_logit);
                const int target = tokens[t + 1];
                const double logprob = row[target] - max_logit - std::log(sum);
                CHECK(scores[s][t - first].logprob == doctest::Approx(logprob).epsilon(1e-12));
                CHECK(scores[s][t - first].greedy == (row[target] == max_logit));
            }
        }
    }
}
