#!/usr/bin/env bash
# tests/gpu/check.sh — the GPU check of issue 6, for a machine with an NVIDIA H100 (CUDA 13,
# PyTorch + transformers + sentence-transformers, no network, no BLAS package). Not part of
# `make test`: CI has no GPU.
#
#   tests/gpu/check.sh                 the default parts, one summary table at the end
#   PARTS="build ops forward" tests/gpu/check.sh      some parts only
#   PARTS="build device ops forward train trainer heads speed embed finetune" tests/gpu/check.sh
#                                      the defaults plus fine-tuning (opt-in)
#   tests/gpu/check.sh --sanitize      also op parity under compute-sanitizer memcheck, and the
#                                      fused attention's rows under racecheck and synccheck
#   MTBERT_ATTENTION=fused PARTS="build ops forward trainer" tests/gpu/check.sh
#                                      the fused attention (kernels/flash.cu) in the parts that run
#                                      bf16 / fp16 (forward's bf16 / fp16 rows, the fp16 trainer run);
#                                      ops forces each path per row and speed times both whatever it says
#
# Parts, in order: build (nvcc sm_90, NO_BLAS=1: the CPU reference uses the plain-C GEMM),
# device (selection), ops (every op CUDA vs CPU + op bench), forward (the whole encoder on
# real sentences, CUDA fp32 / bf16 / fp16 vs CPU), train (training steps CUDA vs CPU), trainer
# (pcgrad-train --device cuda vs cpu; an fp16 run with dynamic loss scaling), heads (heads fit
# and predict, --head and --model, --device cuda vs cpu), speed (encoder forward and training step vs PyTorch
# bf16 autocast at MiniLM and BERT-base shapes, MFU; each step's host enqueue time and what CUDA
# graphs could save; MTBERT_PROFILE's op tables of one bf16 step), embed (embed end to end vs
# sentence-transformers on the GPU); opt-in, not in the default PARTS: finetune (issue 4's
# evidence: frozen heads, PCGrad and summed fine-tuning on the whole training split,
# bench/evidence-finetune.sh, on the GPU; about 4 minutes on an H200) and ablation.
#
# Time: the default parts take about 8 minutes on an H100 including a fresh build (estimated
# from the H200 runs: build ~40 s, ops ~60 s, forward ~60 s, train ~30 s, trainer ~75 s, heads
# ~45 s, speed ~130 s plus ~20 s for its slowed-host steps and op profiles and ~20 s for the
# fused-attention bf16 runs (estimates: not yet run on a GPU; within the part's 300 s), embed
# ~35 s), inside the 10-minute budget of one device call; finetune
# alone needs 3.5-4.5 minutes (PCGrad 104 s + summed 44 s of training, plus tokenizing, the
# frozen heads and evaluation), which is why it is opt-in.
#
# Needs, besides the GPU: a C compiler and nvcc; zlib and utf8proc development files (or the
# Debian packages in .carry/debs, unpacked under /tmp when the headers are missing); the
# model: models/all-MiniLM-L6-v2, else MODEL=DIR (a bf16 copy works: the loader converts).
# Logs go to $OUT (the device tool's folder) or build-gpu/logs. A part that fails says FAIL;
# nothing is reported as passed that did not run. Budget: the default parts under 10 minutes
# on an H100.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
SANITIZE=0
[ "${1:-}" = "--sanitize" ] && SANITIZE=1
DEFAULT_PARTS="build device ops forward train trainer heads speed embed"  # finetune, ablation: opt-in
PARTS=${PARTS:-$DEFAULT_PARTS}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
BUILD=${BUILD:-build-gpu}
B=${BIN:-$BUILD/bin}
# Harness self-test without a GPU (the CPU table behind device copies stands in for the GPU):
#   GPUDEV=cpu-staged PRECISIONS=fp32 BUILD=build BIN=bin PARTS="forward train trainer heads" tests/gpu/check.sh
GPUDEV=${GPUDEV:-cuda}
export MTBERT_CHECK_DEVICE=$GPUDEV
unset MTBERT_PRECISION MTBERT_TF32  # the parity parts are fp32; speed and finetune name their precision
PRECISIONS=${PRECISIONS:-fp32 bf16 fp16}
SPEED_MODES=${SPEED_MODES:-forward,train}  # what train_check speed times
LOGS=${OUT:-$BUILD/logs}
WORK=$(mktemp -d)
mkdir -p "$LOGS"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$JOBS} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
declare -a ROWS
FAILED=0
want() { [[ " $PARTS " == *" $1 "* ]]; }

row() {  # row STEP STATUS SECONDS NOTE
  ROWS+=("$(printf '%-28s %-6s %7s  %s' "$1" "$2" "$3" "$4")")
  [ "$2" = FAIL ] && FAILED=1
  return 0
}

# step NAME TIMEOUT_S LOGFILE CMD...: runs CMD under a timeout, log to LOGFILE and the screen.
step() {
  local name=$1 limit=$2 log=$3 t0 rc secs
  shift 3
  echo "=== $name"
  t0=$(date +%s%N)
  export B BUILD WORK MODEL BASE GPUDEV PRECISIONS LOGS SPEED_MODES
  for f in $(declare -F | awk '{print $3}'); do export -f "$f"; done
  timeout "$limit" bash -c '"$@"' _ "$@" 2>&1 | tee "$LOGS/$log"  # bash -c: the parts are functions
  rc=${PIPESTATUS[0]}
  secs=$(( ($(date +%s%N) - t0) / 100000000 ))  # tenths of a second, no bc needed
  secs="$((secs / 10)).$((secs % 10))"
  if [ "$rc" -eq 0 ]; then row "$name" PASS "$secs" "log: $log"
  elif [ "$rc" -eq 124 ]; then row "$name" FAIL "$secs" "timed out after ${limit}s"
  else row "$name" FAIL "$secs" "exit status $rc, log: $log"; fi
  return "$rc"
}

summary() {
  echo
  echo "=== summary: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true), $("$NVCC" --version | tail -1)"
  printf '%-28s %-6s %7s  %s\n' step result seconds note
  printf '%s\n' "${ROWS[@]}"
  grep -HE '^op parity: ' "$LOGS"/op_parity*.txt 2>/dev/null
  grep -hE ' FAIL$' "$LOGS"/op_parity*.txt 2>/dev/null | head -20
  [ -s "$LOGS/ratios.txt" ] && { echo; cat "$LOGS/ratios.txt"; }
  rm -rf "$WORK"
}
trap summary EXIT

echo "=== machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  "$NVCC" --version | tail -2; cc --version | head -1; nproc
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>&1
} | tee "$LOGS/machine.txt"

# Libraries the image may lack: unpack the carried Debian packages under /tmp (never over /).
if ! echo '#include <zlib.h>
#include <utf8proc.h>
int main(void){return 0;}' | cc -x c - -o /dev/null -lz -lutf8proc 2>/dev/null || ! command -v make >/dev/null; then
  if ls .carry/debs/*.deb >/dev/null 2>&1; then
    DEPS=/tmp/mtbert-deps
    for f in .carry/debs/*.deb; do dpkg-deb -x "$f" "$DEPS"; done
    LIBDIR=$DEPS/usr/lib/x86_64-linux-gnu
    ln -sf "$DEPS"/lib/x86_64-linux-gnu/libz.so.1 "$LIBDIR/libz.so"  # the package's link is absolute
    export CPATH=$DEPS/usr/include${CPATH:+:$CPATH} LIBRARY_PATH=$LIBDIR${LIBRARY_PATH:+:$LIBRARY_PATH}
    export LD_LIBRARY_PATH=$LIBDIR:$DEPS/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export PATH=$PATH:$DEPS/usr/bin
    echo "libraries from .carry/debs unpacked under $DEPS"
  else
    echo "zlib / utf8proc development files or make missing, and no .carry/debs" >&2
  fi
fi

MODEL=${MODEL:-}
for d in models/all-MiniLM-L6-v2 .carry/minilm-bf16; do
  [ -z "$MODEL" ] && [ -f "$d/model.safetensors" ] && MODEL=$d
done
BASE=/tmp/bert-base-random  # BERT-base shapes (random weights), written by torch_bench.py

# ---- build --------------------------------------------------------------------------------
if want build; then
  step "build (nvcc sm_90)" 420 build.txt make --no-print-directory -j"$JOBS" NO_BLAS=1 NVCC="$NVCC" \
    BUILD=$BUILD BIN=$B $B/tokenize $B/embed $B/dump $B/pcgrad-train $B/split-tsv $B/heads $B/evaluate \
    $B/simcse gpu-check-build || exit 1
fi

# ---- device selection and ops -------------------------------------------------------------
want device && step "device selection" 60 test_device.txt env MT_EXPECT_GPU=1 $BUILD/gpu/test_device

# The memory plan refuses a token budget the GPU cannot hold, up front: non-zero, the needed total
# in the message, no output written, within seconds (nothing allocated or trained first). Off
# the GPU (GPUDEV=cpu-staged) a 64G --max-memory stands in for the device's free memory.
memory_refusal() {
  local M=$MODEL cap=() out
  [ "$GPUDEV" = cuda ] || cap=(--max-memory 64G)
  head -21 data/sst-train.tsv | $B/tokenize -q --model "$M" --text sentence --label label -o "$WORK/mem.tok" || return 1
  for prog in embed pcgrad-train; do
    rm -rf "$WORK/mem.out"
    if [ $prog = embed ]; then
      out=$($B/embed --model "$M" --device "$GPUDEV" --batch-tokens 16777216 --batch-size 65536 "${cap[@]}" \
        "$WORK/mem.tok" -o "$WORK/mem.out" 2>&1) && { echo "$prog: accepted a 16M-token budget"; return 1; }
    else
      out=$($B/pcgrad-train --model "$M" --device "$GPUDEV" --task sst="$WORK/mem.tok" --batch-tokens 16777216 \
        --batch-size 4096 "${cap[@]}" -o "$WORK/mem.out" 2>&1) && { echo "$prog: accepted a 16M-token budget"; return 1; }
    fi
    echo "$out"
    [[ "$out" == *"the run needs "*" bytes) of $GPUDEV memory but "*" is available"* ]] || { echo "$prog: no needed total"; return 1; }
    [ ! -e "$WORK/mem.out" ] || { echo "$prog: left $WORK/mem.out behind"; return 1; }
    echo "$prog: refused up front: PASS"
  done
}
want device && step "memory plan: too large refused" 60 memory_refusal.txt memory_refusal
want ops && step "op parity + op bench" 240 op_parity.txt $BUILD/gpu/op_parity
if want ops && [ "$SANITIZE" = 1 ]; then
  if command -v compute-sanitizer >/dev/null; then
    step "op parity, memcheck" 300 memcheck.txt \
      compute-sanitizer --tool memcheck --error-exitcode 1 $BUILD/gpu/op_parity --no-bench
    for tool in racecheck synccheck; do  # flash.cu's warps share shared-memory tiles
      step "fused attention, $tool" 300 $tool.txt \
        compute-sanitizer --tool $tool --error-exitcode 1 $BUILD/gpu/op_parity --fused-only
    done
  else
    row "op parity, memcheck" SKIP - "compute-sanitizer not on PATH"
  fi
fi

# ---- the whole forward on real sentences ----------------------------------------------------
# 2,000 SST sentences (pooled mean) + 300 STS pairs (pooled, with the joint sequence) + 300
# sentences' token states, CPU (fp32) vs CUDA fp32 (max |diff| <= 1e-3), bf16 (cosine of
# every vector >= 0.999) and fp16 (>= 0.9999: 3 more significand bits than bf16, so about 64x
# less 1 - cosine; bf16 measured 0.99997).
compare_streams() {  # compare_streams REF GOT MODE(fp32|bf16|fp16)
  python3 - "$@" $B/dump <<'EOF'
import json, subprocess, sys, numpy as np
ref_path, got_path, mode, dump = sys.argv[1:5]
def load(p):
    out = subprocess.run([dump, "-q", p], capture_output=True, text=True, check=True).stdout
    recs = [json.loads(l) for l in out.splitlines()]
    return {(r["id"], k): np.asarray(v, dtype=np.float64).reshape(-1, np.asarray(v).shape[-1]) for r in recs for k, v in r["tensors"].items()}
ref, got = load(ref_path), load(got_path)
assert ref.keys() == got.keys() and ref, "the streams hold different records"
finite = all(np.isfinite(ref[k]).all() and np.isfinite(got[k]).all() for k in ref)  # max/min would skip NaN
maxdiff = float(np.max([np.abs(ref[k] - got[k]).max() for k in ref]))
cos = float(np.min([((a / np.linalg.norm(a, axis=-1, keepdims=True)) * (b / np.linalg.norm(b, axis=-1, keepdims=True))).sum(-1).min()
                    for a, b in ((ref[k], got[k]) for k in ref)]))
bound = {"bf16": 0.999, "fp16": 0.9999}.get(mode)
ok = finite and (maxdiff <= 1e-3 if mode == "fp32" else cos >= bound)  # a NaN comparison is False too
print(f"{got_path}: {len(ref)} tensors, max |diff| {maxdiff:.3e}, min cosine {cos:.7f} ({mode}: "
      f"{'max |diff| <= 1e-3' if mode == 'fp32' else f'cosine >= {bound}'}) {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
EOF
}
forward_parity() {
  local M=$MODEL
  head -2001 data/sst-train.tsv > "$WORK/sst.tsv"
  head -301 data/sts-train.tsv > "$WORK/sts.tsv"
  $B/tokenize -q --model "$M" --text sentence "$WORK/sst.tsv" -o "$WORK/sst.tok" &&
  $B/tokenize -q --model "$M" --pair sentence1,sentence2 "$WORK/sts.tsv" -o "$WORK/sts.tok" &&
  head -301 "$WORK/sst.tsv" | $B/tokenize -q --model "$M" --text sentence -o "$WORK/tok.tok" || return 1
  local rc=0
  for dev in cpu:fp32 $(for p in $PRECISIONS; do echo "gpu:$p"; done); do
    local d=${dev%%:*} p=${dev#*:}
    [ "$d" = gpu ] && d=$GPUDEV
    for s in sst sts; do
      $B/embed -q --model "$M" --device "$d" --precision "$p" "$WORK/$s.tok" -o "$WORK/$s.$d.$p.emb" || return 1
    done
    $B/embed -q --model "$M" --device "$d" --precision "$p" --tokens "$WORK/tok.tok" -o "$WORK/tok.$d.$p.emb" || return 1
  done
  for p in $PRECISIONS; do
    for s in sst sts tok; do compare_streams "$WORK/$s.cpu.fp32.emb" "$WORK/$s.$GPUDEV.$p.emb" $p || rc=1; done
  done
  return $rc
}
want forward && step "full forward parity" 240 forward_parity.txt forward_parity

# ---- training ---------------------------------------------------------------------------------
want train && step "training steps CUDA vs CPU" 180 train_parity.txt $BUILD/gpu/train_check parity "$MODEL" 3

trainer_losses() {  # trainer_losses REF_LOG DEV_LOG WHAT: pcgrad-train's logged losses must agree
  python3 - "$1" "$2" "$3" <<'EOF'
import csv, sys
rows = [list(csv.DictReader(open(p), delimiter="\t")) for p in sys.argv[1:3]]
worst = 0.0
for a, b in zip(*rows):
    for k in a:
        if "loss" in k and (a[k] in ("", "NA")) != (b[k] in ("", "NA")):
            worst = float("inf")  # one side logged a loss the other did not
        elif "loss" in k and a[k] not in ("", "NA"):
            x, y = float(a[k]), float(b[k])
            worst = max(worst, abs(x - y) / max(abs(x), 1e-12))
            print(f"step {a.get('step', '?')} {k}: cpu {x:.7g} cuda {y:.7g}")
ok = len(rows[0]) == len(rows[1]) > 0 and worst <= 1e-4
print(f"pcgrad-train {sys.argv[3]} cuda vs cpu: {len(rows[0])} steps, worst relative loss difference {worst:.2e} (<= 1e-4) {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
EOF
}

tokenize_args() {  # tokenize's columns for a task's TSV
  case $1 in
    sst) echo "--text sentence --label label" ;;
    qqp) echo "--pair sentence1,sentence2 --label is_duplicate" ;;
    sts) echo "--pair sentence1,sentence2 --label similarity" ;;
  esac
}

trainer_parity() {  # a few pcgrad-train steps on each device: the logged losses must agree
  local M=$MODEL args
  for t in sst qqp sts; do
    read -ra args <<< "$(tokenize_args $t)"
    head -201 data/$t-train.tsv | $B/tokenize -q --model "$M" "${args[@]}" -o "$WORK/$t.tr.tok" || return 1
  done
  # mean pooling, and the SBERT + CNN-BiLSTM model (the sentence model on the device too)
  for sm in mean sbert-cnn-bilstm; do
    for d in ref:cpu dev:$GPUDEV; do
      $B/pcgrad-train -q --model "$M" --device "${d#*:}" --precision fp32 --pcgrad --task sst="$WORK/sst.tr.tok" \
        --task qqp="$WORK/qqp.tr.tok" --task sts="$WORK/sts.tr.tok" --max-steps 4 --lr 5e-5 --seed 3 \
        --sentence-model $sm --cnn-filters 64 --lstm-hidden 64 -o "$WORK/run.$sm.${d%%:*}" || return 1
    done
    trainer_losses "$WORK/run.$sm.ref/train.log" "$WORK/run.$sm.dev/train.log" "$sm" || return 1
  done
  # embed --model CKPT with that sentence model: the embeddings within 1e-4 of the CPU's
  for d in ref:cpu dev:$GPUDEV; do
    $B/embed --model "$WORK/run.sbert-cnn-bilstm.ref/last" --pool sbert-cnn-bilstm --device "${d#*:}" --precision fp32 \
      "$WORK/sts.tr.tok" 2>/dev/null | $B/dump >"$WORK/emb.${d%%:*}.txt" || return 1
  done
  python3 - "$WORK/emb.ref.txt" "$WORK/emb.dev.txt" <<'EOF' || return 1
import re, sys
num = re.compile(r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|-?nan|-?inf")
a, b = ([num.findall(l) for l in open(p)] for p in sys.argv[1:3])
worst, same_shape = 0.0, len(a) == len(b) > 0 and all(len(x) == len(y) for x, y in zip(a, b))
for x, y in zip(a, b):
    for u, v in zip(x, y):
        d = abs(float(u) - float(v))
        if not d <= worst: worst = d  # a NaN sticks, and fails below
ok = same_shape and worst <= 1e-4
print(f"embed --pool sbert-cnn-bilstm cuda vs cpu: {len(a)} lines, max |diff| {worst:.2e} (<= 1e-4) {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
EOF
  for d in ref:cpu dev:$GPUDEV; do  # simcse: 3 steps on the QQP pairs
    $B/simcse -q --model "$M" --device "${d#*:}" --precision fp32 --pairs qqp="$WORK/qqp.tr.tok" --batch-size 16 --max-steps 3 \
      -o "$WORK/simcse.${d%%:*}" || return 1
  done
  python3 - "$WORK/simcse.ref/simcse.log" "$WORK/simcse.dev/simcse.log" <<'EOF'
import csv, sys
rows = [list(csv.DictReader(open(p), delimiter="\t")) for p in sys.argv[1:3]]
# simcse.log keeps 6 decimals: 2e-6 absolute on top of 1e-4 relative
worst = max(abs(float(a["loss"]) - float(b["loss"])) / (abs(float(a["loss"])) + 0.02) for a, b in zip(*rows))
for a, b in zip(*rows): print(f"simcse step {a['step']}: loss cpu {float(a['loss']):.7g} cuda {float(b['loss']):.7g}")
ok = len(rows[0]) == len(rows[1]) == 3 and worst <= 1e-4
print(f"simcse cuda vs cpu: worst loss difference / (|loss| + 0.02) {worst:.2e} (<= 1e-4) {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
EOF
  [ $? -eq 0 ] || return 1
  trainer_fp16
}

# fp16 with dynamic loss scaling (the default with --precision fp16): 8 PCGrad steps must end
# with finite losses, at least one applied step, and the scale on stderr. Where PRECISIONS has
# no fp16 (the self-test) the same run at fp32 with --loss-scale dynamic checks the harness.
trainer_fp16() {
  local p=fp32
  [[ " $PRECISIONS " == *" fp16 "* ]] && p=fp16
  $B/pcgrad-train --model "$MODEL" --device "$GPUDEV" --precision $p --loss-scale dynamic --pcgrad --task sst="$WORK/sst.tr.tok" \
    --task qqp="$WORK/qqp.tr.tok" --task sts="$WORK/sts.tr.tok" --max-steps 8 --lr 5e-5 --seed 3 -o "$WORK/run.fp16" \
    2> "$WORK/fp16.err" || { cat "$WORK/fp16.err"; return 1; }
  grep -E "precision|loss scal|skipped" "$WORK/fp16.err"
  python3 - "$WORK/run.fp16/train.log" "$WORK/fp16.err" "$p" <<'EOF'
import csv, math, re, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
m = re.search(r"loss scaling: dynamic, scale (\S+) after step (\d+); (\d+) steps skipped", open(sys.argv[2]).read())
losses = [float(r[k]) for r in rows for k in r if k.startswith("loss_") and r[k] not in ("", "NA")]
finite = all(math.isfinite(x) for x in losses)
for r in rows: print(f"{sys.argv[3]} step {r['step']}: losses {r['loss_sst']} {r['loss_qqp']} {r['loss_sts']} grad_norm {r['grad_norm']}")
ok = len(rows) == 8 and len(losses) == 24 and finite and m is not None and int(m.group(3)) < 8
print(f"pcgrad-train {sys.argv[3]}, dynamic loss scaling: {len(rows)} steps, losses finite: {finite}, "
      f"final scale {m.group(1) if m else '?'}, {m.group(3) if m else '?'} steps skipped (< 8) {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
EOF
}
want trainer && step "pcgrad-train, simcse; fp16" 240 trainer_parity.txt trainer_parity

# ---- heads: fit and predict on the GPU vs the CPU --------------------------------------------
# HEADS_N labelled rows per task embedded once (on $GPUDEV, fp32), then on each device: heads fit
# (exactly 30 epochs on all rows: --holdout 0, so no near-tie of two epochs' held-out losses can
# pick another epoch; the held-out products are the predictions' kind) and predict. Stated
# tolerances: the CPU-fitted head
# predicting on $GPUDEV vs on the CPU: outputs (probs / prob / score) max |diff| <= 1e-4, a
# pred may differ only at a tie (sst top-2 or qqp |p - 0.5| within 1e-4); the head fitted on
# $GPUDEV vs the CPU's: relative L2 difference of W and of b <= 1e-3 (30 epochs of Adam from
# fp32 products that differ by rounding), standardisation identical (host). When the trainer
# part left its mean-pooling checkpoint ($WORK/run.mean.ref), heads --model on sts pairs is compared
# the same way.
compare_preds() {  # compare_preds REF GOT: one head's predictions on two devices
  python3 - "$@" $B/dump <<'EOF'
import json, subprocess, sys, numpy as np
ref_path, got_path, dump = sys.argv[1:4]
def load(p):
    out = subprocess.run([dump, "-q", p], capture_output=True, text=True, check=True).stdout
    return [json.loads(l) for l in out.splitlines()]
ref, got = load(ref_path), load(got_path)
assert len(ref) == len(got) > 0 and all(a["id"] == b["id"] for a, b in zip(ref, got)), "different records"
worst, flips, bad = 0.0, 0, 0
for a, b in zip(ref, got):
    name = next(k for k in a["tensors"] if k != "pred")
    x, y = np.asarray(a["tensors"][name], float), np.asarray(b["tensors"][name], float)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        bad += 1
        continue
    worst = max(worst, float(np.abs(x - y).max()))
    if a["tensors"]["pred"] != b["tensors"]["pred"] and name != "score":
        flips += 1
        tie = (np.sort(x)[-1] - np.sort(x)[-2] <= 1e-4) if name == "probs" else abs(x[0] - 0.5) <= 1e-4
        bad += not tie
ok = bad == 0 and worst <= 1e-4
print(f"{got_path}: {len(ref)} records, outputs max |diff| {worst:.3e} (<= 1e-4), {flips} pred flips at ties, "
      f"{bad} bad {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
EOF
}
compare_heads() {  # compare_heads REF GOT: two fitted head files
  python3 - "$@" <<'EOF'
import json, struct, sys, numpy as np
def load(p):
    raw = open(p, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    return {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], "<f4").astype(float)
            for k, v in hdr.items() if k != "__metadata__"}
a, b = load(sys.argv[1]), load(sys.argv[2])
rel = {k: float(np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(a[k]), 1e-30)) for k in ("W", "b")}
same = all(np.array_equal(a[k], b[k]) for k in ("mean", "scale"))  # computed on the host: identical
ok = same and all(np.isfinite(v) and v <= 1e-3 for v in rel.values())
print(f"{sys.argv[2]}: W rel diff {rel['W']:.3e}, b rel diff {rel['b']:.3e} (<= 1e-3), standardisation "
      f"{'identical' if same else 'DIFFERS'} {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
EOF
}
heads_parity() {
  local M=$MODEL n=${HEADS_N:-1000} rc=0 t d args
  for t in sst qqp sts; do
    read -ra args <<< "$(tokenize_args $t)"
    head -$((n + 1)) data/$t-train.tsv | $B/tokenize -q --model "$M" "${args[@]}" -o "$WORK/$t.h.tok" &&
      $B/embed -q --model "$M" --device "$GPUDEV" --precision fp32 "$WORK/$t.h.tok" -o "$WORK/$t.h.emb" || return 1
    for d in cpu $GPUDEV; do
      $B/heads fit --device $d --task $t --holdout 0 --epochs 30 -o "$WORK/$t.$d.head" "$WORK/$t.h.emb" \
        > "$WORK/fit.log" 2>&1 || { cat "$WORK/fit.log"; return 1; }
      grep -E "fit |train:" "$WORK/fit.log" | sed "s/^/$d: /"
      $B/heads -q --device $d --head "$WORK/$t.cpu.head" -o "$WORK/$t.$d.pred" "$WORK/$t.h.emb" || return 1
    done
    compare_heads "$WORK/$t.cpu.head" "$WORK/$t.$GPUDEV.head" || rc=1
    compare_preds "$WORK/$t.cpu.pred" "$WORK/$t.$GPUDEV.pred" || rc=1
  done
  if [ -f "$WORK/run.mean.ref/last/heads.safetensors" ]; then  # the trainer part's mean-pooling checkpoint
    local C=$WORK/run.mean.ref/last
    $B/embed -q --model "$C" --device "$GPUDEV" --precision fp32 "$WORK/sts.h.tok" -o "$WORK/sts.ck.emb" || return 1
    for d in cpu $GPUDEV; do
      $B/heads -q --device $d --model "$C" --task sts -o "$WORK/sts.ck.$d.pred" "$WORK/sts.ck.emb" || return 1
    done
    compare_preds "$WORK/sts.ck.cpu.pred" "$WORK/sts.ck.$GPUDEV.pred" || rc=1
  else
    echo "heads --model: no checkpoint from the trainer part (PARTS without trainer): not compared"
  fi
  return $rc
}
want heads && step "heads fit + predict: cuda vs cpu" 240 heads_parity.txt heads_parity

# ---- speed against PyTorch on the same GPU ------------------------------------------------------
speed() {
  [ -f $BASE/model.safetensors ] || python3 tests/gpu/torch_bench.py make-base --out $BASE --vocab "$MODEL/vocab.txt" || return 1
  local rc=0
  for spec in "$MODEL 128 128" "$BASE 32 128" "$BASE 64 512"; do
    read -r M Bt L <<<"$spec"
    for p in bf16 fp16 tf32; do
      MTBERT_ATTENTION=batched $BUILD/gpu/train_check speed "$M" "$Bt" "$L" 20 $p "$SPEED_MODES" || rc=1
    done
    MTBERT_ATTENTION=fused $BUILD/gpu/train_check speed "$M" "$Bt" "$L" 20 bf16 "$SPEED_MODES" || rc=1  # kernels/flash.cu
    python3 tests/gpu/torch_bench.py encoder --model "$M" --batch "$Bt" --len "$L" --steps 20 || rc=1
  done
  # Where a bf16 training step's time goes, op by op: the table of one step after the warm-ups
  # (MTBERT_PROFILE=ops synchronizes around every op, so that step runs slower than above)
  for spec in "$MODEL 128 128" "$BASE 64 512"; do
    read -r M Bt L <<<"$spec"
    MTBERT_PROFILE=ops $BUILD/gpu/train_check speed "$M" "$Bt" "$L" 1 bf16 train || rc=1
  done
  # The real trainer's host side (its waits: uploads, loss readbacks, PCGrad's grams), over a
  # whole 8-step run, where the trainer part left its tokens
  if [ -s "$WORK/sst.tr.tok" ]; then
    MTBERT_PROFILE=host $B/pcgrad-train -q --model "$MODEL" --device "$GPUDEV" --precision bf16 --pcgrad \
      --task sst="$WORK/sst.tr.tok" --task qqp="$WORK/qqp.tr.tok" --task sts="$WORK/sts.tr.tok" --max-steps 8 \
      --seed 3 -o "$WORK/run.profile" || rc=1
  fi
  return $rc
}
want speed && step "encoder speed vs PyTorch" 300 speed.txt speed

embed_speed() {  # every sentence of SST, QQP and STS (about 50,000), mean pooling
  { echo sentence
    tail -n +2 data/sst-train.tsv | cut -f2
    tail -n +2 data/qqp-train.tsv | cut -f2,3 | tr '\t' '\n'
    tail -n +2 data/sts-train.tsv | cut -f2,3 | tr '\t' '\n'
  } | tr -d '"' > "$WORK/all.tsv"
  tail -n +2 "$WORK/all.tsv" > "$WORK/all.txt"
  $B/tokenize -q --model "$MODEL" --text sentence "$WORK/all.tsv" -o "$WORK/all.tok" || return 1
  $B/embed --model "$MODEL" --device cuda --precision bf16 --batch-size 256 --batch-tokens 32768 \
    "$WORK/all.tok" -o "$WORK/all.emb" 2>&1 | tail -1
  [ "${PIPESTATUS[0]}" -eq 0 ] || return 1  # the parts run under bash -c: no pipefail there
  python3 tests/gpu/torch_bench.py embed --model "$MODEL" --sentences "$WORK/all.txt" --batch 256
}
want embed && step "embed vs sentence-transformers" 180 embed_speed.txt embed_speed

finetune() {
  N=all EPOCHS=${FT_EPOCHS:-3} DEVICE=$GPUDEV PRECISION=${FT_PRECISION:-bf16} MODES="pcgrad sum" M=$MODEL BIN=$B \
    E=$WORK/evidence bash bench/evidence-finetune.sh
}
want finetune && step "fine-tuning evidence" 280 finetune.txt finetune

# Not in the default parts: SimCSE pre-training before PCGrad, and a second seed (2 epochs each)
ablation() {
  local common=(N=all EPOCHS=2 DEVICE=$GPUDEV PRECISION=bf16 FROZEN=0 M=$MODEL BIN=$B)
  env "${common[@]}" SEED=0 MODES=simcse-pcgrad E="$WORK/simcse" bash bench/evidence-finetune.sh &&
  env "${common[@]}" SEED=1 MODES="pcgrad sum" E="$WORK/seed1" bash bench/evidence-finetune.sh
}
want ablation && step "ablation: simcse, seed 1" 280 ablation.txt ablation

# ---- ratios ----------------------------------------------------------------------------------------
if [ -s "$LOGS/speed.txt" ] || [ -s "$LOGS/embed_speed.txt" ]; then
  python3 - "$LOGS" > "$LOGS/ratios.txt" <<'EOF'
import re, sys
logs = sys.argv[1]
def kv(line): return dict(re.findall(r"(\w+)=(\S+)", line))
try: lines = open(f"{logs}/speed.txt").read().splitlines()
except OSError: lines = []
ours = [kv(l) for l in lines if l.startswith("speed ")]
torch = [kv(l) for l in lines if l.startswith("torch mode=")]
print(f"{'mode':8} {'model':14} {'B':>4} {'L':>4} {'prec':5} {'attention':9} {'ours ms':>9} {'torch ms':>9} {'ratio':>6} {'TFLOP/s':>8} {'MFU':>6}")
for o in ours:
    t = [x for x in torch if x["mode"] == o["mode"] and x["B"] == o["B"] and x["L"] == o["L"]]
    model = f"{o['layers']}x{o['hidden']}"
    tm = float(t[0]["ms"]) if t else float("nan")
    print(f"{o['mode']:8} {model:14} {o['B']:>4} {o['L']:>4} {o['precision']:5} {o.get('attention', '-'):9} {float(o['ms']):9.3f} {tm:9.3f} "
          f"{tm / float(o['ms']):5.2f}x {float(o['tflops']):8.1f} {float(o['mfu']):6.3f}")
print("ratio = PyTorch bf16 autocast time / ours (above 1: ours faster); MFU against 989 TFLOP/s dense bf16")
host = [kv(l) for l in lines if l.startswith("speed-host ")]
if host:  # the training step's host side: what CUDA graphs could save (kernels/README.md)
    print(f"\n{'B':>4} {'L':>4} {'prec':5} {'attention':9} {'step ms':>8} {'enqueue':>8} {'launch':>7} {'doubled':>8} {'graphs<=':>8} "
          f"{'waits':>5} {'idle<=':>7} {'op calls':>8} {'launches':>8}")
    for h in host:
        print(f"{h['B']:>4} {h['L']:>4} {h['precision']:5} {h.get('attention', '-'):9} {float(h['step_ms']):8.3f} "
              f"{float(h['enqueue_ms']):8.3f} {float(h['launch_ms']):7.3f} {float(h['slowed_ms']):8.3f} "
              f"{float(h['graphs_ms']):8.3f} {h['waits']:>5} {float(h['idle_ms']):7.3f} "
              f"{h['op_calls']:>8} {h['launches']:>8}")
    print("ms per training step: enqueue = host until its last op call returned, launch = inside the launching calls, "
          "doubled = the step with that launch time doubled; graphs<= = min(launch, doubled - step), the most CUDA "
          "graphs could save; idle<= = GPU idle after the step's waits")
try:
    e = open(f"{logs}/embed_speed.txt").read()
    m1 = re.search(r"embedded (\d+) done in ([\d.]+) s", e)
    m2 = re.search(r"torch embed n=(\d+) .*seconds=([\d.]+)", e)
    if m1 and m2:
        print(f"embed end to end, {m1.group(1)} sentences, mean pooling, bf16: ours {float(m1.group(2)):.2f} s, "
              f"sentence-transformers {float(m2.group(2)):.2f} s: {float(m2.group(2)) / float(m1.group(2)):.2f}x")
except OSError: pass
EOF
fi
exit $FAILED
