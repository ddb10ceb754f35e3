#!/usr/bin/env bats
# bin/heads and bin/evaluate as commands, on synthetic embedding streams with real signal
# (tests/tools/synth-emb.c): fit -> predict -> evaluate end to end with metric thresholds,
# zero-shot similarity, gold from a TSV, submission files, and bad input of every kind.
load helpers
bats_require_minimum_version 1.5.0

setup_file() {
  local D=$BATS_FILE_TMPDIR
  # train and test streams come from different seeds; class means are shared (fixed seed)
  for t in sst qqp sts; do
    "$SYNTH" --task "$t" --n 2000 --hidden 32 --noise 2 --seed 1 -o "$D/$t-train.emb"
    "$SYNTH" --task "$t" --n 600 --hidden 32 --noise 2 --seed 2 -o "$D/$t-test.emb"
  done
  for t in sst qqp sts; do
    "$BIN/heads" fit -q --task "$t" -o "$D/$t.head" "$D/$t-train.emb"
    "$BIN/heads" -q --head "$D/$t.head" -o "$D/$t.pred" "$D/$t-test.emb"
  done
}

setup() { D=$BATS_FILE_TMPDIR; T=$BATS_TEST_TMPDIR; }

# value of metric $2 of task $1 in `evaluate --format tsv` output $3
metric() { awk -F'\t' -v t="$1" -v m="$2" '$1 == t && $2 == m { print $3 }' <<<"$3"; }
# 1 if $1 >= $2
ge() { awk -v a="$1" -v b="$2" 'BEGIN { print (a >= b) ? 1 : 0 }'; }

@test "--help of heads and evaluate: usage with examples, exit 0" {
  run "$BIN/heads" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"usage: heads"* && "$output" == *"heads fit --task"* && "$output" == *"examples:"* ]]
  [[ "$output" == *"bin/heads --task sts --zero-shot | bin/evaluate"* ]]
  run "$BIN/evaluate" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"usage: evaluate"* && "$output" == *"--submission FILE"* && "$output" == *"examples:"* ]]
  run "$BIN/heads" --bogus
  [ "$status" -eq 2 ]
  run "$BIN/evaluate" --format xml "$D/sst.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"--format"* ]]
}

@test "fit logs train and held-out metrics and writes a safetensors head" {
  run "$BIN/heads" fit --task sst --holdout 0.2 --seed 3 -o "$T/h.safetensors" "$D/sst-train.emb"
  [ "$status" -eq 0 ]
  [[ "$output" == *"1600 train / 400 held-out rows, 32 features"* ]]
  [[ "$output" == *"held-out: loss"*"accuracy"* ]]
  [ -s "$T/h.safetensors" ]
  [ -z "$(ls "$T" | grep tmp)" ]  # no temporary file left behind
  # safetensors: 8-byte length, then the JSON header with our metadata
  head -c 400 "$T/h.safetensors" | tail -c +9 | grep -q '"kind":"mtbert-head"'
  head -c 400 "$T/h.safetensors" | grep -q '"model_fp":"0123456789abcdef"'
}

@test "fit is deterministic for a seed and differs for another seed" {
  "$BIN/heads" fit -q --task qqp --seed 5 -o "$T/a" "$D/qqp-train.emb"
  "$BIN/heads" fit -q --task qqp --seed 5 -o "$T/b" "$D/qqp-train.emb"
  "$BIN/heads" fit -q --task qqp --seed 6 -o "$T/c" "$D/qqp-train.emb"
  cmp "$T/a" "$T/b"
  run cmp -s "$T/a" "$T/c"
  [ "$status" -eq 1 ]
}

@test "--device cpu is the default; cpu-staged (device copies) gives the same bits for fit and predict" {
  for t in qqp sts; do
    "$BIN/heads" fit -q --task "$t" --epochs 8 -o "$T/$t.def" "$D/$t-train.emb"
    "$BIN/heads" fit -q --task "$t" --epochs 8 --device cpu -o "$T/$t.cpu" "$D/$t-train.emb"
    "$BIN/heads" fit -q --task "$t" --epochs 8 --device cpu-staged -o "$T/$t.stg" "$D/$t-train.emb"
    cmp "$T/$t.def" "$T/$t.cpu"
    cmp "$T/$t.def" "$T/$t.stg"
  done
  for t in sst qqp sts; do
    "$BIN/heads" -q --device cpu --head "$D/$t.head" -o "$T/$t.cpu.pred" "$D/$t-test.emb"
    "$BIN/heads" -q --device cpu-staged --head "$D/$t.head" -o "$T/$t.stg.pred" "$D/$t-test.emb"
    cmp "$D/$t.pred" "$T/$t.cpu.pred"
    cmp "$D/$t.pred" "$T/$t.stg.pred"
    # products of 7 records (the last one short) predict what one product of 600 does
    "$BIN/heads" -q --device cpu-staged --batch 7 --head "$D/$t.head" -o "$T/$t.b7.pred" "$D/$t-test.emb"
    diff <("$BIN/dump" "$D/$t.pred" | jq -c '[.id, (.tensors.pred[0] * 1000 | round)]') \
         <("$BIN/dump" "$T/$t.b7.pred" | jq -c '[.id, (.tensors.pred[0] * 1000 | round)]')
  done
}

@test "--device: auto says where it runs; cuda without a GPU and unknown devices are clear errors" {
  run --separate-stderr "$BIN/heads" --device nonsense --head "$D/sst.head" -o "$T/p" "$D/sst-test.emb"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"unknown device 'nonsense'"* ]]
  run --separate-stderr "$BIN/heads" --device auto --head "$D/sst.head" -o "$T/p" "$D/sst-test.emb"
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"device: "* ]]
  if nvidia-smi -L >/dev/null 2>&1; then skip "a GPU is present"; fi
  run --separate-stderr "$BIN/heads" fit --device cuda --task sst -o "$T/h" "$D/sst-train.emb"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"--device cuda: no usable GPU"* ]]
  [ ! -e "$T/h" ]
  run --separate-stderr "$BIN/heads" --device cuda --head "$D/sst.head" -o "$T/q" "$D/sst-test.emb"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"--device cuda: no usable GPU"* ]]
  [ ! -e "$T/q" ]
}

@test "end to end: sst, qqp and sts heads score well on held-back synthetic data" {
  run "$BIN/evaluate" -q --format tsv --ci 200 "$D/sst.pred" "$D/qqp.pred" "$D/sts.pred"
  [ "$status" -eq 0 ]
  echo "$output"
  # chance: sst .2, qqp .6 (majority), sts 0
  [ "$(ge "$(metric sst accuracy "$output")" 0.8)" = 1 ]
  [ "$(ge "$(metric sst macro_f1 "$output")" 0.8)" = 1 ]
  [ "$(ge "$(metric qqp accuracy "$output")" 0.85)" = 1 ]
  [ "$(ge "$(metric sts pearson "$output")" 0.85)" = 1 ]
  [ "$(ge "$(metric sts spearman "$output")" 0.85)" = 1 ]
  local sst qqp sts overall
  sst=$(metric sst accuracy "$output"); qqp=$(metric qqp accuracy "$output")
  sts=$(metric sts pearson "$output"); overall=$(metric all overall "$output")
  [ "$(awk -v a="$sst" -v b="$qqp" -v c="$sts" -v o="$overall" \
        'BEGIN { d = (a + b + (c + 1) / 2) / 3 - o; print (d < 1e-5 && d > -1e-5) }')" = 1 ]
  # confusion cells of sst add up to the number of examples
  [ "$(awk -F'\t' '$1 == "sst" && $2 ~ /^confusion_/ { s += $3 } END { print s }' <<<"$output")" -eq 600 ]
}

@test "prediction streams carry ids, labels and the task's tensors; header says what made them" {
  run bash -c "'$BIN/dump' --header '$D/sst.pred' | head -2"
  [[ "${lines[0]}" == *'"kind":"predictions"'* && "${lines[0]}" == *'"task":"sst"'* ]]
  [[ "${lines[0]}" == *'"producer":"heads 0.1"'* && "${lines[0]}" == *'"model_fp":"0123456789abcdef"'* ]]
  [[ "${lines[1]}" == '{"id":"sst-1","labels":{"label":'*'},"tensors":{"probs":['*'],"pred":['*']}}' ]]
  run bash -c "'$BIN/dump' '$D/qqp.pred' | head -1"
  [[ "$output" == *'"tensors":{"prob":['*'],"pred":['* ]]
  run bash -c "'$BIN/dump' '$D/sts.pred' | head -1"
  [[ "$output" == *'"tensors":{"score":['*'],"pred":['* ]]
}

@test "zero-shot similarity: cosine mapped to 0..5 tracks the gold similarity" {
  run bash -c "set -o pipefail; '$BIN/heads' -q --task sts --zero-shot '$D/sts-test.emb' | '$BIN/evaluate' --format tsv --ci 0"
  [ "$status" -eq 0 ]
  [ "$(ge "$(metric sts pearson "$output")" 0.85)" = 1 ]
  run "$BIN/heads" --task sst --zero-shot "$D/sst-test.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"only for --task sts"* ]]
}

@test "json format: metrics with intervals around them, overall present" {
  run "$BIN/evaluate" -q --format json --ci 300 --seed 4 "$D/sst.pred" "$D/qqp.pred" "$D/sts.pred"
  [ "$status" -eq 0 ]
  [ "$(jq '.tasks | length' <<<"$output")" -eq 3 ]
  [ "$(jq '.tasks[0].accuracy.ci[0] <= .tasks[0].accuracy.value and .tasks[0].accuracy.value <= .tasks[0].accuracy.ci[1]' <<<"$output")" = true ]
  [ "$(jq '.overall.ci[0] < .overall.value and .overall.value < .overall.ci[1]' <<<"$output")" = true ]
  [ "$(jq '.tasks[1].confusion | length' <<<"$output")" -eq 2 ]
}

@test "gold from a TSV joined by id; ids missing on either side are errors naming them" {
  "$SYNTH" --task sst --n 50 --hidden 32 --noise 2 --seed 9 --no-labels -o "$T/nolab.emb"
  "$SYNTH" --task sst --n 50 --hidden 32 --noise 2 --seed 9 -o "$T/lab.emb"
  "$BIN/heads" -q --head "$D/sst.head" -o "$T/nolab.pred" "$T/nolab.emb"
  # the gold TSV, from the labelled twin of the same stream, in another order
  "$BIN/dump" "$T/lab.emb" | jq -r '[.id, "x", (.labels.label | floor)] | @tsv' | tac \
    | { printf 'id\tsentence\tlabel\n'; cat; } >"$T/gold.tsv"
  run "$BIN/evaluate" -q --ci 0 --format tsv "$T/nolab.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"has no gold 'label'"*"--gold"* ]]
  run "$BIN/evaluate" -q --ci 0 --format tsv --gold "$T/gold.tsv" "$T/nolab.pred"
  [ "$status" -eq 0 ]
  local with_tsv; with_tsv=$(metric sst accuracy "$output")
  "$BIN/heads" -q --head "$D/sst.head" -o "$T/lab.pred" "$T/lab.emb"
  run "$BIN/evaluate" -q --ci 0 --format tsv "$T/lab.pred"
  [ "$with_tsv" = "$(metric sst accuracy "$output")" ]
  grep -v -E '^sst-(7|12)\b' "$T/gold.tsv" | { cat; printf 'extra-1\tx\t2\n'; } >"$T/gold2.tsv"
  run "$BIN/evaluate" -q --gold "$T/gold2.tsv" "$T/nolab.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"2 predicted ids have no gold label"* && "$output" == *"sst-12"* ]]
  [[ "$output" == *"1 gold ids have no prediction (extra-1)"* ]]
  run "$BIN/evaluate" -q --gold "$T/gold.tsv" --gold-col bogus "$T/nolab.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"no column 'bogus'"* ]]
}

@test "submission files in the CS224N layout, written atomically, also without gold" {
  "$SYNTH" --task sts --n 20 --hidden 32 --seed 9 --no-labels -o "$T/s.emb"
  "$BIN/heads" -q --zero-shot -o "$T/s.pred" "$T/s.emb"
  run "$BIN/evaluate" --submission "$T/sts-test-output.csv" "$T/s.pred"
  [ "$status" -eq 0 ]
  [[ "$output" == *"metrics skipped"* ]]
  [ "$(head -1 "$T/sts-test-output.csv")" = "$(printf 'id \t Predicted_Similiarity ')" ]
  [ "$(wc -l <"$T/sts-test-output.csv")" -eq 21 ]
  [[ "$(sed -n 2p "$T/sts-test-output.csv")" =~ ^sts-1\ ,\ [0-9.]+\ $ ]]
  run "$BIN/evaluate" -q --ci 0 --submission "$T/a.csv" --submission "$T/b.csv" "$D/sst.pred" "$D/qqp.pred"
  [ "$status" -eq 0 ]
  [ "$(head -1 "$T/a.csv")" = "$(printf 'id \t Predicted_Sentiment ')" ]
  [ "$(head -1 "$T/b.csv")" = "$(printf 'id \t Predicted_Is_Paraphrase ')" ]
  [[ "$(sed -n 2p "$T/b.csv")" =~ ^qqp-1\ ,\ [01]\ $ ]]
  run "$BIN/evaluate" -q --submission "$T/a.csv" "$D/sst.pred" "$D/qqp.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"one per stream"* ]]
}

@test "bad input: truncated or corrupt stream, missing file, broken upstream" {
  local size; size=$(stat -c %s "$D/sst-test.emb")
  head -c $((size / 2)) "$D/sst-test.emb" >"$T/trunc.emb"
  run "$BIN/heads" -q --head "$D/sst.head" -o "$T/out.pred" "$T/trunc.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"trunc.emb"* ]]
  [ ! -e "$T/out.pred" ]
  run "$BIN/heads" fit -q --task sst -o "$T/h" "$T/trunc.emb"
  [ "$status" -ne 0 ]
  [ ! -e "$T/h" ]
  head -c $(( $(stat -c %s "$D/sst.pred") - 3 )) "$D/sst.pred" >"$T/trunc.pred"
  run "$BIN/evaluate" "$T/trunc.pred"
  [ "$status" -ne 0 ]
  run "$BIN/heads" --head "$D/sst.head" "$T/nope.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"nope.emb: cannot open"* ]]
  run "$BIN/heads" --head "$T/nope.head" "$D/sst-test.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"nope.head: cannot open"* ]]
  run "$BIN/evaluate" "$T/nope.pred"
  [ "$status" -ne 0 ]
  run bash -c "set -o pipefail; false | '$BIN/heads' -q --task sts --zero-shot | '$BIN/evaluate'"
  [ "$status" -ne 0 ]
  printf 'garbage' >"$T/bad.head"
  run "$BIN/heads" --head "$T/bad.head" "$D/sst-test.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"bad.head: "*"safetensors"* ]]
}

@test "bad input: wrong task, wrong stream kind, missing labels" {
  run "$BIN/heads" --head "$D/qqp.head" "$D/sst-test.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"no tensor 'emb_b'"*"single-sentence stream"* ]]
  run "$BIN/heads" --head "$D/sst.head" --task qqp "$D/sst-test.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"is a sst head, but --task is qqp"* ]]
  run "$BIN/heads" fit --task qqp -o "$T/h" "$D/sst-train.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"emb_b"* ]]
  run "$BIN/heads" fit --task pos -o "$T/h" "$D/sst-train.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"not sst, qqp or sts"* ]]
  run "$BIN/heads" --head "$D/sst.head" "$D/sst.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"expected an embedding stream"*"kind=predictions"* ]]
  run "$BIN/evaluate" "$D/sst-test.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"expected a prediction stream"* ]]
  "$SYNTH" --task sts --n 30 --hidden 32 --no-labels -o "$T/nolab.emb"
  run "$BIN/heads" fit --task sts -o "$T/h" "$T/nolab.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"has no label 'similarity'"* ]]
  [ ! -e "$T/h" ]
  run "$BIN/heads" -q --task sts --zero-shot "$D/sst-test.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"emb_b"* ]]
}

@test "bad input: a head refuses embeddings of another model, pooling or size" {
  "$SYNTH" --task sst --n 10 --hidden 32 --model-fp fedcba9876543210 -o "$T/other.emb"
  run "$BIN/heads" --head "$D/sst.head" -o "$T/p" "$T/other.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"model_fp=0123456789abcdef"*"model_fp=fedcba9876543210"* ]]
  "$SYNTH" --task sst --n 10 --hidden 32 --pool cls -o "$T/cls.emb"
  run "$BIN/heads" --head "$D/sst.head" -o "$T/p" "$T/cls.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"pool=mean"*"pool=cls"* ]]
  "$SYNTH" --task sst --n 10 --hidden 48 -o "$T/h48.emb"
  run "$BIN/heads" --head "$D/sst.head" -o "$T/p" "$T/h48.emb"
  [ "$status" -ne 0 ]
  [[ "$output" == *"expects hidden size 32"*"hidden=48"* ]]
}

@test "binary output is refused on a terminal" {
  command -v script >/dev/null || skip "script(1) not installed"
  run script -qec "'$BIN/heads' -q --task sts --zero-shot '$D/sts-test.emb'" /dev/null
  [ "$status" -ne 0 ]
  [[ "$output" == *"refusing to write a binary stream to a terminal"* ]]
}
