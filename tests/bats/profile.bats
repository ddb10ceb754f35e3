#!/usr/bin/env bats
# MTBERT_PROFILE=ops|host (lib/profile.h): the op table on stderr at exit, and outputs
# byte-identical to a run without it (the profiler only reads clocks and adds synchronize
# calls), on the CPU backend and on cpu-staged (the device code paths).
load helpers
bats_require_minimum_version 1.5.0

setup_file() {
  export S=$BATS_FILE_TMPDIR
  awk -F'\t' 'NR <= 25' "$DATA/sst-train.tsv" >"$S/sst24.tsv"
  "$BIN/tokenize" -q --model "$MODEL" --text sentence "$S/sst24.tsv" -o "$S/sst24.tok"
  "$TINY_BERT" "$MODEL/vocab.txt" "$S/tiny"
  local tok="$BIN/tokenize -q --model $S/tiny"
  awk 'NR <= 17' "$DATA/sst-train.tsv" >"$S/sst.tsv"
  awk 'NR <= 17' "$DATA/sts-train.tsv" >"$S/sts.tsv"
  $tok --text sentence --label label "$S/sst.tsv" -o "$S/sst.tok"
  $tok --pair sentence1,sentence2 --label similarity "$S/sts.tsv" -o "$S/sts.tok"
}

setup() { T=$BATS_TEST_TMPDIR; }

# calls of op $2 in the profile table of stderr file $1 (0 when it has no row)
calls() { awk -v op="$2" '$1 == op { print $2; found = 1 } END { if (!found) print 0 }' "$1"; }

embed_profiled() {  # embed_profiled DEVICE MODE: stdout equal to the unprofiled run's, the table named
  local d=$1 m=$2
  "$BIN/embed" -q --model "$MODEL" --device "$d" "$S/sst24.tok" >"$T/plain.$d"
  MTBERT_PROFILE=$m "$BIN/embed" -q --model "$MODEL" --device "$d" "$S/sst24.tok" >"$T/prof.$d" 2>"$T/err.$d"
  cmp "$T/plain.$d" "$T/prof.$d"
  grep -q "profile (MTBERT_PROFILE=$m, $d backend)" "$T/err.$d"
  for op in matmul_forward attention_forward layernorm_forward; do
    [ "$(calls "$T/err.$d" $op)" -gt 0 ] || { cat "$T/err.$d"; return 1; }
  done
  grep -qE "^embed: profile: [0-9.]+ ms in [0-9]+ op calls" "$T/err.$d"
}

@test "MTBERT_PROFILE=ops: embed --device cpu prints the op table, stdout unchanged" {
  embed_profiled cpu ops
  # 6 layers, 4 products each, every batch: calls a multiple of 24; the products have a rate
  [ $(( $(calls "$T/err.cpu" matmul_forward) % 24 )) -eq 0 ]
  awk '$1 == "matmul_forward" && $NF + 0 > 0 { ok = 1 } END { exit !ok }' "$T/err.cpu"
}

@test "MTBERT_PROFILE=ops and host: embed --device cpu-staged, stdout unchanged" {
  embed_profiled cpu-staged ops
  # the copies of a device backend are there, and waits are counted
  [ "$(calls "$T/err.cpu-staged" copy_to_device)" -gt 0 ]
  [ "$(calls "$T/err.cpu-staged" copy_to_host)" -gt 0 ]
  embed_profiled cpu-staged host
  grep -qE "inside the [1-9][0-9]* that wait for the device" "$T/err.cpu-staged"
  grep -q "device idle after the waits at most" "$T/err.cpu-staged"
}

@test "MTBERT_PROFILE=ops: pcgrad-train's checkpoints and logs are byte-identical (cpu, cpu-staged)" {
  for d in cpu cpu-staged; do
    for m in "" ops; do
      MTBERT_PROFILE=$m "$BIN/pcgrad-train" -q -j 2 --device $d --model "$S/tiny" --task sst="$S/sst.tok" \
        --task sts="$S/sts.tok" --pcgrad --max-steps 3 -o "$T/run.$d.$m" 2>"$T/err.$d.$m"
    done
    for f in last/model.safetensors last/heads.safetensors last/state.safetensors train.log; do
      cmp "$T/run.$d./$f" "$T/run.$d.ops/$f"
    done
    [ ! -s "$T/err.$d." ]
    for op in matmul_backward attention_backward adamw_update_multi gram; do
      [ "$(calls "$T/err.$d.ops" $op)" -gt 0 ] || { cat "$T/err.$d.ops"; return 1; }
    done
  done
}

@test "MTBERT_PROFILE=bogus is an error naming the variable and its values" {
  run -1 env MTBERT_PROFILE=bogus "$BIN/embed" -q --model "$MODEL" --device cpu "$S/sst24.tok"
  [[ "$output" == *"MTBERT_PROFILE=bogus: expected ops"* ]]
  [[ "$output" == *"or host"* ]]
  run -1 env MTBERT_PROFILE=bogus "$BIN/pcgrad-train" -q --device cpu --model "$S/tiny" --task sst="$S/sst.tok" \
    --max-steps 1 -o "$T/run"
  [[ "$output" == *"MTBERT_PROFILE=bogus: expected ops"* ]]
}

@test "MTBERT_PROFILE unset or empty: no table" {
  MTBERT_PROFILE= "$BIN/embed" --model "$MODEL" --device cpu "$S/sst24.tok" >/dev/null 2>"$T/err"
  ! grep -q "profile" "$T/err"
}
