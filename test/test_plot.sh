#!/usr/bin/env bash
# Tests of scripts/plot.py on synthetic inputs built here: every subcommand writes a real PNG of
# some size, a log with a resumed (repeated) step range is read as its latest history, and bad input
# (a missing file, a malformed log line, a report without the needed data) gives one line
# "plot.py: error: ..." and exit status 1. Skipped when /usr/bin/python3 lacks numpy or matplotlib.
# Usage: bash test/test_plot.sh
set -u
python=/usr/bin/python3
plot="$(cd "$(dirname "$0")/.." && pwd)/scripts/plot.py"
if ! "$python" -c "import numpy, matplotlib" 2>/dev/null; then
    echo "plot: skipped ($python lacks numpy or matplotlib)"
    exit 0
fi
export PYTHONDONTWRITEBYTECODE=1  # importing plot.py below must not leave scripts/__pycache__
source "$(dirname "$0")/harness.sh"

# ---- synthetic inputs -----------------------------------------------------------------------------
# runs/alpha/log.jsonl: steps 1..30 with accuracies and evaluations every 10 steps, then a run resumed
# from step 20 to 40 whose values differ (loss + 0.5), so its steps 21..30 repeat the first run's.
# runs/beta/log.jsonl: 25 steps of plain text (no accuracies; one null loss, as NaN is logged).
# eval.json: two checkpoints, "lazy" (2 layers x 3 heads, tau, an 8-distance bias table, two attention
# maps with exact zeros and awkward tokens) and "softmax" (no tau, bias or maps; some nulls).
# eval2.json: the "lazy" checkpoint at a later step, to compare in `heads`.
"$python" - "$tmp" <<'PY'
import json, math, os, sys
tmp = sys.argv[1]
for name in ("alpha", "beta"):
    os.makedirs(f"{tmp}/runs/{name}")

def train_line(step, loss, acc=None):
    line = {"step": step, "loss": loss, "lr": 6e-4, "grad_norm": 1.0, "ms": 10.0, "tokens_per_s": 1e5, "tokens": 1024 * step}
    if acc is not None:
        line["acc"] = acc
    return json.dumps(line)

with open(f"{tmp}/runs/alpha/log.jsonl", "w") as f:
    for offset, steps in ((0.0, range(1, 31)), (0.5, range(21, 41))):
        for s in steps:
            print(train_line(s, 4.0 * math.exp(-s / 15) + 1.0 + offset, min(1.0, s / 40)), file=f)
            if s % 10 == 0:
                print(json.dumps({"step": s, "val_loss": 4.0 * math.exp(-s / 15) + 1.2 + offset, "val_acc": s / 45}), file=f)
with open(f"{tmp}/runs/beta/log.jsonl", "w") as f:
    for s in range(1, 26):
        print(train_line(s, None if s == 7 else 5.0 - 0.08 * s).replace('"acc"', '"unused"'), file=f)
        if s % 5 == 0:
            print(json.dumps({"step": s, "val_loss": 5.1 - 0.08 * s}), file=f)

def head(sink, sparsity):
    return {"sparsity": sparsity, "sink": sink, "row_mass": 1.0, "empty_rows": 0.0, "entropy": 1.5,
            "normalised_entropy": 0.6, "dispersion": 3.0}

def attention(heads, tau=None, bias=None):
    layers = []
    for l, per_head in enumerate(heads):
        layer = dict(head(0.3, 0.2), layer=l, sink_heads=1, heads=[head(*h) for h in per_head])
        if tau:
            layer["tau"] = tau[l]
        if bias:
            layer["bias"] = bias[l]
        layers.append(layer)
    return {"sink_head_threshold": 0.3, "overall": dict(head(0.3, 0.2), sink_heads=2, sink_head_share=0.33),
            "layers": layers, "hidden": {"mean_pairwise_cosine": 0.4, "mean_feature_variance": None},
            "counts": {"rows_per_head": 1024, "sequences": 8, "tokens": 1024}}

def attention_map(layer, head, tokens):
    T = len(tokens)
    weights = []
    for i in range(T):
        raw = [0.0 if (j > i or (j > 0 and (i + j + head) % 3 == 0)) else 1.0 / (1 + i - j) for j in range(T)]
        raw[0] = 2.0  # a sink on the first token
        total = sum(raw)
        weights.append([w / total for w in raw])
    return {"layer": layer, "head": head, "tokens": tokens, "weights": weights}

tokens = ["The", " cat", " sat", " on", " the", " mat", ".", "\n", " It", " cost", " $", "5", " extraordinarily", "!"]
config = lambda kind: {"model": {"attention": {"kind": kind}}}
validation = {"data": "val.bin", "loss": 2.1, "perplexity": 8.2, "bits_per_byte": None, "accuracy": 0.4, "tokens": 16384}
lazy = {"path": "runs/lazy/ckpt_00000300", "label": "lazy", "step": 300, "config": config("elastic"),
        "validation": validation, "tasks": {"hellaswag": {"acc": 0.29, "acc_norm": 0.30, "count": 100, "skipped": 0, "too_long": 0}},
        "attention": attention([[(0.8, 0.4), (0.1, 0.6), (0.35, None)], [(0.5, 0.7), (0.05, 0.1), (0.2, 0.9)]],
                               tau=[[0.9, 1.1, 1.3], [0.7, None, 1.0]],
                               bias=[[[-0.1 * d * (h + 1) for d in range(8)] for h in range(3)],
                                     [[0.5 - 0.05 * d * h for d in range(8)] for h in range(3)]]),
        "attention_maps": [attention_map(0, 0, tokens), attention_map(1, 2, tokens)]}
softmax = {"path": "runs/softmax/ckpt_00000300", "label": "softmax", "step": 300, "config": config("softmax"),
           "validation": validation, "tasks": {},
           "attention": attention([[(0.6, 0.0), (None, 0.0), (0.2, 0.0)], [(0.4, 0.0), (0.3, 0.0), (0.1, 0.0)]]),
           "attention_maps": []}
json.dump({"checkpoints": [lazy, softmax]}, open(f"{tmp}/eval.json", "w"))
later = json.loads(json.dumps(lazy))
later["step"] = 600
later["attention"]["layers"][0]["heads"][1]["sparsity"] = 0.8
json.dump({"checkpoints": [later]}, open(f"{tmp}/eval2.json", "w"))
json.dump({"checkpoints": [softmax]}, open(f"{tmp}/eval_softmax.json", "w"))
PY
alpha="$tmp/runs/alpha/log.jsonl" beta="$tmp/runs/beta/log.jsonl"

# expect_png NAME FILE ARGS...: plot.py ARGS exits 0 and FILE is a PNG (signature) of over 10 kB
expect_png() {
    local name=$1 file=$2
    shift 2
    if ! "$python" "$plot" "$@" >"$tmp/out" 2>"$tmp/err"; then
        fail "$name (exit $?: $(tail -1 "$tmp/err"))"
    elif [ ! -f "$file" ]; then
        fail "$name (no $file)"
    elif [ "$(head -c 8 "$file" | od -An -tx1 | tr -d ' \n')" != 89504e470d0a1a0a ]; then
        fail "$name ($file is not a PNG)"
    elif [ "$(wc -c <"$file")" -lt 10000 ]; then
        fail "$name ($file has only $(wc -c <"$file") bytes)"
    else
        pass "$name"
    fi
}

# expect_error NAME PATTERN ARGS...: exit status 1, stderr exactly one line "plot.py: error: ..." matching PATTERN
expect_error() {
    local name=$1 pattern=$2
    shift 2
    "$python" "$plot" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "^plot.py: error: .*$pattern" "$tmp/err"; then
        pass "$name"
    else
        fail "$name (exit $rc, stderr: $(cat "$tmp/err"))"
    fi
}

echo "plot: figures"
expect_png "curves of two runs" "$tmp/curves.png" curves "$alpha" "$beta" --out "$tmp/curves.png"
expect_png "curves with labels and smoothing" "$tmp/sub/smooth.png" curves "$alpha" "$beta" --labels "a,b \$x\$" \
    --smooth 5 --out "$tmp/sub/smooth.png"
expect_png "curves without accuracies" "$tmp/beta.png" curves "$beta" --out "$tmp/beta.png"
expect_png "heat maps" "$tmp/heat.png" heatmap "$tmp/eval.json" --out "$tmp/heat.png"
expect_png "heat maps of a chosen checkpoint" "$tmp/heat0.png" heatmap "$tmp/eval.json" --checkpoint 0 --out "$tmp/heat0.png"
expect_png "per-head bars of three checkpoints" "$tmp/heads.png" heads "$tmp/eval.json" "$tmp/eval2.json" --out "$tmp/heads.png"
expect_png "distance bias and tau" "$tmp/bias.png" bias "$tmp/eval.json" --out "$tmp/bias.png"

echo "plot: reading logs"
# The resumed run replaces steps 21..30 (its loss is 0.5 higher) and adds 31..40; beta's null stays NaN.
if "$python" - "$plot" "$alpha" "$beta" <<'PY'; then
import math, os, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
import plot
training, evaluation = plot.read_log(sys.argv[2])
expected = lambda s, offset: 4.0 * math.exp(-s / 15) + 1.0 + offset
ok = sorted(training) == list(range(1, 41)) and sorted(evaluation) == [10, 20, 30, 40]
ok = ok and math.isclose(training[20]["loss"], expected(20, 0.0)) and math.isclose(training[25]["loss"], expected(25, 0.5))
ok = ok and math.isclose(evaluation[30]["val_loss"], expected(30, 0.7)) and math.isclose(evaluation[20]["val_loss"], expected(20, 0.2))
steps, losses = plot.series(plot.read_log(sys.argv[3])[0], "loss")
ok = ok and len(steps) == 25 and math.isnan(losses[6]) and not math.isnan(losses[5])
averaged = plot.moving_average(plot.np.array([1.0, 3.0, float("nan"), 5.0, 7.0]), 2)
ok = ok and list(averaged) == [1.0, 2.0, 3.0, 5.0, 6.0]
sys.exit(0 if ok else 1)
PY
    pass "a resumed log keeps its latest history; nulls stay NaN; moving average"
else
    fail "a resumed log keeps its latest history; nulls stay NaN; moving average"
fi
labels=$("$python" -c "
import sys; sys.path.insert(0, sys.argv[1]); import plot
print(plot.default_labels(['runs/alpha/log.jsonl', 'runs/beta/log.jsonl']), plot.default_labels(['logs/a.jsonl', 'logs/b.jsonl']))" \
    "$(dirname "$plot")")
[ "$labels" = "['alpha', 'beta'] ['a', 'b']" ] && pass "default labels" || fail "default labels ($labels)"

echo "plot: bad input"
{ head -2 "$alpha"; echo '{"step": 3, "loss": 2.5'; tail -3 "$alpha"; } >"$tmp/broken.jsonl"
expect_error "missing log" "nothing.jsonl" curves "$tmp/nothing.jsonl" --out "$tmp/x.png"
expect_error "malformed log line" "broken.jsonl:3: malformed JSON" curves "$alpha" "$tmp/broken.jsonl" --out "$tmp/x.png"
echo '[1, 2]' >"$tmp/array.jsonl"
expect_error "log line that is not a record" "array.jsonl:1: not a log record" curves "$tmp/array.jsonl" --out "$tmp/x.png"
expect_error "labels do not match the logs" "--labels has 1 names for 2 logs" curves "$alpha" "$beta" --labels one --out "$tmp/x.png"
expect_error "missing report" "nothing.json" heads "$tmp/nothing.json" --out "$tmp/x.png"
echo '{"step": 1, "loss": 2.0}' >"$tmp/record.json"
expect_error "a log line is not a report" "no \"checkpoints\" list" heatmap "$tmp/record.json" --out "$tmp/x.png"
expect_error "a log is not a report" "log.jsonl:2: malformed JSON" heatmap "$alpha" --out "$tmp/x.png"
expect_error "chosen checkpoint without maps" "checkpoint 1 (softmax) lacks attention maps" heatmap "$tmp/eval.json" --checkpoint 1 --out "$tmp/x.png"
expect_error "checkpoint out of range" "--checkpoint 5 out of range" heatmap "$tmp/eval.json" --checkpoint 5 --out "$tmp/x.png"
expect_error "no bias table" "no checkpoint has a distance-bias table" bias "$tmp/eval_softmax.json" --out "$tmp/x.png"
expect_error "no subcommand data" "no checkpoint has attention maps" heatmap "$tmp/eval_softmax.json" --out "$tmp/x.png"
expect_error "missing --out" "--out" bias "$tmp/eval.json"
[ ! -e "$tmp/x.png" ] && pass "no figure written on error" || fail "no figure written on error"

finish "plot"
