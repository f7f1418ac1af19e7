// distributed.cuh: data-parallel training on NCCL, one process per GPU (the CPU side, tested without a
// GPU: distributed.h).
//
// Communicator owns the NCCL communicator and a second CUDA stream for communication:
//  - Plain data parallel (--zero 0): every rank holds all parameters and optimizer state. During the
//    last micro-batch's backward pass the trainer calls reduce_gradients_async with each finished
//    bucket (gradient_buckets: one per layer, then the embeddings); the all-reduce (ncclAvg) runs on
//    the communication stream while the next layer's backward computes, and wait() makes the compute
//    stream wait for all of it before the optimizer step.
//  - ZeRO-1 (--zero 1): in the same places the trainer calls reduce_to_owners_async instead, which
//    averages each piece of the bucket onto the rank whose shard holds it (distributed.h's owner_pieces,
//    one ncclReduce each, in one group). After wait() each rank holds the average gradient of its shard
//    (in place, at the shard's offset in the padded buffer; the rest is stale); gpu::GPT, given this
//    communicator as its ShardExchange (gpt.cuh), updates the shard's fp32 master weights, m and v
//    (shard_size floats each instead of the full vector: the memory ZeRO-1 saves) and the shard of the
//    bf16 parameters (adamw_update_shard, adamw.cuh), then all_gather_params sends every rank the
//    others' updated shards. Checkpoints: gather_shards brings m and v back to full vectors for
//    state.bin, and loading uploads shard_slice of them (distributed.h), so N GPUs resume on M.
//  - A failed rank ends the job, never hangs it. Every collective runs on the communication stream, and a
//    watchdog thread polls ncclCommGetAsyncError and that stream: on an NCCL error, or when queued
//    collectives have not finished after --nccl-timeout seconds, it prints "error: rank R: timeout after
//    S s waiting for <collective>: ..." and exits the process with status 1 (the main thread may be stuck
//    in a CUDA wait, so it cannot be unwound). The communicator is non-blocking, so no NCCL call blocks
//    the main thread either: when one answers ncclInProgress, settle() waits for it with the same timeout
//    and throws focus::Error("rank R: ...") after ncclCommAbort. Either way the launcher (mpirun, srun
//    --kill-on-bad-exit, scripts/launch_single_node.sh) then ends the other ranks, or their own watchdogs do.
// Gradients are reduced in floatX (bf16, as llm.c does): the sum of N bf16 values is rounded once more.
#pragma once
#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cuda_common.cuh"
#include "distributed.h"
#include "gpt.cuh"

namespace focus::gpu {

static_assert(sizeof(ncclUniqueId) == UNIQUE_ID_BYTES, "distributed.h's UniqueId must hold an ncclUniqueId");

#ifdef FOCUS_FP32
constexpr ncclDataType_t NCCL_FLOATX = ncclFloat32;
#else
constexpr ncclDataType_t NCCL_FLOATX = ncclBfloat16;
#endif

// The ShardExchange that gpu::GPT uses under ZeRO-1 (gpt.cuh), and the trainer's other collectives.
class Communicator : public ShardExchange {
public:
    // Every rank calls this: it selects GPU local_rank (or the only one the process sees), shares NCCL's id
    // (distributed.h) and creates the communicator. It throws if the other ranks do not all arrive within
    // timeout_seconds.
    Communicator(const ProcessGroup& group, double timeout_seconds) : group_(group), timeout_seconds_(timeout_seconds) {
        int devices = 0;
        CUDA_CHECK(cudaGetDeviceCount(&devices));
        // A launcher that binds one GPU per process (srun --gpus-per-task=1) leaves each rank device 0.
        device_ = devices == 1 ? 0 : group.local_rank;
        check(device_ < devices, format("rank %d: local rank %d, but this node shows %d GPU(s)", group.rank,
                                        group.local_rank, devices));
        CUDA_CHECK(cudaSetDevice(device_));
        const UniqueId shared = share_unique_id(
            group,
            [&] {
                ncclUniqueId id;
                check(ncclGetUniqueId(&id) == ncclSuccess, format("rank 0: ncclGetUniqueId failed: %s",
                                                                  ncclGetLastError(nullptr)));
                UniqueId bytes;
                std::memcpy(bytes.data(), &id, sizeof id);
                return bytes;
            },
            timeout_seconds);
        ncclUniqueId id;
        std::memcpy(&id, shared.data(), sizeof id);
        ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
        config.blocking = 0;  // NCCL calls return at once; settle() decides how long to wait
        settle(ncclCommInitRankConfig(&comm_, group.world_size, id, group.rank, &config), "creating the communicator");
        CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
        CUDA_CHECK(cudaEventCreateWithFlags(&work_ready_, cudaEventDisableTiming));
        CUDA_CHECK(cudaEventCreateWithFlags(&collectives_done_, cudaEventDisableTiming));
        CUDA_CHECK(cudaEventCreateWithFlags(&watched_, cudaEventDisableTiming));
        watchdog_ = std::thread([this] { watchdog(); });
    }

    ~Communicator() override {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopping_ = true;
        }
        stop_.notify_one();
        if (watchdog_.joinable()) watchdog_.join();
        // Nothing can be reported any more: abort rather than finalize, so a broken peer cannot block the exit.
        if (comm_) ncclCommAbort(comm_);
        if (comm_stream_) cudaStreamDestroy(comm_stream_);
        for (cudaEvent_t event : {work_ready_, collectives_done_, watched_})
            if (event) cudaEventDestroy(event);
    }
    Communicator(const Communicator&) = delete;
    Communicator& operator=(const Communicator&) = delete;

    const ProcessGroup& group() const override { return group_; }

    // ---- plain data parallel ----------------------------------------------------------------------

    // Averages grads over the ranks in each range, in place, on the communication stream, after the work
    // compute_stream has queued so far (the backward pass that produced them). Returns at once.
    void reduce_gradients_async(floatX* grads, const std::vector<GradientRange>& ranges, cudaStream_t compute_stream) {
        collective(compute_stream, "the gradient all-reduce", [&] {
            settle(ncclGroupStart(), "starting the gradient all-reduce");
            for (const GradientRange& r : ranges)
                settle(ncclAllReduce(grads + r.offset, grads + r.offset, r.count, NCCL_FLOATX, ncclAvg, comm_, comm_stream_),
                       "queueing the gradient all-reduce");
            settle(ncclGroupEnd(), "queueing the gradient all-reduce");
        });
    }

    // compute_stream's later work waits for every collective queued so far (the host does not wait).
    void wait(cudaStream_t compute_stream) {
        CUDA_CHECK(cudaEventRecord(collectives_done_, comm_stream_));
        CUDA_CHECK(cudaStreamWaitEvent(compute_stream, collectives_done_, 0));
    }

    // ---- ZeRO-1 -----------------------------------------------------------------------------------

    // Like reduce_gradients_async, but each piece of the ranges is averaged onto its owner only. Once
    // every bucket went through here and wait() was called, this rank's shard of grads
    // (shards.padded_count() values, zero past the parameters) holds the average over the ranks.
    void reduce_to_owners_async(floatX* grads, const std::vector<GradientRange>& ranges, const ShardLayout& shards,
                                cudaStream_t compute_stream) {
        check_layout(shards);
        collective(compute_stream, "the gradient reduce to the shard owners", [&] {
            settle(ncclGroupStart(), "starting the gradient reduce");
            for (const OwnedRange& piece : owner_pieces(ranges, shards))
                settle(ncclReduce(grads + piece.offset, grads + piece.offset, piece.count, NCCL_FLOATX, ncclAvg,
                                  piece.owner, comm_, comm_stream_),
                       "queueing the gradient reduce");
            settle(ncclGroupEnd(), "queueing the gradient reduce");
        });
    }

    // The rest of ZeRO-1 is ordered on stream: each call starts after stream's earlier work, and stream's
    // later work sees its result.

    // Every rank's shard of params (padded_count() values) goes to every rank, in place.
    void all_gather_params(floatX* params, const ShardLayout& shards, cudaStream_t stream) override {
        check_layout(shards);
        const floatX* own = params + shards.shard_size * size_t(group_.rank);
        collective(stream, "the parameter all-gather", [&] {
            settle(ncclAllGather(own, params, shards.shard_size, NCCL_FLOATX, comm_, comm_stream_),
                   "queueing the parameter all-gather");
        });
        wait(stream);
    }

    // The full vector (parameter_count values) from every rank's shard_size values of shard: m or v for
    // state.bin. Every rank must call it; every rank gets the result (rank 0 writes it).
    std::vector<float> gather_shards(const float* shard, const ShardLayout& shards, cudaStream_t stream) override {
        check_layout(shards);
        DeviceBuffer<float> full(shards.padded_count());
        collective(stream, "the optimizer-state gather", [&] {
            settle(ncclAllGather(shard, full.data(), shards.shard_size, ncclFloat32, comm_, comm_stream_),
                   "queueing the optimizer-state gather");
        });
        wait(stream);
        CUDA_CHECK(cudaStreamSynchronize(stream));
        std::vector<float> host = full.download();
        host.resize(shards.parameter_count);
        return host;
    }

    // ---- both -------------------------------------------------------------------------------------

    // Sums count floats over the ranks, in place, ordered on stream: the shards' squared gradient norms.
    void all_reduce_sum(float* values, size_t count, cudaStream_t stream) override {
        collective(stream, "a sum over the ranks", [&] {
            settle(ncclAllReduce(values, values, count, ncclFloat32, ncclSum, comm_, comm_stream_),
                   "queueing a sum over the ranks");
        });
        wait(stream);
    }

    // Host values summed over the ranks, in place (every rank gets the sums): the partial sums of an
    // evaluation split over the ranks (RankShare, benchmarks.h).
    void sum_over_ranks(std::vector<double>& values, cudaStream_t stream) {
        if (host_sums_.size() < values.size()) host_sums_ = DeviceBuffer<double>(values.size());
        const size_t bytes = values.size() * sizeof(double);
        CUDA_CHECK(cudaMemcpyAsync(host_sums_.data(), values.data(), bytes, cudaMemcpyHostToDevice, stream));
        collective(stream, "a sum over the ranks", [&] {
            settle(ncclAllReduce(host_sums_.data(), host_sums_.data(), values.size(), ncclFloat64, ncclSum, comm_,
                                 comm_stream_),
                   "queueing a sum over the ranks");
        });
        wait(stream);
        CUDA_CHECK(cudaMemcpyAsync(values.data(), host_sums_.data(), bytes, cudaMemcpyDeviceToHost, stream));
        CUDA_CHECK(cudaStreamSynchronize(stream));
    }

    // The mean of value over the ranks, on the host: the step's loss for the log, and whether any rank
    // was interrupted (Ctrl-C), so that all stop at the same step.
    double mean_over_ranks(double value, cudaStream_t stream) {
        std::vector<double> sum = {value};
        sum_over_ranks(sum, stream);
        return sum[0] / group_.world_size;
    }

private:
    // Queues enqueue()'s NCCL calls on the communication stream after the work stream has queued so far,
    // and hands them to the watchdog under the name what.
    template <typename Enqueue>
    void collective(cudaStream_t stream, const char* what, Enqueue enqueue) {
        CUDA_CHECK(cudaEventRecord(work_ready_, stream));
        CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, work_ready_, 0));
        std::lock_guard<std::mutex> lock(mutex_);
        enqueue();
        CUDA_CHECK(cudaEventRecord(watched_, comm_stream_));
        if (!pending_) {
            pending_ = true;
            pending_since_ = Clock::now();
            pending_what_ = what;
        }
    }

    // The watchdog thread. Any host wait (cudaStreamSynchronize anywhere in the trainer) on work that
    // depends on a collective would block forever if a peer died, so the check cannot live in the waits:
    // every WATCHDOG_INTERVAL this thread asks NCCL for asynchronous errors and checks that the
    // communication stream has caught up with what was queued. When NCCL reports an error, or collectives
    // have been pending for timeout_seconds, it prints the error and ends the process (the main thread
    // may be blocked inside CUDA, so it cannot be unwound). The stream goes idle during every forward pass,
    // so "pending" restarts each step and the timeout measures one step's communication.
    void watchdog() {
        cudaSetDevice(device_);
        std::unique_lock<std::mutex> lock(mutex_);
        while (!stop_.wait_for(lock, WATCHDOG_INTERVAL, [&] { return stopping_; })) {
            if (!comm_) continue;  // settle() aborted it and is throwing the error on the main thread
            if (pending_ && cudaEventQuery(watched_) == cudaSuccess) pending_ = false;
            ncclResult_t state = ncclSuccess;
            const ncclResult_t queried = ncclCommGetAsyncError(comm_, &state);
            if (queried != ncclSuccess) state = queried;
            if (state != ncclSuccess && state != ncclInProgress)
                die(format("NCCL error during %s: %s (%s)", pending_ ? pending_what_.c_str() : "communication",
                           ncclGetErrorString(state), ncclGetLastError(comm_)));
            if (pending_ && Clock::now() - pending_since_ > std::chrono::duration<double>(timeout_seconds_))
                die(format("timeout after %g s waiting for %s: a rank failed or stalled (--nccl-timeout)",
                           timeout_seconds_, pending_what_.c_str()));
        }
    }

    // The watchdog's end of the process, with the line run_reporting_errors would print. No ncclCommAbort:
    // with a dead peer it can block, and exiting releases the GPU anyway.
    [[noreturn]] void die(const std::string& why) {
        std::fprintf(stderr, "error: rank %d: %s\n", group_.rank, why.c_str());
        std::fflush(stderr);
        std::_Exit(1);
    }

    // A non-blocking communicator may answer ncclInProgress; it must settle before the next NCCL call. On
    // the main thread, so failures throw: an NCCL error, or no progress within timeout_seconds.
    void settle(ncclResult_t result, const char* what) {
        const auto deadline = deadline_after(timeout_seconds_);
        while (result == ncclInProgress) {
            if (Clock::now() > deadline)
                abort(format("timeout after %g s %s: a rank failed or stalled (--nccl-timeout)", timeout_seconds_, what));
            std::this_thread::sleep_for(std::chrono::microseconds(100));
            ncclCommGetAsyncError(comm_, &result);
        }
        if (result != ncclSuccess)
            abort(format("NCCL error %s: %s (%s)", what, ncclGetErrorString(result), ncclGetLastError(comm_)));
    }

    [[noreturn]] void abort(const std::string& why) {
        if (comm_) ncclCommAbort(comm_);
        comm_ = nullptr;
        throw Error(format("rank %d: %s", group_.rank, why.c_str()));
    }

    void check_layout(const ShardLayout& shards) const {
        check(shards.world_size == group_.world_size,
              format("rank %d: shard layout for %d ranks in a world of %d", group_.rank, shards.world_size,
                     group_.world_size));
    }

    static constexpr auto WATCHDOG_INTERVAL = std::chrono::milliseconds(100);

    ProcessGroup group_;
    double timeout_seconds_;
    int device_ = 0;
    ncclComm_t comm_ = nullptr;
    cudaStream_t comm_stream_ = nullptr;
    cudaEvent_t work_ready_ = nullptr, collectives_done_ = nullptr;
    DeviceBuffer<double> host_sums_;  // sum_over_ranks's values on their way through NCCL

    // Shared with the watchdog thread, under mutex_: the last collective queued (watched_ is recorded after
    // it) and since when the communication stream has had unfinished work.
    std::mutex mutex_;
    std::condition_variable stop_;
    bool stopping_ = false, pending_ = false;
    cudaEvent_t watched_ = nullptr;
    Clock::time_point pending_since_;
    std::string pending_what_;
    std::thread watchdog_;
};

}  // namespace focus::gpu
