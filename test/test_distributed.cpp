// Tests of the CPU side of data-parallel training (layers/distributed.h), with ranks simulated in one
// process:
//  - N ranks reading their part of a batch average to the gradient one rank accumulates over N micro-batches;
//  - the ZeRO-1 shard layout: equal aligned shards that cover every parameter exactly once, and
//    segments that carry their tensor's learning-rate multiplier and weight-decay flag;
//  - owner_pieces cuts every gradient bucket at the shard boundaries, each piece inside its owner's shard;
//  - N simulated ranks (each bucket reduced to the owners of its pieces, AdamW on the own shard,
//    all-gather) end bit-identical to one
//    rank running the trainer's per-tensor loop, also across a checkpoint saved on N ranks and resumed
//    on M; re-sharding N -> M round trips for parameter counts that do not divide;
//  - the process group from flags and each launcher's environment, with clear errors for bad input;
//  - NCCL's id shared over file: and tcp: between threads (a stranger on the port is ignored), and the
//    timeout errors when a rank is missing or the world sizes disagree;
//  - scripts/launch_single_node.sh: the environment each rank gets, and a failed rank ending the job.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "../data/checkpoint.h"
#include "../data/dataloader.h"
#include "../layers/distributed.h"

using namespace focus;

namespace {

// A small model with every kind of tensor: learned positions, theta and the distance bias (both
// attention parameters, trained at lr * lr_attn_mult).
GPTConfig small_config() {
    GPTConfig c;
    c.max_seq_len = 16;
    c.vocab_size = 61;
    c.padded_vocab_size = padded_vocab(c.vocab_size);
    c.num_layers = 2;
    c.num_heads = 2;
    c.channels = 16;
    c.attention.kind = AttentionKind::elastic;
    c.attention.bias_window = 8;
    return c;
}

std::vector<float> random_vector(Rng& rng, size_t n, double std) {
    std::vector<float> v(n);
    for (float& x : v) x = float(rng.normal(0.0, std));
    return v;
}

// The settings of one optimizer step, as train_gpt.cu sets them.
constexpr float LR = 1e-2f, LR_ATTN_MULT = 3.0f, WEIGHT_DECAY = 0.1f, GRAD_SCALE = 0.7f;

AdamWConfig base_adamw() {
    AdamWConfig config;
    config.lr = LR;
    config.weight_decay = WEIGHT_DECAY;
    return config;
}

// One rank, the per-tensor rule written out here on its own (the trainers take it from segment_adamw over
// one shard), the reference.
void single_rank_step(const std::vector<ParamTensor>& layout, std::vector<float>& params, const std::vector<float>& grads,
                      std::vector<float>& m, std::vector<float>& v, int step) {
    AdamWConfig adamw = base_adamw();
    for (const ParamTensor& t : layout) {
        adamw.lr = t.attention_param ? LR * LR_ATTN_MULT : LR;
        adamw.weight_decay = t.weight_decay ? WEIGHT_DECAY : 0.0f;
        adamw_update(params.data() + t.offset, grads.data() + t.offset, m.data() + t.offset, v.data() + t.offset,
                     t.count, step, adamw, GRAD_SCALE);
    }
}

// N ranks under ZeRO-1, simulated: each holds the full (padded) parameters and its shard of m and v.
struct SimulatedRanks {
    ShardLayout shards;
    std::vector<std::vector<float>> params, m, v;  // per rank
    std::vector<std::vector<ShardSegment>> segments;
    GradientBuckets buckets;

    SimulatedRanks(const GPTConfig& config, const std::vector<float>& initial, const std::vector<float>& full_m,
                   const std::vector<float>& full_v, int world)
        : shards(shard_layout(initial.size(), world)), buckets(gradient_buckets(parameter_layout(config), config.num_layers)) {
        const std::vector<ParamTensor> layout = parameter_layout(config);
        for (int r = 0; r < world; r++) {
            std::vector<float> padded = initial;
            padded.resize(shards.padded_count(), 0.0f);
            params.push_back(padded);
            m.push_back(shard_slice(full_m, shards, r));
            v.push_back(shard_slice(full_v, shards, r));
            segments.push_back(shard_segments(layout, shards, r));
        }
    }

    // grads_per_rank: each rank's own gradient (full vector). As the trainer does, each bucket's pieces
    // are averaged onto their owners (NCCL's reduce with ncclAvg: the ranks' values added in rank order,
    // then divided), bucket by bucket in the backward pass's order; then each rank updates its shard from
    // its own gradient buffer, whose other parts still hold its own, unaveraged gradient.
    void step(const std::vector<std::vector<float>>& grads_per_rank, int step) {
        const int N = shards.world_size;
        std::vector<std::vector<float>> grads = grads_per_rank;
        for (auto& g : grads) g.resize(shards.padded_count(), 0.0f);
        auto reduce_to_owners = [&](const std::vector<GradientRange>& ranges) {
            for (const OwnedRange& piece : owner_pieces(ranges, shards))
                for (size_t i = piece.offset; i < piece.offset + piece.count; i++) {
                    float sum = 0.0f;
                    for (int r = 0; r < N; r++) sum += grads_per_rank[r][i];
                    grads[piece.owner][i] = sum / float(N);
                }
        };
        for (auto layer = buckets.layers.rbegin(); layer != buckets.layers.rend(); ++layer) reduce_to_owners(*layer);
        reduce_to_owners(buckets.rest);
        for (int r = 0; r < N; r++)
            adamw_update_shard(params[r].data(), grads[r].data(), m[r].data(), v[r].data(), segments[r], step,
                               base_adamw(), LR_ATTN_MULT, GRAD_SCALE);
        // all-gather: every rank receives every rank's shard of the parameters
        for (int r = 0; r < shards.world_size; r++)
            for (int owner = 0; owner < shards.world_size; owner++)
                std::copy(params[owner].begin() + shards.begin(owner), params[owner].begin() + shards.end(owner),
                          params[r].begin() + shards.begin(owner));
    }

    // The full moment vector as state.bin stores it: the shards all-gathered end to end, padding cut.
    static std::vector<float> gathered(const std::vector<std::vector<float>>& slices, const ShardLayout& shards) {
        std::vector<float> full;
        for (const auto& slice : slices) full.insert(full.end(), slice.begin(), slice.end());
        full.resize(shards.parameter_count);
        return full;
    }
};

// The gradient averaged over the ranks in rank order, like one all-reduce.
std::vector<float> average(const std::vector<std::vector<float>>& per_rank) {
    std::vector<float> sum(per_rank[0].size(), 0.0f);
    for (const auto& g : per_rank)
        for (size_t i = 0; i < g.size(); i++) sum[i] += g[i];
    for (float& x : sum) x /= float(per_rank.size());
    return sum;
}

std::vector<std::vector<float>> rank_gradients(Rng& rng, size_t n, int world) {
    std::vector<std::vector<float>> grads;
    for (int r = 0; r < world; r++) grads.push_back(random_vector(rng, n, 1.0));
    return grads;
}

std::string temporary_path(const std::string& name) {
    return (std::filesystem::temp_directory_path() / format("focus_test_%d_%s", int(getpid()), name.c_str())).string();
}

// A port nothing listens on right now (the kernel's choice for port 0).
int free_port() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    socklen_t length = sizeof address;
    REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    close(fd);
    return ntohs(address.sin_port);
}

// Runs share_unique_id for every group on its own thread; each rank's id, or its error message.
struct ExchangeResult {
    std::vector<UniqueId> ids;
    std::vector<std::string> errors;
};
ExchangeResult exchange_in_threads(const std::vector<ProcessGroup>& groups, double timeout_seconds) {
    UniqueId made{};
    for (size_t i = 0; i < made.size(); i++) made[i] = uint8_t(i * 7 + 3);
    ExchangeResult result;
    result.ids.resize(groups.size());
    result.errors.resize(groups.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < groups.size(); i++)
        threads.emplace_back([&, i] {
            try {
                result.ids[i] = share_unique_id(groups[i], [&] { return made; }, timeout_seconds);
            } catch (const Error& e) {
                result.errors[i] = e.what();
            }
        });
    for (auto& t : threads) t.join();
    return result;
}

std::vector<ProcessGroup> groups_for(const std::string& init, int world, std::vector<int> ranks = {}) {
    if (ranks.empty())
        for (int r = world - 1; r >= 0; r--) ranks.push_back(r);  // rank 0 last: the others must wait for it
    std::vector<ProcessGroup> groups;
    for (int r : ranks) {
        ProcessGroup g;
        g.rank = r;
        g.world_size = world;
        g.init = parse_init_method(init);
        groups.push_back(g);
    }
    return groups;
}

UniqueId expected_id() {
    UniqueId id{};
    for (size_t i = 0; i < id.size(); i++) id[i] = uint8_t(i * 7 + 3);
    return id;
}

}  // namespace

TEST_CASE("N ranks with one micro-batch each average to one rank's gradient over N micro-batches") {
    // The data loader hands rank r of N the samples one rank reads in its micro-batch r, so with the same
    // --total-batch the optimizer sees the same gradient on any number of GPUs (here in double: exactly
    // up to rounding; on the GPU the bf16 sums differ in order).
    GPTConfig config = small_config();
    const int B = 2, T = 8, N = 3;
    Rng rng(5);
    std::vector<uint16_t> tokens(4000);
    for (uint16_t& t : tokens) t = uint16_t(rng.below(config.vocab_size));
    TokenData data("random tokens", config.vocab_size);
    data.add_tokens(tokens, "random tokens");
    GPT<double> model(config);
    model.init(3);
    std::vector<int> inputs(B * T), targets(B * T);

    DataLoader one_rank(data, B, T, /*seed=*/17, /*shuffle=*/true);
    model.zero_grad();
    for (int micro = 0; micro < N; micro++) {
        one_rank.next_batch(inputs.data(), targets.data());
        model.forward(inputs.data(), targets.data(), B, T);
        model.backward(1.0 / N);
    }
    const std::vector<double> accumulated = model.grads;

    std::vector<double> averaged(accumulated.size(), 0.0);
    for (int rank = 0; rank < N; rank++) {
        DataLoader loader(data, B, T, /*seed=*/17, /*shuffle=*/true, rank, N);
        loader.next_batch(inputs.data(), targets.data());
        model.zero_grad();
        model.forward(inputs.data(), targets.data(), B, T);
        model.backward(1.0);
        for (size_t i = 0; i < averaged.size(); i++) averaged[i] += model.grads[i] / N;
    }
    double largest = 0, difference = 0;
    for (size_t i = 0; i < averaged.size(); i++) {
        largest = std::max(largest, std::fabs(accumulated[i]));
        difference = std::max(difference, std::fabs(averaged[i] - accumulated[i]));
    }
    CHECK(largest > 0);
    CHECK(difference <= 1e-12 * largest);
}

TEST_CASE("shard layout: equal aligned shards that cover every parameter once") {
    for (size_t count : {size_t(0), size_t(1), size_t(127), size_t(128), size_t(1001), size_t(124475904)}) {
        for (int world : {1, 2, 3, 4, 7, 8, 64}) {
            CAPTURE(count);
            CAPTURE(world);
            ShardLayout shards = shard_layout(count, world);
            CHECK(shards.shard_size % SHARD_ALIGNMENT == 0);
            CHECK(shards.shard_size > 0);
            CHECK(shards.padded_count() >= count);
            CHECK(shards.padded_count() - count < size_t(world) * (SHARD_ALIGNMENT + 1));
            size_t next = 0;
            for (int r = 0; r < world; r++) {
                CHECK(shards.begin(r) == next);
                CHECK(shards.end(r) >= shards.begin(r));
                CHECK(shards.end(r) - shards.begin(r) <= shards.shard_size);
                next = shards.end(r);
            }
            CHECK(next == count);
        }
    }
    CHECK_THROWS_WITH(shard_layout(10, 0), "shard layout for world size 0");
}

TEST_CASE("shard segments: every parameter once, with its tensor's flags") {
    const GPTConfig config = small_config();
    const std::vector<ParamTensor> layout = parameter_layout(config);
    const size_t count = parameter_count(layout);
    for (int world : {1, 2, 3, 5, 8, 100}) {
        CAPTURE(world);
        ShardLayout shards = shard_layout(count, world);
        std::vector<int> covered(count, 0);
        for (int r = 0; r < world; r++) {
            for (const ShardSegment& s : shard_segments(layout, shards, r)) {
                const ParamTensor& t = *std::find_if(layout.begin(), layout.end(),
                                                     [&](const ParamTensor& p) { return p.name == s.tensor; });
                CHECK(s.offset >= t.offset);
                CHECK(s.offset + s.count <= t.offset + t.count);
                CHECK(s.offset >= shards.begin(r));
                CHECK(s.offset + s.count <= shards.end(r));
                CHECK(s.shard_offset == s.offset - shards.begin(r));
                CHECK(s.weight_decay == t.weight_decay);
                CHECK(s.attention_param == t.attention_param);
                for (size_t i = s.offset; i < s.offset + s.count; i++) covered[i]++;
            }
        }
        CHECK(std::all_of(covered.begin(), covered.end(), [](int c) { return c == 1; }));
    }
    ShardSegment theta{"theta", 0, 0, 1, false, true}, wte{"wte", 0, 0, 1, true, false};
    CHECK(segment_adamw(base_adamw(), theta, LR_ATTN_MULT).lr == LR * LR_ATTN_MULT);
    CHECK(segment_adamw(base_adamw(), theta, LR_ATTN_MULT).weight_decay == 0.0f);
    CHECK(segment_adamw(base_adamw(), wte, LR_ATTN_MULT).lr == LR);
    CHECK(segment_adamw(base_adamw(), wte, LR_ATTN_MULT).weight_decay == WEIGHT_DECAY);
}

TEST_CASE("ZeRO-1 over N simulated ranks is bit-identical to one rank") {
    const GPTConfig config = small_config();
    const std::vector<ParamTensor> layout = parameter_layout(config);
    const size_t count = parameter_count(layout);
    for (int world : {1, 2, 3, 4, 7}) {
        CAPTURE(world);
        Rng rng(42 + world);
        std::vector<float> params(count);
        init_parameters(params.data(), layout, config.num_layers, 7);
        std::vector<float> m(count, 0.0f), v(count, 0.0f);
        SimulatedRanks ranks(config, params, m, v, world);
        for (int step = 1; step <= 3; step++) {
            const std::vector<std::vector<float>> grads = rank_gradients(rng, count, world);
            single_rank_step(layout, params, average(grads), m, v, step);
            ranks.step(grads, step);
        }
        for (int r = 0; r < world; r++) {
            CHECK(std::equal(params.begin(), params.end(), ranks.params[r].begin()));  // bit-exact
            CHECK(std::all_of(ranks.params[r].begin() + count, ranks.params[r].end(), [](float x) { return x == 0.0f; }));
        }
        CHECK(SimulatedRanks::gathered(ranks.m, ranks.shards) == m);
        CHECK(SimulatedRanks::gathered(ranks.v, ranks.shards) == v);
    }
}

TEST_CASE("a checkpoint saved on N ranks resumes on M ranks bit-exactly") {
    const GPTConfig config = small_config();
    const std::vector<ParamTensor> layout = parameter_layout(config);
    const size_t count = parameter_count(layout);
    const std::string path = temporary_path("state.bin");
    for (auto [saved_world, resumed_world] : {std::pair{3, 2}, {1, 4}, {4, 1}, {2, 5}}) {
        CAPTURE(saved_world);
        CAPTURE(resumed_world);
        Rng rng(9);
        std::vector<float> params(count);
        init_parameters(params.data(), layout, config.num_layers, 11);
        std::vector<float> m(count, 0.0f), v(count, 0.0f);
        SimulatedRanks before(config, params, m, v, saved_world);
        int step = 1;
        for (; step <= 2; step++) {
            const std::vector<std::vector<float>> grads = rank_gradients(rng, count, saved_world);
            single_rank_step(layout, params, average(grads), m, v, step);
            before.step(grads, step);
        }
        TrainState saved;
        saved.step = step - 1;
        saved.m = SimulatedRanks::gathered(before.m, before.shards);
        saved.v = SimulatedRanks::gathered(before.v, before.shards);
        save_state(path, saved);
        const TrainState loaded = load_state(path, count);
        SimulatedRanks after(config, std::vector<float>(before.params[0].begin(), before.params[0].begin() + count),
                             loaded.m, loaded.v, resumed_world);
        for (; step <= 4; step++) {
            const std::vector<std::vector<float>> grads = rank_gradients(rng, count, resumed_world);
            single_rank_step(layout, params, average(grads), m, v, step);
            after.step(grads, step);
        }
        CHECK(std::equal(params.begin(), params.end(), after.params[resumed_world - 1].begin()));
        CHECK(SimulatedRanks::gathered(after.m, after.shards) == m);
        CHECK(SimulatedRanks::gathered(after.v, after.shards) == v);
    }
    std::filesystem::remove(path);
}

TEST_CASE("re-sharding N -> M round trips, padding is zero") {
    for (size_t count : {size_t(1), size_t(1000), size_t(1001), size_t(12345)}) {
        Rng rng(count);
        const std::vector<float> full = random_vector(rng, count, 1.0);
        for (int n : {1, 2, 3, 5, 8}) {
            const ShardLayout from = shard_layout(count, n);
            std::vector<std::vector<float>> slices;
            for (int r = 0; r < n; r++) slices.push_back(shard_slice(full, from, r));
            const std::vector<float> gathered = SimulatedRanks::gathered(slices, from);
            CHECK(gathered == full);
            for (int m : {1, 2, 3, 7}) {
                CAPTURE(count);
                CAPTURE(n);
                CAPTURE(m);
                const ShardLayout to = shard_layout(count, m);
                for (int r = 0; r < m; r++) {
                    const std::vector<float> slice = shard_slice(gathered, to, r);
                    REQUIRE(slice.size() == to.shard_size);
                    CHECK(std::equal(slice.begin(), slice.begin() + (to.end(r) - to.begin(r)), full.begin() + to.begin(r)));
                    CHECK(std::all_of(slice.begin() + (to.end(r) - to.begin(r)), slice.end(), [](float x) { return x == 0.0f; }));
                }
            }
        }
    }
    CHECK_THROWS_WITH(shard_slice(std::vector<float>(10), shard_layout(11, 2), 0),
                      "optimizer state of 10 values for 11 parameters");
}

TEST_CASE("the data position carries over to another world size") {
    // 8 ranks x B=4 at batch 10: 320 samples used; on 2 ranks (8 samples a batch) that is batch 40.
    DataPosition now = data_position_for_world({3, 10}, 32, 8, 100);
    CHECK(now.epoch == 3);
    CHECK(now.position == 40);
    // down to the batch holding the next unused sample: 3 x 5 = 15 samples -> batch 1 of 8-sample batches
    CHECK(data_position_for_world({0, 3}, 5, 8, 100).position == 1);
    // past the last whole batch of the new size: the next epoch
    now = data_position_for_world({2, 10}, 1, 4, 2);
    CHECK(now.epoch == 3);
    CHECK(now.position == 0);
}

TEST_CASE("gradient buckets: every gradient once, each layer's slice in its bucket") {
    const GPTConfig config = small_config();
    const std::vector<ParamTensor> layout = parameter_layout(config);
    const size_t count = parameter_count(layout);
    const GradientBuckets buckets = gradient_buckets(layout, config.num_layers);
    REQUIRE(buckets.layers.size() == size_t(config.num_layers));
    std::vector<int> covered(count, 0);
    auto cover = [&](const std::vector<GradientRange>& ranges) {
        for (const GradientRange& g : ranges)
            for (size_t i = g.offset; i < g.offset + g.count; i++) covered[i]++;
    };
    for (const auto& layer : buckets.layers) cover(layer);
    cover(buckets.rest);
    CHECK(std::all_of(covered.begin(), covered.end(), [](int c) { return c == 1; }));
    // layer 1's piece of qkvw starts one layer's worth of qkvw past the tensor's start
    const ParamTensor& qkvw = *std::find_if(layout.begin(), layout.end(), [](const ParamTensor& t) { return t.name == "qkvw"; });
    const size_t C = config.channels;
    CHECK(std::any_of(buckets.layers[1].begin(), buckets.layers[1].end(), [&](const GradientRange& g) {
        return g.offset == qkvw.offset + 3 * C * C && g.count == 3 * C * C;
    }));

    std::vector<ParamTensor> unknown = layout;
    unknown.push_back({"extra", count, 5, {5}});
    CHECK_THROWS_WITH(gradient_buckets(unknown, config.num_layers),
                      "tensor extra is not [layers, ...]: gradient_buckets does not know when its gradient is done");
}

TEST_CASE("owner pieces: each range cut at the shard boundaries, each piece inside its owner's shard") {
    const GPTConfig config = small_config();
    const std::vector<ParamTensor> layout = parameter_layout(config);
    const size_t count = parameter_count(layout);
    const GradientBuckets buckets = gradient_buckets(layout, config.num_layers);
    for (int world : {1, 2, 3, 8, 100}) {
        CAPTURE(world);
        const ShardLayout shards = shard_layout(count, world);
        std::vector<int> covered(count, 0);
        auto cover = [&](const std::vector<GradientRange>& ranges) {
            const std::vector<OwnedRange> pieces = owner_pieces(ranges, shards);
            size_t range_total = 0, piece_total = 0;
            for (const GradientRange& g : ranges) range_total += g.count;
            for (const OwnedRange& p : pieces) {
                CHECK(p.count > 0);
                CHECK(p.offset >= shards.begin(p.owner));
                CHECK(p.offset + p.count <= shards.end(p.owner));
                piece_total += p.count;
                for (size_t i = p.offset; i < p.offset + p.count; i++) covered[i]++;
            }
            CHECK(piece_total == range_total);
        };
        for (const auto& layer : buckets.layers) cover(layer);
        cover(buckets.rest);
        CHECK(std::all_of(covered.begin(), covered.end(), [](int c) { return c == 1; }));
    }
    // a range across two shards of 128: two pieces
    const ShardLayout two = shard_layout(256, 2);
    const std::vector<OwnedRange> pieces = owner_pieces({{100, 50}}, two);
    REQUIRE(pieces.size() == 2);
    CHECK((pieces[0].offset == 100 && pieces[0].count == 28 && pieces[0].owner == 0));
    CHECK((pieces[1].offset == 128 && pieces[1].count == 22 && pieces[1].owner == 1));
    CHECK_THROWS_WITH(owner_pieces({{200, 57}}, two), "gradient range [200, 257) past the 256 parameters");
}

TEST_CASE("process group from flags and launcher environments") {
    DistributedFlags none;
    ProcessGroup alone = process_group(none, {});
    CHECK(alone.rank == 0);
    CHECK(alone.world_size == 1);
    CHECK(alone.local_rank == 0);
    CHECK(alone.init.kind == InitMethod::Kind::none);
    CHECK_FALSE(alone.distributed());

    ProcessGroup torchrun = process_group(
        none, {{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29500"}});
    CHECK(torchrun.rank == 5);
    CHECK(torchrun.world_size == 8);
    CHECK(torchrun.local_rank == 1);
    CHECK(torchrun.init.to_string() == "tcp:node7:29500");
    CHECK(torchrun.launcher == "torchrun-style");

    // mpirun inside a Slurm allocation: mpirun describes the processes
    const Environment mpi_in_slurm = {{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                                      {"OMPI_COMM_WORLD_LOCAL_RANK", "3"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"},
                                      {"SLURM_LOCALID", "0"}};
    DistributedFlags file_init;
    file_init.init = "file:/shared/job42.id";
    ProcessGroup mpi = process_group(file_init, mpi_in_slurm);
    CHECK(mpi.rank == 3);
    CHECK(mpi.world_size == 4);
    CHECK(mpi.local_rank == 3);
    CHECK(mpi.launcher == "Open MPI");
    CHECK(mpi.init.kind == InitMethod::Kind::file);
    CHECK(mpi.init.path == "/shared/job42.id");

    ProcessGroup slurm = process_group(file_init, {{"SLURM_PROCID", "9"}, {"SLURM_NTASKS", "16"}, {"SLURM_LOCALID", "1"}});
    CHECK(slurm.rank == 9);
    CHECK(slurm.world_size == 16);
    CHECK(slurm.local_rank == 1);
    ProcessGroup pmi = process_group(file_init, {{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}});
    CHECK(pmi.local_rank == 2);  // no local rank from the launcher: one node, the rank

    DistributedFlags explicit_flags;
    explicit_flags.rank = 0;
    explicit_flags.world_size = 2;
    explicit_flags.local_rank = 0;
    explicit_flags.init = "tcp:127.0.0.1:1234";
    ProcessGroup flags_win = process_group(explicit_flags, {{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "3"},
                                                            {"MASTER_ADDR", "x"}, {"MASTER_PORT", "1"}});
    CHECK(flags_win.rank == 0);
    CHECK(flags_win.world_size == 2);
    CHECK(flags_win.local_rank == 0);
    CHECK(flags_win.init.to_string() == "tcp:127.0.0.1:1234");
    CHECK(flags_win.launcher == "flags");
}

TEST_CASE("process group: conflicts and bad values give clear errors") {
    DistributedFlags none;
    CHECK_THROWS_WITH(process_group(none, {{"RANK", "abc"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}),
                      "environment variable RANK=abc is not a non-negative whole number");
    CHECK_THROWS_WITH(process_group(none, {{"SLURM_PROCID", "-1"}, {"SLURM_NTASKS", "2"}}),
                      "environment variable SLURM_PROCID=-1 is not a non-negative whole number");
    CHECK_THROWS_WITH(process_group(none, {{"RANK", "1"}}), "torchrun-style launch: RANK is set but WORLD_SIZE is not");
    CHECK_THROWS_WITH(process_group(none, {{"RANK", "4"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}),
                      "rank 4 outside world size 4 (torchrun-style)");
    CHECK_THROWS_WITH(process_group(none, {{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "2"}}),
                      "local rank 2 above rank 1: a node cannot hold more ranks than there are");
    CHECK_THROWS_WITH(process_group(none, {{"RANK", "1"}, {"WORLD_SIZE", "4"}}),
                      "world size 4 needs --dist-init file:PATH or tcp:HOST:PORT (or MASTER_ADDR and MASTER_PORT in the "
                      "environment) so the ranks can find each other");

    DistributedFlags rank_only;
    rank_only.rank = 1;
    CHECK_THROWS_WITH(process_group(rank_only, {}), "--rank 1 needs --world-size (no launcher environment found)");
    DistributedFlags world_only;
    world_only.world_size = 2;
    CHECK_THROWS_WITH(process_group(world_only, {}), "--world-size 2 needs --rank (no launcher environment found)");
    DistributedFlags outside;
    outside.rank = 2;
    outside.world_size = 2;
    outside.init = "file:/tmp/id";
    CHECK_THROWS_WITH(process_group(outside, {}), "rank 2 outside world size 2 (flags)");

    CHECK_THROWS_WITH(parse_init_method("udp:host:1"), "--dist-init udp:host:1: expected file:PATH or tcp:HOST:PORT");
    CHECK_THROWS_WITH(parse_init_method("file:"), "--dist-init file:PATH needs a path");
    CHECK_THROWS_WITH(parse_init_method("tcp:host"), "--dist-init tcp:host: expected tcp:HOST:PORT");
    CHECK_THROWS_WITH(parse_init_method("tcp:host:0"), "--dist-init tcp:host:0: port '0' is not a number in 1..65535");
    CHECK_THROWS_WITH(parse_init_method("tcp:host:99999"), "--dist-init tcp:host:99999: port '99999' is not a number in 1..65535");
    CHECK_THROWS_WITH(parse_init_method("tcp:host:12x"), "--dist-init tcp:host:12x: port '12x' is not a number in 1..65535");
}

TEST_CASE("distributed flags parse with CLI11") {
    auto parse = [](std::vector<std::string> args) {
        CLI::App app;
        DistributedFlags flags;
        add_distributed_flags(app, flags);
        std::reverse(args.begin(), args.end());  // CLI11 consumes a reversed vector
        app.parse(args);
        return flags;
    };
    DistributedFlags flags =
        parse({"--rank", "1", "--world-size", "2", "--dist-init", "file:/tmp/x", "--zero", "1", "--nccl-timeout", "5"});
    CHECK(flags.rank == 1);
    CHECK(flags.world_size == 2);
    CHECK(flags.local_rank == -1);
    CHECK(flags.init == "file:/tmp/x");
    CHECK(flags.zero == 1);
    CHECK(flags.nccl_timeout == 5.0);
    CHECK(parse({}).zero == 0);
    CHECK_THROWS_AS(parse({"--zero", "2"}), CLI::ValidationError);
    CHECK_THROWS_AS(parse({"--world-size", "0"}), CLI::ValidationError);
    CHECK_THROWS_AS(parse({"--nccl-timeout", "-1"}), CLI::ValidationError);
}

TEST_CASE("NCCL's id is shared over file: and tcp:") {
    const std::string path = temporary_path("nccl.id");
    for (const std::string& init : {"file:" + path, format("tcp:127.0.0.1:%d", free_port()), format("tcp:localhost:%d", free_port())}) {
        CAPTURE(init);
        ExchangeResult result = exchange_in_threads(groups_for(init, 4), 5.0);
        for (size_t i = 0; i < result.ids.size(); i++) {
            CHECK(result.errors[i] == "");
            CHECK(result.ids[i] == expected_id());
        }
    }
    // rank 0 cleans up once everyone has the id, so a later job cannot pick up a stale one
    CHECK_FALSE(std::filesystem::exists(path));
    for (int r = 1; r < 4; r++) CHECK_FALSE(std::filesystem::exists(ack_path(path, r)));

    ProcessGroup single;
    single.init = parse_init_method("tcp:127.0.0.1:1");  // e.g. MASTER_ADDR left set: never used alone
    CHECK(share_unique_id(single, expected_id, 1.0) == expected_id());
}

TEST_CASE("tcp: rank 0 ignores a connection that is not a rank") {
    const std::vector<ProcessGroup> groups = groups_for(format("tcp:127.0.0.1:%d", free_port()), 2, {0, 1});
    std::string rank0_error;
    std::thread rank0([&] {
        try {
            share_unique_id(groups[0], expected_id, 5.0);
        } catch (const Error& e) {
            rank0_error = e.what();
        }
    });
    {  // a stranger connects, says something else and leaves
        std::string last_error;
        Socket stranger = connect_with_retry(groups[0].init, deadline_after(5.0), last_error);
        REQUIRE(stranger.fd() >= 0);
        const char hello[] = "GET / HTTP/1.0\r\n\r\n";
        REQUIRE(send(stranger.fd(), hello, sizeof hello, MSG_NOSIGNAL) == ssize_t(sizeof hello));
    }
    CHECK(share_unique_id(groups[1], [] { return UniqueId{}; }, 5.0) == expected_id());
    rank0.join();
    CHECK(rank0_error == "");
}

TEST_CASE("a missing rank ends the exchange with a timeout error, never a hang") {
    const std::string path = temporary_path("missing.id");
    const int port = free_port();
    // rank 0 never appears
    ExchangeResult no_rank0 = exchange_in_threads(groups_for("file:" + path, 2, {1}), 0.2);
    CHECK(no_rank0.errors[0] == format("rank 1: timeout after 0.2 s waiting for rank 0 to write the NCCL id to %s", path.c_str()));
    no_rank0 = exchange_in_threads(groups_for(format("tcp:127.0.0.1:%d", port), 2, {1}), 0.2);
    CHECK(no_rank0.errors[0] == format("rank 1: timeout after 0.2 s waiting for rank 0 at tcp:127.0.0.1:%d (last error: "
                                       "Connection refused)", port));
    // rank 2 never appears: rank 0 names it, rank 1 got its id
    for (const std::string& init : {"file:" + path, format("tcp:127.0.0.1:%d", port)}) {
        ExchangeResult no_rank2 = exchange_in_threads(groups_for(init, 3, {1, 0}), 0.3);
        CHECK(no_rank2.errors[0] == "");
        CHECK(no_rank2.ids[0] == expected_id());
        CHECK(no_rank2.errors[1].find("rank 0: timeout after 0.3 s waiting for rank(s) 2 ") == 0);
    }
    CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("ranks started with different world sizes stop with a clear error") {
    const std::string path = temporary_path("mismatch.id");
    for (const std::string& init : {"file:" + path, format("tcp:127.0.0.1:%d", free_port())}) {
        CAPTURE(init);
        std::vector<ProcessGroup> groups = groups_for(init, 2, {1, 0});
        groups[0].world_size = 3;  // rank 1 thinks there are 3 ranks
        ExchangeResult result = exchange_in_threads(groups, 0.5);
        CHECK(result.errors[0].find("rank 1: ") == 0);
        CHECK(result.errors[0].find("has world size 2, this rank has 3: were all ranks started with the same "
                                    "--world-size?") != std::string::npos);
        CHECK(!result.errors[1].empty());  // rank 0: a mismatch (tcp) or a timeout (file) naming rank 1
    }
    std::filesystem::remove(path);
}

TEST_CASE("launch_single_node.sh: torchrun-style environment, and a failed rank ends the job") {
    const std::string out = temporary_path("launch");
    std::filesystem::create_directories(out);
    const std::string show = "env -u MASTER_PORT bash scripts/launch_single_node.sh 3 bash -c 'echo \"$RANK $WORLD_SIZE $LOCAL_RANK "
                             "$MASTER_ADDR:$MASTER_PORT\" > " + out + "/rank$RANK'";
    REQUIRE(std::system(show.c_str()) == 0);
    for (int r = 0; r < 3; r++) CHECK(read_file(format("%s/rank%d", out.c_str(), r)) == format("%d 3 %d 127.0.0.1:29500\n", r, r));

    // rank 1 fails while the others would run for a minute: the script returns rank 1's status at once
    const auto start = Clock::now();
    const int status = std::system("bash scripts/launch_single_node.sh 3 bash -c "
                                   "'if [ $RANK = 1 ]; then exit 7; fi; exec sleep 60' 2>/dev/null");
    CHECK(WEXITSTATUS(status) == 7);
    CHECK(Clock::now() - start < std::chrono::seconds(10));
    std::filesystem::remove_all(out);
}
