#!/usr/bin/env bash
# Tokenizer speed: bin/tokenize against Hugging Face's fast tokenizer (Rust, one thread) on
# the same sentences (every SST, QQP and STS sentence, repeated REPEAT times), same machine,
# same run. Prints sentences/s of both and the ratio.
#
#   bench/tokenize.sh              (REPEAT=3 RUNS=3 by default)
#   REPEAT=10 bench/tokenize.sh
#
# bin/tokenize is timed end to end (read the TSV, tokenize, write the gzip stream to
# /dev/null); Hugging Face is timed on encode_batch alone (its fastest path, no file
# reading, no output) and also with the file read. Best of RUNS runs each.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-models/all-MiniLM-L6-v2}
REPEAT=${REPEAT:-3}
RUNS=${RUNS:-3}
export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

{
  echo sentence
  for _ in $(seq "$REPEAT"); do
    tail -n +2 data/sst-train.tsv | cut -f2
    tail -n +2 data/qqp-train.tsv | cut -f2,3 | tr '\t' '\n'
    tail -n +2 data/sts-train.tsv | cut -f2,3 | tr '\t' '\n'
  done
} >"$tmp/sentences.tsv"
n=$(($(wc -l <"$tmp/sentences.tsv") - 1))

best=
for _ in $(seq "$RUNS"); do
  t0=$(date +%s.%N)
  bin/tokenize -q --model "$MODEL" --text sentence "$tmp/sentences.tsv" >/dev/null
  t1=$(date +%s.%N)
  best=$(awk -v a="$t0" -v b="$t1" -v best="$best" 'BEGIN { d = b - a; print (best == "" || d < best) ? d : best }')
done
c_rate=$(awk -v n="$n" -v t="$best" 'BEGIN { printf "%.0f", n / t }')
tokens=$(bin/tokenize -q --model "$MODEL" --text sentence "$tmp/sentences.tsv" | bin/dump -q |
  awk '{ s = $0; sub(/.*"ids_a":\[/, "", s); total += split(s, a, ",") } END { print total }')

hf=$(python3 bench/tokenize_hf.py "$MODEL" "$tmp/sentences.tsv" "$RUNS")
read -r _ hf_n hf_tokens hf_t hf_rate < <(grep '^hf-fast ' <<<"$hf")
read -r _ _ _ hf_e2e_t hf_e2e_rate < <(grep '^hf-fast-e2e ' <<<"$hf")
read -r _ _ _ hf_b_t hf_b_rate < <(grep '^hf-batch ' <<<"$hf")
[ "$hf_n" -eq "$n" ] || { echo "sentence counts differ: $n vs $hf_n" >&2; exit 1; }
[ "$hf_tokens" -eq "$tokens" ] || { echo "token counts differ: $tokens vs $hf_tokens" >&2; exit 1; }

printf '%d sentences (%d tokens), best of %d runs, %s\n' "$n" "$tokens" "$RUNS" "$(nproc --all) cpus (shared)"
printf '  %-44s %8.3f s %10d sentences/s\n' "bin/tokenize (end to end, gzip stream out)" "$best" "$c_rate"
printf '  %-44s %8.3f s %10d sentences/s\n' "HF fast, 1 thread (encode_batch_fast only)" "$hf_t" "$hf_rate"
printf '  %-44s %8.3f s %10d sentences/s\n' "HF fast, 1 thread (read + encode_batch_fast)" "$hf_e2e_t" "$hf_e2e_rate"
printf '  %-44s %8.3f s %10d sentences/s\n' "HF fast, 1 thread (encode_batch, offsets)" "$hf_b_t" "$hf_b_rate"
awk -v c="$c_rate" -v h="$hf_rate" 'BEGIN { printf "ratio bin/tokenize / HF fast (encode_batch_fast): %.2fx (goal >= 1.5x)\n", c / h }'
