#!/usr/bin/env bats
# bin/tokenize as a command: options, bad input (each error names FILE:LINE and exits
# non-zero), --skip-bad, atomic -o, and the stream it writes.
load helpers

setup() {
  T=$BATS_TEST_TMPDIR
  printf 'id\tsentence\tlabel\na1\tHello world!\t3\na2\tSecond one.\t1\n' >"$T/ok.tsv"
}

tok() { "$BIN/tokenize" --model "$MODEL" "$@"; }

@test "--help prints usage with runnable examples and exits 0" {
  run "$BIN/tokenize" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"usage: tokenize"* ]]
  [[ "$output" == *"--pair COL1,COL2"* ]]
  [[ "$output" == *"examples:"* ]]
  # the first example really runs (head ends it early, so no pipefail here)
  cd "$ROOT"
  run bash -c "$(sed -n '/^examples:/,$p' <<<"$output" | sed -n '2,3p' | sed 's|bin/|'"$BIN"'/|g; s|models/all-MiniLM-L6-v2|'"$MODEL"'|')"
  [ "$status" -eq 0 ]
  [[ "${lines[0]}" == '{"id":"32a4f146782cbde1b7fa65799","labels":{"label":3},"tensors":{"ids_a":[101,'* ]]
}

@test "an unknown option is a usage error" {
  run "$BIN/tokenize" --bogus
  [ "$status" -eq 2 ]
  [[ "$output" == *"usage:"* ]]
}

@test "single mode writes ids_a and labels, keyed by id" {
  run bash -c "'$BIN/tokenize' -q --model '$MODEL' --text sentence --label label '$T/ok.tsv' | '$BIN/dump'"
  [ "$status" -eq 0 ]
  [ "${lines[0]}" = '{"id":"a1","labels":{"label":3},"tensors":{"ids_a":[101,7592,2088,999,102]}}' ]
  [ "${#lines[@]}" -eq 2 ]
}

@test "pair mode writes ids_a, ids_b, ids_ab and types_ab; header carries the metadata" {
  printf 's1\ts2\tsim\nHello world!\tHi.\t4.5\n' >"$T/p.tsv"
  run bash -c "'$BIN/tokenize' -q --model '$MODEL' --pair s1,s2 --label sim --max-len 64 '$T/p.tsv' | '$BIN/dump' --header"
  [ "$status" -eq 0 ]
  [[ "${lines[0]}" == *'"kind":"tokens"'*'"mode":"pair"'*'"max_len":"64"'*'"labels":"sim"'* ]]
  fp=$(sed -n 's/.*"vocab_fp":"\([0-9a-f]*\)".*/\1/p' <<<"${lines[0]}")
  [ "${#fp}" -eq 16 ]
  # no id column: the id is the data line number
  [ "${lines[1]}" = '{"id":"1","labels":{"sim":4.5},"tensors":{"ids_a":[101,7592,2088,999,102],"ids_b":[101,7632,1012,102],"ids_ab":[101,7592,2088,999,102,7632,1012,102],"types_ab":[0,0,0,0,0,1,1,1]}}' ]
}

@test "--label-map turns text labels into numbers; --id picks the key column" {
  printf 'n\tp\th\tlabel\n7\tA dog.\tA cat.\tneutral\n8\tA dog.\tNo dog.\tcontradiction\n' >"$T/nli.tsv"
  run bash -c "'$BIN/tokenize' -q --model '$MODEL' --pair p,h --id n --label label --label-map entailment=0,neutral=1,contradiction=2 '$T/nli.tsv' | '$BIN/dump'"
  [ "$status" -eq 0 ]
  [[ "${lines[0]}" == '{"id":"7","labels":{"label":1},'* ]]
  [[ "${lines[1]}" == '{"id":"8","labels":{"label":2},'* ]]
}

@test "--max-len truncates, [CLS] and [SEP] included" {
  run bash -c "'$BIN/tokenize' -q --model '$MODEL' --text sentence --max-len 4 '$T/ok.tsv' | '$BIN/dump'"
  [ "$status" -eq 0 ]
  [[ "${lines[0]}" == *'"ids_a":[101,7592,2088,102]'* ]]
  run "$BIN/tokenize" --model "$MODEL" --text sentence --max-len 3 "$T/ok.tsv"
  [ "$status" -ne 0 ]
  [[ "$output" == *"--max-len"* ]]
}

@test "missing column: error names the file, line 1 and the columns it has" {
  run tok --text sentense "$T/ok.tsv"
  [ "$status" -ne 0 ]
  [[ "$output" == *"$T/ok.tsv:1: no column 'sentense' in the header (columns: id, sentence, label)"* ]]
}

@test "ragged row: error names file:line and the field counts" {
  printf 'id\tsentence\tlabel\na1\tfine\t1\na2\tonly two\n' >"$T/bad.tsv"
  run tok --text sentence "$T/bad.tsv" -o "$T/out.tok"
  [ "$status" -ne 0 ]
  [[ "$output" == *"$T/bad.tsv:3: row has 2 fields, header has 3"* ]]
}

@test "invalid UTF-8: error names file:line" {
  printf 'id\tsentence\na1\tok\na2\tbad \xff byte\n' >"$T/bad.tsv"
  run tok --text sentence "$T/bad.tsv" -o "$T/out.tok"
  [ "$status" -ne 0 ]
  [[ "$output" == *"$T/bad.tsv:3: invalid UTF-8 at byte 8"* ]]
}

@test "CRLF line ends: error names file:line" {
  printf 'id\tsentence\r\na1\tok\r\n' >"$T/bad.tsv"
  run tok --text sentence "$T/bad.tsv" -o "$T/out.tok"
  [ "$status" -ne 0 ]
  [[ "$output" == *"$T/bad.tsv:1: line ends with CR"* ]]
  printf 'id\tsentence\na1\tok\r\n' >"$T/bad.tsv"
  run tok --text sentence "$T/bad.tsv" -o "$T/out.tok"
  [ "$status" -ne 0 ]
  [[ "$output" == *"$T/bad.tsv:2: line ends with CR"* ]]
}

@test "unparseable label: error names file:line, value and column" {
  printf 'id\tsentence\tlabel\na1\tok\t1\na2\tno\tpositive\n' >"$T/bad.tsv"
  run tok --text sentence --label label "$T/bad.tsv" -o "$T/out.tok"
  [ "$status" -ne 0 ]
  [[ "$output" == *"$T/bad.tsv:3: label 'positive' in column 'label' is not a number"* ]]
}

@test "empty file and missing vocabulary are errors" {
  : >"$T/empty.tsv"
  run tok --text sentence "$T/empty.tsv"
  [ "$status" -ne 0 ]
  [[ "$output" == *"$T/empty.tsv:1: empty file"* ]]
  run "$BIN/tokenize" --model "$T/nowhere" --text sentence "$T/ok.tsv"
  [ "$status" -ne 0 ]
  [[ "$output" == *"$T/nowhere/vocab.txt: cannot read the vocabulary file"* ]]
}

@test "a failed run leaves no output file behind (-o is atomic)" {
  printf 'id\tsentence\na1\tok\na2\tx\ty\n' >"$T/bad.tsv"
  run tok --text sentence "$T/bad.tsv" -o "$T/out.tok"
  [ "$status" -ne 0 ]
  [ ! -e "$T/out.tok" ]
  [ -z "$(ls "$T" | grep '\.tmp\.')" ]
  run tok -q --text sentence "$T/ok.tsv" -o "$T/out.tok"
  [ "$status" -eq 0 ]
  [ -s "$T/out.tok" ]
  [ -z "$(ls "$T" | grep '\.tmp\.')" ]
}

@test "--skip-bad skips and counts bad rows, keeps the good ones" {
  printf 'id\tsentence\tlabel\na1\tok\t1\na2\tragged\na3\tbad \xff\t1\na4\tfine\t2\na5\tx\tnan-ish\n' >"$T/bad.tsv"
  run bash -c "'$BIN/tokenize' --model '$MODEL' --skip-bad --text sentence --label label -o '$T/out.tok' '$T/bad.tsv' 2>&1"
  [ "$status" -eq 0 ]
  [[ "$output" == *"bad.tsv:3: row has 2 fields"* ]]
  [[ "$output" == *"bad.tsv:4: invalid UTF-8"* ]]
  [[ "$output" == *"bad.tsv:6: label 'nan-ish'"* ]]
  [[ "$output" == *"skipped 3 bad rows"* ]]
  run bash -c "'$BIN/dump' '$T/out.tok' | cut -c1-11"
  [ "${lines[0]}" = '{"id":"a1",' ]
  [ "${lines[1]}" = '{"id":"a4",' ]
  [ "${#lines[@]}" -eq 2 ]
}

@test "output is gzip: zcat and gzip -t accept it; dump verifies the count" {
  tok -q --text sentence --label label -o "$T/out.tok" "$DATA/sst-train.tsv"
  gzip -t "$T/out.tok"
  [ "$(zcat "$T/out.tok" | head -c 8)" = MTBSTRM ]
  run "$BIN/dump" --check "$T/out.tok"
  [ "$status" -eq 0 ]
  [[ "$output" == *"8544 records OK"* ]]
}

@test "reads stdin; progress goes to stderr, data only to stdout" {
  run bash -c "'$BIN/tokenize' --model '$MODEL' --text sentence < '$T/ok.tsv' 2>'$T/err' | '$BIN/dump' | wc -l"
  [ "$output" -eq 2 ]
  grep -q "tokenize 2 done" "$T/err"
}

@test "a broken upstream fails the pipeline under pipefail" {
  run bash -c "set -o pipefail; { cat '$T/ok.tsv'; exit 3; } | '$BIN/tokenize' -q --model '$MODEL' --text sentence | '$BIN/dump' >/dev/null"
  [ "$status" -ne 0 ]
  # a truncated stream from tokenize is caught by the next stage
  run bash -c "set -o pipefail; '$BIN/tokenize' -q --model '$MODEL' --text sentence '$DATA/sst-train.tsv' | head -c 20000 | '$BIN/dump' >/dev/null"
  [ "$status" -ne 0 ]
}

@test "binary output to a terminal is refused" {
  command -v script >/dev/null || skip "script(1) not installed"
  run script -qec "'$BIN/tokenize' --model '$MODEL' --text sentence '$T/ok.tsv'" /dev/null
  [ "$status" -ne 0 ]
  [[ "$output" == *"refusing to write a binary stream to a terminal"* ]]
}
