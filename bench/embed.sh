#!/usr/bin/env bash
# embed vs PyTorch: sentences/s and peak resident memory for mean-pooled sentence
# embeddings of the same sentences, same thread count, same machine, same run.
#   usage: bench/embed.sh [N_SENTENCES] [THREADS]      (developer tool: needs pip torch,
#          transformers, sentence-transformers; run after `make all model`)
# Prints a table with ratios; also a spot check that our embeddings equal PyTorch's.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
THREADS=${2:-$(nproc)}
M=${MTBERT_MODEL:-models/all-MiniLM-L6-v2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The first N SST sentences (column 2), as a TSV for tokenize and as plain lines for Python.
awk -F'\t' -v n="$N" 'NR == 1 || NR <= n + 1' data/sst-train.tsv > "$work/s.tsv"
cut -f2 "$work/s.tsv" | tail -n +2 > "$work/s.txt"
export OMP_NUM_THREADS=$THREADS

# name, then the command; prints "name seconds peak_kib". seconds is the encoding time the
# program reports itself (model loading and interpreter start-up excluded on both sides);
# peak_kib is the whole process's peak resident memory.
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$work/out.$name" 2> "$work/err.$name" ||
    { cat "$work/err.$name" >&2; exit 1; }
  read -r _ kib < "$work/time"
  local secs
  secs=$(grep -ho 'seconds=[0-9.]*' "$work/out.$name" | cut -d= -f2 || true)
  [ -n "$secs" ] || secs=$(grep -ho 'done in [0-9.]* s' "$work/err.$name" | awk '{print $3}')
  echo "$name $secs $kib"
}

results=()
for B in 1 32; do
  results+=("$(measure "mtbert_b$B" bash -c "bin/tokenize -q --model $M --text sentence $work/s.tsv |
      bin/embed --model $M --pool mean --batch-size $B --threads $THREADS -o $work/emb$B")")
  for impl in transformers sentence-transformers; do
    results+=("$(measure "${impl}_b$B" python3 bench/embed_torch.py --model "$M" --sentences "$work/s.txt" \
        --impl $impl --batch $B --threads "$THREADS" --out "$work/$impl$B.npy")")
  done
done

# Parity spot check: our batch-32 embeddings against transformers' (same order).
bin/dump "$work/emb32" | python3 -c "
import json, sys, numpy as np
ours = np.array([json.loads(l)['tensors']['emb_a'] for l in sys.stdin], dtype=np.float32)
ref = np.load('$work/transformers32.npy')
print(f'parity: {len(ours)} sentences, max abs diff vs transformers {np.abs(ours - ref).max():.2e}')"

printf '\n%-30s %10s %12s %12s\n' impl seconds sentences/s peak_MiB
for r in "${results[@]}"; do
  read -r name secs kib <<<"$r"
  printf '%-30s %10.2f %12.1f %12.1f\n' "$name" "$secs" "$(echo "$N / $secs" | bc -l)" "$(echo "$kib / 1024" | bc -l)"
done
echo
for B in 1 32; do
  read -r _ ours_s ours_k <<<"$(printf '%s\n' "${results[@]}" | grep "^mtbert_b$B ")"
  for impl in transformers sentence-transformers; do
    read -r _ s k <<<"$(printf '%s\n' "${results[@]}" | grep "^${impl}_b$B ")"
    printf 'batch %-2d vs %-22s speed %.2fx  memory %.2fx\n' "$B" "$impl" \
      "$(echo "$s / $ours_s" | bc -l)" "$(echo "$ours_k / $k" | bc -l)"
  done
done
echo "(N=$N sentences, $THREADS threads; speed = their time / ours; memory = our peak RSS / theirs)"
