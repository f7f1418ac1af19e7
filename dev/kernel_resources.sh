#!/usr/bin/env bash
# kernel_resources.sh: what ptxas gave each kernel, per architecture: registers per thread, bytes spilled
# to local memory (stores / loads), the stack frame (local memory: spills and arrays kept in memory),
# static shared memory. Read from ptxas's report (`nvcc -Xptxas -v`),
# which the Makefile keeps for build/train_gpt in build/train_gpt.resources: the one number about speed
# that needs no GPU. A spill means the kernel ran out of registers; registers per thread bound how many
# blocks fit an SM (65536 / (registers x threads per block)).
# Usage: bash dev/kernel_resources.sh [--spills] REPORT
#   prints the table; --spills prints only one line: how many kernels spill, and which.
set -euo pipefail
only_spills=0
if [ "${1:-}" = "--spills" ]; then only_spills=1; shift; fi
report=${1:?usage: kernel_resources.sh [--spills] REPORT}
[ -r "$report" ] || { echo "kernel_resources: cannot read $report" >&2; exit 1; }

# One line per (kernel, architecture): mangled name, arch, registers, spill stores, spill loads, smem,
# stack frame.
rows=$(awk '
    /Compiling entry function/ {
        match($0, /function \x27[^\x27]+\x27/); name = substr($0, RSTART + 10, RLENGTH - 11)
        match($0, /sm_[0-9]+/); arch = substr($0, RSTART, RLENGTH); stack = stores = loads = 0; next
    }
    name != "" && /bytes spill stores/ { stack = $1; stores = $5; loads = $9 }
    name != "" && /Used [0-9]+ registers/ {
        match($0, /Used [0-9]+/); registers = substr($0, RSTART + 5, RLENGTH - 5)
        smem = 0; if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH - 11)
        print name "\t" arch "\t" registers "\t" stores "\t" loads "\t" smem "\t" stack; name = ""
    }' "$report")
[ -n "$rows" ] || { echo "kernel_resources: no kernels in $report (was it written by nvcc -Xptxas -v?)" >&2; exit 1; }

# Readable names: demangled, without the namespace, the return type and the parameter list.
table=$(paste <(cut -f1 <<<"$rows" | c++filt | sed -e 's/^void //' -e 's/focus::gpu:://g' -e 's/(.*$//') \
    <(cut -f2- <<<"$rows"))

if [ $only_spills = 1 ]; then
    spilling=$(awk -F'\t' '$4 + $5 > 0 { print $1 " (" $2 ")" }' <<<"$table" | sort -u)
    if [ -z "$spilling" ]; then
        echo "kernel resources: no kernel spills registers, on any architecture (the table: make kernel-resources)"
    else
        echo "kernel resources: registers spill in $(wc -l <<<"$spilling") kernels: $(paste -sd';' <<<"$spilling")"
    fi
    exit 0
fi
# One row per kernel, the architectures side by side.
archs=$(cut -f2 <<<"$table" | sort -u | tr '\n' ' ')
awk -F'\t' -v archs="$archs" '
    BEGIN { n_arch = split(archs, arch, " ") }
    { key = $1 SUBSEP $2; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 }
      registers[key] = $3; spills[key] = $4 "/" $5; stack[key] = $7; smem[$1] = $6 }
    END {
        printf "%-52s", "kernel"
        for (a = 1; a <= n_arch; a++) printf "  %6s regs  spill  stack", arch[a]
        printf "  static smem\n"
        for (i = 1; i <= n; i++) {
            printf "%-52s", substr(order[i], 1, 52)
            for (a = 1; a <= n_arch; a++) {
                key = order[i] SUBSEP arch[a]
                printf "  %11s  %5s  %5s", registers[key], spills[key], stack[key]
            }
            printf "  %11s\n", smem[order[i]]
        }
    }' <<<"$table"
