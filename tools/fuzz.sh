#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (build-fuzz/, clang, ASan + UBSan) and runs them.
#   tools/fuzz.sh [TARGET|all] [SECONDS]     default: all targets, 30 s each
# Targets run side by side, FUZZ_JOBS at a time (default: the core count). Each starts from the
# committed seeds (tests/fuzz/corpus/TARGET) and grows build-fuzz/corpus/TARGET, which later runs
# reuse. A crash, a leak, an input slower than 5 s or a run over 2 GiB fails the script; it prints
# the reproducer and the command that replays it. A table of executions and coverage comes last.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-all}
seconds=${2:-30}
jobs=${FUZZ_JOBS:-$(nproc)}
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS must be a whole number, got '$seconds'" >&2; exit 2; }

command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ is missing (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
mkdir -p build-fuzz
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTANDEM_FUZZ=ON -DTANDEM_CUDA=OFF \
  -DTANDEM_MPI=OFF -DBUILD_TESTING=OFF -DTANDEM_WERROR=ON >build-fuzz/configure.log 2>&1 ||
  { cat build-fuzz/configure.log; exit 1; }
cmake --build build-fuzz -j"$(nproc)" --target tandem_fuzz_replay >build-fuzz/build.log 2>&1 ||
  { tail -50 build-fuzz/build.log; exit 1; }
mapfile -t all < <(build-fuzz/tests/fuzz/tandem_fuzz_replay --list)
if [ "$target" = all ]; then
  targets=("${all[@]}")
else
  printf '%s\n' "${all[@]}" | grep -qx "$target" ||
    { echo "fuzz.sh: no target '$target'; targets: ${all[*]}" >&2; exit 2; }
  targets=("$target")
fi
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >>build-fuzz/build.log 2>&1 ||
  { tail -50 build-fuzz/build.log; exit 1; }

dict_of() {
  case "$1" in
    model_spec|model_version|checkpoint|tfjs) echo tests/fuzz/dict/json.dict ;;
    rest) echo tests/fuzz/dict/rest.dict ;;
    model_config|batching_params|monitoring_config) echo tests/fuzz/dict/textproto.dict ;;
    idx) echo tests/fuzz/dict/idx.dict ;;
    tflite) echo tests/fuzz/dict/tflite.dict ;;
  esac
}

run_one() {
  local t=$1 dict
  local work=build-fuzz/corpus/$t artifacts=build-fuzz/artifacts/$t/ log=build-fuzz/logs/$t.log
  mkdir -p "$work" "$artifacts" build-fuzz/logs
  dict=$(dict_of "$t")
  local args=(-max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1
              -artifact_prefix="$artifacts")
  [ -n "$dict" ] && args+=(-dict="$dict")
  local seeds=tests/fuzz/corpus/$t
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:allocator_may_return_null=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    build-fuzz/tests/fuzz/fuzz_"$t" "${args[@]}" "$work" "$seeds" >"$log" 2>&1
}
export -f run_one dict_of
export seconds

echo "== fuzzing ${targets[*]} for ${seconds} s each, ${jobs} at a time"
status=0
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {} || echo {} >>build-fuzz/failed' \
  2>/dev/null || true
failed=()
if [ -f build-fuzz/failed ]; then mapfile -t failed <build-fuzz/failed; rm -f build-fuzz/failed; fi

printf '\n%-18s %12s %8s %8s %8s  %s\n' target executions cov ft corpus result
for t in "${targets[@]}"; do
  log=build-fuzz/logs/$t.log
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
  corp=$(find build-fuzz/corpus/"$t" -type f | wc -l)
  result=ok
  if printf '%s\n' "${failed[@]}" | grep -qx "$t"; then result=FAILED; status=1; fi
  printf '%-18s %12s %8s %8s %8s  %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$corp" "$result"
done

for t in "${failed[@]}"; do
  echo
  echo "== fuzz_$t failed; the end of build-fuzz/logs/$t.log:"
  grep -v '^#[0-9]' "build-fuzz/logs/$t.log" | tail -60
  for a in build-fuzz/artifacts/"$t"/*; do
    [ -f "$a" ] || continue
    echo "-- reproducer $a ($(stat -c %s "$a") bytes), first bytes:"
    head -c 512 "$a" | od -c | head -12
    echo "-- replay: build-fuzz/tests/fuzz/fuzz_$t $a   or   build/tests/fuzz/tandem_fuzz_replay $t $a"
    echo "-- keep it: cp $a tests/fuzz/regressions/$t/  (the ordinary tests replay that folder)"
  done
done
exit $status
