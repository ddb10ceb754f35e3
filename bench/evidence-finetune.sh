#!/usr/bin/env bash
# Evidence for issue 4: frozen heads vs multi-task fine-tuning vs + PCGrad, on the seeded
# validation split, training on a random 1000-example subset per task (same for all three).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=passive
M=models/all-MiniLM-L6-v2; E=runs/evidence; N=${N:-1000}
mkdir -p $E
for t in sst qqp sts; do
  bin/split-tsv -q --seed 0 --train-out $E/$t-train.tsv --val-out $E/$t-val.tsv data/$t-train.tsv
  rows=$(($(wc -l < $E/$t-train.tsv) - 1))
  bin/split-tsv -q --seed 1 --val-fraction $(awk -v n=$N -v r=$rows 'BEGIN{print n/r}') --train-out /dev/null --val-out $E/$t-sub.tsv $E/$t-train.tsv
done
tok() { bin/tokenize -q --model $M "$@"; }
for s in sub val; do
  tok --text sentence --label label $E/sst-$s.tsv -o $E/sst-$s.tok
  tok --pair sentence1,sentence2 --label is_duplicate $E/qqp-$s.tsv -o $E/qqp-$s.tok
  tok --pair sentence1,sentence2 --label similarity $E/sts-$s.tsv -o $E/sts-$s.tok
done
T="--task sst=$E/sst-sub.tok --task qqp=$E/qqp-sub.tok --task sts=$E/sts-sub.tok"
V="--dev sst=$E/sst-val.tok --dev qqp=$E/qqp-val.tok --dev sts=$E/sts-val.tok"
for mode in sum pcgrad; do
  rm -rf $E/$mode
  flag=; [ $mode = pcgrad ] && flag=--pcgrad
  /usr/bin/time -f "%e s wall, %M KiB peak" bin/pcgrad-train --model $M $T $V --epochs 1 --batch-size 16 --lr 5e-5 --seed 0 $flag -o $E/$mode 2> $E/$mode.err
  tail -3 $E/$mode.err
done
# frozen encoder heads on the same subsets
for t in sst qqp sts; do
  bin/embed -q --model $M --no-cross $E/$t-sub.tok -o $E/$t-sub.emb
  bin/embed -q --model $M --no-cross $E/$t-val.tok -o $E/$t-val.emb
  bin/heads fit -q --task $t -o $E/$t.head $E/$t-sub.emb
  bin/heads -q --head $E/$t.head $E/$t-val.emb -o $E/$t-frozen.pred
done
bin/heads -q --task sts --zero-shot $E/sts-val.emb -o $E/sts-zero.pred
bin/evaluate --ci 0 --format tsv $E/sst-frozen.pred $E/qqp-frozen.pred $E/sts-frozen.pred > $E/frozen.tsv
bin/evaluate --ci 0 --format tsv $E/sts-zero.pred > $E/zero.tsv
echo done
