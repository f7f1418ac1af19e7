#!/usr/bin/env bash
# sanitize.sh: the GPU tests' small shapes (test_gpu --small --no-nccl) under compute-sanitizer, for `make gpu-check`:
# memcheck (out-of-bounds and misaligned accesses, errors of CUDA calls) and racecheck (shared-memory
# hazards between the threads of a block). One line per tool; the full report in BUILD/sanitizer_TOOL.log.
# Where compute-sanitizer is missing, or refuses the device (it does under gVisor), it says so and passes.
# Usage: bash dev/sanitize.sh [BUILD_DIR]. Exits 1 if a tool reports an error.
set -u
build=${1:-build}
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [ -z "$sanitizer" ]; then
    echo "compute-sanitizer not found: skipped"
    exit 0
fi
status=0
for tool in memcheck racecheck; do
    log="$build/sanitizer_$tool.log"
    if "$sanitizer" --tool "$tool" --error-exitcode 1 "$build/test_gpu" --small --no-nccl --require-gpu >"$log" 2>&1; then
        echo "compute-sanitizer $tool: clean ($(grep -o '[0-9]* passed, [0-9]* failed' "$log"))"
    elif grep -q "Device not supported" "$log"; then
        echo "compute-sanitizer $tool: does not support this device: skipped"
    else
        echo "compute-sanitizer $tool: FAILED (the end of $log:)"
        tail -15 "$log"
        status=1
    fi
done
exit $status
