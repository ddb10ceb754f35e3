#!/usr/bin/env bash
# tests/gpu/check.sh — the GPU check of issue 6, for a machine with an NVIDIA H100 (CUDA 13,
# PyTorch + transformers, no network, no BLAS package). Not part of `make test`.
#
#   tests/gpu/check.sh              build for sm_90, device selection, op parity + op bench
#   tests/gpu/check.sh --sanitize   also op parity under compute-sanitizer memcheck (slower)
#
# Builds into build-gpu/ with NO_BLAS=1 (the CPU reference side uses the plain-C GEMM), writes
# logs to $OUT (the device tool's folder) or build-gpu/logs, prints one summary table and
# exits non-zero when any step fails. A step that is not written yet says TODO, never PASS.
# Budget: the whole script stays under 10 minutes on an H100, build included.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
SANITIZE=0
[ "${1:-}" = "--sanitize" ] && SANITIZE=1
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
BUILD=build-gpu
LOGS=${OUT:-$BUILD/logs}
mkdir -p "$LOGS"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
declare -a ROWS
FAILED=0

row() {  # row STEP STATUS SECONDS NOTE
  ROWS+=("$(printf '%-26s %-6s %7s  %s' "$1" "$2" "$3" "$4")")
  [ "$2" = FAIL ] && FAILED=1
  return 0
}

# step NAME TIMEOUT_S LOGFILE CMD...: runs CMD under a timeout, log to LOGFILE and the screen.
step() {
  local name=$1 limit=$2 log=$3 t0 rc secs
  shift 3
  echo "=== $name"
  t0=$(date +%s%N)
  timeout "$limit" "$@" 2>&1 | tee "$LOGS/$log"
  rc=${PIPESTATUS[0]}
  secs=$(( ($(date +%s%N) - t0) / 100000000 ))  # tenths of a second, no bc needed
  secs="$((secs / 10)).$((secs % 10))"
  if [ "$rc" -eq 0 ]; then row "$name" PASS "$secs" "log: $log"
  elif [ "$rc" -eq 124 ]; then row "$name" FAIL "$secs" "timed out after ${limit}s"
  else row "$name" FAIL "$secs" "exit status $rc, log: $log"; fi
  return "$rc"
}

echo "=== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$LOGS/machine.txt"
"$NVCC" --version | tail -2 | tee -a "$LOGS/machine.txt"
CUDA_HOME=${NVCC%/bin/nvcc}  # as the Makefile derives it: cuBLAS headers and libraries must be there
# shellcheck disable=SC2012  # ls: its "No such file" is the message wanted
ls "$CUDA_HOME"/include/cublasLt.h "$CUDA_HOME"/lib64/libcublasLt.so "$CUDA_HOME"/lib64/libcublas.so 2>&1 |
  tee -a "$LOGS/machine.txt"

# 1. build: the CUDA kernels for sm_90 and the programs of this check, nothing needing BLAS,
#    zlib or utf8proc
if ! step "build (nvcc sm_90)" 300 build.txt \
    make --no-print-directory -j"$JOBS" NO_BLAS=1 NVCC="$NVCC" BUILD=$BUILD BIN=$BUILD/bin gpu-check-build; then
  printf '%s\n' "${ROWS[@]}"
  exit 1
fi

# 2. --device selection on a real GPU: auto and cuda must both give the CUDA backend
step "device selection" 60 test_device.txt env MT_EXPECT_GPU=1 $BUILD/gpu/test_device

# 3. every op, CUDA vs CPU, random inputs and packed variable-length sequences (the table
#    states each tolerance), then the pieces' throughput at BERT-base shapes
step "op parity + op bench" 240 op_parity.txt $BUILD/gpu/op_parity

# 4. optional: out-of-bounds and race checks of the kernels
if [ "$SANITIZE" = 1 ]; then
  if command -v compute-sanitizer >/dev/null; then
    step "op parity, memcheck" 300 memcheck.txt \
      compute-sanitizer --tool memcheck --error-exitcode 1 $BUILD/gpu/op_parity --no-bench
  else
    row "op parity, memcheck" SKIP - "compute-sanitizer not on PATH"
  fi
fi

# 5. TODO(lead): full forward on real sentences, CUDA vs CPU, once `embed --device cuda` exists.
#    Plan: build bin/embed here (make NO_BLAS=1 NVCC=$NVCC BUILD=$BUILD BIN=$BUILD/bin
#    $BUILD/bin/tokenize $BUILD/bin/embed; needs utf8proc + zlib, check they are on the image),
#    run data/*.tsv sentences through tokenize | embed --device cpu and --device cuda with the
#    model in models/ (carry it: it is git-ignored), and compare with bin/dump or a small C
#    tool: fp32 mode max |diff| <= 1e-3; bf16 mode cosine of every embedding >= 0.999.
row "full forward parity" TODO - "needs embed --device cuda (lib/bert.c)"

# 6. TODO(lead): throughput of embed and of training steps next to PyTorch bf16 autocast on
#    the same model and batches (python3 there has torch + transformers, offline: load the
#    model from models/ with local_files_only), reported as ratios, with MFU for training.
row "throughput vs PyTorch" TODO - "needs embed / training on CUDA"

echo
echo "=== summary: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true), $("$NVCC" --version | tail -1)"
printf '%-26s %-6s %7s  %s\n' step result seconds note
printf '%s\n' "${ROWS[@]}"
grep -E '^op parity: ' "$LOGS/op_parity.txt" 2>/dev/null
grep -E ' FAIL$' "$LOGS/op_parity.txt" 2>/dev/null
exit $FAILED
