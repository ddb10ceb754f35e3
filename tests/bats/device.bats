#!/usr/bin/env bats
# --device and the CUDA backend's loading: libmtbert_cuda.so (and with it cudart and cuBLAS) is
# opened only when a run asks for a GPU and the driver sees one; MTBERT_CUDA_LIB names it; a
# missing or broken one is an error with --device cuda and a note with auto. What a process
# loads is read from the dynamic loader's own trace (LD_DEBUG=libs), which lists dlopen too.
load helpers
bats_require_minimum_version 1.5.0

setup() {
  T=$BATS_TEST_TMPDIR
  head -4 "$DATA/sst-train.tsv" >"$T/sst.tsv"
  "$BIN/tokenize" -q --model "$MODEL" --text sentence -o "$T/t" "$T/sst.tsv"
}

emb() { "$BIN/embed" --model "$MODEL" "$@" "$T/t" -o "$T/e"; }
# the CUDA libraries the command loads, one a line
cuda_libs() { LD_DEBUG=libs "$@" 2>&1 >/dev/null | grep -oE 'calling init: [^ ]*(libmtbert_cuda|libcudart|libcublas)[^ ]*' | sort -u; }
no_cuda_build() { [[ "$1" == *"this build has no CUDA backend"* ]]; }

@test "cpu runs, tokenize and --help load no CUDA library; without a GPU neither does auto" {
  [ -z "$(cuda_libs emb --device cpu)" ]
  [ -z "$(cuda_libs "$BIN/tokenize" -q --model "$MODEL" --text sentence -o "$T/t2" "$T/sst.tsv")" ]
  [ -s "$T/t2" ]
  [ -z "$(cuda_libs "$BIN/heads" --help)" ]
  if nvidia-smi -L >/dev/null 2>&1; then skip "a GPU is present"; fi
  [ -z "$(cuda_libs emb --device auto)" ]
  run --separate-stderr emb --device auto
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"device: CPU (no usable CUDA GPU: "* ]]
}

@test "--device cuda loads the backend (the trace above sees it) and without a GPU says why" {
  if nvidia-smi -L >/dev/null 2>&1; then skip "a GPU is present"; fi
  run --separate-stderr emb --device cuda
  [ "$status" -ne 0 ]
  no_cuda_build "$stderr" && skip "this build has no CUDA backend"
  [[ "$stderr" == *"--device cuda: no usable GPU: "* ]]
  [ ! -e "$T/e" ]
  libs=$(cuda_libs emb --device cuda) || true  # embed fails: no GPU
  [[ "$libs" == *libmtbert_cuda.so* ]]
  [[ "$libs" == *libcudart* ]]
}

@test "MTBERT_CUDA_LIB: a missing or broken backend with --device cuda is an error naming the path" {
  run --separate-stderr env MTBERT_CUDA_LIB=/nonexistent/libmtbert_cuda.so "$BIN/embed" --model "$MODEL" --device cuda "$T/t" -o "$T/e"
  [ "$status" -ne 0 ]
  no_cuda_build "$stderr" && skip "this build has no CUDA backend"
  [[ "$stderr" == *"--device cuda: cannot load the CUDA backend /nonexistent/libmtbert_cuda.so (MTBERT_CUDA_LIB): "*"No such file"* ]]
  echo 'not a shared object' >"$T/broken.so"
  run --separate-stderr env MTBERT_CUDA_LIB="$T/broken.so" "$BIN/embed" --model "$MODEL" --device cuda "$T/t" -o "$T/e"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"cannot load the CUDA backend $T/broken.so (MTBERT_CUDA_LIB): $T/broken.so: "* ]]
  [ ! -e "$T/e" ]
}

# A stand-in driver (libcuda.so.1 first on LD_LIBRARY_PATH) reaches the paths past the driver check.
@test "auto with a driver: no visible GPU loads nothing; a missing backend is a note and the CPU" {
  command -v cc >/dev/null || skip "no C compiler for the stand-in driver"
  printf '%s\n' '#include <stdlib.h>' \
    'int cuInit(unsigned f) { (void)f; return 0; }' \
    'int cuDeviceGetCount(int *n) { *n = atoi(getenv("FAKE_GPUS")); return 0; }' \
    'int cuGetErrorString(int e, const char **s) { (void)e; *s = "stand-in"; return 0; }' >"$T/cuda.c"
  cc -shared -fPIC "$T/cuda.c" -o "$T/libcuda.so.1"
  export LD_LIBRARY_PATH=$T${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  run --separate-stderr env FAKE_GPUS=0 "$BIN/embed" --model "$MODEL" --device auto "$T/t" -o "$T/e"
  no_cuda_build "$stderr" && skip "this build has no CUDA backend"
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"device: CPU (no usable CUDA GPU: the NVIDIA driver sees no GPU)"* ]]
  [ -z "$(FAKE_GPUS=0 cuda_libs emb --device auto)" ]
  rm -f "$T/e"
  run --separate-stderr env FAKE_GPUS=1 MTBERT_CUDA_LIB=/nonexistent.so "$BIN/embed" --model "$MODEL" --device auto "$T/t" -o "$T/e"
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"device: CPU (no usable CUDA GPU: cannot load the CUDA backend /nonexistent.so (MTBERT_CUDA_LIB): "* ]]
  [ -s "$T/e" ]
}

# The .so is opened with RTLD_NOW and resolves these from the program itself; a name listed in
# kernels/host_symbols.list but missing from lib/device.c's host_exports would leave a program
# without it, and only a GPU run of that program would find out.
@test "every program with --device exports the callbacks the CUDA backend needs (kernels/host_symbols.list)" {
  [ -e "$ROOT/build/libmtbert_cuda.so" ] || skip "this build has no CUDA backend"
  names=$(sed -n 's/^ *\(mt_[a-z_0-9]*\);$/\1/p' "$ROOT/kernels/host_symbols.list")
  [ "$(wc -w <<<"$names")" -ge 5 ]
  for p in embed heads pcgrad-train simcse; do
    defined=$(nm -D --defined-only "$BIN/$p" | awk '{ print $3 }')
    for n in $names; do grep -qx "$n" <<<"$defined" || { echo "$p does not export $n"; false; }; done
  done
}

@test "make install: the programs in PREFIX/bin run, and find the CUDA backend in PREFIX/lib/mtbert" {
  make -s -C "$ROOT" install PREFIX="$T/inst" >/dev/null
  "$T/inst/bin/tokenize" -q --model "$MODEL" --text sentence -o "$T/i.tok" "$T/sst.tsv"
  "$T/inst/bin/embed" -q --model "$MODEL" --device cpu "$T/i.tok" -o "$T/i.emb"
  "$BIN/embed" -q --model "$MODEL" --device cpu "$T/t" -o "$T/e"
  cmp "$T/i.emb" "$T/e"
  [ -e "$ROOT/build/libmtbert_cuda.so" ] || skip "this build has no CUDA backend"
  [ -e "$T/inst/lib/mtbert/libmtbert_cuda.so" ]
  if nvidia-smi -L >/dev/null 2>&1; then skip "a GPU is present"; fi
  run --separate-stderr "$T/inst/bin/embed" --model "$MODEL" --device cuda "$T/i.tok" -o "$T/i2.emb"
  [ "$status" -ne 0 ]
  [[ "$stderr" == *"--device cuda: no usable GPU: "* ]]  # the .so was found and loaded
  rm "$T/inst/lib/mtbert/libmtbert_cuda.so"
  run --separate-stderr "$T/inst/bin/embed" --model "$MODEL" --device cuda "$T/i.tok" -o "$T/i2.emb"
  [[ "$stderr" == *"libmtbert_cuda.so not found in $T/inst/bin"*"/../lib/mtbert (set MTBERT_CUDA_LIB=PATH)"* ]]
}
