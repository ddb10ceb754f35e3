#!/usr/bin/env bats
# evaluate --report DIR (plots, error tables, index pages) and evaluate --over-seeds, on
# prediction streams from heads fitted on synthetic embeddings (tests/tools/synth-emb.c),
# with sentence TSVs whose text carries characters that must be escaped.
load helpers

# every sentence carries markup, a table-cell break and an entity, plus its own id
NASTY='a|b <i>x</i> & *y* "q"'

setup_file() {
  local D=$BATS_FILE_TMPDIR
  mkdir -p "$D/R&D"  # a stream path that needs escaping in HTML
  for t in sst qqp sts; do
    "$SYNTH" --task "$t" --n 1000 --hidden 32 --noise 2 --seed 1 -o "$D/$t-train.emb"
    "$SYNTH" --task "$t" --n 300 --hidden 32 --noise 2 --seed 2 -o "$D/$t-test.emb"
    "$BIN/heads" fit -q --task "$t" -o "$D/$t.head" "$D/$t-train.emb"
    "$BIN/heads" -q --head "$D/$t.head" -o "$D/R&D/$t.pred" "$D/$t-test.emb"
  done
  # sentence TSVs in reverse order (the join is by id), with a column the report ignores
  "$BIN/dump" "$D/sst-test.emb" | jq -r --arg s "$NASTY" '[.id, "s:\(.id) \($s)", 0] | @tsv' | tac \
    | { printf 'id\tsentence\tlabel\n'; cat; } >"$D/sst.tsv"
  for t in qqp sts; do
    "$BIN/dump" "$D/$t-test.emb" | jq -r --arg s "$NASTY" '[.id, "a:\(.id) \($s)", "b:\(.id)"] | @tsv' | tac \
      | { printf 'id\tsentence1\tsentence2\n'; cat; } >"$D/$t.tsv"
  done
  "$BIN/evaluate" -q --ci 200 --top 5 --report "$D/report" \
    --text "$D/sst.tsv" --text "$D/qqp.tsv" --text "$D/sts.tsv" \
    "$D/R&D/sst.pred" "$D/R&D/qqp.pred" "$D/R&D/sts.pred" >"$D/metrics.txt"
}

setup() { D=$BATS_FILE_TMPDIR; T=$BATS_TEST_TMPDIR; R=$BATS_FILE_TMPDIR/report; }

xml_ok() { python3 -c 'import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])' "$1"; }

# rows of direction $2 in error table $1 where |difference| (column $3) or the tie-breaker
# (column $4, 0: none) is out of order; prints nothing when sorted
unsorted() {
  awk -F'\t' -v dir="$2" -v dc="$3" -v tc="$4" '
    NR > 1 && $1 == dir {
      d = $dc < 0 ? -$dc : $dc; t = tc ? $tc : 0
      if (n++ && (d > pd || (d == pd && t > pt))) print "row " $2 ": " d " after " pd
      pd = d; pt = t
    }' "$1"
}

@test "report: every file exists, no temporary file is left, the SVGs and index.html parse as XML" {
  for f in index.md index.html sst-confusion.svg qqp-confusion.svg sts-scatter.svg \
           sst-errors.tsv qqp-errors.tsv sts-errors.tsv; do
    [ -s "$R/$f" ] || { echo "missing $f"; false; }
  done
  [ -z "$(ls "$R" | grep tmp)" ]
  for f in "$R"/*.svg "$R/index.html"; do xml_ok "$f"; done
  # the metrics still go to stdout, as without --report
  grep -q '^overall ' "$D/metrics.txt"
}

@test "confusion SVGs: a cell per class pair with counts that add up, axis labels, accuracy in the title" {
  [ "$(grep -c '<rect x=' "$R/sst-confusion.svg")" -eq 25 ]
  [ "$(grep -c '<rect x=' "$R/qqp-confusion.svg")" -eq 4 ]
  local acc
  acc=$(awk '/^sst/ { s = 1 } s && /accuracy/ { printf "%.3f", $2; exit }' "$D/metrics.txt")
  grep -q "Sentiment (SST-5): accuracy $acc</text>" "$R/sst-confusion.svg"
  grep -q '>predicted</text>' "$R/sst-confusion.svg"
  grep -q '>gold</text>' "$R/sst-confusion.svg"
  grep -q '>4 very positive</text>' "$R/sst-confusion.svg"
  # counts are the bold cell texts; they add up to the 300 examples
  [ "$(grep 'font-weight="bold" fill=' "$R/sst-confusion.svg" | sed 's/.*>\([0-9]*\)<\/text>/\1/' \
       | awk '{ s += $1 } END { print s }')" -eq 300 ]
}

@test "scatter SVG: one point per example, axes 0..5, the y = x line, correlations in the title" {
  [ "$(grep -c '<circle ' "$R/sts-scatter.svg")" -eq 300 ]
  grep -q 'fill-opacity="0.35"' "$R/sts-scatter.svg"
  grep -q 'stroke-dasharray' "$R/sts-scatter.svg"
  for t in 0 1 2 3 4 5; do grep -q "font-size=\"12\">$t</text>" "$R/sts-scatter.svg"; done
  grep -q 'Pearson r 0\.[0-9]*, Spearman ρ 0\.[0-9]*</text>' "$R/sts-scatter.svg"
  grep -q '>gold similarity</text>' "$R/sts-scatter.svg"
}

@test "error tables: --top rows each way, sorted by |difference|, sentences joined by id" {
  # sst: direction rank id sentence gold predicted p difference
  [ "$(grep -c $'^positive\t' "$R/sst-errors.tsv")" -eq 5 ]
  [ "$(grep -c $'^negative\t' "$R/sst-errors.tsv")" -eq 5 ]
  [ -z "$(unsorted "$R/sst-errors.tsv" positive 8 7)" ]
  [ -z "$(unsorted "$R/sst-errors.tsv" negative 8 7)" ]
  awk -F'\t' 'NR > 1 && ($4 != "s:" $3 " a|b <i>x</i> & *y* \"q\"" || ($1 == "positive") != ($6 > $5)) { exit 1 }' "$R/sst-errors.tsv"
  # qqp: false positives have gold 0, false negatives gold 1; difference = p(duplicate) − gold
  [ "$(grep -c $'^positive\t' "$R/qqp-errors.tsv")" -eq 5 ]
  [ -z "$(unsorted "$R/qqp-errors.tsv" positive 10 0)" ]
  [ -z "$(unsorted "$R/qqp-errors.tsv" negative 10 0)" ]
  awk -F'\t' 'NR > 1 { want = $1 == "positive" ? 0 : 1
                       if ($6 != want || $7 == want || $5 != "b:" $3) exit 1
                       d = $8 - $6 - $9; if (d > 0.002 || d < -0.002) exit 1 }' "$R/qqp-errors.tsv"
  # sts: difference = predicted − gold, both directions
  [ -z "$(unsorted "$R/sts-errors.tsv" positive 8 0)" ]
  [ -z "$(unsorted "$R/sts-errors.tsv" negative 8 0)" ]
  awk -F'\t' 'NR > 1 { d = $7 - $6 - $8; if (d > 0.002 || d < -0.002 || $5 != "b:" $3) exit 1 }' "$R/sts-errors.tsv"
  [ "$(grep -c $'^negative\t' "$R/sts-errors.tsv")" -eq 5 ]
}

@test "index.md: metric table with intervals, embedded plots, error tables with escaped sentences" {
  grep -qE '^\| sst \| accuracy \| 0\.[0-9]{4} \| \[0\.[0-9]{4}, 0\.[0-9]{4}\] \| 300 \| ' "$R/index.md"
  grep -qE '^\| sts \| Pearson r \| 0\.[0-9]{4} \| \[' "$R/index.md"
  grep -qE '^\| all \| overall \| 0\.[0-9]{4} \| \[' "$R/index.md"
  grep -qF '![confusion matrix](sst-confusion.svg)' "$R/index.md"
  grep -qF '![confusion matrix](qqp-confusion.svg)' "$R/index.md"
  grep -qF '![scatter plot](sts-scatter.svg)' "$R/index.md"
  grep -qF '[sst-errors.tsv](sst-errors.tsv)' "$R/index.md"
  # the sentence: | and * escaped, < and & as entities; no raw markup anywhere
  grep -qF 'a\|b &lt;i&gt;x&lt;/i&gt; &amp; \*y\* "q"' "$R/index.md"
  [ "$(grep -cF '<i>' "$R/index.md")" -eq 0 ]
  # every table row has as many cells as its header: an unescaped | would add one
  awk '/^\| # \| id/ { n = gsub(/\|/, "|"); next }
       /^\| [0-9]+ \| / { line = $0; gsub(/\\\|/, "", line); if (gsub(/\|/, "|", line) != n) exit 1 }' "$R/index.md"
}

@test "index.html: self-contained (SVGs inlined), sentences and paths escaped" {
  [ "$(grep -c '<svg xmlns' "$R/index.html")" -eq 3 ]
  grep -qF 'a|b &lt;i&gt;x&lt;/i&gt; &amp; *y* &quot;q&quot;' "$R/index.html"
  [ "$(grep -cF '<i>' "$R/index.html")" -eq 0 ]
  grep -qF 'R&amp;D/sst.pred' "$R/index.html"
  grep -qF 'href="sts-errors.tsv"' "$R/index.html"
}

@test "report without --text: tables by id, a note instead of sentences; a second stream of a task" {
  run "$BIN/evaluate" -q --ci 0 --report "$T/r" "$D/R&D/sts.pred" "$D/R&D/sts.pred"
  [ "$status" -eq 0 ]
  [ -s "$T/r/sts-scatter.svg" ]
  [ -s "$T/r/sts-2-scatter.svg" ]
  [ -s "$T/r/sts-2-errors.tsv" ]
  grep -qF 'No `--text` given' "$T/r/index.md"
  grep -qE '^\| sts \| Pearson r \| 0\.[0-9]{4} \| – \|' "$T/r/index.md"
  xml_ok "$T/r/index.html"
}

@test "report: nested DIR is created; an existing DIR is reused" {
  run "$BIN/evaluate" -q --ci 0 --report "$T/a/b/c" "$D/R&D/sst.pred"
  [ "$status" -eq 0 ]
  [ -s "$T/a/b/c/sst-confusion.svg" ]
  run "$BIN/evaluate" -q --ci 0 --report "$T/a/b/c" "$D/R&D/sst.pred"
  [ "$status" -eq 0 ]
}

@test "bad input: --text lacking ids names them, and nothing is written" {
  grep -v -E $'^sst-(7|12)\t' "$D/sst.tsv" >"$T/short.tsv"
  run "$BIN/evaluate" -q --report "$T/r" --text "$T/short.tsv" "$D/R&D/sst.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"--text $T/short.tsv: 2 of the 300 ids of"*"sst.pred are not in it (sst-7, sst-12)"* ]]
  [ ! -e "$T/r" ]
}

@test "bad input: --text of the wrong kind, without sentence columns, or without --report" {
  run "$BIN/evaluate" -q --report "$T/r" --text "$D/sst.tsv" "$D/R&D/qqp.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"has single sentences, but"*"qqp.pred is a qqp stream (sentence pairs)"* ]]
  printf 'id\ttext\nsst-1\thello\n' >"$T/nosent.tsv"
  run "$BIN/evaluate" -q --report "$T/r" --text "$T/nosent.tsv" "$D/R&D/sst.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"no column 'sentence', nor 'sentence1' and 'sentence2'"* ]]
  run "$BIN/evaluate" -q --text "$D/sst.tsv" "$D/R&D/sst.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"--text is for the error tables of --report DIR"* ]]
  run "$BIN/evaluate" -q --report "$T/r" --text "$D/sst.tsv" "$D/R&D/sst.pred" "$D/R&D/qqp.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"1 --text files for 2 prediction streams"* ]]
  run "$BIN/evaluate" -q --report "$T/r" --text "$T/nope.tsv" "$D/R&D/sst.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"nope.tsv"* ]]
}

@test "bad input: a report DIR that cannot be made or written" {
  touch "$T/file"
  run "$BIN/evaluate" -q --ci 0 --report "$T/file" "$D/R&D/sst.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"--report $T/file: not a directory"* ]]
  [ -z "$(grep overall <<<"$output")" ]  # it fails before printing metrics
  run "$BIN/evaluate" -q --ci 0 --report "$T/file/sub" "$D/R&D/sst.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"--report $T/file/sub: cannot create"* ]]
  if [ "$(id -u)" -ne 0 ]; then  # root writes anywhere
    mkdir "$T/ro" && chmod 555 "$T/ro"
    run "$BIN/evaluate" -q --ci 0 --report "$T/ro" "$D/R&D/sst.pred"
    chmod 755 "$T/ro"
    [ "$status" -ne 0 ]
    [[ "$output" == *"--report $T/ro: not writable"* ]]
  fi
}

# gold TSV for the ids of prediction stream $1: the prediction for the first $2 rows, another
# class for the rest, so that the accuracy is exactly $2 / rows
gold_with_hits() {
  "$BIN/dump" "$1" | jq -r '[.id, (.tensors.pred[0] | floor)] | @tsv' \
    | awk -F'\t' -v k="$2" 'BEGIN { print "id\tlabel" } { print $1 "\t" (NR <= k ? $2 : ($2 + 1) % 5) }'
}

@test "--over-seeds: mean ± sample std against hand-computed values" {
  "$SYNTH" --task sst --n 10 --hidden 32 --noise 2 --seed 5 -o "$T/ten.emb"
  "$BIN/heads" -q --head "$D/sst.head" -o "$T/ten.pred" "$T/ten.emb"
  gold_with_hits "$T/ten.pred" 5 >"$T/g5.tsv"
  gold_with_hits "$T/ten.pred" 6 >"$T/g6.tsv"
  gold_with_hits "$T/ten.pred" 9 >"$T/g9.tsv"
  # accuracies 0.5, 0.6, 0.9: mean 2/3, sample std sqrt(((1/6)^2 + (1/15)^2 + (7/30)^2) / 2)
  run "$BIN/evaluate" -q --over-seeds --format tsv --gold "$T/g5.tsv" --gold "$T/g6.tsv" \
    --gold "$T/g9.tsv" "$T/ten.pred" "$T/ten.pred" "$T/ten.pred"
  [ "$status" -eq 0 ]
  [ "${lines[0]}" = "$(printf 'task\tmetric\tmean\tstd\truns\tmin\tmax')" ]
  [ "${lines[1]}" = "$(printf 'sst\taccuracy\t0.666667\t0.208167\t3\t0.500000\t0.900000')" ]
  [[ "${lines[2]}" == "$(printf 'sst\tmacro_f1\t')"*"$(printf '\t3\t')"* ]]
  [ "${#lines[@]}" -eq 3 ]
  run "$BIN/evaluate" -q --over-seeds --gold "$T/g5.tsv" --gold "$T/g9.tsv" "$T/ten.pred" "$T/ten.pred"
  [ "$status" -eq 0 ]
  # 0.5 and 0.9: mean 0.7, sample std 0.4 / sqrt(2)
  [[ "${lines[0]}" == "sst  accuracy  0.7000 ± 0.2828  (2 runs; min 0.5000, max 0.9000)" ]]
  run "$BIN/evaluate" -q --over-seeds --format json --gold "$T/g5.tsv" --gold "$T/g9.tsv" "$T/ten.pred" "$T/ten.pred"
  [ "$(jq -r '.over_seeds[0] | "\(.task) \(.metric) \(.mean) \(.std) \(.runs)"' <<<"$output")" = "sst accuracy 0.7 0.282843 2" ]
}

@test "--over-seeds groups by task, notes differing example sets, refuses --report" {
  "$BIN/heads" -q --head "$D/sst.head" -o "$T/sst-b.pred" "$D/sst-train.emb"
  run "$BIN/evaluate" --over-seeds --format tsv "$D/R&D/sst.pred" "$D/R&D/sts.pred" "$T/sst-b.pred" "$D/R&D/sts.pred"
  [ "$status" -eq 0 ]
  [[ "$output" == *"are not on the same examples"* ]]
  [ "$(grep -c $'^sst\t' <<<"$output")" -eq 2 ]
  [ "$(grep -c $'^sts\tpearson\t[0-9.]*\t0.000000\t2\t' <<<"$output")" -eq 1 ]  # same stream twice: std 0
  run "$BIN/evaluate" --over-seeds --report "$T/r" "$D/R&D/sst.pred"
  [ "$status" -ne 0 ]
  [[ "$output" == *"--over-seeds summarises runs"* ]]
}

@test "--help documents --report, --text, --top and --over-seeds with runnable examples" {
  run "$BIN/evaluate" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"--report DIR"* && "$output" == *"--text FILE.tsv"* && "$output" == *"--top N"* ]]
  [[ "$output" == *"bin/evaluate --report runs/demo/report"* ]]
  [[ "$output" == *"bin/evaluate --over-seeds --format tsv"* ]]
}
