// bench_allreduce.cu: NCCL's bandwidth over the ranks of a launch, for the collectives the trainer uses
// (layers/distributed.cuh): the all-reduce of plain data parallel, and ZeRO-1's reduce of the gradients to
// their shards' owners (one ncclReduce per shard for the whole buffer) plus all-gather of the parameters. Each is first checked (every rank contributes rank + 1,
// the average must be (N + 1) / 2 everywhere; the gather of optimizer-state shards for checkpoints too),
// then timed. With one rank it exercises the whole code path, with N ranks it measures what --zero 0/1
// will cost per step:
//   scripts/launch_single_node.sh 8 build/bench_allreduce            (one node, 8 GPUs)
//   build/bench_allreduce --mb 250                                    (one GPU)
//   RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 build/bench_allreduce --exit-rank 1 &
//   RANK=0 ... build/bench_allreduce --nccl-timeout 20   (rank 0 must stop with a timeout error, not hang)
// busbw is NCCL-tests' bus bandwidth: the all-reduce moves 2(N-1)/N of the buffer through each GPU's
// links, the reduces to the owners (like a reduce-scatter) and the all-gather (N-1)/N each, so busbw
// compares with the link's speed.
#include <cstdio>

#if __has_include(<nccl.h>)
#include "../layers/distributed.cuh"
#include "gpu_timing.cuh"

using namespace focus;
using namespace focus::gpu;

template <typename T>
static __global__ void fill_kernel(T* x, size_t n, float value) {
    const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) x[i] = T(value);
}

template <typename T>
static void fill(T* x, size_t n, float value, cudaStream_t stream) {
    fill_kernel<<<ceil_div(n, 256), 256, 0, stream>>>(x, n, value);
    CUDA_CHECK_LAUNCH();
}

// Counts the elements of x[0, n) that differ from value (on the host: a check, not a benchmark).
static size_t count_wrong(const DeviceBuffer<floatX>& x, size_t n, float value) {
    const std::vector<floatX> host = x.download();
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++) wrong += float(host[i]) != value;
    return wrong;
}

// The checkpoint path of ZeRO-1 and the logged loss: every rank's shard of m holds its rank, gathered
// every element must name the rank that owns it; the mean of rank + 1 over the ranks is (N + 1) / 2.
static size_t count_wrong_gather(Communicator& comm, const ShardLayout& shards, cudaStream_t stream) {
    const int rank = comm.group().rank, N = comm.group().world_size;
    DeviceBuffer<float> shard(shards.shard_size);
    fill(shard.data(), shard.size(), float(rank), stream);
    const std::vector<float> full = comm.gather_shards(shard.data(), shards, stream);
    size_t wrong = full.size() != shards.parameter_count;
    for (int owner = 0; owner < N; owner++)
        for (size_t i = shards.begin(owner); i < shards.end(owner) && !wrong; i++) wrong += full[i] != float(owner);
    wrong += comm.mean_over_ranks(double(rank + 1), stream) != double(N + 1) / 2;
    return wrong;
}

static int run(int argc, char** argv) {
    CLI::App app("NCCL all-reduce / reduce to shard owners + all-gather bandwidth over the ranks of a launch",
                 "bench_allreduce");
    DistributedFlags flags;
    add_distributed_flags(app, flags);
    double megabytes = 250;  // GPT-2 124M's gradient in bf16
    int iterations = 20;
    bool require_gpu = false;
    int exit_rank = -1;
    app.add_option("--mb", megabytes, "buffer size in MB (default: GPT-2 124M's bf16 gradient)")->check(CLI::PositiveNumber);
    app.add_option("--iterations", iterations, "timed calls of each collective")->check(CLI::PositiveNumber);
    app.add_flag("--require-gpu", require_gpu, "fail instead of skipping when there is no GPU");
    app.add_option("--exit-rank", exit_rank, "this rank quits once the communicator exists: the others must end "
                                             "with a timeout error within --nccl-timeout, not hang");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::printf("bench_allreduce: no CUDA device: %s\n", require_gpu ? "failed (--require-gpu)" : "skipped");
        return require_gpu ? 1 : 0;
    }
    const ProcessGroup group = process_group(flags, launcher_environment());
    Communicator comm(group, flags.nccl_timeout);
    if (group.rank == exit_rank) {
        std::printf("rank %d: leaving before the first collective (--exit-rank)\n", group.rank);
        std::_Exit(3);  // like a crash: no clean-up
    }
    const int N = group.world_size, rank = group.rank;
    const size_t count = size_t(megabytes * 1e6 / sizeof(floatX));
    const ShardLayout shards = shard_layout(count, N);
    DeviceBuffer<floatX> buffer(shards.padded_count());
    cudaStream_t stream;
    CUDA_CHECK(cudaStreamCreate(&stream));
    const float average = float(N + 1) / 2;  // of 1, 2, ..., N: exact in bf16 for any N up to 256

    // correctness: the averaged all-reduce, then the reduce to the owners + all-gather
    fill(buffer.data(), buffer.size(), float(rank + 1), stream);
    comm.reduce_gradients_async(buffer.data(), {{0, count}}, stream);
    comm.wait(stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    const size_t all_reduce_wrong = count_wrong(buffer, count, average);
    fill(buffer.data(), buffer.size(), float(rank + 1), stream);
    comm.reduce_to_owners_async(buffer.data(), {{0, count}}, shards, stream);
    comm.wait(stream);
    comm.all_gather_params(buffer.data(), shards, stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    const size_t zero_wrong = count_wrong(buffer, shards.padded_count(), average);
    const size_t gather_wrong = count_wrong_gather(comm, shards, stream);

    const double all_reduce_ms = mean_ms_per_call(stream, 1, iterations, [&] {
        comm.reduce_gradients_async(buffer.data(), {{0, count}}, stream);
        comm.wait(stream);
    });
    const double reduce_ms = mean_ms_per_call(stream, 1, iterations, [&] {
        comm.reduce_to_owners_async(buffer.data(), {{0, count}}, shards, stream);
        comm.wait(stream);
    });
    const double all_gather_ms =
        mean_ms_per_call(stream, 1, iterations, [&] { comm.all_gather_params(buffer.data(), shards, stream); });
    CUDA_CHECK(cudaStreamDestroy(stream));

    auto verdict = [](size_t wrong) { return wrong ? format("WRONG in %zu elements", wrong) : std::string("correct"); };
    std::printf("rank %d/%d (GPU %d): all-reduce %s, reduce to owners + all-gather %s, gather of shards %s\n", rank, N,
                group.local_rank, verdict(all_reduce_wrong).c_str(), verdict(zero_wrong).c_str(),
                verdict(gather_wrong).c_str());
    if (rank == 0) {
        const double bytes = double(count) * sizeof(floatX), gb = 1e9;
        auto row = [&](const char* name, double ms, double bus_factor) {
            const double algbw = bytes / (ms / 1e3) / gb;
            std::printf("| %-16s | %8.1f MB | %2d | %8.3f ms | %7.1f GB/s | %7.1f GB/s |\n", name, bytes / 1e6, N, ms,
                        algbw, algbw * bus_factor);
        };
        std::printf("| collective       | %11s | N  | %11s | %12s | %12s |\n", "buffer", "time", "algbw", "busbw");
        row("all-reduce", all_reduce_ms, 2.0 * (N - 1) / N);
        row("reduce to owners", reduce_ms, double(N - 1) / N);
        row("all-gather", all_gather_ms, double(N - 1) / N);
    }
    return all_reduce_wrong || zero_wrong || gather_wrong ? 1 : 0;
}

int main(int argc, char** argv) { return run_reporting_errors(run, argc, argv); }

#else
// Without NCCL's header the benchmark cannot exist; `make test` still compiles every .cu file.
int main() {
    std::printf("bench_allreduce: built without NCCL (no nccl.h): skipped\n");
    return 0;
}
#endif
