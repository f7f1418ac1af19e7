// distributed.h: the CPU side of data-parallel training, one process per GPU. Plain C++ (no CUDA, NCCL
// or MPI), so all of it is tested on any machine; the NCCL side is distributed.cuh.
//
//  - ProcessGroup: this process's rank, the world size, its GPU on this node (local rank) and how the
//    ranks meet (--dist-init). Each comes from a flag if given, else from the launcher's environment:
//    torchrun-style RANK / WORLD_SIZE / LOCAL_RANK (what scripts/launch_single_node.sh sets), Open MPI's
//    OMPI_COMM_WORLD_*, MPICH's PMI_RANK / PMI_SIZE, Slurm's SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID.
//    The innermost launcher wins (mpirun run inside a Slurm job describes the processes it started), and
//    explicit flags win over all of them. MPI is only a process launcher here: nothing links against it.
//  - share_unique_id: NCCL's communicator starts from a 128-byte id made by rank 0, which every other
//    rank must receive. --dist-init file:PATH: rank 0 writes it atomically (AtomicFile) on a filesystem
//    all ranks see; the others poll for it and leave PATH.ack.<rank> behind. --dist-init tcp:HOST:PORT:
//    rank 0 listens on PORT and answers each rank that connects. Either way rank 0 returns once every
//    rank has the id, so a missing rank is reported by name at start-up instead of hanging NCCL's init.
//    Every wait has a timeout and ends in a focus::Error naming the rank and what it waited for.
//  - ShardLayout (ZeRO-1): the flat parameter vector is split into world_size equal, aligned shards
//    (padded at the end), because NCCL's all-gather moves equal chunks. Rank r owns the AdamW state (m,
//    v, fp32 master weights) of shard r only: each gradient bucket is averaged onto the ranks that own
//    its pieces (owner_pieces) while the backward pass goes on, each rank updates its shard, and the
//    updated parameters are all-gathered. shard_segments lists the
//    pieces of tensors a shard covers, each with its tensor's learning-rate multiplier and weight-decay
//    flag, so the shard's update is exactly the per-tensor loop of the single-GPU trainer, restricted.
//  - Checkpoints stay world-size independent: state.bin holds the FULL m and v. Saving all-gathers the
//    shards (rank 0 writes); loading reads the full vectors and each rank keeps shard_slice of them, so
//    a run saved on N GPUs resumes on M. model.bin is the full parameter vector as always.
//  - gradient_buckets: the gradient ranges each layer's backward pass finishes, in the order it
//    finishes them, so the all-reduce (or under ZeRO-1 the reduce to the owners) of layer l runs while
//    layer l-1 computes.
#pragma once
#include <CLI/CLI.hpp>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "../data/io.h"
#include "adamw.h"
#include "common.h"
#include "gpt.h"

namespace focus {

// ---- the process group ------------------------------------------------------------------------------

// How the ranks find each other to share NCCL's id.
struct InitMethod {
    enum class Kind { none, file, tcp } kind = Kind::none;  // none: a single process needs no exchange
    std::string path;                                       // file
    std::string host;                                       // tcp
    int port = 0;

    std::string to_string() const {
        if (kind == Kind::file) return "file:" + path;
        if (kind == Kind::tcp) return format("tcp:%s:%d", host.c_str(), port);
        return "none";
    }
};

inline InitMethod parse_init_method(const std::string& spec) {
    InitMethod init;
    if (spec.rfind("file:", 0) == 0) {
        init.kind = InitMethod::Kind::file;
        init.path = spec.substr(5);
        check(!init.path.empty(), "--dist-init file:PATH needs a path");
        return init;
    }
    check(spec.rfind("tcp:", 0) == 0, format("--dist-init %s: expected file:PATH or tcp:HOST:PORT", spec.c_str()));
    const std::string address = spec.substr(4);
    const size_t colon = address.rfind(':');
    check(colon != std::string::npos && colon > 0,
          format("--dist-init %s: expected tcp:HOST:PORT", spec.c_str()));
    init.kind = InitMethod::Kind::tcp;
    init.host = address.substr(0, colon);
    const std::string port = address.substr(colon + 1);
    char* end = nullptr;
    const long value = std::strtol(port.c_str(), &end, 10);
    check(!port.empty() && *end == '\0' && value >= 1 && value <= 65535,
          format("--dist-init %s: port '%s' is not a number in 1..65535", spec.c_str(), port.c_str()));
    init.port = int(value);
    return init;
}

// The distributed flags of train_gpt; -1 / empty mean "not given, ask the environment".
struct DistributedFlags {
    int rank = -1, world_size = -1, local_rank = -1;
    std::string init;
    int zero = 0;                  // ZeRO stage: 0 = replicated optimizer state, 1 = sharded
    double nccl_timeout = 300.0;  // seconds any wait on another rank may take before the job ends
};

inline void add_distributed_flags(CLI::App& app, DistributedFlags& flags) {
    app.add_option("--rank", flags.rank, "this process's rank (default: from the launcher's environment)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--world-size", flags.world_size, "number of processes, one per GPU (default: from the launcher, else 1)")
        ->check(CLI::PositiveNumber);
    app.add_option("--local-rank", flags.local_rank, "the GPU of this process on its node (default: from the launcher, else the rank)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--dist-init", flags.init, "how the ranks meet: file:PATH (shared filesystem) or tcp:HOST:PORT (rank 0's address); default tcp:$MASTER_ADDR:$MASTER_PORT");
    app.add_option("--zero", flags.zero, "ZeRO stage: 0 = every rank holds the optimizer state, 1 = sharded over the ranks")
        ->check(CLI::Range(0, 1))->capture_default_str();
    app.add_option("--nccl-timeout", flags.nccl_timeout, "seconds a rank waits for the others before ending the job")
        ->check(CLI::PositiveNumber)->capture_default_str();
}

// The environment variables a launcher sets, innermost launcher first.
struct Launcher {
    const char *name, *rank, *world_size, *local_rank;
};
constexpr Launcher LAUNCHERS[] = {
    {"torchrun-style", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
    {"Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
    {"MPICH", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"},
    {"Slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
};

using Environment = std::map<std::string, std::string>;

// The variables process_group reads, from this process's environment.
inline Environment launcher_environment() {
    Environment env;
    auto read = [&](const char* name) {
        if (const char* value = std::getenv(name)) env[name] = value;
    };
    for (const Launcher& launcher : LAUNCHERS) {
        read(launcher.rank);
        read(launcher.world_size);
        read(launcher.local_rank);
    }
    read("MASTER_ADDR");
    read("MASTER_PORT");
    return env;
}

struct ProcessGroup {
    int rank = 0, world_size = 1, local_rank = 0;
    InitMethod init;
    std::string launcher = "none";  // where rank and world size came from, for messages

    bool distributed() const { return world_size > 1; }
};

// A whole non-negative number from an environment variable, or a clear error naming it.
inline int environment_number(const Environment& env, const char* name) {
    const std::string& text = env.at(name);
    char* end = nullptr;
    errno = 0;
    const long value = std::strtol(text.c_str(), &end, 10);
    check(!text.empty() && *end == '\0' && errno == 0 && value >= 0 && value <= INT32_MAX,
          format("environment variable %s=%s is not a non-negative whole number", name, text.c_str()));
    return int(value);
}

inline ProcessGroup process_group(const DistributedFlags& flags, const Environment& env) {
    ProcessGroup group;
    const Launcher* launcher = nullptr;
    for (const Launcher& candidate : LAUNCHERS)
        if (env.count(candidate.rank)) {
            launcher = &candidate;
            break;
        }
    if (launcher) {
        check(env.count(launcher->world_size),
              format("%s launch: %s is set but %s is not", launcher->name, launcher->rank, launcher->world_size));
        group.launcher = launcher->name;
        group.rank = environment_number(env, launcher->rank);
        group.world_size = environment_number(env, launcher->world_size);
    } else {
        // Without a launcher, one flag alone would leave the other to a guess.
        check((flags.rank < 0) == (flags.world_size < 0),
              flags.rank >= 0 ? format("--rank %d needs --world-size (no launcher environment found)", flags.rank)
                              : format("--world-size %d needs --rank (no launcher environment found)", flags.world_size));
    }
    if (flags.rank >= 0 || flags.world_size >= 0) group.launcher = "flags";
    if (flags.rank >= 0) group.rank = flags.rank;
    if (flags.world_size >= 0) group.world_size = flags.world_size;
    if (flags.local_rank >= 0) group.local_rank = flags.local_rank;
    else if (launcher && env.count(launcher->local_rank)) group.local_rank = environment_number(env, launcher->local_rank);
    else group.local_rank = group.rank;  // nothing says otherwise: one node

    check(group.world_size >= 1, format("world size %d: must be at least 1 (%s)", group.world_size, group.launcher.c_str()));
    check(group.rank < group.world_size,
          format("rank %d outside world size %d (%s)", group.rank, group.world_size, group.launcher.c_str()));
    check(group.local_rank <= group.rank,
          format("local rank %d above rank %d: a node cannot hold more ranks than there are", group.local_rank,
                 group.rank));

    if (!flags.init.empty()) {
        group.init = parse_init_method(flags.init);
    } else if (env.count("MASTER_ADDR") && env.count("MASTER_PORT")) {
        group.init = parse_init_method("tcp:" + env.at("MASTER_ADDR") + ":" + env.at("MASTER_PORT"));
    } else {
        check(group.world_size == 1,
              format("world size %d needs --dist-init file:PATH or tcp:HOST:PORT (or MASTER_ADDR and MASTER_PORT "
                     "in the environment) so the ranks can find each other", group.world_size));
    }
    return group;
}

// ---- sharing NCCL's unique id ---------------------------------------------------------------------

constexpr size_t UNIQUE_ID_BYTES = 128;  // sizeof(ncclUniqueId)
using UniqueId = std::array<uint8_t, UNIQUE_ID_BYTES>;

// What travels between the ranks: in the file, in each rank's request and in rank 0's answer. The world
// size rides along so ranks started with different --world-size stop with a clear error.
struct IdMessage {
    static constexpr uint64_t MAGIC = 0x31444955434f46ull;  // "FOCUID1"
    uint64_t magic = MAGIC;
    uint32_t world_size = 0, rank = 0;
    UniqueId id{};
};
static_assert(sizeof(IdMessage) == 16 + UNIQUE_ID_BYTES, "IdMessage must have no padding: it is sent as bytes");

using Clock = std::chrono::steady_clock;

inline Clock::time_point deadline_after(double seconds) {
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

inline int milliseconds_left(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return int(std::max<int64_t>(0, left));
}

// How often the waiting ranks look again: short next to any timeout, long next to a system call.
constexpr auto POLL_INTERVAL = std::chrono::milliseconds(20);

inline void check_message(const IdMessage& message, const ProcessGroup& group, const std::string& from) {
    check(message.magic == IdMessage::MAGIC, format("rank %d: %s is not a focusgpt id message", group.rank, from.c_str()));
    check(message.world_size == uint32_t(group.world_size),
          format("rank %d: %s has world size %u, this rank has %d: were all ranks started with the same --world-size?",
                 group.rank, from.c_str(), message.world_size, group.world_size));
}

// "2, 5" for the ranks in 1..world-1 not yet done, for timeout messages.
inline std::string missing_ranks(const std::vector<bool>& done) {
    std::string list;
    for (size_t r = 1; r < done.size(); r++)
        if (!done[r]) list += (list.empty() ? "" : ", ") + std::to_string(r);
    return list;
}

// -- file:PATH

inline std::string ack_path(const std::string& path, int rank) { return path + ".ack." + std::to_string(rank); }

inline void publish_unique_id_file(const ProcessGroup& group, const IdMessage& message, double timeout_seconds) {
    namespace fs = std::filesystem;
    const std::string& path = group.init.path;
    std::error_code ignored;
    for (int r = 1; r < group.world_size; r++) fs::remove(ack_path(path, r), ignored);  // from a crashed run
    AtomicFile file(path);
    file.write(&message, sizeof message);
    file.commit();
    // Take the id away once everyone has it (or on a timeout), so the next job cannot read a stale one.
    auto clean_up = [&] {
        fs::remove(path, ignored);
        for (int r = 1; r < group.world_size; r++) fs::remove(ack_path(path, r), ignored);
    };
    const auto deadline = deadline_after(timeout_seconds);
    std::vector<bool> acknowledged(group.world_size, false);
    for (int waiting = group.world_size - 1; waiting > 0;) {
        for (int r = 1; r < group.world_size; r++)
            if (!acknowledged[r] && fs::exists(ack_path(path, r))) {
                acknowledged[r] = true;
                waiting--;
            }
        if (waiting == 0) break;
        if (Clock::now() > deadline) {
            clean_up();
            throw Error(format("rank 0: timeout after %g s waiting for rank(s) %s to read the NCCL id from %s",
                               timeout_seconds, missing_ranks(acknowledged).c_str(), path.c_str()));
        }
        std::this_thread::sleep_for(POLL_INTERVAL);
    }
    clean_up();
}

inline UniqueId fetch_unique_id_file(const ProcessGroup& group, double timeout_seconds) {
    const std::string& path = group.init.path;
    const auto deadline = deadline_after(timeout_seconds);
    while (!std::filesystem::exists(path)) {
        check(Clock::now() <= deadline, format("rank %d: timeout after %g s waiting for rank 0 to write the NCCL id to %s",
                                              group.rank, timeout_seconds, path.c_str()));
        std::this_thread::sleep_for(POLL_INTERVAL);
    }
    // AtomicFile renames the complete file into place, so once it exists it is whole.
    const std::string bytes = read_file(path);
    check(bytes.size() == sizeof(IdMessage),
          format("rank %d: %s holds %zu bytes, not an NCCL id message of %zu", group.rank, path.c_str(), bytes.size(),
                 sizeof(IdMessage)));
    IdMessage message;
    std::memcpy(&message, bytes.data(), sizeof message);
    check_message(message, group, path);
    AtomicFile ack(ack_path(path, group.rank));
    ack.commit();
    return message.id;
}

// -- tcp:HOST:PORT

// A socket closed when it goes out of scope.
class Socket {
public:
    explicit Socket(int fd = -1) : fd_(fd) {}
    ~Socket() {
        if (fd_ >= 0) close(fd_);
    }
    Socket(Socket&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
    Socket& operator=(Socket&& other) noexcept {
        std::swap(fd_, other.fd_);
        return *this;
    }
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    int fd() const { return fd_; }

private:
    int fd_;
};

// Waits until fd is ready for events (POLLIN / POLLOUT); false when the deadline passed first.
inline bool wait_ready(int fd, short events, Clock::time_point deadline) {
    pollfd entry{fd, events, 0};
    for (;;) {
        const int ready = poll(&entry, 1, milliseconds_left(deadline));
        if (ready > 0) return true;
        if (ready == 0) return false;
        check(errno == EINTR, format("poll failed: %s", std::strerror(errno)));
    }
}

// Sends or receives exactly bytes, or says why not ("" on success).
inline std::string transfer_all(int fd, void* data, size_t bytes, bool sending, Clock::time_point deadline) {
    char* cursor = static_cast<char*>(data);
    while (bytes > 0) {
        if (!wait_ready(fd, sending ? POLLOUT : POLLIN, deadline)) return "timed out";
        const ssize_t n = sending ? send(fd, cursor, bytes, MSG_NOSIGNAL) : recv(fd, cursor, bytes, 0);
        if (n == 0) return "connection closed";
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return std::strerror(errno);
        }
        cursor += n;
        bytes -= size_t(n);
    }
    return "";
}

inline void publish_unique_id_tcp(const ProcessGroup& group, const IdMessage& message, double timeout_seconds) {
    const int port = group.init.port;
    Socket listener(socket(AF_INET, SOCK_STREAM, 0));
    check(listener.fd() >= 0, format("rank 0: cannot create a socket: %s", std::strerror(errno)));
    const int yes = 1;
    setsockopt(listener.fd(), SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);  // restart right after a failed job
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_ANY);  // HOST is for the other ranks; listen on every interface
    address.sin_port = htons(uint16_t(port));
    check(bind(listener.fd(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
              listen(listener.fd(), group.world_size) == 0,
          format("rank 0: cannot listen on port %d (%s): %s", port, group.init.to_string().c_str(), std::strerror(errno)));

    const auto deadline = deadline_after(timeout_seconds);
    std::vector<bool> served(group.world_size, false);
    for (int waiting = group.world_size - 1; waiting > 0;) {
        check(wait_ready(listener.fd(), POLLIN, deadline),
              format("rank 0: timeout after %g s waiting for rank(s) %s to connect to port %d for the NCCL id",
                     timeout_seconds, missing_ranks(served).c_str(), port));
        Socket connection(accept(listener.fd(), nullptr, nullptr));
        if (connection.fd() < 0) continue;  // the connecting rank gave up meanwhile; it will retry
        // A connection that sends nothing (a port scanner) holds up the others for a few seconds at most.
        const auto request_deadline = std::min(deadline, deadline_after(5.0));
        IdMessage request;
        if (!transfer_all(connection.fd(), &request, sizeof request, false, request_deadline).empty() ||
            request.magic != IdMessage::MAGIC)
            continue;  // not one of ours (or it went away): keep listening
        // Answer before judging the request, so that a rank with another world size stops with the same message.
        IdMessage answer = message;
        transfer_all(connection.fd(), &answer, sizeof answer, true, request_deadline);
        check_message(request, group, format("rank %u", request.rank));
        const bool in_range = request.rank >= 1 && request.rank < uint32_t(group.world_size);
        check(in_range && !served[request.rank], format("rank 0: a process on port %d claims rank %u, which is %s", port,
                                                        request.rank, in_range ? "already taken" : "out of range"));
        served[request.rank] = true;
        waiting--;
    }
}

// Connects to host:port, retrying while rank 0 is not listening yet; "" and the socket, or why not.
inline Socket connect_with_retry(const InitMethod& init, Clock::time_point deadline, std::string& last_error) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    const std::string port = std::to_string(init.port);
    for (;;) {
        addrinfo* addresses = nullptr;
        const int status = getaddrinfo(init.host.c_str(), port.c_str(), &hints, &addresses);
        if (status != 0) last_error = format("cannot resolve %s: %s", init.host.c_str(), gai_strerror(status));
        for (addrinfo* a = addresses; a; a = a->ai_next) {
            Socket s(socket(a->ai_family, a->ai_socktype, a->ai_protocol));
            if (s.fd() < 0) continue;
            // Non-blocking connect, so an unreachable host costs the deadline and not the kernel's minutes.
            fcntl(s.fd(), F_SETFL, fcntl(s.fd(), F_GETFL) | O_NONBLOCK);
            if (connect(s.fd(), a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
                last_error = std::strerror(errno);
                continue;
            }
            int error = 0;
            socklen_t length = sizeof error;
            if (!wait_ready(s.fd(), POLLOUT, deadline)) {
                last_error = "connect timed out";
                continue;
            }
            getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &error, &length);
            if (error == 0) {
                freeaddrinfo(addresses);
                return s;
            }
            last_error = std::strerror(error);
        }
        if (addresses) freeaddrinfo(addresses);
        if (Clock::now() + POLL_INTERVAL > deadline) return Socket();
        std::this_thread::sleep_for(POLL_INTERVAL * 5);
    }
}

inline UniqueId fetch_unique_id_tcp(const ProcessGroup& group, double timeout_seconds) {
    const auto deadline = deadline_after(timeout_seconds);
    const std::string where = group.init.to_string();
    std::string last_error = "no attempt";
    Socket connection = connect_with_retry(group.init, deadline, last_error);
    check(connection.fd() >= 0, format("rank %d: timeout after %g s waiting for rank 0 at %s (last error: %s)",
                                       group.rank, timeout_seconds, where.c_str(), last_error.c_str()));
    IdMessage request;
    request.world_size = uint32_t(group.world_size);
    request.rank = uint32_t(group.rank);
    std::string error = transfer_all(connection.fd(), &request, sizeof request, true, deadline);
    IdMessage answer;
    if (error.empty()) error = transfer_all(connection.fd(), &answer, sizeof answer, false, deadline);
    check(error.empty(), format("rank %d: no NCCL id from rank 0 at %s: %s", group.rank, where.c_str(), error.c_str()));
    check_message(answer, group, "rank 0 at " + where);
    return answer.id;
}

// Every rank calls this; rank 0 makes the id with make_id and hands it to the others, who return it too.
// Rank 0 returns only once every rank has the id.
inline UniqueId share_unique_id(const ProcessGroup& group, const std::function<UniqueId()>& make_id,
                                double timeout_seconds) {
    if (group.world_size == 1) return make_id();  // nobody to tell (even if MASTER_ADDR happens to be set)
    if (group.rank == 0) {
        IdMessage message;
        message.world_size = uint32_t(group.world_size);
        message.id = make_id();
        if (group.init.kind == InitMethod::Kind::file) publish_unique_id_file(group, message, timeout_seconds);
        if (group.init.kind == InitMethod::Kind::tcp) publish_unique_id_tcp(group, message, timeout_seconds);
        return message.id;
    }
    check(group.init.kind != InitMethod::Kind::none, format("rank %d: no --dist-init to find rank 0 with", group.rank));
    return group.init.kind == InitMethod::Kind::file ? fetch_unique_id_file(group, timeout_seconds)
                                                     : fetch_unique_id_tcp(group, timeout_seconds);
}

// ---- ZeRO-1: the optimizer state sharded over the ranks -------------------------------------------

// Shard sizes are multiples of this many elements: 256 bytes of bf16, so every shard starts where NCCL
// and the vectorised kernels like it, whatever the parameter count.
constexpr size_t SHARD_ALIGNMENT = 128;

struct ShardLayout {
    size_t parameter_count = 0;
    size_t shard_size = 0;  // elements per rank, the same for every rank
    int world_size = 1;

    // The length of the gradient and parameter buffers: the shards end to end, zero past parameter_count.
    size_t padded_count() const { return shard_size * size_t(world_size); }
    // Rank r's parameters are [begin(r), end(r)); the last ranks may own fewer, or none.
    size_t begin(int rank) const { return std::min(parameter_count, shard_size * size_t(rank)); }
    size_t end(int rank) const { return std::min(parameter_count, shard_size * size_t(rank + 1)); }
};

inline ShardLayout shard_layout(size_t parameter_count, int world_size) {
    check(world_size >= 1, format("shard layout for world size %d", world_size));
    ShardLayout shards;
    shards.parameter_count = parameter_count;
    shards.world_size = world_size;
    const size_t per_rank = (parameter_count + world_size - 1) / world_size;
    shards.shard_size = std::max<size_t>(1, (per_rank + SHARD_ALIGNMENT - 1) / SHARD_ALIGNMENT) * SHARD_ALIGNMENT;
    return shards;
}

// The part of one parameter tensor that lies in a shard.
struct ShardSegment {
    std::string tensor;
    size_t offset = 0;        // in the flat parameter vector
    size_t shard_offset = 0;  // in the rank's shard of m, v and the master weights
    size_t count = 0;
    bool weight_decay = false, attention_param = false;
};

inline std::vector<ShardSegment> shard_segments(const std::vector<ParamTensor>& layout, const ShardLayout& shards, int rank) {
    const size_t begin = shards.begin(rank), end = shards.end(rank);
    std::vector<ShardSegment> segments;
    for (const ParamTensor& t : layout) {
        const size_t from = std::max(begin, t.offset), to = std::min(end, t.offset + t.count);
        if (from < to) segments.push_back({t.name, from, from - begin, to - from, t.weight_decay, t.attention_param});
    }
    return segments;
}

// The AdamW settings of a segment's tensor, given the step's learning rate and the run's weight decay in
// base: theta and the distance bias train at lr * lr_attn_mult, only matrices and embeddings decay. The
// one place this rule is written: both trainers update through shard segments (with one shard they are
// the whole tensors).
inline AdamWConfig segment_adamw(AdamWConfig base, const ShardSegment& segment, float lr_attn_mult) {
    if (segment.attention_param) base.lr = base.lr * lr_attn_mult;
    if (!segment.weight_decay) base.weight_decay = 0.0f;
    return base;
}

// One rank's optimizer step under ZeRO-1 on the CPU (adamw.cuh does the same on the GPU): params and
// grads are full vectors (grads already averaged over the ranks), m and v this rank's shard. With world
// size 1 it is the per-tensor loop of train_gpt_cpu, which calls it so.
template <typename Real>
void adamw_update_shard(Real* params, const Real* grads, Real* m, Real* v, const std::vector<ShardSegment>& segments,
                        int step, const AdamWConfig& base, float lr_attn_mult, float grad_scale) {
    for (const ShardSegment& s : segments)
        adamw_update(params + s.offset, grads + s.offset, m + s.shard_offset, v + s.shard_offset, s.count, step,
                     segment_adamw(base, s, lr_attn_mult), grad_scale);
}

// Rank r's slice of a full per-parameter vector (m or v as state.bin holds them): shard_size elements,
// zero past the last parameter. Loading a checkpoint saved with any world size.
template <typename T>
std::vector<T> shard_slice(const std::vector<T>& full, const ShardLayout& shards, int rank) {
    check(full.size() == shards.parameter_count,
          format("optimizer state of %zu values for %zu parameters", full.size(), shards.parameter_count));
    std::vector<T> slice(shards.shard_size, T(0));
    std::copy(full.begin() + shards.begin(rank), full.begin() + shards.end(rank), slice.begin());
    return slice;
}

// Where the training data resumes when the world size changed. The loader's position counts batches of
// B * world samples drawn from one order per epoch (the same order for every world size), so the
// samples already used are position * B * saved_world; continue at the batch that holds the next one.
// Rounding down repeats at most one batch's worth of samples.
struct DataPosition {
    int64_t epoch = 0, position = 0;
};
inline DataPosition data_position_for_world(DataPosition saved, int64_t saved_samples_per_batch,
                                            int64_t samples_per_batch, int64_t batches_per_epoch) {
    check(saved_samples_per_batch > 0 && samples_per_batch > 0, "samples per batch must be positive");
    DataPosition now{saved.epoch, saved.position * saved_samples_per_batch / samples_per_batch};
    if (now.position >= batches_per_epoch) now = {saved.epoch + 1, 0};  // the epoch's tail no longer fills a batch
    return now;
}

// ---- gradient buckets for overlapping the all-reduce with the backward pass -------------------------

struct GradientRange {
    size_t offset = 0, count = 0;
};

// layers[l]: the gradient the backward pass of layer l has finished (layer l's slice of every per-layer
// tensor); after the last layer's backward the all-reduce of these runs beside the next layer's.
// rest: wte, wpe and the final LayerNorm, done only once the encoder's backward has added to wte.
struct GradientBuckets {
    std::vector<std::vector<GradientRange>> layers;
    std::vector<GradientRange> rest;
};

// What the backward pass calls with each bucket it finishes (the trainer queues its all-reduce).
using GradientsDone = std::function<void(const std::vector<GradientRange>&)>;

inline GradientBuckets gradient_buckets(const std::vector<ParamTensor>& layout, int num_layers) {
    static const char* const WHOLE_MODEL_TENSORS[] = {"wte", "wpe", "lnfw", "lnfb"};
    GradientBuckets buckets;
    buckets.layers.resize(num_layers);
    for (const ParamTensor& t : layout) {
        const bool whole_model = std::find_if(std::begin(WHOLE_MODEL_TENSORS), std::end(WHOLE_MODEL_TENSORS),
                                              [&](const char* name) { return t.name == name; }) != std::end(WHOLE_MODEL_TENSORS);
        if (whole_model) {
            buckets.rest.push_back({t.offset, t.count});
            continue;
        }
        // every other tensor is stacked over the layers: [L, ...]
        check(!t.shape.empty() && t.shape[0] == size_t(num_layers) && t.count % num_layers == 0,
              format("tensor %s is not [layers, ...]: gradient_buckets does not know when its gradient is done",
                     t.name.c_str()));
        const size_t per_layer = t.count / num_layers;
        for (int l = 0; l < num_layers; l++) buckets.layers[l].push_back({t.offset + l * per_layer, per_layer});
    }
    return buckets;
}

// ZeRO-1's version of a bucket: its ranges cut at the shard boundaries, each piece with the rank that owns
// it. Averaging every piece onto its owner (NCCL's reduce with ncclAvg, root = owner) leaves each rank's
// shard exactly what a reduce-scatter after the backward pass would, but bucket by bucket, so it overlaps
// the backward pass like the all-reduce does. Each rank sends each gradient once either way.
struct OwnedRange {
    size_t offset = 0, count = 0;
    int owner = 0;
};

inline std::vector<OwnedRange> owner_pieces(const std::vector<GradientRange>& ranges, const ShardLayout& shards) {
    std::vector<OwnedRange> pieces;
    for (const GradientRange& g : ranges) {
        check(g.offset + g.count <= shards.parameter_count,
              format("gradient range [%zu, %zu) past the %zu parameters", g.offset, g.offset + g.count,
                     shards.parameter_count));
        for (size_t at = g.offset; at < g.offset + g.count;) {
            const int owner = int(at / shards.shard_size);
            const size_t to = std::min(g.offset + g.count, shards.end(owner));
            pieces.push_back({at, to - at, owner});
            at = to;
        }
    }
    return pieces;
}

}  // namespace focus
