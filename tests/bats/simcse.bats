#!/usr/bin/env bats
# simcse: tiny runs (a few short pairs, 3 steps of 8) that write a checkpoint embed loads,
# determinism, NLI hard negatives, SST pairs, and every refusal.
load helpers
bats_require_minimum_version 1.5.0

TINY=(--limit 64 --max-steps 3 --batch-size 8 --threads 2 --quiet)

setup_file() {
  export OMP_WAIT_POLICY=passive
  T=$BATS_FILE_TMPDIR
  # short sentences keep each step cheap
  # (awk stops by itself: a head(1) in the pipe would end it by SIGPIPE under pipefail)
  short() { awk -F'\t' 'n < 200 && (NR == 1 || (length($2) < 70 && length($3) < 70)) { print; n++ }' "$1"; }
  short "$DATA/qqp-train.tsv" >"$T/qqp.tsv"
  short "$DATA/sts-train.tsv" >"$T/sts.tsv"
  awk -F'\t' 'n < 100 && (NR == 1 || length($2) < 60) { print; n++ }' "$DATA/sst-train.tsv" >"$T/sst.tsv"
  "$BIN/tokenize" -q --model "$MODEL" --pair sentence1,sentence2 --label is_duplicate "$T/qqp.tsv" -o "$T/qqp.tok"
  "$BIN/tokenize" -q --model "$MODEL" --pair sentence1,sentence2 --label similarity "$T/sts.tsv" -o "$T/sts.tok"
  "$BIN/tokenize" -q --model "$MODEL" --text sentence --label label "$T/sst.tsv" -o "$T/sst.tok"
  "$BIN/simcse" --model "$MODEL" --pairs qqp="$T/qqp.tok" --pairs sts="$T/sts.tok" "${TINY[@]}" -o "$T/base"
}

tiny_run() {  # tiny_run OUTDIR [options]: the base run's data and options
  local out=$1; shift
  "$BIN/simcse" --model "$MODEL" --pairs qqp="$T/qqp.tok" --pairs sts="$T/sts.tok" "${TINY[@]}" -o "$out" "$@"
}

setup() { T=$BATS_FILE_TMPDIR; }

@test "simcse --help: usage with runnable examples" {
  run "$BIN/simcse" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"--pairs NAME=FILE"* && "$output" == *"--nli FILE"* && "$output" == *"examples:"* ]]
  [[ "$output" == *"bin/simcse --model \$M --pairs qqp=qqp.tok"* ]]
}

@test "checkpoint: Hugging Face layout, log, summary, and no temporary directory left" {
  for f in model.safetensors config.json vocab.txt simcse.json simcse.log; do [ -s "$T/base/$f" ]; done
  cmp "$T/base/vocab.txt" "$MODEL/vocab.txt"
  [ "$(head -1 "$T/base/simcse.log")" = "$(printf 'step\tloss\taccuracy\tlr')" ]
  [ "$(tail -n +2 "$T/base/simcse.log" | wc -l)" -eq 3 ]
  grep -q '"steps": 3' "$T/base/simcse.json"
  grep -q '"final_loss": [0-9]' "$T/base/simcse.json"
  grep -q '"loss_scale": 1, "skipped_steps": 0' "$T/base/simcse.json"
  python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$T/base/simcse.json"
  ! ls -d "$T"/base.tmp.* "$T"/.base.tmp.* 2>/dev/null
}

@test "embed loads the checkpoint and its embeddings differ from the initial model's" {
  "$BIN/embed" -q --model "$T/base" --no-cross "$T/sts.tok" | "$BIN/dump" >"$T/after.jsonl"
  "$BIN/embed" -q --model "$MODEL" --no-cross "$T/sts.tok" | "$BIN/dump" >"$T/before.jsonl"
  [ "$(wc -l <"$T/after.jsonl")" -eq "$(wc -l <"$T/before.jsonl")" ]
  [ "$(wc -l <"$T/after.jsonl")" -gt 100 ]
  ! cmp -s "$T/after.jsonl" "$T/before.jsonl"
  # and the zero-shot pipeline runs end to end on it
  "$BIN/embed" -q --model "$T/base" --no-cross "$T/sts.tok" | "$BIN/heads" --task sts --zero-shot | "$BIN/evaluate" >/dev/null
}

@test "the encoder moved; the unused pooler is saved exactly as loaded (no decay without a gradient)" {
  python3 - "$MODEL/model.safetensors" "$T/base/model.safetensors" <<'PY'
import json, struct, sys
def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return {k.removeprefix("bert."): b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]
            for k, v in h.items() if k != "__metadata__"}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
assert set(a) - set(b) <= {"embeddings.position_ids"} and set(b) <= set(a), set(a) ^ set(b)
pooler = [k for k in a if k.startswith("pooler.")]
assert pooler, "the test model has no pooler"
assert all(a[k] == b[k] for k in pooler), "pooler changed"
moved = [k for k in b if a[k] != b[k]]
assert "encoder.layer.0.attention.self.query.weight" in moved and "encoder.layer.5.output.dense.weight" in moved, moved
PY
}

@test "--device cpu-staged (the device code paths) gives the CPU run's model byte for byte" {
  tiny_run "$T/staged" --device cpu-staged
  cmp "$T/base/model.safetensors" "$T/staged/model.safetensors"
  cmp "$T/base/simcse.log" "$T/staged/simcse.log"
}

# Loss scaling by a power of two is exact both ways: the bits of the unscaled run (lossscale.h).
@test "--loss-scale 1024 (cpu) and dynamic (cpu-staged) give the unscaled run's model byte for byte" {
  tiny_run "$T/ls1024" --loss-scale 1024
  cmp "$T/base/model.safetensors" "$T/ls1024/model.safetensors"
  cmp "$T/base/simcse.log" "$T/ls1024/simcse.log"
  tiny_run "$T/lsdyn" --loss-scale dynamic --device cpu-staged
  cmp "$T/base/model.safetensors" "$T/lsdyn/model.safetensors"
  run tiny_run "$T/lsbad" --loss-scale 0
  [ "$status" -ne 0 ]
  [[ "$output" == *"--loss-scale 0: expected dynamic, none or a positive number"* ]]
}

# One parser for --loss-scale-init in both trainers (lossscale.h): refused before any work.
@test "--loss-scale-init refuses negatives, non-numbers and what a float cannot hold" {
  for v in -1 1e39 nan inf abc; do
    run --separate-stderr tiny_run "$T/lsinit" --loss-scale dynamic --loss-scale-init "$v"
    [ "$status" -ne 0 ]
    [[ "$stderr" == *"--loss-scale-init"* ]]
    [ ! -e "$T/lsinit" ]
  done
  run --separate-stderr tiny_run "$T/lsinit" --loss-scale dynamic --loss-scale-init -1
  [[ "$stderr" == *"--loss-scale-init -1: must be 0 (the default) or a positive finite float"* ]]
}

# A non-finite loss: without loss scaling the run stops; with it the step is skipped as for a
# non-finite gradient (lossscale.h) and training goes on.
@test "a NaN loss stops the run without loss scaling; under --loss-scale dynamic the step is skipped" {
  run --separate-stderr tiny_run "$T/nan" --fail-at-step 2
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"simcse: step 2: loss is nan"*"lower --lr or check the data"* ]]
  [ ! -e "$T/nan" ]
  run --separate-stderr "$BIN/simcse" --model "$MODEL" --pairs qqp="$T/qqp.tok" --pairs sts="$T/sts.tok" \
    --limit 64 --max-steps 3 --batch-size 8 --threads 2 --loss-scale dynamic --fail-at-step 3 -o "$T/skip"  # not -q
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"step 3: loss NaN: optimizer step skipped; loss scale 65536 -> 32768"* ]]
  [[ "$stderr" == *"loss scale 32768 at the end; 1 of 3 steps skipped (loss or gradient not finite)"* ]]
  awk -F'\t' 'NR == 4 { exit !($1 == 3 && $2 == "nan") }' "$T/skip/simcse.log"
  # simcse.json stays JSON: the last (skipped) loss is null, the recent mean is over the finite ones
  [ "$(jq '.final_loss == null and .skipped_steps == 1' "$T/skip/simcse.json")" = true ]
  mean=$(awk -F'\t' 'NR == 2 || NR == 3 { s += $2 } END { printf "%.4f", s / 2 }' "$T/skip/simcse.log")
  [ "$(jq --arg m "$mean" '(.mean_loss_last_20 * 10000 | round) == ($m | tonumber * 10000 | round)' "$T/skip/simcse.json")" = true ]
  # the skipped step moved nothing: the model of the run's first 2 steps (same lr schedule)
  tiny_run "$T/two" --max-steps 2
  cmp "$T/two/model.safetensors" "$T/skip/model.safetensors"
}

@test "determinism: the same seed and data give a byte-identical model; another seed does not" {
  tiny_run "$T/again"
  cmp "$T/base/model.safetensors" "$T/again/model.safetensors"
  cmp "$T/base/simcse.log" "$T/again/simcse.log"
  tiny_run "$T/seed1" --seed 1
  ! cmp -s "$T/base/model.safetensors" "$T/seed1/model.safetensors"
}

@test "NLI mode: entailment positives with the contradiction of the same premise as hard negative" {
  {
    printf 'id\tpremise\thypothesis\tlabel\n'
    printf '1\ta man is playing a guitar\ta person plays an instrument\tentailment\n'
    printf '2\ta dog runs in the park\ta cat sleeps on the sofa\tcontradiction\n'
    printf '3\ta man is playing a guitar\tnobody is playing music\tcontradiction\n'
    printf '4\ta dog runs in the park\tan animal is outside\tentailment\n'
    printf '5\ta woman is cooking\tsomeone is making food\tentailment\n'
    printf '6\ta child is reading\tthe child has a book\tneutral\n'
    printf '7\ta man is playing a guitar\ta man plays music\tentailment\n'
  } >"$T/nli.tsv"
  "$BIN/tokenize" -q --model "$MODEL" --pair premise,hypothesis --label label \
    --label-map entailment=0,neutral=1,contradiction=2 "$T/nli.tsv" -o "$T/nli.tok"
  run "$BIN/simcse" --model "$MODEL" --nli "$T/nli.tok" --batch-size 8 --warmup 0 --threads 2 -o "$T/nli"
  [ "$status" -eq 0 ]
  [[ "$output" == *"7 records (4 entailment, 2 contradiction), 4 premises: 2 skipped without both, 3 examples with a hard negative"* ]]
  grep -q '"hard_negatives": true' "$T/nli/simcse.json"
  ! cmp -s "$T/nli/model.safetensors" "$MODEL/model.safetensors"
}

@test "SST/QQP/STS variant: same-label SST pairs join the positives" {
  run "$BIN/simcse" --model "$MODEL" --pairs sst="$T/sst.tok" --pairs qqp="$T/qqp.tok" --limit 64 \
    --max-steps 1 --batch-size 8 --threads 2 -o "$T/sst-run"
  [ "$status" -eq 0 ]
  [[ "$output" =~ sst\ .*:\ 64\ records,\ [1-9][0-9]*\ same-label\ pairs ]]
  [ -s "$T/sst-run/model.safetensors" ]
}

@test "refuses a shard tokenized with another vocabulary, naming it" {
  cp "$MODEL/vocab.txt" "$T/vocab2.txt"
  echo "[extra]" >>"$T/vocab2.txt"
  "$BIN/tokenize" -q --vocab "$T/vocab2.txt" --pair sentence1,sentence2 --label is_duplicate "$T/qqp.tsv" -o "$T/qqp-v2.tok"
  run "$BIN/simcse" --model "$MODEL" --pairs qqp="$T/qqp-v2.tok" "${TINY[@]}" -o "$T/bad"
  [ "$status" -ne 0 ]
  [[ "$output" == *"qqp-v2.tok"*"vocabulary"* ]]
  [ ! -e "$T/bad" ]
}

@test "refuses a stream that is not a pair token stream" {
  run "$BIN/simcse" --model "$MODEL" --pairs qqp="$T/sst.tok" "${TINY[@]}" -o "$T/bad"
  [ "$status" -ne 0 ]
  [[ "$output" == *"sst.tok: not a pair token stream (mode=single)"* ]]
  "$BIN/embed" -q --model "$MODEL" --no-cross "$T/sts.tok" -o "$T/sts.emb"
  run "$BIN/simcse" --model "$MODEL" --pairs sts="$T/sts.emb" "${TINY[@]}" -o "$T/bad"
  [ "$status" -ne 0 ]
  [[ "$output" == *"sts.emb: not a token stream (kind=embeddings)"* ]]
  [ ! -e "$T/bad" ]
}

@test "refuses a shard with no positives, saying what it found" {
  awk -F'\t' 'NR == 1 || $4 == 0' "$T/qqp.tsv" >"$T/qqp-neg.tsv"
  "$BIN/tokenize" -q --model "$MODEL" --pair sentence1,sentence2 --label is_duplicate "$T/qqp-neg.tsv" -o "$T/qqp-neg.tok"
  run "$BIN/simcse" --model "$MODEL" --pairs qqp="$T/qqp-neg.tok" --threads 2 -o "$T/bad"
  [ "$status" -ne 0 ]
  [[ "$output" == *"qqp-neg.tok: no positive pairs: "*" records, none with is_duplicate = 1"* ]]
  run "$BIN/simcse" --model "$MODEL" --pairs sts="$T/sts.tok" --min-score 5 --threads 2 -o "$T/bad"
  [ "$status" -ne 0 ]
  [[ "$output" == *"sts.tok: no positive pairs: 199 records, none with similarity > 5 (the largest is 5)"* ]]
  # a pair stream without the needed label
  run "$BIN/simcse" --model "$MODEL" --pairs qqp="$T/sts.tok" --threads 2 -o "$T/bad"
  [ "$status" -ne 0 ]
  [[ "$output" == *"has no label 'is_duplicate' (it has: similarity)"* ]]
  [ ! -e "$T/bad" ]
}

@test "refuses a NaN loss, leaving no checkpoint and no temporary directory" {
  # a copy of the model with one NaN in the embedding LayerNorm: every hidden state is NaN
  mkdir -p "$T/nanmodel"
  cp "$MODEL/config.json" "$MODEL/vocab.txt" "$MODEL/model.safetensors" "$T/nanmodel/"
  python3 - "$T/nanmodel/model.safetensors" <<'PY'
import json, struct, sys
f = open(sys.argv[1], "r+b")
n = struct.unpack("<Q", f.read(8))[0]
header = json.loads(f.read(n))
name = next(k for k in header if k.endswith("embeddings.LayerNorm.weight"))
f.seek(8 + n + header[name]["data_offsets"][0])
f.write(struct.pack("<f", float("nan")))
PY
  run "$BIN/simcse" --model "$T/nanmodel" --pairs qqp="$T/qqp.tok" "${TINY[@]}" -o "$T/nan"
  [ "$status" -ne 0 ]
  [[ "$output" == *"step 1: loss is nan"* ]]
  [ ! -e "$T/nan" ]
  ! ls -d "$T"/nan.tmp.* "$T"/.nan.tmp.* 2>/dev/null
}

@test "refuses a truncated shard (broken upstream)" {
  zcat "$T/qqp.tok" >"$T/qqp.raw"
  head -c 3000 "$T/qqp.raw" | gzip >"$T/cut.tok"
  run "$BIN/simcse" --model "$MODEL" --pairs qqp="$T/cut.tok" "${TINY[@]}" -o "$T/bad"
  [ "$status" -ne 0 ]
  [[ "$output" == *"cut.tok"* ]]
  [ ! -e "$T/bad" ]
}

@test "an existing OUTDIR is kept unless --force, which replaces it whole" {
  mkdir -p "$T/taken" && echo keep >"$T/taken/file"
  run tiny_run "$T/taken"
  [ "$status" -ne 0 ]
  [[ "$output" == *"taken exists; remove it or pass --force"* ]]
  [ "$(cat "$T/taken/file")" = keep ]
  tiny_run "$T/taken" --force
  [ ! -e "$T/taken/file" ]
  cmp "$T/base/model.safetensors" "$T/taken/model.safetensors"
  ! ls -d "$T"/taken.old.* "$T"/taken.tmp.* "$T"/.taken.tmp.* 2>/dev/null
}

@test "refuses bad usage: --nli with --pairs, unknown pair source, missing -o" {
  run "$BIN/simcse" --model "$MODEL" --nli "$T/qqp.tok" --pairs qqp="$T/qqp.tok" -o "$T/bad"
  [ "$status" -ne 0 ] && [[ "$output" == *"--nli and --pairs train separate stages"* ]]
  run "$BIN/simcse" --model "$MODEL" --pairs mnli="$T/qqp.tok" -o "$T/bad"
  [ "$status" -ne 0 ] && [[ "$output" == *"expected qqp=FILE, sts=FILE or sst=FILE"* ]]
  run "$BIN/simcse" --model "$MODEL" --pairs qqp="$T/qqp.tok"
  [ "$status" -ne 0 ] && [[ "$output" == *"-o OUTDIR"* ]]
}

@test "--max-memory too small fails up front with the needed total, leaving no OUTDIR or temporary" {
  run tiny_run "$T/small" --max-memory 1M
  [ "$status" -ne 0 ]
  [[ "$output" == *"the run needs "*" bytes) of cpu memory but 1.00 MiB is available"*"--batch-tokens"* ]]
  [ -z "$(ls "$T" | grep '^small')" ]
}
