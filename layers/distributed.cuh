// distributed.cuh: data-parallel training on NCCL, one process per GPU (the CPU side, tested without a
// GPU: distributed.h).
//
// Communicator owns the NCCL communicator and a second CUDA stream for communication:
//  - Plain data parallel (--zero 0): every rank holds all parameters and optimizer state. During the
//    last micro-batch's backward pass the trainer calls reduce_gradients_async with each finished
//    bucket (gradient_buckets: one per layer, then the embeddings); the all-reduce (ncclAvg) runs on
//    the communication stream while the next layer's backward computes, and wait() makes the compute
//    stream wait for all of it before the optimizer step.
//  - ZeRO-1 (--zero 1): after the backward pass, reduce_scatter_gradients leaves each rank the average
//    gradient of its shard (in place, at the shard's offset in the padded buffer); adamw_update_shard
//    updates the shard's fp32 master weights, m and v (shard_size floats each instead of the full
//    vector: the memory ZeRO-1 saves) and the shard of the bf16 parameters; all_gather_params
//    sends every rank the others' updated shards. Checkpoints: gather_shards brings m and v back to
//    full vectors for state.bin, and loading uploads shard_slice of them (distributed.h), so N GPUs
//    resume on M.
//  - A failed rank ends the job, never hangs it. The communicator is created non-blocking, and every
//    wait on the host (synchronize, and each NCCL call that returns ncclInProgress) is a loop that polls
//    the stream and ncclCommGetAsyncError; on an NCCL error, or after --nccl-timeout seconds without
//    progress, it aborts the communicator (ncclCommAbort, which also stops kernels spinning on a dead
//    peer) and throws focus::Error("rank R: ..."). The process exits with that message; the launcher
//    (mpirun, srun, scripts/launch_single_node.sh) then ends the others, or their own watchdogs do.
// Gradients are reduced in floatX (bf16, as llm.c does): the sum of N bf16 values is rounded once more.
#pragma once
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "adamw.cuh"
#include "cuda_common.cuh"
#include "distributed.h"

namespace focus::gpu {

static_assert(sizeof(ncclUniqueId) == UNIQUE_ID_BYTES, "distributed.h's UniqueId must hold an ncclUniqueId");

#ifdef FOCUS_FP32
constexpr ncclDataType_t NCCL_FLOATX = ncclFloat32;
#else
constexpr ncclDataType_t NCCL_FLOATX = ncclBfloat16;
#endif

// AdamW on the segments of one rank's shard, the GPU twin of focus::adamw_update_shard: master, m and v
// hold the shard (indexed by shard_offset), params and grads are full buffers (indexed by offset).
inline void adamw_update_shard(float* master, floatX* params, const floatX* grads, float* m, float* v,
                               const std::vector<ShardSegment>& segments, int step, const AdamWConfig& base,
                               float lr_attn_mult, float grad_scale, cudaStream_t stream) {
    for (const ShardSegment& s : segments)
        adamw_update(master + s.shard_offset, params + s.offset, grads + s.offset, m + s.shard_offset,
                     v + s.shard_offset, s.count, step, segment_adamw(base, s, lr_attn_mult), grad_scale, stream);
}

class Communicator {
public:
    // Every rank calls this: it selects GPU local_rank (or the only one the process sees), shares NCCL's id
    // (distributed.h) and creates the communicator. It throws if the other ranks do not all arrive within
    // timeout_seconds.
    Communicator(const ProcessGroup& group, double timeout_seconds) : group_(group), timeout_seconds_(timeout_seconds) {
        int devices = 0;
        CUDA_CHECK(cudaGetDeviceCount(&devices));
        // A launcher that binds one GPU per process (srun --gpus-per-task=1) leaves each rank device 0.
        const int device = devices == 1 ? 0 : group.local_rank;
        check(device < devices, format("rank %d: local rank %d, but this node shows %d GPU(s)", group.rank,
                                       group.local_rank, devices));
        CUDA_CHECK(cudaSetDevice(device));
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
        config.blocking = 0;  // NCCL calls return at once; our loops below decide how long to wait
        settle(ncclCommInitRankConfig(&comm_, group.world_size, id, group.rank, &config), "creating the communicator");
        CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
        CUDA_CHECK(cudaEventCreateWithFlags(&gradients_ready_, cudaEventDisableTiming));
        CUDA_CHECK(cudaEventCreateWithFlags(&reductions_done_, cudaEventDisableTiming));
        CUDA_CHECK(cudaEventCreateWithFlags(&stream_done_, cudaEventDisableTiming));
    }

    ~Communicator() {
        // Errors are no longer reportable here; abort rather than finalize so a broken peer cannot block exit.
        if (comm_) ncclCommAbort(comm_);
        if (comm_stream_) cudaStreamDestroy(comm_stream_);
        for (cudaEvent_t event : {gradients_ready_, reductions_done_, stream_done_})
            if (event) cudaEventDestroy(event);
    }
    Communicator(const Communicator&) = delete;
    Communicator& operator=(const Communicator&) = delete;

    const ProcessGroup& group() const { return group_; }

    // ---- plain data parallel ----------------------------------------------------------------------

    // Averages grads over the ranks in each range, in place, on the communication stream, after the work
    // compute_stream has queued so far (the backward pass that produced them). Returns at once.
    void reduce_gradients_async(floatX* grads, const std::vector<GradientRange>& ranges, cudaStream_t compute_stream) {
        CUDA_CHECK(cudaEventRecord(gradients_ready_, compute_stream));
        CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, gradients_ready_, 0));
        settle(ncclGroupStart(), "ncclGroupStart");
        for (const GradientRange& r : ranges)
            settle(ncclAllReduce(grads + r.offset, grads + r.offset, r.count, NCCL_FLOATX, ncclAvg, comm_, comm_stream_),
                   "all-reducing gradients");
        settle(ncclGroupEnd(), "all-reducing gradients");
    }

    // compute_stream's later work waits for every reduction issued so far (the host does not wait).
    void wait(cudaStream_t compute_stream) {
        CUDA_CHECK(cudaEventRecord(reductions_done_, comm_stream_));
        CUDA_CHECK(cudaStreamWaitEvent(compute_stream, reductions_done_, 0));
    }

    // ---- ZeRO-1 -----------------------------------------------------------------------------------

    // grads holds shards.padded_count() values (zero past the parameters). Afterwards this rank's shard,
    // grads[begin(rank), begin(rank) + shard_size), holds the average over the ranks; the rest is stale.
    void reduce_scatter_gradients(floatX* grads, const ShardLayout& shards, cudaStream_t stream) {
        check_layout(shards);
        floatX* own = grads + shards.shard_size * size_t(group_.rank);
        settle(ncclReduceScatter(grads, own, shards.shard_size, NCCL_FLOATX, ncclAvg, comm_, stream),
               "reduce-scattering gradients");
    }

    // Every rank's shard of params (padded_count() values) goes to every rank, in place.
    void all_gather_params(floatX* params, const ShardLayout& shards, cudaStream_t stream) {
        check_layout(shards);
        const floatX* own = params + shards.shard_size * size_t(group_.rank);
        settle(ncclAllGather(own, params, shards.shard_size, NCCL_FLOATX, comm_, stream), "all-gathering parameters");
    }

    // The full vector (parameter_count values) from every rank's shard_size values of shard: m or v for
    // state.bin. Every rank must call it; every rank gets the result (rank 0 writes it).
    std::vector<float> gather_shards(const float* shard, const ShardLayout& shards, cudaStream_t stream) {
        check_layout(shards);
        DeviceBuffer<float> full(shards.padded_count());
        settle(ncclAllGather(shard, full.data(), shards.shard_size, ncclFloat32, comm_, stream), "gathering optimizer state");
        synchronize(stream, "gathering optimizer state");
        std::vector<float> host = full.download();
        host.resize(shards.parameter_count);
        return host;
    }

    // ---- both -------------------------------------------------------------------------------------

    // Sums count floats over the ranks, in place: the shards' squared gradient norms, the step's loss.
    void all_reduce_sum(float* values, size_t count, cudaStream_t stream) {
        settle(ncclAllReduce(values, values, count, ncclFloat32, ncclSum, comm_, stream), "summing over the ranks");
    }

    // The mean of value over the ranks, on the host: the step's loss and the validation loss for the log,
    // and whether any rank was interrupted (Ctrl-C), so that all stop at the same step.
    float mean_over_ranks(float value, cudaStream_t stream) {
        if (!scalar_.data()) scalar_ = DeviceBuffer<float>(1);
        CUDA_CHECK(cudaMemcpyAsync(scalar_.data(), &value, sizeof value, cudaMemcpyHostToDevice, stream));
        all_reduce_sum(scalar_.data(), 1, stream);
        CUDA_CHECK(cudaMemcpyAsync(&value, scalar_.data(), sizeof value, cudaMemcpyDeviceToHost, stream));
        synchronize(stream, "averaging over the ranks");
        return value / float(group_.world_size);
    }

    // Waits on the host until stream has done everything queued so far, watching NCCL meanwhile: the
    // trainer's one wait per step (before reading the loss). what names the wait in errors.
    void synchronize(cudaStream_t stream, const char* what) {
        CUDA_CHECK(cudaEventRecord(stream_done_, stream));
        watch(what, [&] {
            const cudaError_t status = cudaEventQuery(stream_done_);
            if (status == cudaErrorNotReady) return false;
            CUDA_CHECK(status);
            return true;
        });
    }

private:
    // Throws (after aborting the communicator) when NCCL reports an error or timeout_seconds pass before
    // done() returns true.
    template <typename Done>
    void watch(const char* what, Done done) {
        const auto deadline = deadline_after(timeout_seconds_);
        for (;;) {
            if (done()) return;
            ncclResult_t state = ncclSuccess;
            const ncclResult_t queried = ncclCommGetAsyncError(comm_, &state);
            if (queried != ncclSuccess) state = queried;
            if (state != ncclSuccess && state != ncclInProgress)
                abort(format("NCCL error while %s: %s (%s)", what, ncclGetErrorString(state), ncclGetLastError(comm_)));
            if (Clock::now() > deadline)
                abort(format("timeout after %g s waiting for %s: a rank failed or stalled (--nccl-timeout)",
                             timeout_seconds_, what));
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    }

    // A non-blocking communicator may answer ncclInProgress; it must settle before the next NCCL call.
    void settle(ncclResult_t result, const char* what) {
        if (result == ncclInProgress) {
            watch(what, [&] {
                ncclCommGetAsyncError(comm_, &result);
                return result != ncclInProgress;
            });
        }
        if (result != ncclSuccess)
            abort(format("NCCL error while %s: %s (%s)", what, ncclGetErrorString(result), ncclGetLastError(comm_)));
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

    ProcessGroup group_;
    double timeout_seconds_;
    ncclComm_t comm_ = nullptr;
    cudaStream_t comm_stream_ = nullptr;
    cudaEvent_t gradients_ready_ = nullptr, reductions_done_ = nullptr, stream_done_ = nullptr;
    DeviceBuffer<float> scalar_;  // mean_over_ranks's one value
};

}  // namespace focus::gpu
