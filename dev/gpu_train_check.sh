#!/usr/bin/env bash
# gpu_train_check.sh: the GPU trainer end to end, for `make gpu-check`. Trains a small model
# (4 layers, 8 heads, 256 channels, 32 x 256 tokens per step) for 200 steps on the built-in recall data
# with each attention variant, then prints one row per variant: final training loss, validation loss,
# tokens/s (median over steps 11-200, after cuBLASLt's first-call setup) with MFU where the GPU is
# known, and peak GPU memory (all from the JSON log). A few minutes on an H100 in all.
# Usage: bash dev/gpu_train_check.sh [BUILD_DIR]. Exits 1 if a run fails or its loss is not finite.
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
    if ! "$build/train_gpt" "${model[@]}" ${entry#*|} --log "$tmp/$name.jsonl" >"$tmp/$name.out" 2>&1; then
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
exit $status
