#!/usr/bin/env bats
# The ablation table and the single-task baselines, end to end in QUICK mode on the real
# default model: every row trains, pre-training checkpoints are shared, and the tables have
# one well-formed line per row. (Minutes on 2 cores: the one slow suite.)
load helpers

setup_file() {
  export OUT=$BATS_FILE_TMPDIR/abl
  make -s -C "$ROOT/pipelines" table baselines QUICK=1 SEEDS=2 THREADS=1 OUT="$OUT" -j2 \
    >"$BATS_FILE_TMPDIR/make.out" 2>"$BATS_FILE_TMPDIR/make.err" || {
    tail -30 "$BATS_FILE_TMPDIR/make.err" >&3; return 1; }
}

@test "results.tsv has the 24 rows (12 per representation), each with scores in range" {
  [ "$(tail -n +2 "$OUT/results.tsv" | wc -l)" -eq 24 ]
  for rep in cls sbert; do
    for row in initial nli simcse-qs simcse-sqs nli-simcse pcgrad pcgrad-nli pcgrad-simcse-qs \
               pcgrad-simcse-sqs pcgrad-nli-simcse seq-sst-sts-qqp seq-qqp-sts-sst; do
      grep -q "^$rep	$row	" "$OUT/results.tsv"
    done
  done
  awk -F'\t' 'NR > 1 && !($3 >= 0 && $3 <= 1 && $4 >= 0 && $4 <= 1 && $5 >= -1 && $5 <= 1 &&
              $6 > 0 && $6 <= 1 && $8 >= 0) { print "bad row: " $0; bad = 1 } END { exit bad }' "$OUT/results.tsv"
}

@test "results.md is a Markdown table with a line per row" {
  [ "$(grep -c '^|' "$OUT/results.md")" -eq 26 ]
  grep -q '^| sbert | pcgrad-nli-simcse | ' "$OUT/results.md"
}

@test "pre-training checkpoints are built once and loadable" {
  for p in nli simcse-qs simcse-sqs nli-simcse; do
    [ -s "$OUT/pre/$p/model.safetensors" ] && [ -s "$OUT/pre/$p/vocab.txt" ]
  done
  "$BIN/embed" -q --model "$OUT/pre/nli-simcse" "$OUT/data/sts-val.tok" --no-cross -o "$BATS_TEST_TMPDIR/e"
  "$BIN/dump" --check "$BATS_TEST_TMPDIR/e"
}

@test "baselines.tsv: mean ± std over 2 seeds for each task" {
  [ "$(tail -n +2 "$OUT/baselines.tsv" | wc -l)" -eq 3 ]
  awk -F'\t' 'NR > 1 && !($5 == 2 && $4 >= 0 && $3 >= -1 && $3 <= 1) { bad = 1 } END { exit bad }' "$OUT/baselines.tsv"
  # the mean is the mean of the per-seed scores
  m=$(cat "$OUT"/baseline/sst/s*/score | awk '{ s += $1 } END { printf "%.4f", s / NR }')
  grep -q "^sst	accuracy	$m	" "$OUT/baselines.tsv"
}

@test "a finished table is not rebuilt (make is a no-op the second time)" {
  run make -C "$ROOT/pipelines" QUICK=1 OUT="$OUT" -q "$OUT/results.md" "$OUT/baselines.tsv"
  [ "$status" -eq 0 ]
}
