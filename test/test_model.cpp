// The assembled model (layers/gpt.h), its files (data/checkpoint.h) and its data (data/dataloader.h,
// data/synthetic.h).
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <set>

#include "../data/checkpoint.h"
#include "../data/dataloader.h"
#include "../data/synthetic.h"
#include "gradcheck.h"

using namespace focus;
namespace fs = std::filesystem;

namespace {

GPTConfig tiny_config(AttentionConfig attention) {
    GPTConfig c;
    c.max_seq_len = 6;
    c.vocab_size = 11;
    c.padded_vocab_size = padded_vocab(11);
    c.num_layers = 2;
    c.num_heads = 2;
    c.channels = 8;
    c.attention = attention;
    return c;
}

// Parameters large enough that attention is far from uniform (GPT-2's 0.02 init makes every
// gradient tiny and every softmax flat); theta spread so tau ranges over 0.6..1.3.
template <typename Real>
void randomise(GPT<Real>& model, uint64_t seed) {
    Rng rng(seed);
    for (const ParamTensor& t : model.layout()) {
        for (size_t i = 0; i < t.count; i++) {
            double x = rng.normal(0.0, 0.5);
            if (t.name == "ln1w" || t.name == "ln2w" || t.name == "lnfw") x = 1.0 + 0.2 * x;
            if (t.name == "theta") x = -0.4 + 0.7 * rng.uniform();
            model.params[t.offset + i] = Real(x);
        }
    }
    for (const ParamTensor& t : model.layout())  // llm.c's padded vocabulary rows stay zero
        if (t.name == "wte")
            for (size_t i = (size_t)model.config().vocab_size * model.config().channels; i < t.count; i++)
                model.params[t.offset + i] = 0;
}

struct Variant {
    const char* name;
    AttentionConfig attention;
};

std::vector<Variant> variants() {
    using K = AttentionKind;
    using P = PositionKind;
    const float base = 10000.0f;
    // AttentionConfig fields in order: kind, k, global tokens, position, rope base, bias window
    return {{"softmax", {K::softmax, 0, 0, P::learned, base, 0}},
            {"lazy (elastic + rope + bias)", {K::elastic, 0, 0, P::rope, base, 4}},
            {"elastic, learned positions", {K::elastic, 0, 0, P::learned, base, 0}},
            {"topk + rope", {K::topk, 2, 0, P::rope, base, 0}},
            {"window + global token + bias", {K::window, 2, 1, P::learned, base, 3}},
            {"block + rope", {K::block, 3, 0, P::rope, base, 0}}};
}

}  // namespace

TEST_CASE("model: the whole model's gradient matches finite differences for every attention variant") {
    const int B = 2, T = 6;
    std::vector<int> tokens(B * T), targets(B * T);
    Rng rng(7);
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (int)rng.below(11);
        targets[i] = (int)rng.below(11);
    }
    targets[3] = -1;  // a position without a target takes no part in the loss
    for (const Variant& v : variants()) {
        SUBCASE(v.name) {
            GPT<double> model(tiny_config(v.attention));
            randomise(model, 11);
            model.zero_grad();
            model.forward(tokens.data(), targets.data(), B, T);
            model.backward();
            std::vector<double> analytic = model.grads;
            auto loss = [&] { return model.forward(tokens.data(), targets.data(), B, T); };
            for (const ParamTensor& t : model.layout()) {
                if (t.name == "wte") continue;  // checked below without its padded rows
                std::vector<double> param(model.params.begin() + t.offset, model.params.begin() + t.offset + t.count);
                std::vector<double> grad(analytic.begin() + t.offset, analytic.begin() + t.offset + t.count);
                auto loss_of_slice = [&] {
                    std::copy(param.begin(), param.end(), model.params.begin() + t.offset);
                    return loss();
                };
                CHECK_GRADIENT(t.name, param, grad, loss_of_slice, 1e-4);
                std::copy(param.begin(), param.end(), model.params.begin() + t.offset);
            }
            // wte: the real vocabulary rows (the tied LM head and the embedding both contribute)
            size_t real = (size_t)11 * 8;
            std::vector<double> wte(model.params.begin(), model.params.begin() + real);
            std::vector<double> grad(analytic.begin(), analytic.begin() + real);
            auto loss_of_wte = [&] {
                std::copy(wte.begin(), wte.end(), model.params.begin());
                return loss();
            };
            CHECK_GRADIENT("wte", wte, grad, loss_of_wte, 1e-4);
            for (size_t i = real; i < model.layout()[0].count; i++) CHECK(analytic[i] == 0.0);
        }
    }
}

TEST_CASE("model: gradient accumulation over micro-batches equals one large batch") {
    GPT<double> model(tiny_config(variants()[1].attention));
    randomise(model, 3);
    const int T = 6;
    std::vector<int> tokens(4 * T), targets(4 * T);
    Rng rng(5);
    for (int i = 0; i < 4 * T; i++) tokens[i] = (int)rng.below(11), targets[i] = (int)rng.below(11);
    model.zero_grad();
    model.forward(tokens.data(), targets.data(), 4, T);
    model.backward();
    std::vector<double> whole = model.grads;
    model.zero_grad();
    for (int half = 0; half < 2; half++) {
        model.forward(tokens.data() + half * 2 * T, targets.data() + half * 2 * T, 2, T);
        model.backward(0.5);
    }
    for (size_t i = 0; i < whole.size(); i++) CHECK(model.grads[i] == doctest::Approx(whole[i]).epsilon(1e-12));
}

TEST_CASE("model: a fresh GPT-2 initialisation predicts nearly uniformly") {
    GPTConfig c = tiny_config({});
    c.vocab_size = 50;
    c.padded_vocab_size = 64;
    GPT<float> model(c);
    model.init(1);
    std::vector<int> tokens(12, 3), targets(12, 4);
    double loss = model.forward(tokens.data(), targets.data(), 2, 6);
    CHECK(loss == doctest::Approx(std::log(50.0)).epsilon(0.01));
    CHECK(std::isnan(model.forward(tokens.data(), nullptr, 2, 6)));
    tokens[0] = 50;  // outside the vocabulary
    CHECK_THROWS_WITH_AS(model.forward(tokens.data(), targets.data(), 2, 6), doctest::Contains("outside the vocabulary"), Error);
    CHECK_THROWS_WITH_AS(model.forward(tokens.data(), targets.data(), 1, 7), doctest::Contains("sequence length 7"), Error);
}

TEST_CASE("checkpoint: model files round-trip and bad files fail clearly") {
    fs::path dir = fs::temp_directory_path() / ("focus_ckpt_" + std::to_string(getpid()));
    fs::create_directories(dir);
    std::string path = (dir / "model.bin").string();
    for (const Variant& v : variants()) {
        GPT<float> model(tiny_config(v.attention));
        randomise(model, 2);
        save_model(path, model.config(), model.params);
        std::vector<float> loaded;
        GPTConfig c = load_model(path, loaded);
        CHECK(to_json(c) == to_json(model.config()));
        CHECK(to_json(read_model_config(path)) == to_json(model.config()));
        CHECK(loaded == model.params);
    }
    // llm.c's layout: header words 8.. are zero for a plain GPT-2, wpe present, nothing appended
    GPT<float> gpt2(tiny_config({}));
    save_model(path, gpt2.config(), gpt2.params);
    std::string bytes = read_file(path);
    const int32_t* header = reinterpret_cast<const int32_t*>(bytes.data());
    CHECK(header[0] == 20240326);
    CHECK(header[1] == 3);
    CHECK(header[7] == 64);
    for (int i = 8; i < 256; i++) CHECK(header[i] == 0);
    CHECK(bytes.size() == 1024 + 4 * gpt2.params.size());

    auto write = [&](const std::string& content) {
        FILE* f = std::fopen(path.c_str(), "wb");
        std::fwrite(content.data(), 1, content.size(), f);
        std::fclose(f);
    };
    std::vector<float> params;
    write(bytes.substr(0, bytes.size() - 4));
    CHECK_THROWS_WITH_AS(load_model(path, params), doctest::Contains("truncated"), Error);
    CHECK_THROWS_WITH_AS(read_model_config(path), doctest::Contains("truncated"), Error);  // from the header and size
    write(bytes + "x");
    CHECK_THROWS_WITH_AS(read_model_config(path), doctest::Contains("corrupt"), Error);
    write("hello");
    CHECK_THROWS_WITH_AS(load_model(path, params), doctest::Contains("not a GPT-2 model file"), Error);
    CHECK_THROWS_WITH_AS(read_model_config(path), doctest::Contains("shorter than its header"), Error);
    CHECK(read_file(path, 3) == "hel");
    std::string bf16 = bytes;
    reinterpret_cast<int32_t*>(bf16.data())[1] = 5;
    write(bf16);
    CHECK_THROWS_WITH_AS(load_model(path, params), doctest::Contains("bf16"), Error);
    std::string bad_heads = bytes;
    reinterpret_cast<int32_t*>(bad_heads.data())[5] = 3;  // 8 channels do not split into 3 heads
    write(bad_heads);
    CHECK_THROWS_WITH_AS(load_model(path, params), doctest::Contains("invalid model header"), Error);
    CHECK_THROWS_WITH_AS(load_model((dir / "missing.bin").string(), params), doctest::Contains("cannot open"), Error);
    CHECK_THROWS_WITH_AS(read_model_config((dir / "missing.bin").string()), doctest::Contains("cannot open"), Error);
    fs::remove_all(dir);
}

TEST_CASE("checkpoint: directories are written whole, and state round-trips") {
    fs::path root = fs::temp_directory_path() / ("focus_run_" + std::to_string(getpid()));
    fs::remove_all(root);
    GPT<float> model(tiny_config(variants()[1].attention));
    randomise(model, 4);
    TrainState state;
    state.step = 7;
    state.tokens_seen = 12345;
    state.rng.reseed(99);
    state.rng.next_u64();
    state.data_epoch = 2;
    state.data_position = 5;
    state.m.assign(model.params.size(), 0.25f);
    state.v.assign(model.params.size(), 0.5f);
    std::string dir = (root / checkpoint_name(7)).string();
    save_checkpoint(dir, model.config(), model.params, state, {{"step", 7}});
    save_checkpoint(dir, model.config(), model.params, state, {{"step", 7}});  // over an existing one
    for (const auto& entry : fs::directory_iterator(root)) CHECK(entry.path().filename() == "ckpt_00000007");

    TrainState loaded = load_state(dir + "/state.bin", model.params.size());
    CHECK(loaded.step == 7);
    CHECK(loaded.tokens_seen == 12345);
    CHECK(loaded.data_epoch == 2);
    CHECK(loaded.data_position == 5);
    CHECK(loaded.rng.next_u64() == state.rng.next_u64());
    CHECK(loaded.m == state.m);
    CHECK(loaded.v == state.v);
    CHECK_THROWS_WITH_AS(load_state(dir + "/state.bin", model.params.size() + 1), doctest::Contains("parameters"), Error);
    CHECK_THROWS_WITH_AS(load_state(dir + "/model.bin", model.params.size()), doctest::Contains("not a training state"), Error);

    // --resume finds the newest complete checkpoint and ignores an interrupted save's leftovers
    save_checkpoint((root / checkpoint_name(12)).string(), model.config(), model.params, state, {});
    fs::create_directories(root / "ckpt_00000020.tmp.1");
    CHECK(fs::path(resolve_checkpoint(root.string())).filename() == "ckpt_00000012");
    CHECK(resolve_checkpoint(dir) == dir);
    CHECK_THROWS_WITH_AS(resolve_checkpoint((root / "nope").string()), doctest::Contains("no such directory"), Error);
    fs::remove_all(root);
}

TEST_CASE("data: the loader is deterministic, reshuffles every epoch, resumes and splits ranks") {
    TokenData data("numbers", 1000);
    std::vector<uint16_t> tokens(1 + 40 * 4);
    for (size_t i = 0; i < tokens.size(); i++) tokens[i] = (uint16_t)i;
    data.add_tokens(tokens, "numbers");  // 40 samples of T = 4
    const int B = 2, T = 4;
    auto epoch_firsts = [&](DataLoader& loader) {  // first input token of every sample of one epoch
        std::vector<int> firsts, in(B * T), tg(B * T);
        for (size_t b = 0; b < loader.batches_per_epoch(); b++) {
            loader.next_batch(in.data(), tg.data());
            for (int r = 0; r < B; r++) {
                for (int t = 0; t < T; t++) CHECK(tg[r * T + t] == in[r * T + t] + 1);
                firsts.push_back(in[r * T]);
            }
        }
        return firsts;
    };
    DataLoader a(data, B, T, 42, true), b(data, B, T, 42, true);
    CHECK(a.batches_per_epoch() == 20);
    std::vector<int> e0 = epoch_firsts(a), e1 = epoch_firsts(a);
    CHECK(e0 == epoch_firsts(b));  // same seed, same order
    CHECK(e0 != e1);               // a new permutation each epoch
    CHECK(std::set<int>(e0.begin(), e0.end()).size() == 40);  // each sample once per epoch
    CHECK(std::set<int>(e1.begin(), e1.end()) == std::set<int>(e0.begin(), e0.end()));

    DataLoader resumed(data, B, T, 42, true);  // continue from the middle of epoch 1
    resumed.set_position(1, 7);
    std::vector<int> in(B * T), tg(B * T);
    resumed.next_batch(in.data(), tg.data());
    CHECK(in[0] == e1[14]);
    CHECK(in[T] == e1[15]);

    DataLoader sequential(data, B, T, 42, false);
    std::vector<int> ordered = epoch_firsts(sequential);
    for (size_t i = 0; i < ordered.size(); i++) CHECK(ordered[i] == (int)(4 * i));

    // ranks: 3 ranks see disjoint samples, together as many as fit whole batches
    std::set<int> seen;
    size_t total = 0;
    for (int rank = 0; rank < 3; rank++) {
        DataLoader r(data, B, T, 42, true, rank, 3);
        CHECK(r.batches_per_epoch() == 6);  // 40 samples / (2 * 3), the tail dropped
        for (int first : epoch_firsts(r)) seen.insert(first), total++;
    }
    CHECK(total == 36);
    CHECK(seen.size() == 36);

    CHECK_THROWS_WITH_AS(DataLoader(data, 64, T, 1, true), doctest::Contains("fewer than one batch"), Error);
    CHECK_THROWS_WITH_AS(a.set_position(0, 20), doctest::Contains("outside"), Error);
    TokenData small_vocab("small", 100);
    small_vocab.add_tokens(tokens, "numbers");
    DataLoader bad(small_vocab, B, T, 1, false);
    for (int i = 0; i < 12; i++) bad.next_batch(in.data(), tg.data());  // tokens 0..96
    CHECK_THROWS_WITH_AS(bad.next_batch(in.data(), tg.data()), doctest::Contains("outside the vocabulary"), Error);
}

TEST_CASE("data: the built-in recall corpus has the structure it promises") {
    std::vector<uint16_t> tokens = make_recall_corpus(20000, 3);
    CHECK(tokens == make_recall_corpus(20000, 3));
    CHECK(tokens != make_recall_corpus(20000, 4));
    size_t documents = 0, checked_queries = 0;
    for (size_t start = 0; start < tokens.size();) {
        REQUIRE(tokens[start] == RecallTask::eot);
        size_t end = start + 1;
        while (end < tokens.size() && tokens[end] != RecallTask::eot) end++;
        if (end == tokens.size()) break;  // the last document is cut off
        size_t length = end - start - 1;  // n pairs, then n queries: 4n tokens
        REQUIRE(length % 4 == 0);
        size_t n = length / 4;
        CHECK(n >= (size_t)RecallTask::min_pairs);
        CHECK(n <= (size_t)RecallTask::max_pairs);
        std::map<int, int> value_of;
        for (size_t i = 0; i < n; i++) {
            int key = tokens[start + 1 + 2 * i], value = tokens[start + 2 + 2 * i];
            CHECK(key < RecallTask::num_keys);
            CHECK(value >= RecallTask::first_value);
            CHECK(value_of.count(key) == 0);
            value_of[key] = value;
        }
        for (size_t i = 0; i < n; i++) {
            int key = tokens[start + 1 + 2 * n + 2 * i], value = tokens[start + 2 + 2 * n + 2 * i];
            REQUIRE(value_of.count(key));
            CHECK(value_of[key] == value);
            checked_queries++;
        }
        documents++;
        start = end;
    }
    CHECK(documents > 500);
    CHECK(checked_queries > 4000);
}
