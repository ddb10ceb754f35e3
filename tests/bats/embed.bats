#!/usr/bin/env bats
# bin/embed with the real default model: record layout, batching invariance, meaning,
# and every refusal (vocabulary mismatch, damaged stream, wrong stream kind, bad model
# directory, over-long sequences, terminal).
load helpers
bats_require_minimum_version 1.5.0

setup() {
  T=$BATS_TEST_TMPDIR
  printf 'id\tsentence1\tsentence2\tsimilarity\n' >"$T/pairs.tsv"
  printf 'p1\tA man is playing a guitar.\tA person plays the guitar.\t4.8\n' >>"$T/pairs.tsv"
  printf 'p2\tA man is playing a guitar.\tThe stock market fell sharply today.\t0.1\n' >>"$T/pairs.tsv"
  printf 'p3\tKids run in the park.\tChildren are running outside in a park.\t4.2\n' >>"$T/pairs.tsv"
  awk -F'\t' 'NR <= 41' "$DATA/sst-train.tsv" >"$T/sst40.tsv"
}

tok() { "$BIN/tokenize" -q --model "$MODEL" "$@"; }
emb() { "$BIN/embed" -q --model "$MODEL" "$@"; }

@test "--help prints usage with examples" {
  run "$BIN/embed" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"usage: embed"* ]]
  [[ "$output" == *"examples:"* ]]
}

@test "pairs give emb_a, emb_b and cls_ab of the hidden size, ids and labels kept" {
  tok --pair sentence1,sentence2 --label similarity "$T/pairs.tsv" | emb >"$T/e"
  run "$BIN/dump" --header "$T/e"
  [ "$status" -eq 0 ]
  [[ "${lines[0]}" == *'"kind":"embeddings"'* ]]
  [[ "${lines[0]}" == *'"hidden":"384"'* ]]
  [[ "${lines[1]}" == *'"id":"p1"'* ]]
  [[ "${lines[1]}" == *'"similarity":4.8'* ]]
  "$BIN/dump" "$T/e" | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)["tensors"]
    assert sorted(r) == ["cls_ab", "emb_a", "emb_b"], sorted(r)
    assert all(len(v) == 384 for v in r.values())'
}

@test "similar sentences are closer than unrelated ones (real model, cosine)" {
  tok --pair sentence1,sentence2 "$T/pairs.tsv" | emb --normalize >"$T/e"
  "$BIN/dump" "$T/e" | python3 -c '
import json, sys
cos = {}
for line in sys.stdin:
    r = json.loads(line); t = r["tensors"]
    cos[r["id"]] = sum(a * b for a, b in zip(t["emb_a"], t["emb_b"]))
print(cos)
assert cos["p1"] > 0.6 and cos["p3"] > 0.6 and cos["p2"] < 0.3, cos'
}

@test "batch size and token budget do not change the embeddings or their order" {
  tok --text sentence "$T/sst40.tsv" -o "$T/t"
  emb --batch-size 1 "$T/t" -o "$T/b1"
  emb --batch-size 64 --batch-tokens 300 --window 7 "$T/t" -o "$T/b64"
  paste <("$BIN/dump" "$T/b1") <("$BIN/dump" "$T/b64") | python3 -c '
import json, sys
n = 0
for line in sys.stdin:
    a, b = (json.loads(x) for x in line.split("\t"))
    assert a["id"] == b["id"]
    d = max(abs(x - y) for x, y in zip(a["tensors"]["emb_a"], b["tensors"]["emb_a"]))
    assert d < 1e-5, (a["id"], d)
    n += 1
assert n == 40, n'
}

@test "--tokens writes [n, H] token states; --no-cross drops cls_ab" {
  tok --pair sentence1,sentence2 "$T/pairs.tsv" | emb --tokens | "$BIN/dump" >"$T/all"
  head -1 "$T/all" >"$T/j"
  python3 -c '
import json
t = json.load(open("'"$T/j"'"))["tensors"]
assert sorted(t) == ["states_a", "states_ab", "states_b"]
assert len(t["states_a"]) == 9 and len(t["states_a"][0]) == 384, len(t["states_a"])'
  run bash -c "'$BIN/tokenize' -q --model '$MODEL' --pair sentence1,sentence2 '$T/pairs.tsv' | '$BIN/embed' -q --model '$MODEL' --no-cross | '$BIN/dump'"
  [[ "$output" != *cls_ab* ]]
  [[ "$output" == *emb_b* ]]
}

@test "a stream from another vocabulary is refused" {
  mkdir "$T/other"
  sed 's/^the$/teh/' "$MODEL/vocab.txt" >"$T/other/vocab.txt"
  "$BIN/tokenize" -q --vocab "$T/other/vocab.txt" --text sentence "$T/sst40.tsv" -o "$T/t"
  run emb "$T/t"
  [ "$status" -ne 0 ]
  [[ "$output" == *"vocabulary"*"mismatch"* ]]
}

@test "a truncated token stream fails and writes nothing under -o" {
  tok --text sentence "$T/sst40.tsv" -o "$T/t"
  head -c 300 "$T/t" >"$T/cut"
  run emb "$T/cut" -o "$T/out"
  [ "$status" -ne 0 ]
  [[ "$output" == *"truncated"* ]]
  [ ! -e "$T/out" ]
  [ -z "$(ls "$T" | grep 'out.tmp')" ]
}

@test "an embedding stream given as input is refused" {
  tok --text sentence "$T/sst40.tsv" | emb >"$T/e"
  run emb "$T/e"
  [ "$status" -ne 0 ]
  [[ "$output" == *"expected a token stream"* ]]
}

@test "a model directory with a missing or mis-shaped tensor is refused" {
  mkdir "$T/m"
  cp "$MODEL/config.json" "$MODEL/vocab.txt" "$T/m/"
  run emb --model "$T/m" </dev/null
  [ "$status" -ne 0 ]
  [[ "$output" == *"model.safetensors"* ]]
  # hidden size that does not match the weights
  sed 's/"intermediate_size": 1536/"intermediate_size": 1024/' "$MODEL/config.json" >"$T/m/config.json"
  ln -s "$(cd "$MODEL" && pwd)/model.safetensors" "$T/m/model.safetensors"
  run emb --model "$T/m" </dev/null
  [ "$status" -ne 0 ]
  [[ "$output" == *"intermediate"* || "$output" == *"shape"* ]]
}

@test "a sequence longer than max_position_embeddings is refused naming the record" {
  python3 -c 'print("id\tsentence"); print("long1\t" + " ".join(["word"] * 600))' >"$T/long.tsv"
  tok --text sentence --max-len 1000 "$T/long.tsv" -o "$T/t"
  run emb "$T/t"
  [ "$status" -ne 0 ]
  [[ "$output" == *"long1"*"max_position_embeddings"* ]]
}

@test "a broken upstream fails the pipeline; a terminal is refused" {
  run bash -c "set -o pipefail; false | '$BIN/embed' -q --model '$MODEL' | cat"
  [ "$status" -ne 0 ]
  command -v script >/dev/null || skip "script(1) not installed"
  tok --text sentence "$T/sst40.tsv" -o "$T/t"
  run script -qec "'$BIN/embed' --model '$MODEL' '$T/t'" /dev/null
  [ "$status" -ne 0 ]
  [[ "$output" == *"terminal"* ]]
}

@test "--max-memory too small fails up front with the needed total and writes nothing" {
  tok --text sentence "$T/sst40.tsv" -o "$T/t"
  run --separate-stderr "$BIN/embed" --model "$MODEL" --max-memory 1M "$T/t" -o "$T/e"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"the run needs "*" bytes) of cpu memory but 1.00 MiB is available"* ]]
  [[ "$stderr" == *"--batch-tokens"* ]]
  [ -z "$(ls "$T" | grep '^e')" ]  # neither e nor its temporary e.tmp.PID
  run --separate-stderr "$BIN/embed" --model "$MODEL" --max-memory lots "$T/t"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"--max-memory: 'lots' is not a size"* ]]
}

@test "cpu-staged embeddings (workspaces reserved and checked as on CUDA) equal the CPU's, bit for bit" {
  tok --text sentence "$T/sst40.tsv" -o "$T/t"
  emb --batch-size 8 --batch-tokens 300 "$T/t" -o "$T/cpu"
  emb --batch-size 8 --batch-tokens 300 --device cpu-staged --max-memory 4G "$T/t" -o "$T/staged"
  cmp "$T/cpu" "$T/staged"
}
