#!/usr/bin/env bash
# Evidence for issue 4: frozen heads vs multi-task fine-tuning (summed gradients) vs + PCGrad,
# on the seeded validation split (split-tsv --seed 0), training on the same random N-example
# subset of each task's training part (N=all: the whole training part).
#
#   bench/evidence-finetune.sh                       1000 rows, 1 epoch, CPU
#   N=all EPOCHS=3 DEVICE=cuda PRECISION=bf16 bench/evidence-finetune.sh    on a GPU
#
# Environment: N, EPOCHS (1), LR (5e-5), SEED (0), DEVICE (cpu), PRECISION (fp32), MODES ("sum
# pcgrad"; simcse-pcgrad: supervised SimCSE on the QQP + STS training pairs first, then PCGrad
# from it), FROZEN (1: also score frozen heads), M (models/all-MiniLM-L6-v2), BIN (bin),
# E (runs/evidence: output). Prints each mode's
# dev.tsv and the frozen heads' scores; $E/summary.txt holds them all.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=passive
M=${M:-models/all-MiniLM-L6-v2} E=${E:-runs/evidence} N=${N:-1000} BIN=${BIN:-bin}
EPOCHS=${EPOCHS:-1} LR=${LR:-5e-5} DEVICE=${DEVICE:-cpu} PRECISION=${PRECISION:-fp32} MODES=${MODES:-sum pcgrad}
SEED=${SEED:-0} FROZEN=${FROZEN:-1}
mkdir -p "$E"
for t in sst qqp sts; do
  $BIN/split-tsv -q --seed 0 --train-out "$E/$t-train.tsv" --val-out "$E/$t-val.tsv" data/$t-train.tsv
  rows=$(($(wc -l < "$E/$t-train.tsv") - 1))
  if [ "$N" = all ] || [ "$N" -ge "$rows" ]; then
    cp "$E/$t-train.tsv" "$E/$t-sub.tsv"
  else
    $BIN/split-tsv -q --seed 1 --val-fraction "$(awk -v n="$N" -v r=$rows 'BEGIN{print n/r}')" --train-out /dev/null \
      --val-out "$E/$t-sub.tsv" "$E/$t-train.tsv"
  fi
done
tok() { $BIN/tokenize -q --model "$M" "$@"; }
for s in sub val; do
  tok --text sentence --label label "$E/sst-$s.tsv" -o "$E/sst-$s.tok"
  tok --pair sentence1,sentence2 --label is_duplicate "$E/qqp-$s.tsv" -o "$E/qqp-$s.tok"
  tok --pair sentence1,sentence2 --label similarity "$E/sts-$s.tsv" -o "$E/sts-$s.tok"
done
T=(--task sst="$E/sst-sub.tok" --task qqp="$E/qqp-sub.tok" --task sts="$E/sts-sub.tok")
V=(--dev sst="$E/sst-val.tok" --dev qqp="$E/qqp-val.tok" --dev sts="$E/sts-val.tok")
{ echo "N=$N epochs=$EPOCHS lr=$LR seed=$SEED device=$DEVICE precision=$PRECISION model=$M"; } > "$E/summary.txt"
# frozen encoder heads on the same subsets (first: the quick baseline)
for t in sst qqp sts; do
  [ "$FROZEN" = 1 ] || break
  $BIN/embed -q --model "$M" --device "$DEVICE" --no-cross "$E/$t-sub.tok" -o "$E/$t-sub.emb"
  $BIN/embed -q --model "$M" --device "$DEVICE" --no-cross "$E/$t-val.tok" -o "$E/$t-val.emb"
  $BIN/heads fit -q --task $t -o "$E/$t.head" "$E/$t-sub.emb"
  $BIN/heads -q --head "$E/$t.head" "$E/$t-val.emb" -o "$E/$t-frozen.pred"
done
[ "$FROZEN" = 1 ] && $BIN/heads -q --task sts --zero-shot "$E/sts-val.emb" -o "$E/sts-zero.pred"
[ "$FROZEN" = 1 ] && { echo "== frozen heads"; $BIN/evaluate --ci 0 --format tsv "$E/sst-frozen.pred" "$E/qqp-frozen.pred" "$E/sts-frozen.pred"
  echo "== sts zero-shot"; $BIN/evaluate --ci 0 --format tsv "$E/sts-zero.pred"; } | grep -v confusion_ | tee -a "$E/summary.txt"
for mode in $MODES; do
  rm -rf "${E:?}/$mode"
  flag=; [ "$mode" != sum ] && flag=--pcgrad
  init=()
  t0=$(date +%s)
  if [ "$mode" = simcse-pcgrad ]; then
    rm -rf "$E/simcse"
    $BIN/simcse -q --model "$M" --pairs qqp="$E/qqp-sub.tok" --pairs sts="$E/sts-sub.tok" --seed "$SEED" \
      --device "$DEVICE" --precision "$PRECISION" -o "$E/simcse" || exit 1
    init=(--init "$E/simcse")
  fi
  $BIN/pcgrad-train --model "$M" "${init[@]}" "${T[@]}" "${V[@]}" --epochs "$EPOCHS" --batch-size 16 --lr "$LR" \
    --seed "$SEED" --device "$DEVICE" --precision "$PRECISION" $flag -o "$E/$mode" 2> "$E/$mode.err" ||
    { tail -5 "$E/$mode.err"; exit 1; }
  { echo "== $mode ($(( $(date +%s) - t0 )) s)"; cat "$E/$mode/dev.tsv"; } | tee -a "$E/summary.txt"
done
