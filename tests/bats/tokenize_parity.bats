#!/usr/bin/env bats
# Token ids of bin/tokenize against Hugging Face's BertTokenizer (the Rust tokenizers core),
# on every sentence of every TSV in data/ and on tests/data/hard-cases.tsv: 100% exact.
# References come from tests/make_tokenizer_refs.py (developer-run; no Python needed here):
# lines "id <TAB> tensor <TAB> max_len <TAB> ids", max_len 512 for every row and 24 for the
# first rows (truncation, longest_first for pairs).
load helpers

# Stream (via dump's JSON lines) to reference lines for max_len $1.
stream_to_lines() {
  awk -v L="$1" '{
    match($0, /"id":"[^"]*"/); id = substr($0, RSTART + 6, RLENGTH - 7)
    s = $0
    while (match(s, /"(ids_a|ids_b|ids_ab|types_ab)":\[[^]]*\]/)) {
      m = substr(s, RSTART, RLENGTH); s = substr(s, RSTART + RLENGTH)
      name = m; sub(/":.*/, "", name); sub(/^"/, "", name)
      ids = m; sub(/^[^[]*\[/, "", ids); sub(/\]$/, "", ids); gsub(/,/, " ", ids)
      print id "\t" name "\t" L "\t" ids
    }
  }'
}

# Compares our lines ($2) with every reference line ($1, gzip); prints the counts and the
# first mismatches; fails unless every reference sequence is present and equal.
compare() {
  awk -F'\t' '
    NR == FNR { ours[$1 FS $2 FS $3] = $4; next }
    {
      n++; k = $1 FS $2 FS $3
      if (!(k in ours)) { missing++; if (shown++ < 5) print "missing: " k; next }
      if (ours[k] != $4) { bad++; if (shown++ < 5) print "mismatch: " k "\n  want " $4 "\n  got  " ours[k] }
    }
    END {
      printf "%d sequences compared, %d mismatches, %d missing\n", n, bad, missing
      exit (n == 0 || bad > 0 || missing > 0)
    }' "$2" <(zcat "$1")
}

parity() {  # name, tsv, tokenize mode options...
  local name=$1 tsv=$2; shift 2
  local ours=$BATS_TEST_TMPDIR/ours.tsv
  for len in 512 24; do
    "$BIN/tokenize" -q --model "$MODEL" --max-len "$len" "$@" "$tsv" | "$BIN/dump" -q |
      stream_to_lines "$len"
  done >"$ours"
  run compare "$ROOT/tests/ref/tokenizer/$name.tsv.gz" "$ours"
  echo "# $name: ${lines[-1]}" >&3
  [ "$status" -eq 0 ] || { echo "$output"; return 1; }
}

@test "parity: SST (single sentences)" {
  parity sst-train "$DATA/sst-train.tsv" --text sentence
}

@test "parity: QQP (pairs, longest_first truncation)" {
  parity qqp-train "$DATA/qqp-train.tsv" --pair sentence1,sentence2
}

@test "parity: STS (pairs)" {
  parity sts-train "$DATA/sts-train.tsv" --pair sentence1,sentence2
}

@test "parity: SICK NLI (pairs)" {
  parity nli-sick "$DATA/nli-sick.tsv" --pair premise,hypothesis
}

@test "parity: hard cases (accents, CJK, emoji, controls, long words, empty text, ...)" {
  parity hard-cases "$ROOT/tests/data/hard-cases.tsv" --pair text_a,text_b
}

@test "parity check fails on a changed id (the comparison can fail)" {
  local ours=$BATS_TEST_TMPDIR/ours.tsv
  "$BIN/tokenize" -q --model "$MODEL" --pair text_a,text_b "$ROOT/tests/data/hard-cases.tsv" |
    "$BIN/dump" -q | stream_to_lines 512 | sed '3s/ 102$/ 103/' >"$ours"
  run compare "$ROOT/tests/ref/tokenizer/hard-cases.tsv.gz" "$ours"
  [ "$status" -ne 0 ]
  [[ "$output" == *"mismatch"* ]]
}
