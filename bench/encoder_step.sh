#!/usr/bin/env bash
# Encoder training step (forward + backward, dropout 0.1) against PyTorch: same model, batch,
# sequence length and thread count, fp32, same machine and run. Prints both and the ratio of
# the best CPU time per step (developer benchmark: needs torch + transformers).
#
#   bench/encoder_step.sh                   (B=16 L=30 THREADS=1 REPS=10)
#   THREADS=2 B=32 bench/encoder_step.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-models/all-MiniLM-L6-v2}
B=${B:-16} L=${L:-30} THREADS=${THREADS:-1} REPS=${REPS:-10}
export OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=passive
make --no-print-directory build/libmtbert.a >/dev/null
flags=$(make --no-print-directory -s -f - print-flags <<'MK'
include Makefile
print-flags: ; @echo $(ALL_CFLAGS) '|' $(CUDA_LINK) $(LDLIBS)
MK
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086
cc ${flags%%|*} bench/encoder_step.c build/libmtbert.a ${flags#*|} -o "$tmp/encoder_step"
c=$("$tmp/encoder_step" "$MODEL" "$B" "$L" "$REPS")
t=$(python3 bench/encoder_step_torch.py "$MODEL" "$B" "$L" "$THREADS" "$REPS" 2>/dev/null | tail -1)
echo "$c"
echo "$t"
cb=$(sed -E 's/.*best ([0-9.]+) ms.*/\1/' <<<"$c")
tb=$(sed -E 's/.*best ([0-9.]+) ms.*/\1/' <<<"$t")
awk -v c="$cb" -v t="$tb" 'BEGIN { printf "speed ratio (PyTorch time / mtbert time, best CPU time per step): %.2f\n", t / c }'
