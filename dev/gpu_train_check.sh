#!/usr/bin/env bash
# gpu_train_check.sh: the GPU trainer end to end, for `make gpu-check`. Trains a small model
# (4 layers, 8 heads, 256 channels, 32 x 256 tokens per step) for 200 steps on the built-in recall data
# with each attention variant, then prints one row per variant: final training loss, validation loss,
# tokens/s (median over steps 11-200, after cuBLASLt's first-call setup) with MFU where the GPU is
# known, and peak GPU memory (all from the JSON log). A few minutes on an H100 in all. Then, on a tiny
# Lazy-Attention model: the first step's loss equals train_gpt_cpu's (same initialisation, same batch;
# bf16 is within 1%), --resume continues bit-exactly with --sample-every on (model.bin, state.bin and
# the logged losses and samples), train_gpt_cpu continues a train_gpt checkpoint, and eval_gpt's numbers
# on the GPU agree with its numbers on the CPU.
# Usage: bash dev/gpu_train_check.sh [BUILD_DIR]. Exits 1 if anything fails.
set -u
build=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=(--layers 4 --heads 8 --dim 256 --seq 256 --batch 32 --steps 200 --warmup 20 --eval-every 0 --eval-batches 10)
variants=("softmax|" "lazy|--lazy" "elastic|--attn elastic" "topk|--attn topk --attn-k 16"
          "window|--attn window --attn-k 32 --global-tokens 1" "block|--attn block --attn-k 32 --global-tokens 1")
status=0
for entry in "${variants[@]}"; do
    name=${entry%%|*}
    # shellcheck disable=SC2086
    if ! "$build/train_gpt" "${model[@]}" ${entry#*|} --out "$tmp/$name" --log "$tmp/$name.jsonl" >"$tmp/$name.out" 2>&1; then
        echo "train_gpt $name failed: $(tail -2 "$tmp/$name.out")"
        status=1
    fi
done
python3 - "$tmp" "${variants[@]%%|*}" <<'PY' || status=1
import json, math, os, statistics, sys
folder, names = sys.argv[1], sys.argv[2:]
print(f"{'variant':<9} {'loss':>7} {'val loss':>9} {'tokens/s':>11} {'MFU':>6} {'peak GPU memory':>16}")
ok = True
for name in names:
    path = os.path.join(folder, name + ".jsonl")
    lines = [json.loads(l) for l in open(path)] if os.path.exists(path) else []
    steps = [l for l in lines if "loss" in l]
    val = [l["val_loss"] for l in lines if "val_loss" in l]
    if not steps:
        print(f"{name:<9} no log")
        ok = False
        continue
    loss = steps[-1]["loss"]
    ok = ok and math.isfinite(loss) and len(steps) == 200
    timed = steps[10:] or steps
    rate = statistics.median(l["tokens_per_s"] for l in timed)
    mfu = [l["mfu"] for l in timed if "mfu" in l]
    memory = max(l.get("gpu_memory_peak_bytes", 0) for l in steps)
    print(f"{name:<9} {loss:7.4f} {val[-1] if val else float('nan'):9.4f} {rate:11,.0f} "
          f"{(f'{100 * statistics.median(mfu):5.1f}%' if mfu else '-'):>6} {memory / 2**30:12.2f} GiB")
sys.exit(0 if ok else 1)
PY

tiny=(--layers 2 --heads 4 --dim 64 --seq 32 --batch 4 --lazy --eval-every 3 --eval-batches 2 --total-batch 256)
check() {  # check NAME COMMAND...: one line, ok or FAIL
    if "${@:2}"; then echo "ok   $1"; else echo "FAIL $1"; status=1; fi
}
first_loss() { python3 -c "import json,sys; print(next(json.loads(l)['loss'] for l in open(sys.argv[1]) if 'loss' in l))" "$1"; }
"$build/train_gpt" "${tiny[@]}" --steps 1 --log "$tmp/gpu1.jsonl" >/dev/null 2>&1
"$build/train_gpt_cpu" "${tiny[@]}" --steps 1 --log "$tmp/cpu1.jsonl" >/dev/null 2>&1
same_first_loss() {
    local gpu cpu
    gpu=$(first_loss "$tmp/gpu1.jsonl") && cpu=$(first_loss "$tmp/cpu1.jsonl") &&
        echo "     first loss: train_gpt $gpu, train_gpt_cpu $cpu" &&
        python3 -c "import sys; g, c = map(float, sys.argv[1:]); sys.exit(abs(g - c) > 1e-2 * abs(c))" "$gpu" "$cpu"
}
check "train_gpt's first loss matches train_gpt_cpu's" same_first_loss

"$build/train_gpt" "${tiny[@]}" --steps 6 --save-every 3 --sample-every 2 --out "$tmp/a" --log "$tmp/a.jsonl" >/dev/null 2>&1
"$build/train_gpt" --resume "$tmp/a/ckpt_00000003" --out "$tmp/b" --log "$tmp/b.jsonl" >/dev/null 2>&1
steps_4_to_6() {  # the log lines of steps 4..6 without their timings
    python3 -c "
import json, sys
for line in open(sys.argv[1]):
    j = json.loads(line)
    if 4 <= j['step'] <= 6:
        for key in ('ms', 'tokens_per_s', 'mfu', 'gpu_memory_peak_bytes'):
            j.pop(key, None)
        print(json.dumps(j, sort_keys=True))" "$1"
}
resumes_bit_exactly() {
    cmp -s "$tmp/a/ckpt_00000006/model.bin" "$tmp/b/ckpt_00000006/model.bin" &&
        cmp -s "$tmp/a/ckpt_00000006/state.bin" "$tmp/b/ckpt_00000006/state.bin" &&
        [ "$(steps_4_to_6 "$tmp/b.jsonl" | grep -c '"sample"')" -eq 2 ] &&
        [ "$(steps_4_to_6 "$tmp/a.jsonl")" = "$(steps_4_to_6 "$tmp/b.jsonl")" ]
}
check "train_gpt --resume continues bit-exactly (with --sample-every)" resumes_bit_exactly
cpu_continues() { "$build/train_gpt_cpu" --resume "$tmp/a/ckpt_00000006" --steps 7 --out "$tmp/a" >/dev/null 2>&1; }
check "train_gpt_cpu continues a train_gpt checkpoint" cpu_continues

# eval_gpt on the GPU (fused kernels for the loss, probabilities kept for the statistics) against the CPU,
# on the Lazy-Attention model trained above: the validation loss within 1% (bf16, as the first loss above),
# and the attention statistics, means over ~10^5 weights, within 0.02 (bf16 moves a weight near Elastic's
# cut across it only where p is within ~2^-8 of tau / i, a small share of the weights once trained).
evaluate() { "$build/eval_gpt" --ckpt "$tmp/lazy" --val-batches 4 --attention-batches 1 "$@" >/dev/null 2>&1; }
evaluate --device gpu --json "$tmp/eval_gpu.json"
evaluate --device cpu --json "$tmp/eval_cpu.json"
eval_agrees() {
    python3 - "$tmp/eval_gpu.json" "$tmp/eval_cpu.json" <<'PY'
import json, sys
gpu, cpu = (json.load(open(path))["checkpoints"][0] for path in sys.argv[1:])
g, c = gpu["validation"]["loss"], cpu["validation"]["loss"]
print(f"     eval_gpt validation loss: GPU {g:.5f}, CPU {c:.5f}")
ok = abs(g - c) <= 1e-2 * abs(c)
for key in ("sparsity", "sink", "row_mass", "normalised_entropy"):
    a, b = gpu["attention"]["overall"][key], cpu["attention"]["overall"][key]
    ok = ok and abs(a - b) <= 0.02
    print(f"     attention {key}: GPU {a:.4f}, CPU {b:.4f}")
sys.exit(0 if ok else 1)
PY
}
check "eval_gpt gives the same numbers on the GPU and the CPU" eval_agrees
exit $status
