#!/usr/bin/env bash
# make demo: the default model on the bundled data, frozen encoder, CPU.
#   - a seeded 10% validation split of each task file (bin/split-tsv);
#   - STS: zero-shot similarity (cosine of the mean-pooled embeddings);
#   - SST, QQP: heads fitted on frozen embeddings of the training part;
#   - one table on the validation parts, with the overall score.
# DEMO_TRAIN caps the training rows used for fitting (default 3000; 0 = all) so the demo
# takes a few minutes on 2 cores. Outputs go to runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
M=${MTBERT_MODEL:-models/all-MiniLM-L6-v2}
R=runs/demo
N=${DEMO_TRAIN:-3000}
SEED=${SEED:-0}
mkdir -p "$R"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

say() { printf '\n== %s\n' "$*" >&2; }

for t in sst qqp sts; do
  bin/split-tsv -q --seed "$SEED" --train-out "$R/$t-train.tsv" --val-out "$R/$t-val.tsv" "data/$t-train.tsv"
  # A random subset of about N training rows (the files are ordered by label: never head).
  rows=$(($(wc -l < "$R/$t-train.tsv") - 1))
  frac=$(awk -v n="$N" -v r="$rows" 'BEGIN { print (n <= 0 || n >= r) ? 1 : n / r }')
  bin/split-tsv -q --seed $((SEED + 1)) --val-fraction "$frac" --train-out /dev/null \
    --val-out "$R/$t-fit.tsv" "$R/$t-train.tsv"
done

say "tokenize: the first records, as JSON lines (bin/dump)"
bin/tokenize -q --model "$M" --text sentence --label label "$R/sst-val.tsv" -o "$R/sst-val.tok"
bin/dump "$R/sst-val.tok" | awk 'NR <= 2' | cut -c1-160 >&2

say "STS: zero-shot similarity on the validation part"
bin/tokenize -q --model "$M" --pair sentence1,sentence2 --label similarity "$R/sts-val.tsv" |
  bin/embed --model "$M" --no-cross | bin/heads --task sts --zero-shot -o "$R/sts-val.pred"

say "SST: fit a softmax head on frozen embeddings ($N training rows), predict the validation part"
bin/tokenize -q --model "$M" --text sentence --label label "$R/sst-fit.tsv" |
  bin/embed --model "$M" -o "$R/sst-fit.emb"
bin/heads fit --task sst -o "$R/sst.head.safetensors" "$R/sst-fit.emb"
bin/embed --model "$M" "$R/sst-val.tok" | bin/heads --head "$R/sst.head.safetensors" -o "$R/sst-val.pred"

say "QQP: fit a logistic head on [u; v; |u-v|; u*v] ($N training rows), predict the validation part"
bin/tokenize -q --model "$M" --pair sentence1,sentence2 --label is_duplicate "$R/qqp-fit.tsv" |
  bin/embed --model "$M" --no-cross -o "$R/qqp-fit.emb"
bin/heads fit --task qqp -o "$R/qqp.head.safetensors" "$R/qqp-fit.emb"
bin/tokenize -q --model "$M" --pair sentence1,sentence2 --label is_duplicate "$R/qqp-val.tsv" |
  bin/embed --model "$M" --no-cross | bin/heads --head "$R/qqp.head.safetensors" -o "$R/qqp-val.pred"

say "Validation scores (frozen all-MiniLM-L6-v2, seed $SEED)"
bin/evaluate "$R/sst-val.pred" "$R/qqp-val.pred" "$R/sts-val.pred" | tee "$R/scores.txt"
