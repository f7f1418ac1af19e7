#!/usr/bin/env bash
# End-to-end tests of the trainer binary: bad input gives one clear line and a non-zero exit,
# training lowers the loss, --resume continues bit-exactly, checkpoints are refused when they do
# not match the flags, task data trains with accuracies logged, --sample-every samples (and resumes
# bit-exactly), the GPU trainer (when built) says in one line that there is no GPU, the CPU trainer
# refuses several ranks and bad --dist-init values, and the semantic-focus sweep script runs.
# Usage: bash test/test_cli.sh BUILD_DIR
set -u
build=${1:-build}
train="$build/train_gpt_cpu"
source "$(dirname "$0")/harness.sh"
tiny=(--layers 1 --heads 2 --dim 16 --seq 16 --batch 2 --eval-batches 2 --threads 2)

# expect_error NAME PATTERN ARGS...: exit code non-zero, stderr exactly one line, matching PATTERN
expect_error() {
    local name=$1 pattern=$2
    shift 2
    "$train" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ $rc -ne 0 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q -- "$pattern" "$tmp/err"; then
        pass "$name"
    else
        fail "$name (exit $rc, stderr: $(cat "$tmp/err"))"
    fi
}

echo "cli: bad input"
expect_error "unknown flag" "error: .*--bogus" --bogus 3
expect_error "negative steps" "error: .*--steps" --steps -1
expect_error "non-numeric value" "error: .*--batch" --batch many
expect_error "unknown attention" "error: .*--attn" --attn magic
expect_error "topk without k" "error: .*k" --attn topk --steps 1
expect_error "heads do not divide dim" "error: .*--dim 10.*--heads 4" --dim 10 --heads 4
expect_error "lazy with topk" "error: .*--lazy" --lazy --attn topk --attn-k 2
expect_error "bias window without bias" "error: .*--bias-window" --bias-window 8
expect_error "missing data file" "error: no file matches" --data "$tmp/nothing_*.bin"
printf 'garbage' >"$tmp/short.bin"
if [ -d ../shared/data ]; then  # text is tokenized with GPT-2's vocabulary, from there
    expect_error "text too short for a batch" "error: .*fewer than one batch" --data "$tmp/short.bin" "${tiny[@]}" --val "$tmp/short.bin"
else
    echo "  skip text too short: ../shared/data not found (GPT-2's vocabulary)"
fi
python3 -c "
import struct,sys
open(sys.argv[1],'wb').write(struct.pack('<256i', 20240520, 1, 1000, *[0]*253) + bytes(10))" "$tmp/trunc.bin"
expect_error "truncated shard" "trunc.bin.*truncated" --data "$tmp/trunc.bin"
expect_error "missing checkpoint" "error: --resume" --resume "$tmp/none"
expect_error "llm.c init file missing" "error: cannot open" --init "$tmp/none.bin"

echo "cli: training"
# the default model on shorter sequences: 40 steps take it from ln 64 = 4.16 to the bigram plateau (~3.5)
if "$train" --seq 32 --steps 40 --eval-every 40 --eval-batches 4 --threads 1 \
    --log "$tmp/learn.jsonl" >"$tmp/learn.out" 2>&1; then
    python3 - "$tmp/learn.jsonl" <<'PY' && pass "loss falls on the built-in data" || fail "loss falls on the built-in data"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
train = [l["loss"] for l in lines if "loss" in l]
val = [l["val_loss"] for l in lines if "val_loss" in l]
print(f"  first loss {train[0]:.3f}, last {train[-1]:.3f}, val {val[-1]:.3f}")
sys.exit(0 if len(train) == 40 and train[0] > 4.0 and train[-1] < train[0] - 0.4 and val[-1] < train[0] - 0.4 else 1)
PY
else
    fail "training run ($(tail -1 "$tmp/learn.out"))"
fi

for variant in "--attn elastic" "--lazy" "--attn topk --attn-k 4 --pos rope" "--attn window --attn-k 4 --global-tokens 1" \
    "--attn block --attn-k 8 --pos-bias head --bias-window 6"; do
    # shellcheck disable=SC2086
    if "$train" "${tiny[@]}" $variant --steps 3 >"$tmp/variant.out" 2>&1 && grep -q "val loss" "$tmp/variant.out"; then
        pass "trains with $variant"
    else
        fail "trains with $variant ($(tail -1 "$tmp/variant.out"))"
    fi
done

echo "cli: checkpoints"
run=("${tiny[@]}" --lazy --steps 6 --eval-every 3 --total-batch 64)
"$train" "${run[@]}" --save-every 3 --out "$tmp/a" --log "$tmp/a.jsonl" >/dev/null 2>&1
"$train" --resume "$tmp/a/ckpt_00000003" --out "$tmp/b" --log "$tmp/b.jsonl" >/dev/null 2>&1
# the log lines of steps 4..6 without their timings
steps_4_to_6() {
    python3 -c "
import json, sys
for line in open(sys.argv[1]):
    j = json.loads(line)
    if 4 <= j['step'] <= 6:
        j.pop('ms', None), j.pop('tokens_per_s', None)
        print(json.dumps(j, sort_keys=True))" "$1"
}
if cmp -s "$tmp/a/ckpt_00000006/model.bin" "$tmp/b/ckpt_00000006/model.bin" &&
    cmp -s "$tmp/a/ckpt_00000006/state.bin" "$tmp/b/ckpt_00000006/state.bin" &&
    [ "$(steps_4_to_6 "$tmp/b.jsonl" | grep -c '"loss"')" -eq 3 ] &&
    [ "$(steps_4_to_6 "$tmp/a.jsonl")" = "$(steps_4_to_6 "$tmp/b.jsonl")" ]; then
    pass "--resume continues bit-exactly (model, optimizer state, losses)"
else
    fail "--resume continues bit-exactly"
fi
"$train" --resume "$tmp/a" --steps 8 --out "$tmp/a" >"$tmp/resume.out" 2>&1
if grep -q "resumed from .*ckpt_00000006 at step 6" "$tmp/resume.out" && [ -d "$tmp/a/ckpt_00000008" ]; then
    pass "--resume on a run directory picks its newest checkpoint"
else
    fail "--resume on a run directory ($(tail -1 "$tmp/resume.out"))"
fi
if python3 -c "
import json,sys; c=json.load(open(sys.argv[1]))
assert c['step']==6 and c['model']['attention']['kind']=='elastic' and c['model']['attention']['position']=='rope'
assert c['training']['total_batch']==64 and c['git_commit'] and c['tokens_seen']==6*64" "$tmp/a/ckpt_00000006/config.json"; then
    pass "config.json records architecture, training arguments, step and commit"
else
    fail "config.json contents"
fi
expect_error "resume with other layer count" "num_layers = 1 but --layers says 3" --resume "$tmp/a" --layers 3
expect_error "resume with other attention" "attention/kind = \"elastic\" but --attn says \"softmax\"" --resume "$tmp/a" --attn softmax
if "$train" "${tiny[@]}" --lazy --steps 1 --init "$tmp/a/ckpt_00000006/model.bin" --out "$tmp/init" >"$tmp/init.out" 2>&1 &&
    [ -d "$tmp/init/ckpt_00000001" ]; then
    pass "--init starts a new run from a model.bin's weights"
else
    fail "--init from a model.bin ($(tail -1 "$tmp/init.out"))"
fi
expect_error "init with other attention" "but --attn says" --init "$tmp/a/ckpt_00000006/model.bin" --attn softmax
"$train" "${tiny[@]}" --steps 100000 --out "$tmp/interrupted" >"$tmp/int.out" 2>&1 &
pid=$!
sleep 2
kill -INT $pid
wait $pid
rc=$?
saved=$(ls "$tmp/interrupted" 2>/dev/null)
if [ $rc -eq 130 ] && [ "$(echo "$saved" | wc -w)" -eq 1 ] && [ -f "$tmp/interrupted/$saved/model.bin" ] &&
    "$train" --resume "$tmp/interrupted" --steps "$((10#${saved#ckpt_} + 1))" >/dev/null 2>&1; then
    pass "Ctrl-C saves a complete checkpoint that resumes (exit 130)"
else
    fail "Ctrl-C (exit $rc, saved: $saved)"
fi
# --sample-every draws from the checkpointed RNG: a resumed run draws the same samples and ends identical
"$train" "${run[@]}" --sample-every 2 --sample-tokens 5 --save-every 3 --out "$tmp/s" --log "$tmp/s.jsonl" >"$tmp/s.out" 2>&1
"$train" --resume "$tmp/s/ckpt_00000003" --out "$tmp/t" --log "$tmp/t.jsonl" >/dev/null 2>&1
if [ "$(grep -c '^step [246] | sample: [0-9]*\( [0-9]*\)\{4\}$' "$tmp/s.out")" -eq 3 ] &&
    cmp -s "$tmp/s/ckpt_00000006/model.bin" "$tmp/t/ckpt_00000006/model.bin" &&
    cmp -s "$tmp/s/ckpt_00000006/state.bin" "$tmp/t/ckpt_00000006/state.bin" &&
    [ "$(steps_4_to_6 "$tmp/t.jsonl" | grep -c '"sample"')" -eq 2 ] &&
    [ "$(steps_4_to_6 "$tmp/s.jsonl")" = "$(steps_4_to_6 "$tmp/t.jsonl")" ]; then
    pass "--sample-every prints token-id samples; --resume stays bit-exact with sampling on"
else
    fail "--sample-every with --resume ($(tail -1 "$tmp/s.out"))"
fi
head -c 2000 "$tmp/a/ckpt_00000006/model.bin" >"$tmp/broken.bin"
expect_error "truncated model file" "truncated" --init "$tmp/broken.bin"

echo "cli: the GPU trainer without a GPU"
if [ ! -x "$build/train_gpt" ]; then
    echo "  skip: $build/train_gpt not built (no nvcc)"
elif nvidia-smi -L >/dev/null 2>&1; then
    echo "  skip: this machine has a GPU (make gpu-check runs the GPU trainer)"
else
    saved_train=$train
    train="$build/train_gpt"
    expect_error "train_gpt exits with one line naming train_gpt_cpu" \
        "^train_gpt: no usable CUDA device (.*): use build/train_gpt_cpu$" "${tiny[@]}" --steps 1
    train=$saved_train
fi

echo "cli: data parallel flags"
expect_error "train_gpt_cpu with --world-size 2" \
    "^error: --world-size 2: train_gpt_cpu runs one process; data parallel over several GPUs needs build/train_gpt$" \
    "${tiny[@]}" --world-size 2
RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 expect_error "train_gpt_cpu as rank 1 of a launch" \
    "^error: world size 2 (torchrun-style): train_gpt_cpu runs one process" "${tiny[@]}"
expect_error "--dist-init of no known kind" "^error: --dist-init nccl://x: expected file:PATH or tcp:HOST:PORT$" \
    --dist-init nccl://x
expect_error "--dist-init tcp without a port" "^error: --dist-init tcp:node1: expected tcp:HOST:PORT$" --dist-init tcp:node1
expect_error "--dist-init tcp with a bad port" "^error: --dist-init tcp:node1:99999: port '99999' is not a number" \
    --dist-init tcp:node1:99999
expect_error "--dist-init file without a path" "^error: --dist-init file:PATH needs a path$" --dist-init file:
expect_error "--zero 2" "error: .*--zero" --zero 2
# one process with the flags of a 1-rank launch trains as usual; a resume does not replay them
if "$train" "${tiny[@]}" --steps 2 --rank 0 --world-size 1 --zero 1 --nccl-timeout 10 --out "$tmp/one" >/dev/null 2>&1 &&
    python3 -c "
import json, sys
c = json.load(open(sys.argv[1]))
assert c['training']['world_size'] == 1, c['training']
assert not any(a in c['argv'] for a in ['--rank', '--world-size', '--zero', '--nccl-timeout']), c['argv']" \
        "$tmp/one/ckpt_00000002/config.json"; then
    pass "config.json records world_size 1 and no per-launch flags"
else
    fail "config.json records world_size 1 and no per-launch flags"
fi

echo "cli: task data"
expect_error "unknown task" "error: unknown task 'nope' (valid: parity" --data task:nope
expect_error "bad task option" "error: task:parity:size=3: unknown option 'size'" --data task:parity:size=3
expect_error "task with another --seq" "error: --seq 16 does not fit task:parity, whose examples are 40 tokens" \
    --data task:parity --seq 16
expect_error "task with --val" "error: task data .*no --val" --data task:parity --val "$tmp/short.bin"
expect_error "task only as --val" "error: task data .*no --val" --val task:parity
task=(--data task:cycle-navigation:train=256:heldout=64 --layers 1 --heads 2 --dim 16 --batch 8 --threads 2)
if "$train" "${task[@]}" --steps 4 --eval-every 2 --eval-batches 100 --log "$tmp/task.jsonl" >"$tmp/task.out" 2>&1 &&
    grep -q "vocab 48" "$tmp/task.out" && grep -q "batch 8 x 40" "$tmp/task.out" &&
    grep -q "^step 4/4 | loss [0-9.]* | acc [0-9.]* |" "$tmp/task.out" &&
    grep -q "^step 4 | val loss [0-9.]* | val acc [0-9.]*$" "$tmp/task.out" &&
    python3 - "$tmp/task.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
train = [l["acc"] for l in lines if "loss" in l]
val = [l["val_acc"] for l in lines if "val_loss" in l]
# accuracy counts whole labels: multiples of 1/8 per training batch, of 1/64 on the held-out split
sys.exit(0 if len(train) == 4 and len(val) == 2 and all(0 <= a <= 1 and (a * 8) % 1 == 0 for a in train)
         and all(0 <= a <= 1 and (a * 64) % 1 == 0 for a in val) else 1)
PY
then
    pass "trains on task data with --seq from the task; prints and logs acc and val_acc"
else
    fail "trains on task data ($(tail -1 "$tmp/task.out"))"
fi

echo "cli: semantic-focus sweep"
if /usr/bin/python3 -c "import numpy, matplotlib" 2>/dev/null; then
    if /usr/bin/python3 scripts/sweep_focus.py --trainer "$train" --tasks parity:train=512:heldout=64 --seeds 2 \
        --steps 30 --variants softmax,topk:4 --layers 1 --heads 2 --dim 16 --batch 8 --jobs 2 \
        --out "$tmp/sweep" >"$tmp/sweep.out" 2>&1 &&
        grep -q "^parity:train=512:heldout=64 *topk:4 " "$tmp/sweep.out" && [ -s "$tmp/sweep/focus_sweep.png" ] &&
        python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
assert len(r['runs']) == 4 and {s['variant'] for s in r['summary']} == {'softmax', 'topk:4'}
assert all(0 <= s['heldout_acc']['median'] <= 1 for s in r['summary'])" "$tmp/sweep/results.json"; then
        pass "sweep_focus.py runs a tiny sweep: table, results.json, plot"
    else
        fail "sweep_focus.py ($(tail -3 "$tmp/sweep.out"))"
    fi
else
    echo "  skip sweep: /usr/bin/python3 lacks numpy or matplotlib (apt-get install python3-matplotlib)"
fi

echo "cli: eval_gpt"
evaluate="$build/eval_gpt"
for variant in softmax lazy; do
    flag=""
    [ $variant = lazy ] && flag=--lazy
    "$train" --seq 32 --batch 8 --steps 4 --eval-every 4 --eval-batches 3 --threads 1 $flag --out "$tmp/eval_$variant" \
        --log "$tmp/eval_$variant.jsonl" >/dev/null 2>&1
done
if "$evaluate" --ckpt "$tmp/eval_softmax" "$tmp/eval_lazy" --val-batches 3 --maps 0:0,1:3 --json "$tmp/eval.json" \
    >"$tmp/eval.out" 2>&1 && grep -q "share of sink heads" "$tmp/eval.out" &&
    python3 - "$tmp/eval.json" "$tmp/eval_softmax.jsonl" "$tmp/eval_lazy.jsonl" <<'PY'; then
import json, sys
doc = json.load(open(sys.argv[1]))
softmax, lazy = doc["checkpoints"]
for c, log in ((softmax, sys.argv[2]), (lazy, sys.argv[3])):
    trained = [json.loads(l) for l in open(log) if "val_loss" in l][-1]["val_loss"]
    # the trainer's in-loop validation and eval_gpt run the same code on the same batches
    assert abs(c["validation"]["loss"] - trained) < 1e-6, (c["validation"]["loss"], trained)
    assert c["step"] == 4 and c["config"]["model"]["attention"]["kind"] in ("softmax", "elastic")
    assert set(c["attention"]) >= {"overall", "layers", "hidden", "counts"}
    assert len(c["attention"]["layers"]) == 2 and len(c["attention"]["layers"][0]["heads"]) == 4
    assert [(m["layer"], m["head"]) for m in c["attention_maps"]] == [(0, 0), (1, 3)]
    assert len(c["attention_maps"][0]["weights"]) == 32
assert softmax["attention"]["overall"]["sparsity"] == 0 and abs(softmax["attention"]["overall"]["row_mass"] - 1) < 1e-5
assert lazy["attention"]["overall"]["sparsity"] > 0 and lazy["attention"]["overall"]["row_mass"] < 1
assert len(lazy["attention"]["layers"][0]["tau"]) == 4 and len(lazy["attention"]["layers"][0]["bias"][0]) == 32
PY
    pass "eval_gpt compares checkpoints, matches the trainer's validation loss, writes the JSON"
else
    fail "eval_gpt on two checkpoints ($(tail -3 "$tmp/eval.out"))"
fi
if [ -f "$tmp/eval.json" ] && /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
    if /usr/bin/python3 scripts/plot.py curves "$tmp/eval_softmax.jsonl" "$tmp/eval_lazy.jsonl" --out "$tmp/curves.png" >/dev/null &&
        /usr/bin/python3 scripts/plot.py heatmap "$tmp/eval.json" --out "$tmp/heat.png" >/dev/null &&
        /usr/bin/python3 scripts/plot.py heads "$tmp/eval.json" --out "$tmp/heads.png" >/dev/null &&
        /usr/bin/python3 scripts/plot.py bias "$tmp/eval.json" --out "$tmp/bias.png" >/dev/null; then
        pass "plot.py draws the trainer's logs and eval_gpt's JSON"
    else
        fail "plot.py on the trainer's logs and eval_gpt's JSON"
    fi
else
    echo "  skip plots: no eval.json or no matplotlib for /usr/bin/python3"
fi
evaluate_error() {  # like expect_error, for eval_gpt
    local saved=$train
    train=$evaluate
    expect_error "$@"
    train=$saved
}
evaluate_error "eval_gpt without --ckpt" "error: .*--ckpt" --val-batches 2
evaluate_error "eval_gpt on a missing checkpoint" "error: --resume" --ckpt "$tmp/none"
evaluate_error "eval_gpt with a bad head" "error: --maps: '0:9'" --ckpt "$tmp/eval_lazy" --maps 0:9
# checked before the benchmark file is read (there is none in /nonexistent) or anything evaluated
evaluate_error "eval_gpt tasks on a non-GPT-2 model" "error: --tasks needs models with GPT-2.s vocabulary (eval_softmax has 64 tokens)" \
    --ckpt "$tmp/eval_softmax" "$tmp/eval_lazy" --tasks piqa --task-dir /nonexistent
evaluate_error "eval_gpt --map-text on a non-GPT-2 model" "error: --map-text needs models with GPT-2's vocabulary" \
    --ckpt "$tmp/eval_lazy" --maps 0:0 --map-text "To be"
evaluate_error "eval_gpt --seq beyond the model" "error: --seq 4096 exceeds eval_lazy's maximum sequence length" \
    --ckpt "$tmp/eval_lazy" --seq 4096
evaluate_error "eval_gpt unknown task" "error: unknown benchmark task .nope. (valid: hellaswag" --ckpt "$tmp/eval_lazy" --tasks nope
if ! nvidia-smi -L >/dev/null 2>&1; then  # with a GPU, --device gpu is simply used
    evaluate_error "eval_gpt --device gpu without a GPU" "error: --device gpu: " --ckpt "$tmp/eval_lazy" --device gpu
fi

echo "cli: text data"
if [ -f ../shared/data/tinyshakespeare.txt ]; then
    if "$train" "${tiny[@]}" --data ../shared/data/tinyshakespeare.txt --steps 2 --eval-every 2 >"$tmp/text.out" 2>&1 &&
        grep -q "val: .*last 10%" "$tmp/text.out" && grep -q "vocab 50257" "$tmp/text.out"; then
        pass "trains on a text file with a held-out tail"
        if "$train" "${tiny[@]}" --data ../shared/data/tinyshakespeare.txt --steps 1 --out "$tmp/text" \
            --eval-tasks piqa=test/fixtures/benchmarks/piqa.jsonl >"$tmp/tasks.out" 2>&1 &&
            grep -q "piqa: acc" "$tmp/tasks.out" &&
            "$evaluate" --ckpt "$tmp/text" --tasks piqa=test/fixtures/benchmarks/piqa.jsonl,lambada --task-limit 5 \
                --val-batches 2 --maps 0:1 --map-text "To be, or not to be" --json "$tmp/text.json" >"$tmp/tasks.out" 2>&1 &&
            python3 -c "
import json,sys; c=json.load(open(sys.argv[1]))['checkpoints'][0]
assert set(c['tasks'])=={'piqa','lambada'} and c['tasks']['lambada']['count']==5 and 'acc_norm' in c['tasks']['piqa']
assert c['validation']['bits_per_byte']>0 and c['attention_maps'][0]['tokens'][:3]==['To',' be',',']" "$tmp/text.json"; then
            pass "zero-shot tasks in the trainer and eval_gpt, bits per byte, maps on text"
        else
            fail "zero-shot tasks ($(tail -2 "$tmp/tasks.out"))"
        fi
    else
        fail "trains on a text file ($(tail -1 "$tmp/text.out"))"
    fi
else
    echo "  skip text data: ../shared/data not found (the repository's shared data folder)"
fi

finish "cli"
