#!/usr/bin/env bats
# The stream format seen from the shell: gzip compatibility, bin/dump's JSON lines and
# --check, and the damage every reader must catch (truncation, corruption, trailing data).
load helpers

setup() {
  T=$BATS_TEST_TMPDIR
  awk -F'\t' 'NR <= 201' "$DATA/sst-train.tsv" >"$T/s.tsv"
  "$BIN/tokenize" -q --model "$MODEL" --text sentence --label label "$T/s.tsv" -o "$T/s.tok"
}

@test "streams are gzip: gzip -t accepts them and zcat shows the magic" {
  gzip -t "$T/s.tok"
  [ "$(zcat "$T/s.tok" | head -c 8)" = "MTBSTRM" ]
}

@test "dump --check counts the records; dump prints one JSON object per record" {
  run "$BIN/dump" --check "$T/s.tok"
  [ "$status" -eq 0 ]
  [[ "$output" == *"200 records OK"* ]]
  "$BIN/dump" --header "$T/s.tok" >"$T/j"
  [ "$(wc -l <"$T/j")" -eq 201 ]
  python3 -c '
import json, sys
lines = open(sys.argv[1]).read().splitlines()
h = json.loads(lines[0])["header"]
assert h["kind"] == "tokens" and len(h["vocab_fp"]) == 16, h
r = json.loads(lines[1])
assert r["tensors"]["ids_a"][0] == 101 and r["tensors"]["ids_a"][-1] == 102, r' "$T/j"
}

@test "a truncated stream is an error at every cut" {
  size=$(stat -c %s "$T/s.tok")
  for cut in 5 20 100 $((size / 2)) $((size - 20)) $((size - 1)); do
    head -c "$cut" "$T/s.tok" >"$T/cut"
    run "$BIN/dump" --check "$T/cut"
    [ "$status" -ne 0 ]
    [[ "$output" == *"truncated"* || "$output" == *"corrupt"* || "$output" == *"magic"* ]]
  done
}

@test "a corrupted byte is an error" {
  size=$(stat -c %s "$T/s.tok")
  cp "$T/s.tok" "$T/bad"
  printf '\xff' | dd of="$T/bad" bs=1 seek=$((size / 2)) conv=notrunc status=none
  run "$BIN/dump" --check "$T/bad"
  [ "$status" -ne 0 ]
}

@test "a stream recompressed with extra records after the trailer is an error" {
  (zcat "$T/s.tok"; printf 'R') | gzip >"$T/extra"
  run "$BIN/dump" --check "$T/extra"
  [ "$status" -ne 0 ]
  [[ "$output" == *"after the trailer"* ]]
}

@test "a plain file or a TSV given by mistake is refused with the file's name" {
  run "$BIN/dump" "$T/s.tsv"
  [ "$status" -ne 0 ]
  [[ "$output" == *"s.tsv"* ]]
  run "$BIN/dump" "$T/does-not-exist"
  [ "$status" -ne 0 ]
  [[ "$output" == *"does-not-exist"* ]]
}

@test "two streams concatenated as gzip members are read as one when they form one payload" {
  zcat "$T/s.tok" >"$T/raw"
  half=$(( $(stat -c %s "$T/raw") / 2 ))
  { head -c "$half" "$T/raw" | gzip; tail -c +$((half + 1)) "$T/raw" | gzip; } >"$T/two"
  run "$BIN/dump" --check "$T/two"
  [ "$status" -eq 0 ]
  [[ "$output" == *"200 records OK"* ]]
}
