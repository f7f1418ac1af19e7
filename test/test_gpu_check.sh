#!/usr/bin/env bash
# test_gpu_check.sh: dev/gpu_check.sh, the one command a GPU session runs, on stand-in binaries (no GPU
# needed): a passing, a failing and a hanging stage give pass, FAIL and TIMEOUT in the table and a
# failing exit status; GPU_CHECK_LOGS keeps each stage's output (what a stopped stage printed too) and
# the table; bad stage names and time limits are refused before anything runs.
set -u
cd "$(dirname "$0")/.."
source test/harness.sh
script=dev/gpu_check.sh

build=$tmp/build
mkdir -p "$build"
stand_in() {  # stand_in NAME BODY: an executable build/NAME running the shell commands BODY
    printf '#!/usr/bin/env bash\n%s\n' "$2" >"$build/$1"
    chmod +x "$build/$1"
}
stand_in test_gpu 'echo "1642 passed, 0 failed"'
stand_in test_gpu_fp32 'echo "FAIL layernorm_forward out"; exit 1'
# a C program, whose stdio holds back its output in a pipe unless gpu_check.sh asks for line buffering
printf '#include <stdio.h>\n#include <unistd.h>\nint main(void) { puts("bench started"); sleep(60); puts("bench finished"); }\n' >"$tmp/hang.c"
cc -o "$build/bench_gpu_layers" "$tmp/hang.c" || fail "cc could not build the hanging stand-in"

echo "gpu_check: tests stage with logs and a time limit"
start=$SECONDS
output=$(GPU_CHECK_LOGS=$tmp/logs GPU_CHECK_STAGE_TIMEOUT=2 bash $script "$build" tests 2>&1)
status=$? seconds=$((SECONDS - start))
if [ $status -ne 0 ]; then pass "a failing stage fails the check"; else fail "exit status 0 with a failing stage"; fi
if [ $seconds -lt 30 ]; then pass "the hanging stage is stopped at its limit (${seconds} s in all)"
else fail "took $seconds s: the stage limit did not stop the hanging stage"; fi
row() { grep "^| $1 " <<<"$output" | awk -F'|' '{gsub(/ /, "", $3); print $3}'; }
if [ "$(row 'test_gpu (bf16)')" = pass ] && [ "$(row test_gpu_fp32)" = FAIL ] && [ "$(row bench_gpu_layers)" = TIMEOUT ]; then
    pass "the table says pass, FAIL and TIMEOUT"
else
    fail "table: $(grep '^|' <<<"$output")"
fi
if grep -q "1642 passed" "$tmp/logs/01_test_gpu_bf16.log" && grep -q "FAIL layernorm" "$tmp/logs/02_test_gpu_fp32.log" &&
    grep -q "bench started" "$tmp/logs/03_bench_gpu_layers.log" && ! grep -q "bench finished" "$tmp/logs/03_bench_gpu_layers.log"; then
    pass "each stage's output in its log, the stopped stage's up to where it was stopped"
else
    fail "logs: $(ls "$tmp/logs" 2>&1 | tr '\n' ' ')"
fi
if [ "$(grep -c '^| ' "$tmp/logs/summary.md" 2>/dev/null)" -eq 4 ] && [ -e "$tmp/logs/nvidia-smi.txt" ]; then
    pass "summary.md holds the table, nvidia-smi.txt what nvidia-smi said"
else
    fail "summary.md: $(cat "$tmp/logs/summary.md" 2>&1)"
fi

echo "gpu_check: without logs or a limit"
stand_in bench_gpu_layers 'echo "bench done"'
stand_in test_gpu_fp32 'echo "1642 passed, 0 failed"'
if output=$(bash $script "$build" tests 2>&1) && [ "$(grep -c '| pass ' <<<"$output")" -eq 3 ]; then
    pass "every stage passing passes"
else
    fail "all passing: $output"
fi

echo "gpu_check: bad input"
if output=$(bash $script "$build" tests benchmarks 2>&1); then fail "an unknown stage was accepted"
elif [[ "$output" == *"unknown stage 'benchmarks'"* ]] && [[ "$output" != *"1642 passed"* ]]; then
    pass "an unknown stage is refused before any stage runs"
else
    fail "unknown stage: $output"
fi
if output=$(GPU_CHECK_STAGE_TIMEOUT=5m bash $script "$build" tests 2>&1); then fail "GPU_CHECK_STAGE_TIMEOUT=5m was accepted"
elif [[ "$output" == *"whole number of seconds"* ]]; then
    pass "a time limit that is not whole seconds is refused"
else
    fail "bad time limit: $output"
fi
finish "gpu check"
