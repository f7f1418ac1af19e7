#!/usr/bin/env bash
# gpu_check.sh: every GPU check, on binaries already built (`make gpu-check` builds them first, then runs
# this), ending with one table: stage, result, seconds. Built elsewhere and carried to a GPU machine, the
# binaries run from here without make (a lease's device time then goes to the checks, not to nvcc).
#   bash dev/gpu_check.sh [BUILD_DIR] [STAGE ...]     stages: tests sanitize train distributed (default: all)
#   tests        test_gpu and test_gpu_fp32 (every kernel against the CPU reference), bench_gpu_layers
#   sanitize     dev/sanitize.sh: compute-sanitizer memcheck and racecheck on the small shapes
#   train        dev/gpu_train_check.sh: 200 steps per variant, GPU vs CPU, resume, eval_gpt GPU vs CPU
#   distributed  bench_allreduce on one GPU and on all of them, dev/distributed_train_check.sh
# Where the dynamic linker cannot find libnccl.so.2 (an image that has NCCL only inside Python's
# nvidia-nccl package), that package's lib/ is added to LD_LIBRARY_PATH.
set -u
build=${1:-build}
shift
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(tests sanitize train distributed)

if ! ldconfig -p 2>/dev/null | grep -q libnccl.so.2; then
    nccl=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
    [ -n "$nccl" ] && export LD_LIBRARY_PATH="$nccl${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: no GPU listed"

summary=()
# stage NAME COMMAND...: runs it, records pass/fail and its seconds
stage() {
    local name=$1 start=$SECONDS
    shift
    echo "== $name: $*"
    if "$@"; then summary+=("$(printf '| %-34s | %-6s | %5d |' "$name" pass $((SECONDS - start)))")
    else summary+=("$(printf '| %-34s | %-6s | %5d |' "$name" FAIL $((SECONDS - start)))"); fi
}

for s in "${stages[@]}"; do
    case $s in
    tests)
        stage "test_gpu (bf16)" "$build/test_gpu" --require-gpu
        stage "test_gpu_fp32" "$build/test_gpu_fp32" --require-gpu
        stage "bench_gpu_layers" "$build/bench_gpu_layers" --require-gpu ;;
    sanitize)
        stage "compute-sanitizer" bash dev/sanitize.sh "$build" ;;
    train)
        stage "train_gpt end to end" bash dev/gpu_train_check.sh "$build" ;;
    distributed)
        stage "bench_allreduce, one GPU" "$build/bench_allreduce" --require-gpu
        gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
        if [ "$gpus" -gt 1 ]; then
            stage "bench_allreduce, $gpus GPUs" bash scripts/launch_single_node.sh "$gpus" "$build/bench_allreduce" --require-gpu
        fi
        stage "train_gpt on all GPUs vs one" bash dev/distributed_train_check.sh "$build" ;;
    *)
        echo "gpu_check.sh: unknown stage '$s' (tests sanitize train distributed)" >&2
        exit 2 ;;
    esac
done

echo
printf '| %-34s | %-6s | %5s |\n' stage result s
printf '|%s|%s|%s|\n' "------------------------------------" "--------" "-------"
printf '%s\n' "${summary[@]}"
! printf '%s\n' "${summary[@]}" | grep -q FAIL
