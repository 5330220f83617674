#!/usr/bin/env bash
# Runs Tandem's test suite: every ctest label of the release build (cpu, interop, mpi; gpu tests
# report "skipped" without a GPU), then the cpu tests again under AddressSanitizer and
# UndefinedBehaviorSanitizer, the server checks against the sanitized server, and every fuzz target
# for FUZZ_SECONDS (default 30; 0 skips them) under libFuzzer (tools/fuzz.sh). Expects
# tools/setup.sh to have built build/.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

echo "== tests (release build)"
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== cpu tests under ASan + UBSan"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTANDEM_SANITIZE=ON -DTANDEM_CUDA=OFF -DTANDEM_WERROR=ON \
  >build-asan.configure.log 2>&1 || { cat build-asan.configure.log; exit 1; }
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs" -L cpu

echo "== server checks against the ASan + UBSan server (all but the long predict sweep)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs" -L serve -E "serve: predict"

fuzz_seconds=${FUZZ_SECONDS:-30}
if [ "$fuzz_seconds" != 0 ]; then
  echo "== fuzz targets, ${fuzz_seconds} s each (tools/fuzz.sh)"
  tools/fuzz.sh all "$fuzz_seconds"
fi
