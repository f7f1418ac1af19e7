#!/usr/bin/env bash
# test_kernel_resources.sh: dev/kernel_resources.sh on hand-made ptxas reports (the format of
# `nvcc -Xptxas -v`): the table, the one-line spill summary with and without spills, bad input.
set -u
cd "$(dirname "$0")/.."
source test/harness.sh
script=dev/kernel_resources.sh

# Two kernels, each for sm_80 and sm_90; the second spills on sm_90 only.
entry() {  # mangled-name arch registers stack stores loads smem
    echo "ptxas info    : Compiling entry function '$1' for '$2'"
    echo "ptxas info    : Function properties for $1"
    echo "    $4 bytes stack frame, $5 bytes spill stores, $6 bytes spill loads"
    echo "ptxas info    : Used $3 registers, used 1 barriers, $7 bytes smem, 400 bytes cmem[0]"
}
{
    echo "ptxas info    : 272 bytes gmem"
    entry _ZN5focus3gpu11gelu_kernelEPfi sm_80 13 0 0 0 0
    entry _ZN5focus3gpu10key_kernelILi64ELb0EEEvPf sm_80 214 0 0 0 256
    entry _ZN5focus3gpu11gelu_kernelEPfi sm_90 15 0 0 0 0
    entry _ZN5focus3gpu10key_kernelILi64ELb0EEEvPf sm_90 255 48 48 52 256
} >"$tmp/spilling.txt"
grep -v "key_kernel" "$tmp/spilling.txt" >"$tmp/clean.txt"

echo "kernel_resources: table and summary"
table=$(bash $script "$tmp/spilling.txt")
row=$(grep "^key_kernel<64, false>" <<<"$table")
if [ "$(wc -w <<<"$row")" -eq 9 ] && [[ "$row" == *" 214 "*"0/0"*" 255 "*"48/52"*" 48 "*" 256" ]]; then
    pass "a row per kernel, demangled, both architectures side by side"
else
    fail "table row: $row"
fi
summary=$(bash $script --spills "$tmp/spilling.txt")
if [ "$summary" = "kernel resources: registers spill in 1 kernels: key_kernel<64, false> (sm_90)" ]; then
    pass "--spills names the spilling kernel and architecture"
else
    fail "--spills with a spill: $summary"
fi
summary=$(bash $script --spills "$tmp/clean.txt")
if [[ "$summary" == "kernel resources: no kernel spills registers"* ]]; then
    pass "--spills without a spill"
else
    fail "--spills without a spill: $summary"
fi

echo "kernel_resources: bad input"
if ! bash $script /dev/null 2>"$tmp/err" && grep -q "no kernels in /dev/null" "$tmp/err"; then
    pass "a report without kernels: one line, exit 1"
else
    fail "a report without kernels"
fi
if ! bash $script "$tmp/missing.txt" 2>"$tmp/err" && grep -q "cannot read" "$tmp/err"; then
    pass "a missing report: one line, exit 1"
else
    fail "a missing report"
fi
finish "kernel resources"
