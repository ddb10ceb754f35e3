#!/usr/bin/env bats
# bin/pcgrad-train on a tiny random BERT (tests/tools/tiny-bert: hidden 32, 2 layers, the
# default model's vocabulary) and 32-example shards: checkpoints, logs, exact resume, and
# every refusal. Each run takes about a second.
load helpers
bats_require_minimum_version 1.5.0

setup_file() {
  export S=$BATS_FILE_TMPDIR
  "$TINY_BERT" "$MODEL/vocab.txt" "$S/tiny"
  "$TINY_BERT" "$MODEL/vocab.txt" "$S/wide" 48 2 2 64 1   # another model: hidden 48
  awk 'NR <= 33' "$DATA/sst-train.tsv" >"$S/sst.tsv"
  awk 'NR == 1 || (NR >= 40 && NR < 72)' "$DATA/sst-train.tsv" >"$S/sst-dev.tsv"
  awk 'NR <= 33' "$DATA/qqp-train.tsv" >"$S/qqp.tsv"
  awk 'NR <= 33' "$DATA/sts-train.tsv" >"$S/sts.tsv"
  awk 'NR == 1 || (NR >= 40 && NR < 72)' "$DATA/sts-train.tsv" >"$S/sts-dev.tsv"
  local tok="$BIN/tokenize -q --model $S/tiny"
  $tok --text sentence --label label "$S/sst.tsv" -o "$S/sst.tok"
  $tok --text sentence --label label "$S/sst-dev.tsv" -o "$S/sst-dev.tok"
  $tok --pair sentence1,sentence2 --label is_duplicate "$S/qqp.tsv" -o "$S/qqp.tok"
  $tok --pair sentence1,sentence2 --label similarity "$S/sts.tsv" -o "$S/sts.tok"
  $tok --pair sentence1,sentence2 --label similarity "$S/sts-dev.tsv" -o "$S/sts-dev.tok"
}

setup() { T=$BATS_TEST_TMPDIR; }

train() {
  "$BIN/pcgrad-train" -q -j 2 --model "$S/tiny" --task sst="$S/sst.tok" --task qqp="$S/qqp.tok" \
    --task sts="$S/sts.tok" --dev sst="$S/sst-dev.tok" --dev sts="$S/sts-dev.tok" "$@"
}

same_weights() {  # two run directories ended with identical best and last checkpoints
  for f in last/model.safetensors last/heads.safetensors last/state.safetensors best/model.safetensors \
           best/heads.safetensors train.log dev.tsv; do
    cmp "$1/$f" "$2/$f" || return 1
  done
}

@test "--help prints usage with examples" {
  run "$BIN/pcgrad-train" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"usage: pcgrad-train"* ]]
  [[ "$output" == *"examples:"* ]]
  [[ "$output" == *"--pcgrad"* ]]
}

@test "a multi-task run writes best and last checkpoints, the step log and dev scores" {
  train --pcgrad --epochs 2 -o "$T/run"
  for d in best last; do
    for f in model.safetensors config.json heads.safetensors vocab.txt; do [ -s "$T/run/$d/$f" ]; done
  done
  [ -s "$T/run/last/state.safetensors" ]
  [ ! -e "$T/run/best/state.safetensors" ]
  cmp "$T/run/last/vocab.txt" "$MODEL/vocab.txt"
  # 32 examples per task, partial batches of 4, 3 tasks in 4 slots: 6 steps an epoch
  [ "$(tail -n +2 "$T/run/train.log" | wc -l)" -eq 12 ]
  head -1 "$T/run/train.log" | grep -q $'^step\tphase\tepoch\tlr\tloss_sst\tloss_qqp\tloss_sts\tgrad_norm\tcos_sst_qqp'
  [ "$(tail -n +2 "$T/run/dev.tsv" | wc -l)" -eq 2 ]
  ! ls -a "$T/run" | grep -q tmp     # no temporary directory left behind
}

@test "progress, PCGrad telemetry and dev scores go to stderr, nothing to stdout" {
  run --separate-stderr "$BIN/pcgrad-train" -j 2 --model "$S/tiny" --task sst="$S/sst.tok" --task sts="$S/sts.tok" \
    --dev sts="$S/sts-dev.tok" --pcgrad --epochs 1 -o "$T/run"
  [ "$status" -eq 0 ]
  [ -z "$output" ]
  [[ "$stderr" == *"ex/s"*"tok/s"*"ETA"* ]]
  [[ "$stderr" == *"pcgrad: "*"conflict sst/sts"* ]]
  [[ "$stderr" == *"dev after step"*"overall"* ]]
}

@test "resume after a stop equals the uninterrupted run, byte for byte (PCGrad)" {
  train --pcgrad --epochs 2 --seed 3 -o "$T/a"
  train --pcgrad --epochs 2 --seed 3 -o "$T/b" --stop-after-steps 4
  [ "$(tail -n +2 "$T/b/train.log" | wc -l)" -eq 4 ]
  "$BIN/pcgrad-train" -q -j 2 --resume "$T/b"
  same_weights "$T/a" "$T/b"
}

@test "resume equals the uninterrupted run: summed gradients, sequential schedule, linear lr" {
  train --schedule sst,sts --epochs 2 --lr-schedule linear --warmup 0.2 --clip 1 -o "$T/a"
  train --schedule sst,sts --epochs 2 --lr-schedule linear --warmup 0.2 --clip 1 -o "$T/b" --stop-after-steps 5
  "$BIN/pcgrad-train" -q -j 2 --resume "$T/b" --stop-after-steps 7
  "$BIN/pcgrad-train" -q -j 2 --resume "$T/b"
  same_weights "$T/a" "$T/b"
}

@test "--device cpu-staged (the device code paths: encoder state in backend memory, copies) gives the CPU run's bits" {
  train --pcgrad --epochs 2 --sentence-model sbert-cnn-bilstm --clip 0.5 --device cpu -o "$T/a"
  train --pcgrad --epochs 2 --sentence-model sbert-cnn-bilstm --clip 0.5 --device cpu-staged -o "$T/b"
  same_weights "$T/a" "$T/b"
}

@test "a run resumes on another device: cpu-staged, then cpu, then cpu-staged" {
  train --pcgrad --epochs 2 --seed 3 -o "$T/a"
  train --pcgrad --epochs 2 --seed 3 --device cpu-staged -o "$T/b" --stop-after-steps 4
  "$BIN/pcgrad-train" -q -j 2 --resume "$T/b" --device cpu --stop-after-steps 8
  "$BIN/pcgrad-train" -q -j 2 --resume "$T/b" --device cpu-staged
  same_weights "$T/a" "$T/b"
}

# Loss scaling (lib/lossscale.h) on the CPU: numerically pointless there, but the logic is the
# same on every backend. A power-of-two scale is exact in both directions, so the bits match.
@test "--loss-scale 1024 and dynamic give the unscaled run's bits (CPU and cpu-staged, PCGrad and summed)" {
  train --pcgrad --epochs 2 --seed 3 -o "$T/a"
  train --pcgrad --epochs 2 --seed 3 --loss-scale 1024 -o "$T/b"
  train --pcgrad --epochs 2 --seed 3 --loss-scale dynamic --device cpu-staged -o "$T/c"
  for r in b c; do
    for f in last/model.safetensors last/heads.safetensors best/model.safetensors train.log dev.tsv; do
      cmp "$T/a/$f" "$T/$r/$f"
    done
  done
  train --epochs 1 --clip 0.5 --sentence-model sbert-cnn-bilstm -o "$T/d"
  train --epochs 1 --clip 0.5 --sentence-model sbert-cnn-bilstm --loss-scale 1024 -o "$T/e"
  cmp "$T/d/last/model.safetensors" "$T/e/last/model.safetensors"
  cmp "$T/d/last/heads.safetensors" "$T/e/last/heads.safetensors"
  cmp "$T/d/train.log" "$T/e/train.log"
}

# A scale of 1e38 overflows the first backward (NaN/inf in the gradient) on this model: the
# step is skipped and the scale halves; at 5e37 the next step is finite, and training goes on.
@test "an overflowing loss scale: the step is skipped, the scale halves, the log says so, training proceeds" {
  run --separate-stderr "$BIN/pcgrad-train" -j 2 --model "$S/tiny" --task sst="$S/sst.tok" --task qqp="$S/qqp.tok" \
    --task sts="$S/sts.tok" --pcgrad --epochs 2 --loss-scale dynamic --loss-scale-init 1e38 -o "$T/r"  # not -q
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"loss scaling: dynamic, scale 1e+38"* ]]
  [[ "$stderr" == *"step 1: gradient norm "@(NaN|inf)": optimizer step skipped; loss scale 1e+38 -> 5e+37"* ]]
  [[ "$stderr" == *"steps skipped (loss or gradient not finite)"* ]]
  # the log: step 1's norm is not finite, step 2's is
  [[ "$(awk -F'\t' 'NR == 2 { print $8 }' "$T/r/train.log")" == @(NA|inf) ]]
  awk -F'\t' 'NR == 3 { exit !($8 + 0 > 0 && $8 + 0 < 1e6) }' "$T/r/train.log"
  # a skipped step leaves the parameters as they were: one skipped step = one step at lr 0
  # (AdamW at lr 0 moves nothing)
  train --pcgrad --max-steps 1 --loss-scale dynamic --loss-scale-init 1e38 -o "$T/s"
  train --pcgrad --max-steps 1 --lr 0 -o "$T/z"
  cmp "$T/s/last/model.safetensors" "$T/z/last/model.safetensors"
  cmp "$T/s/last/heads.safetensors" "$T/z/last/heads.safetensors"
  # and the run moved on after it: not the weights of a run without the skip, not the start
  ! cmp -s "$T/r/last/model.safetensors" "$T/z/last/model.safetensors"
}

# A non-finite loss under loss scaling is GradScaler's non-finite gradient (lossscale.h): the
# step is skipped (dynamic: the scale halves) and training goes on; without scaling it stops
# (the --fail-at-step test below).
@test "a non-finite loss under --loss-scale dynamic or fixed: the step is skipped, the log says so, training proceeds" {
  run --separate-stderr "$BIN/pcgrad-train" -j 2 --model "$S/tiny" --task sst="$S/sst.tok" --task qqp="$S/qqp.tok" \
    --task sts="$S/sts.tok" --pcgrad --epochs 2 --loss-scale dynamic --fail-at-step 2 -o "$T/r"  # not -q
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"step 2: sst loss NaN: optimizer step skipped; loss scale 65536 -> 32768"* ]]
  [[ "$stderr" == *"scale 32768 after step 12; 1 steps skipped (loss or gradient not finite)"* ]]
  [ "$(tail -n +2 "$T/r/train.log" | wc -l)" -eq 12 ]
  # step 2: no loss, no norm, no PCGrad statistics; step 3 has them again
  awk -F'\t' 'NR == 3 { for (i = 5; i <= NF; i++) if ($i != "NA") exit 1 }' "$T/r/train.log"
  awk -F'\t' 'NR == 4 { exit !($5 != "NA" && $8 != "NA" && $9 != "NA") }' "$T/r/train.log"
  # the skipped step moved nothing: two steps with the second skipped = one step (the scale
  # is a power of two: exact), in the parameters
  train --pcgrad --max-steps 2 --loss-scale dynamic --fail-at-step 2 -o "$T/s"
  train --pcgrad --max-steps 1 -o "$T/one"
  cmp "$T/s/last/model.safetensors" "$T/one/last/model.safetensors"
  cmp "$T/s/last/heads.safetensors" "$T/one/last/heads.safetensors"
  # fixed: skipped too, the scale kept
  run --separate-stderr "$BIN/pcgrad-train" -j 2 --model "$S/tiny" --task sst="$S/sst.tok" --task qqp="$S/qqp.tok" \
    --task sts="$S/sts.tok" --max-steps 3 --loss-scale 1024 --fail-at-step 2 -o "$T/f"
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"step 2: sst loss NaN: optimizer step skipped; loss scale 1024 -> 1024"* ]]
}

@test "resume across a loss-scale backoff equals the uninterrupted run, byte for byte" {
  train --pcgrad --epochs 2 --seed 3 --loss-scale dynamic --loss-scale-init 1e38 -o "$T/a"
  train --pcgrad --epochs 2 --seed 3 --loss-scale dynamic --loss-scale-init 1e38 -o "$T/b" --stop-after-steps 1
  # the scaler is in the state: the resumed run starts from the halved scale
  run --separate-stderr "$BIN/pcgrad-train" -j 2 --resume "$T/b" --stop-after-steps 5
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"loss scaling: dynamic, scale 5e+37"* ]]
  "$BIN/pcgrad-train" -q -j 2 --resume "$T/b"
  same_weights "$T/a" "$T/b"
}

@test "--loss-scale refusals; --precision fp16 is CUDA only" {
  run --separate-stderr train --max-steps 1 --loss-scale sometimes -o "$T/x"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"--loss-scale sometimes: expected dynamic, none or a positive number"* ]]
  run --separate-stderr train --max-steps 1 --loss-scale -4 -o "$T/y"
  [ "$status" -ne 0 ]
  run --separate-stderr train --max-steps 1 --loss-scale-init -1 -o "$T/v"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"--loss-scale-init -1: must be 0 (the default) or a positive finite float"* ]]
  run --separate-stderr train --max-steps 1 --device cpu --precision fp16 -o "$T/z"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"--precision fp16: the CPU backend computes in fp32 only"* ]]
  run --separate-stderr train --max-steps 1 --device cpu --precision fp8 -o "$T/w"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"expected fp32, tf32, bf16 or fp16"* ]]
}

@test "--device: auto says where it trains; cuda without a GPU and unknown devices are clear errors" {
  run --separate-stderr train --max-steps 1 --device nonsense -o "$T/x"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"unknown device 'nonsense'"* ]]
  run --separate-stderr "$BIN/pcgrad-train" -j 2 --model "$S/tiny" --task sst="$S/sst.tok" --max-steps 1 -o "$T/auto"
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"device: "* ]]
  if nvidia-smi -L >/dev/null 2>&1; then skip "a GPU is present"; fi
  run --separate-stderr train --max-steps 1 --device cuda -o "$T/cuda"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"--device cuda"* ]]
  [ ! -e "$T/cuda/last" ]
}

@test "a different seed gives different weights" {
  train --max-steps 2 --seed 1 -o "$T/a"
  train --max-steps 2 --seed 2 -o "$T/b"
  ! cmp -s "$T/a/last/model.safetensors" "$T/b/last/model.safetensors"
}

@test "--init starts from a checkpoint's encoder and heads" {
  train --max-steps 2 --pair-model cross -o "$T/a"
  run "$BIN/pcgrad-train" -j 2 --model "$S/tiny" --init "$T/a/last" --task sts="$S/sts.tok" --max-steps 1 -o "$T/b"
  [ "$status" -eq 0 ]
  [[ "$output" == *"sets the architecture"*"--pair-model cross"* ]]
}

@test "the checkpoint is a model directory that embed loads" {
  train --max-steps 2 -o "$T/run"
  "$BIN/embed" -q --model "$T/run/best" "$S/sts-dev.tok" -o "$T/e"
  run "$BIN/dump" --header "$T/e"
  [ "$status" -eq 0 ]
  [[ "${lines[0]}" == *'"hidden":"32"'* ]]
}

@test "refuses: missing shard, not a token stream, unknown task, no shards" {
  run train --task sst="$T/nope.tok" -o "$T/r1"
  [ "$status" -ne 0 ]
  [[ "$output" == *"nope.tok"* ]]
  printf 'id\tsentence\n' >"$T/x.tsv"
  run train --task sst="$T/x.tsv" -o "$T/r2"
  [ "$status" -ne 0 ]
  [[ "$output" == *"x.tsv"* ]]
  "$BIN/embed" -q --model "$S/tiny" "$S/sst.tok" -o "$T/emb"
  run train --task sst="$T/emb" -o "$T/r3"
  [ "$status" -ne 0 ]
  [[ "$output" == *"not a token stream"* ]]
  run train --task nli="$S/sst.tok" -o "$T/r4"
  [ "$status" -ne 0 ]
  [[ "$output" == *"TASK=SHARD"* ]]
  run "$BIN/pcgrad-train" --model "$S/tiny" -o "$T/r5"
  [ "$status" -ne 0 ]
  [[ "$output" == *"no training shards"* ]]
}

@test "refuses a shard tokenized with another vocabulary" {
  mkdir "$T/v2" && cp "$S/tiny"/* "$T/v2/" && echo extra-token >>"$T/v2/vocab.txt"
  "$BIN/tokenize" -q --model "$T/v2" --text sentence --label label "$S/sst.tsv" -o "$T/v2.tok"
  run train --task sst="$T/v2.tok" -o "$T/r"
  [ "$status" -ne 0 ]
  [[ "$output" == *"vocab"*"mismatch"* ]]
}

@test "refuses wrong labels for the task" {
  run train --task qqp="$S/sst.tok" -o "$T/r1"
  [ "$status" -ne 0 ]
  [[ "$output" == *"no 'is_duplicate' label"* ]]
  run train --task sst="$S/sts.tok" -o "$T/r2"
  [ "$status" -ne 0 ]
  [[ "$output" == *"no 'label' label"* ]]
  awk 'NR <= 5' "$DATA/sts-train.tsv" >"$T/s.tsv"
  "$BIN/tokenize" -q --model "$S/tiny" --pair sentence1,sentence2 --label similarity "$T/s.tsv" -o "$T/s.tok"
  run "$BIN/pcgrad-train" --model "$S/tiny" --task qqp="$T/s.tok" -o "$T/r3"   # is_duplicate missing
  [ "$status" -ne 0 ]
  printf 'id\tsentence\tlabel\nx1\tgood\t7\n' >"$T/bad.tsv"
  "$BIN/tokenize" -q --model "$S/tiny" --text sentence --label label "$T/bad.tsv" -o "$T/bad.tok"
  run "$BIN/pcgrad-train" --model "$S/tiny" --task sst="$T/bad.tok" -o "$T/r4"
  [ "$status" -ne 0 ]
  [[ "$output" == *"label 7 is not a valid sst label"* ]]
}

@test "refuses an --init checkpoint of another model" {
  run train --init "$S/wide" -o "$T/r"
  [ "$status" -ne 0 ]
  [[ "$output" == *"another model"*"hidden 48"* ]]
}

@test "a NaN loss stops with a clear message and keeps the last good checkpoint" {
  run train --epochs 3 --fail-at-step 4 -o "$T/r"
  [ "$status" -ne 0 ]
  [[ "$output" == *"loss is not finite"*"step 4"*"last good checkpoint"* ]]
  [ -s "$T/r/last/model.safetensors" ]     # from the end of epoch 1 (2 steps)
  "$BIN/pcgrad-train" -q -j 2 --resume "$T/r" --stop-after-steps 3
  [ "$(tail -n +2 "$T/r/train.log" | wc -l)" -eq 3 ]
}

@test "refuses to overwrite a run, and --resume of a directory that is not one" {
  train --max-steps 1 -o "$T/run"
  run train --max-steps 1 -o "$T/run"
  [ "$status" -ne 0 ]
  [[ "$output" == *"already holds a run"*"--resume"* ]]
  mkdir "$T/empty"
  run "$BIN/pcgrad-train" --resume "$T/empty"
  [ "$status" -ne 0 ]
  [[ "$output" == *"not a pcgrad-train run"* ]]
  run "$BIN/pcgrad-train" --resume "$T/run" --lr 1
  [ "$status" -ne 0 ]
  [[ "$output" == *"--resume takes the run's own options"* ]]
}

# The dev scores of RUN's best checkpoint through the inference pipeline (embed ARGS... |
# heads --model) equal the trainer's own (dev.tsv: step phase epoch sst_acc qqp_acc sts_r
# overall; the best row has the best overall), to 1e-4.
pipeline_reproduces_dev() {
  local run=$1 C=$1/best
  shift
  "$BIN/embed" -q --model "$C" "$@" "$S/sst-dev.tok" | "$BIN/heads" -q --model "$C" --task sst -o "$T/sst.pred"
  "$BIN/embed" -q --model "$C" "$@" "$S/sts-dev.tok" | "$BIN/heads" -q --model "$C" --task sts -o "$T/sts.pred"
  "$BIN/evaluate" -q --ci 0 --format tsv "$T/sst.pred" "$T/sts.pred" >"$T/m.tsv"
  want_sst=$(awk -F'\t' 'NR > 1 && $7 > b { b = $7; v = $4 } END { print v }' "$run/dev.tsv")
  want_sts=$(awk -F'\t' 'NR > 1 && $7 > b { b = $7; v = $6 } END { print v }' "$run/dev.tsv")
  got_sst=$(awk -F'\t' '$1 == "sst" && $2 == "accuracy" { print $3 }' "$T/m.tsv")
  got_sts=$(awk -F'\t' '$1 == "sts" && $2 == "pearson" { print $3 }' "$T/m.tsv")
  echo "sst $want_sst vs $got_sst; sts $want_sts vs $got_sts"
  [ -n "$want_sst" ] && [ -n "$got_sst" ] && [ -n "$want_sts" ] && [ -n "$got_sts" ]
  awk -v a="$want_sst" -v b="$got_sst" 'BEGIN { exit !(a - b < 1e-4 && b - a < 1e-4) }'
  awk -v a="$want_sts" -v b="$got_sts" 'BEGIN { exit !(a - b < 1e-4 && b - a < 1e-4) }'
}

@test "tokenize | embed --model CKPT | heads --model CKPT reproduces the trainer's dev scores" {
  train --max-steps 3 --pair-model ensemble -o "$T/run"
  pipeline_reproduces_dev "$T/run"
  # heads --model on cpu-staged (its products behind device copies), in products of 5
  # records, predicts the CPU's bits (sst: the linear head; qqp, sts: bi and cross parts)
  "$BIN/embed" -q --model "$T/run/best" "$S/qqp.tok" -o "$T/qqp.emb"
  "$BIN/embed" -q --model "$T/run/best" "$S/sts-dev.tok" -o "$T/sts.emb"
  "$BIN/embed" -q --model "$T/run/best" "$S/sst-dev.tok" -o "$T/sst.emb"
  for t in sst qqp sts; do
    "$BIN/heads" -q --model "$T/run/best" --task $t --device cpu -o "$T/$t.cpu.pred" "$T/$t.emb"
    "$BIN/heads" -q --model "$T/run/best" --task $t --device cpu-staged -o "$T/$t.stg.pred" "$T/$t.emb"
    cmp "$T/$t.cpu.pred" "$T/$t.stg.pred"
    "$BIN/heads" -q --model "$T/run/best" --task $t --batch 5 -o "$T/$t.b5.pred" "$T/$t.emb"
    diff <("$BIN/dump" "$T/$t.cpu.pred" | jq -c '[.id, (.tensors.pred[0] * 1000 | round)]') \
         <("$BIN/dump" "$T/$t.b5.pred" | jq -c '[.id, (.tensors.pred[0] * 1000 | round)]')
  done
}

# hidden 32; CNN 4 widths x 16 filters; BiLSTM 2 x 16: D = 32 + 64 + 32 = 128
train_sbert() { train --sentence-model sbert-cnn-bilstm --cnn-filters 16 --lstm-hidden 16 "$@"; }

@test "embed --pool sbert-cnn-bilstm --model CKPT | heads --model CKPT reproduces the trainer's dev scores" {
  train_sbert --epochs 3 --lr 1e-3 --pair-model ensemble -o "$T/run"
  C=$T/run/best
  "$BIN/embed" -q --model "$C" --pool sbert-cnn-bilstm "$S/sts-dev.tok" -o "$T/sts.emb"
  run "$BIN/dump" --header-only "$T/sts.emb"
  [[ "$output" == *'"pool":"sbert-cnn-bilstm"'* ]]
  [[ "$output" == *'"hidden":"32"'* ]]
  [[ "$output" == *'"emb_dim":"128"'* ]]
  "$BIN/dump" "$T/sts.emb" | python3 -c '
import json, sys
n = 0
for line in sys.stdin:
    t = json.loads(line)["tensors"]
    assert (len(t["emb_a"]), len(t["emb_b"]), len(t["cls_ab"])) == (128, 128, 32), line[:80]
    n += 1
assert n == 32, n'
  pipeline_reproduces_dev "$T/run" --pool sbert-cnn-bilstm
  # and with one sequence per batch: the encoder and the sentence model see other batches
  pipeline_reproduces_dev "$T/run" --pool sbert-cnn-bilstm --batch-size 1
}

@test "embed --pool sbert-cnn-bilstm: batch size, token budget and cpu-staged do not change the embeddings" {
  train_sbert --max-steps 2 -o "$T/run"
  e="$BIN/embed -q --model $T/run/best --pool sbert-cnn-bilstm"
  $e --batch-size 1 "$S/sts-dev.tok" -o "$T/b1"
  $e --batch-size 64 --batch-tokens 300 --window 7 "$S/sts-dev.tok" -o "$T/b64"
  $e "$S/sts-dev.tok" -o "$T/bd"
  # the device code path (the sentence model on the backend, rows gathered there) gives the same bits
  $e --device cpu-staged "$S/sts-dev.tok" -o "$T/staged"
  cmp <("$BIN/dump" --precision 9 "$T/bd") <("$BIN/dump" --precision 9 "$T/staged")
  for x in b64 bd; do
    paste <("$BIN/dump" "$T/b1") <("$BIN/dump" "$T/$x") | python3 -c '
import json, sys
n = 0
for line in sys.stdin:
    a, b = (json.loads(x) for x in line.split("\t"))
    assert a["id"] == b["id"]
    for k in ("emb_a", "emb_b", "cls_ab"):
        u, v = a["tensors"][k], b["tensors"][k]
        assert len(u) == len(v) == (32 if k == "cls_ab" else 128), (k, len(u), len(v))
        d = max(abs(x - y) for x, y in zip(u, v))
        assert d < 1e-5, (a["id"], k, d)
    n += 1
assert n == 32, n'
  done
}

# PCGrad and clipping take the gram of the sentence model's segment as of the encoder's: with a
# hidden-8 encoder (249k parameters) and --lstm-hidden 1024 (8.5M) the segment's is the larger,
# and cpu-staged checks the scratch the plan reserved against CUDA's ask.
@test "a sentence model larger than the encoder: the gram scratch is planned for it (cpu-staged)" {
  "$TINY_BERT" "$MODEL/vocab.txt" "$T/mini" 8 1 1 16 1
  for t in sst qqp sts; do
    if [ $t = sst ]; then a=(--text sentence --label label); else a=(--pair sentence1,sentence2 --label $([ $t = qqp ] && echo is_duplicate || echo similarity)); fi
    "$BIN/tokenize" -q --model "$T/mini" "${a[@]}" "$S/$t.tsv" -o "$T/$t.tok"
  done
  run --separate-stderr "$BIN/pcgrad-train" -q -j 2 --model "$T/mini" --task sst="$T/sst.tok" --task qqp="$T/qqp.tok" \
    --task sts="$T/sts.tok" --pcgrad --device cpu-staged --sentence-model sbert-cnn-bilstm --cnn-filters 2 \
    --lstm-hidden 1024 --batch-tokens 64 --max-steps 1 -o "$T/r"
  [ "$status" -eq 0 ] || { echo "$stderr"; false; }
  [ -s "$T/r/last/heads.safetensors" ]
}

@test "embed --pool sbert-cnn-bilstm refuses a model without that sentence model; heads refuses a mismatch" {
  run "$BIN/embed" -q --model "$S/tiny" --pool sbert-cnn-bilstm "$S/sst-dev.tok"
  [ "$status" -ne 0 ]
  [[ "$output" == *"$S/tiny/heads.safetensors"* ]]
  [[ "$output" == *"--sentence-model sbert-cnn-bilstm"* ]]
  train --max-steps 1 -o "$T/mean"          # the default sentence model: mean
  run "$BIN/embed" -q --model "$T/mean/best" --pool sbert-cnn-bilstm "$S/sst-dev.tok"
  [ "$status" -ne 0 ]
  [[ "$output" == *"$T/mean/best/heads.safetensors"*"sentence model is mean"*"--pool mean"* ]]
  train_sbert --max-steps 1 -o "$T/sb"
  run "$BIN/embed" -q --model "$T/sb/best" --pool sbert-cnn-bilstm --tokens "$S/sst-dev.tok"
  [ "$status" -ne 0 ]
  [[ "$output" == *"--tokens"* ]]
  # heads: a mean-pooled stream for the sbert heads, an sbert stream for the mean heads
  "$BIN/embed" -q --model "$T/sb/best" "$S/sst-dev.tok" -o "$T/mean.emb"
  run "$BIN/heads" --model "$T/sb/best" --task sst "$T/mean.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"sbert-cnn-bilstm sentence embeddings"*"pool=mean"*"--pool sbert-cnn-bilstm"* ]]
  "$BIN/embed" -q --model "$T/sb/best" --pool sbert-cnn-bilstm "$S/sst-dev.tok" -o "$T/sb.emb"
  run "$BIN/heads" --model "$T/mean/best" --task sst "$T/sb.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"model_fp"* ]]
  "$BIN/embed" -q --model "$T/sb/best" --pool sbert-cnn-bilstm --normalize "$S/sst-dev.tok" -o "$T/norm.emb"
  run "$BIN/heads" --model "$T/sb/best" --task sst "$T/norm.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"normalize=1"* ]]
}

@test "heads fit and --head take sbert-cnn-bilstm embeddings (emb_dim wide); cls with emb is refused" {
  train_sbert --max-steps 1 -o "$T/sb"
  "$BIN/embed" -q --model "$T/sb/best" --pool sbert-cnn-bilstm "$S/sts-dev.tok" -o "$T/sts.emb"
  "$BIN/heads" fit -q --task sts --holdout 0 --epochs 2 -o "$T/h.safetensors" "$T/sts.emb"
  "$BIN/heads" -q --head "$T/h.safetensors" "$T/sts.emb" | "$BIN/dump" --check
  "$BIN/heads" -q --task sts --zero-shot "$T/sts.emb" | "$BIN/dump" --check
  run "$BIN/heads" fit -q --task sts --features pair,cls -o "$T/h2.safetensors" "$T/sts.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"emb_dim"*"cls"* ]]
}

@test "heads --model refuses embeddings of another encoder or pooling" {
  train --max-steps 1 -o "$T/run"
  "$BIN/embed" -q --model "$S/tiny" "$S/sst-dev.tok" -o "$T/base.emb"
  run "$BIN/heads" --model "$T/run/best" --task sst "$T/base.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"model_fp"* ]]
  "$BIN/embed" -q --model "$T/run/best" --pool cls "$S/sst-dev.tok" -o "$T/cls.emb"
  run "$BIN/heads" --model "$T/run/best" --task sst "$T/cls.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"pool"* ]]
}

@test "--max-memory too small fails up front with the needed total, leaving no output directory" {
  run --separate-stderr train --pcgrad --max-memory 1M -o "$T/small"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"the run needs "*" bytes) of cpu memory but 1.00 MiB is available"* ]]
  [[ "$stderr" == *"largest: "*"--batch-tokens"* ]]
  [ ! -e "$T/small" ]
  MTBERT_MAX_MEMORY=1M run --separate-stderr train --pcgrad --device cpu-staged -o "$T/env"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"of cpu-staged memory but 1.00 MiB"* ]]
  [ ! -e "$T/env" ]
}

@test "a run within --max-memory logs its plan and gives the bits of a run without it (cpu-staged: reservations kept)" {
  train --pcgrad --max-steps 3 --device cpu-staged -o "$T/a"
  run --separate-stderr "$BIN/pcgrad-train" -j 2 --model "$S/tiny" --task sst="$S/sst.tok" --task qqp="$S/qqp.tok" \
    --task sts="$S/sts.tok" --dev sst="$S/sst-dev.tok" --dev sts="$S/sts-dev.tok" --pcgrad --max-steps 3 \
    --device cpu-staged --max-memory 20G -o "$T/b"
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"memory plan: "*" on cpu-staged ("* ]]
  same_weights "$T/a" "$T/b"
}

plan_bytes() {  # CMD...: the exact total of CMD's memory plan, from its refusal of a 1-byte cap
  run --separate-stderr "$@" --max-memory 1
  [ "$status" -ne 0 ]
  [[ "$stderr" =~ the\ run\ needs\ [^\(]*\(([0-9]+)\ bytes\) ]]
  echo "${BASH_REMATCH[1]}"
}
needed_bytes() { plan_bytes train --device cpu-staged -o "$T/refused" "$@"; }

@test "the plan counts the sentence model: a cap between a mean and a CNN-BiLSTM run's needs refuses only the latter, up front" {
  mean=$(needed_bytes --pcgrad --sentence-model mean)
  sbert=$(needed_bytes --pcgrad --sentence-model sbert-cnn-bilstm --cnn-filters 16 --lstm-hidden 16)
  echo "mean $mean sbert-cnn-bilstm $sbert"
  [ "$sbert" -gt "$mean" ]
  cap=$(( (mean + sbert) / 2 ))
  run --separate-stderr train --pcgrad --sentence-model sbert-cnn-bilstm --cnn-filters 16 --lstm-hidden 16 \
    --device cpu-staged --max-memory "$cap" -o "$T/sbert"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"the run needs "*"($sbert bytes) of cpu-staged memory"* ]]
  [ ! -e "$T/sbert" ]
  run --separate-stderr "$BIN/pcgrad-train" -j 2 --model "$S/tiny" --task sst="$S/sst.tok" --task qqp="$S/qqp.tok" \
    --task sts="$S/sts.tok" --pcgrad --max-steps 1 --device cpu-staged --max-memory "$cap" -o "$T/mean"
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"memory plan: "*" on cpu-staged ("* ]]
  [ -e "$T/mean/last/model.safetensors" ]
}

@test "embed --pool sbert-cnn-bilstm plans the sentence model: a cap between mean's and its needs refuses it up front" {
  train_sbert --max-steps 1 -o "$T/run"
  e() { "$BIN/embed" -q --model "$T/run/last" --device cpu-staged "$@" "$S/sst-dev.tok"; }
  mean=$(plan_bytes e --pool mean)
  sbert=$(plan_bytes e --pool sbert-cnn-bilstm)
  [ "$sbert" -gt "$mean" ]
  cap=$(( (mean + sbert) / 2 ))
  run --separate-stderr e --pool sbert-cnn-bilstm --max-memory "$cap" -o "$T/sb.emb"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"($sbert bytes) of cpu-staged memory"* ]]
  [ ! -e "$T/sb.emb" ]
  e --pool mean --max-memory "$cap" -o "$T/mean.emb"
  [ -s "$T/mean.emb" ]
}
