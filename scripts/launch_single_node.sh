#!/usr/bin/env bash
# launch_single_node.sh: runs N processes of a focusgpt binary on this machine, one per GPU, the way
# torchrun does: each gets RANK, WORLD_SIZE and LOCAL_RANK in its environment (layers/distributed.h reads
# them) and the ranks meet over TCP on this host (MASTER_ADDR / MASTER_PORT) or through a file.
#
#   scripts/launch_single_node.sh N BINARY [ARGS...]
#   scripts/launch_single_node.sh 8 build/train_gpt --zero 1 --data "..." ...
#   scripts/launch_single_node.sh 8 build/bench_allreduce
#
# Environment:
#   FOCUS_INIT=tcp (default)  the ranks meet at 127.0.0.1:$MASTER_PORT (default 29500)
#   FOCUS_INIT=file           through a fresh file in $TMPDIR (for when the port is taken or firewalled)
#   FOCUS_LAUNCHER=mpirun     start the ranks with `mpirun -np N` instead (Open MPI or MPICH, if installed);
#                             they read their rank from mpirun's environment and meet through a file
# A rank that fails ends the job: the script stops the other ranks and exits with the failed rank's status,
# so a crash never leaves the others waiting (they would also stop on their own after --nccl-timeout).
set -u
if [ $# -lt 2 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 N BINARY [ARGS...]   (N processes, one per GPU)" >&2
    exit 2
fi
world=$1
shift

init=${FOCUS_INIT:-tcp}
init_args=()
case $init in
tcp) export MASTER_ADDR=127.0.0.1 MASTER_PORT=${MASTER_PORT:-29500} ;;
file)
    id_file=$(mktemp -u "${TMPDIR:-/tmp}/focusgpt_nccl_id.XXXXXX")
    init_args=(--dist-init "file:$id_file")
    ;;
*)
    echo "$0: FOCUS_INIT=$init: expected tcp or file" >&2
    exit 2
    ;;
esac

if [ "${FOCUS_LAUNCHER:-}" = mpirun ]; then
    command -v mpirun >/dev/null || { echo "$0: FOCUS_LAUNCHER=mpirun, but mpirun is not installed" >&2; exit 2; }
    # mpirun forwards no environment portably (-x for Open MPI, -genv for MPICH): meet through a file instead
    [ "$init" = file ] || init_args=(--dist-init "file:$(mktemp -u "${TMPDIR:-/tmp}/focusgpt_nccl_id.XXXXXX")")
    exec mpirun -np "$world" "$@" "${init_args[@]}"
fi

pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
}
trap 'stop_all; exit 130' INT TERM
for ((rank = 0; rank < world; rank++)); do
    RANK=$rank WORLD_SIZE=$world LOCAL_RANK=$rank "$@" "${init_args[@]}" &
    pids+=($!)
done
# The first rank to fail decides the job's status; the others are stopped.
for ((finished = 0; finished < world; finished++)); do
    wait -n
    status=$?
    if [ $status -ne 0 ]; then
        echo "$0: a rank exited with status $status: stopping the others" >&2
        stop_all
        wait
        exit $status
    fi
done
exit 0
