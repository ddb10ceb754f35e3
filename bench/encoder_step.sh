#!/usr/bin/env bash
# Encoder training step (forward + backward, dropout 0.1) against PyTorch: same model, batch,
# sequence length and thread count, fp32, same machine and run (developer benchmark: needs
# torch + transformers). Prints one table: best CPU and wall time per step, steps/s (from
# CPU time), peak resident memory of each process, and the ratios (PyTorch / mtbert for
# time, mtbert / PyTorch for memory). CPU time is the fair measure on shared cores; wall
# time is shown too.
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
print-flags: ; @echo $(ALL_CFLAGS) '|' $(LDLIBS)
MK
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086
cc ${flags%%|*} bench/encoder_step.c build/libmtbert.a ${flags#*|} -o "$tmp/encoder_step"
c=$("$tmp/encoder_step" "$MODEL" "$B" "$L" "$REPS")
t=$(python3 bench/encoder_step_torch.py "$MODEL" "$B" "$L" "$THREADS" "$REPS" 2>/dev/null | tail -1)
field() { sed -E "s/.*$1=([0-9.]+).*/\1/" <<<"$2"; }
echo "encoder training step: B=$B L=$L threads=$THREADS, best of $REPS steps"
awk -v cc="$(field cpu_ms "$c")" -v cw="$(field wall_ms "$c")" -v cm="$(field rss_kib "$c")" \
    -v tc="$(field cpu_ms "$t")" -v tw="$(field wall_ms "$t")" -v tm="$(field rss_kib "$t")" 'BEGIN {
  printf "%-8s %12s %12s %10s %12s\n", "", "CPU ms/step", "wall ms/step", "steps/s", "peak RSS MiB"
  printf "%-8s %12.1f %12.1f %10.2f %12.1f\n", "mtbert", cc, cw, 1000 / cc, cm / 1024
  printf "%-8s %12.1f %12.1f %10.2f %12.1f\n", "PyTorch", tc, tw, 1000 / tc, tm / 1024
  printf "%-8s %11.2fx %11.2fx %9.2fx %11.2fx\n", "ratio", tc / cc, tw / cw, tc / cc, cm / tm
  printf "(time ratios: PyTorch / mtbert, above 1 = mtbert faster; memory: mtbert / PyTorch, below 1 = smaller)\n"
}'
