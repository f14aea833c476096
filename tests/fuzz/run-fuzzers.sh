#!/usr/bin/env bash
# Builds the libFuzzer fuzzers in a clang build (build-fuzz/, CPSERVE_FUZZ=ON, project
# libraries instrumented with -fsanitize=fuzzer-no-link,address,undefined) and runs each
# for SECONDS (default 30), printing its exec count. New inputs go to
# build-fuzz/fuzz/work/<target>/corpus (the committed seeds under tests/fuzz/corpus are
# read, never written); crashes land in build-fuzz/fuzz/work/<target>/artifacts/.
#
#   tests/fuzz/run-fuzzers.sh [SECONDS] [TARGET...]
#   env: BUILD_DIR (build-fuzz), JOBS (2), CC/CXX (clang/clang++), FUZZ_ARGS (extra
#        libFuzzer flags, e.g. "-jobs=4 -workers=4")
# Exit status: 0 when every fuzzer built and ran without a crash, 1 otherwise.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECONDS_EACH=${1:-30}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(fuzz_safetensors fuzz_model_config fuzz_tokenizer_json fuzz_request_validation
           fuzz_kv_descriptor)
fi
BUILD_DIR=${BUILD_DIR:-$ROOT/build-fuzz}
JOBS=${JOBS:-2}
FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"

command -v "${CXX:-clang++}" > /dev/null || {
  echo "run-fuzzers: ${CXX:-clang++} not found (Debian: clang, libclang-rt-dev)" >&2
  exit 1
}

mkdir -p "$BUILD_DIR"
CC=${CC:-clang} CXX=${CXX:-clang++} cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCPSERVE_CUDA=OFF -DCPSERVE_FUZZ=ON \
  -DCMAKE_C_FLAGS="$FLAGS" -DCMAKE_CXX_FLAGS="$FLAGS" > "$BUILD_DIR/configure.log" 2>&1 || {
  echo "run-fuzzers: configure failed; see $BUILD_DIR/configure.log" >&2
  exit 1
}
# -k 0: one fuzzer failing to build does not stop the others.
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}" -- -k 0 || true

status=0
summary=()
for t in "${TARGETS[@]}"; do
  bin=$BUILD_DIR/fuzz/$t
  if [ ! -x "$bin" ]; then
    summary+=("$t: NOT BUILT")
    status=1
    continue
  fi
  work=$BUILD_DIR/fuzz/work/$t
  mkdir -p "$work/corpus" "$work/artifacts"
  log=$work/last-run.log
  echo "== $t: ${SECONDS_EACH}s"
  # shellcheck disable=SC2086
  "$bin" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" ${FUZZ_ARGS:-} "$work/corpus" "$ROOT/tests/fuzz/corpus/$t" \
    > "$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  corpus=$(find "$work/corpus" -type f | wc -l)
  if [ $rc -eq 0 ]; then
    summary+=("$t: $execs execs in ${SECONDS_EACH}s, cov ${cov:-?}, 0 crashes, new corpus files $corpus")
  else
    crash=$(grep -o 'Test unit written to .*' "$log" | head -1)
    summary+=("$t: CRASH (exit $rc) after $execs execs: $crash; log $log")
    grep -m1 -E 'ERROR: |FUZZ_CHECK|runtime error' "$log" | sed 's/^/    /'
    status=1
  fi
done
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $status
