#!/usr/bin/env bash
# Runs every C unit test (normal and sanitizer builds) and every bats suite, counts the TAP
# results of all of them, and ends with one line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export MTBERT_ROOT=$PWD
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
passed=0 failed=0

count() {  # count TAP lines in file $2 for suite $1; a suite that crashes counts as a failure
  local suite=$1 file=$2 rc=$3 p f
  p=$(grep -cE '^ok ' "$file")
  f=$(grep -cE '^not ok ' "$file")
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "# $suite exited with status $rc without a failing test: counted as a failure"
    f=1
  fi
  passed=$((passed + p)); failed=$((failed + f))
  printf '%-40s %4d passed, %d failed\n' "$suite" "$p" "$f"
}

for t in build/tests/test_* build-asan/tests/test_*; do
  [ -x "$t" ] || continue
  out="$log/$(echo "$t" | tr / _)"
  "$t" >"$out" 2>&1; rc=$?
  grep -E '^(not ok|# )' "$out" | head -50
  count "$t" "$out" $rc
done

for b in tests/bats/*.bats; do
  [ -e "$b" ] || continue
  out="$log/$(basename "$b").tap"
  bats --tap "$b" >"$out" 2>&1; rc=$?
  grep -E -A12 '^not ok' "$out" | head -80
  count "$b" "$out" $rc
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
