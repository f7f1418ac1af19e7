#!/usr/bin/env bash
# gpu_check.sh: every GPU check, on binaries already built (`make gpu-check` builds them first, then runs
# this), ending with one table: stage, result, seconds. Built elsewhere and carried to a GPU machine, the
# binaries run from here without make (a lease's device time then goes to the checks, not to nvcc).
#   bash dev/gpu_check.sh [BUILD_DIR] [STAGE ...]     stages: tests sanitize train distributed (default: all)
#   tests        test_gpu and test_gpu_fp32 (every kernel against the CPU reference), bench_gpu_layers
#   sanitize     dev/sanitize.sh: compute-sanitizer memcheck and racecheck on the small shapes
#   train        dev/gpu_train_check.sh: 200 steps per variant, GPU vs CPU, resume, eval_gpt GPU vs CPU
#   distributed  bench_allreduce on one GPU and on all of them, dev/distributed_train_check.sh
# For a short device lease, whose command returns only the end of its output and is stopped at a limit:
#   GPU_CHECK_LOGS=DIR           keeps each stage's whole output in DIR/NN_stage.log, nvidia-smi's in
#                                DIR/nvidia-smi.txt and the table in DIR/summary.md
#   GPU_CHECK_STAGE_TIMEOUT=S    stops a stage after S seconds (TIMEOUT in the table), so that one that
#                                hangs or runs long leaves time for the others
# Output is line-buffered (stdbuf) so that a stopped stage keeps what it printed.
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
for s in "${stages[@]}"; do
    case $s in
    tests | sanitize | train | distributed) ;;
    *)
        echo "gpu_check.sh: unknown stage '$s' (tests sanitize train distributed)" >&2
        exit 2 ;;
    esac
done
logs=${GPU_CHECK_LOGS:-} limit=${GPU_CHECK_STAGE_TIMEOUT:-0}
if ! [[ "$limit" =~ ^[0-9]+$ ]]; then
    echo "gpu_check.sh: GPU_CHECK_STAGE_TIMEOUT must be a whole number of seconds, not '$limit'" >&2
    exit 2
fi
if [ -n "$logs" ]; then
    mkdir -p "$logs" || exit 2
    nvidia-smi >"$logs/nvidia-smi.txt" 2>&1
fi
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: no GPU listed"
line_buffered=()
command -v stdbuf >/dev/null && line_buffered=(stdbuf -oL -eL)

summary=()
# stage NAME COMMAND...: runs it (within the time limit), records pass, FAIL or TIMEOUT and its seconds
stage() {
    local name=$1 start=$SECONDS log=/dev/null status result=pass
    shift
    if [ -n "$logs" ]; then
        log=$logs/$(printf '%02d' $((${#summary[@]} + 1)))_$(tr -cs 'A-Za-z0-9' '_' <<<"$name" | sed 's/_*$//').log
    fi
    echo "== $name: $*"
    if [ "$limit" -gt 0 ]; then
        timeout -k 10 "$limit" "${line_buffered[@]}" "$@" 2>&1 | tee "$log"
    else
        "${line_buffered[@]}" "$@" 2>&1 | tee "$log"
    fi
    status=${PIPESTATUS[0]}
    if [ "$limit" -gt 0 ] && { [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; }; then
        result=TIMEOUT
        echo "== $name: stopped after $limit s (GPU_CHECK_STAGE_TIMEOUT)"
    elif [ "$status" -ne 0 ]; then
        result=FAIL
    fi
    summary+=("$(printf '| %-34s | %-7s | %5d |' "$name" $result $((SECONDS - start)))")
}

for s in "${stages[@]}"; do
    case $s in
    tests)
        stage "test_gpu (bf16)" "$build/test_gpu" --require-gpu
        stage "test_gpu_fp32" "$build/test_gpu_fp32" --require-gpu
        stage "bench_gpu_layers" "$build/bench_gpu_layers" --require-gpu ;;
    sanitize)
        stage "compute-sanitizer" bash dev/sanitize.sh "$build"
        [ -n "$logs" ] && cp "$build"/sanitizer_*.log "$logs"/ 2>/dev/null ;;
    train)
        stage "train_gpt end to end" bash dev/gpu_train_check.sh "$build" ;;
    distributed)
        stage "bench_allreduce, one GPU" "$build/bench_allreduce" --require-gpu
        gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
        if [ "$gpus" -gt 1 ]; then
            stage "bench_allreduce, $gpus GPUs" bash scripts/launch_single_node.sh "$gpus" "$build/bench_allreduce" --require-gpu
        fi
        stage "train_gpt on all GPUs vs one" bash dev/distributed_train_check.sh "$build" ;;
    esac
done

table() {
    printf '| %-34s | %-7s | %5s |\n' stage result s
    printf '|%s|%s|%s|\n' "------------------------------------" "---------" "-------"
    printf '%s\n' "${summary[@]}"
}
echo
table
[ -n "$logs" ] && table >"$logs/summary.md"
! printf '%s\n' "${summary[@]}" | grep -q -e FAIL -e TIMEOUT
