#!/usr/bin/env bash
# The part of the sanitizer runs that fits CI (run by `make test`): an ASan + UBSan build
# (CUDA off) of the parsers, the layout / plan / scheduler logic, request validation and
# auth, the fuzz-corpus replays and the single-process engine, and those tests under
# ASAN_OPTIONS=detect_leaks=1 (any report fails the run). The full runs are
# `make asan` and `make tsan` (unit + integration suites; see README "Tests").
#
#   scripts/sanitizer-smoke.sh [BUILD_DIR]   (default build-asan-smoke)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/build-asan-smoke}
tests=(tensor_test cp_layout_test block_pool_test block_table_test transfer_plan_test
  dual_chunk_swap_test scheduler_test model_config_test safetensors_test tokenizer_test
  router_core_test security_unit_test bench_core_test engine_test
  fuzz_safetensors_replay fuzz_model_config_replay fuzz_tokenizer_json_replay
  fuzz_request_validation_replay fuzz_kv_descriptor_replay)
cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCPSERVE_CUDA=OFF \
  -DCPSERVE_SANITIZE=address >/dev/null
cmake --build "$dir" -j "${JOBS:-$(nproc)}" --target "${tests[@]}"
regex="^($(IFS='|'; echo "${tests[*]}"))\$"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 OPENBLAS_NUM_THREADS=1 \
  ctest --test-dir "$dir" --output-on-failure -j "${JOBS:-$(nproc)}" -R "$regex"
