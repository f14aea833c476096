#!/usr/bin/env bash
# Build, check and time cpserve's CUDA attention in one run, beside PyTorch on the same GPU
# (issue #7). Run on a GPU machine with PyTorch installed.
#
#   scripts/gpu/bench_attention.sh [--bin DIR] [--build-dir DIR] [--skip-tests] [--quick]
#
#   --bin DIR        prebuilt binaries (cpserve_attention_sweep, cuda_attention_test) in DIR,
#                    e.g. bin/ of a bundle made by bundle-runtime.sh: its env.sh (DIR/../env.sh)
#                    is sourced for our binaries only. Do not source it for this script:
#                    it puts the system's CUDA/cuDNN libraries ahead of PyTorch's own
#                    (PyTorch then refuses the older cuDNN or silently avoids it);
#                    also $CPSERVE_BENCH_BIN. Without it the script builds them with CMake
#                    (needs the build dependencies and nvcc) in --build-dir (default build-gpu).
#   --skip-tests     do not run the GPU attention tests first
#   --quick          fewer sizes (4k/16k prefill; batch 1,64 x context 4k,128k decode)
#
# Steps: build (unless --bin) -> cuda_attention_test (the kernels against the CPU
# reference) -> cpserve_attention_sweep (our prefill at 4k/16k/64k, decode for batch 1..64
# x context 4k..128k) -> bench_attention.py (PyTorch SDPA default/cuDNN/flash and a device
# copy, timed in the same run) -> one table; JSON in $OUT/bench_attention.json if OUT is set.
# Exit status: non-zero if the build, the tests or a timing step fails.
set -euo pipefail
# Our prefill kernel: the Hopper one unless told otherwise (the engine default is mma.sync
# until the engine-level issue noted in kernels/cuda/attention_launch.cc is understood).
export CPSERVE_PREFILL_KERNEL=${CPSERVE_PREFILL_KERNEL:-hopper_persistent}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." 2>/dev/null && pwd || true)
bin=${CPSERVE_BENCH_BIN:-}
build_dir=build-gpu
run_tests=1
prefill_sizes=4096,16384,65536
batches=1,4,16,64
contexts=4096,16384,65536,131072
while [[ $# -gt 0 ]]; do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --skip-tests) run_tests=0; shift ;;
    --quick) prefill_sizes=4096,16384; batches=1,64; contexts=4096,131072; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "bench_attention: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

if [[ -z $bin ]]; then
  have_nvcc=0
  { command -v nvcc >/dev/null || [[ -x /usr/local/cuda/bin/nvcc ]]; } && have_nvcc=1
  if ! command -v cmake >/dev/null || [[ $have_nvcc == 0 ]]; then
    echo "bench_attention: no cmake/nvcc here; pass --bin DIR with prebuilt binaries" >&2
    exit 2
  fi
  echo "== build ($build_dir)"
  cmake -S "$repo" -B "$repo/$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCPSERVE_CUDA=ON >/dev/null
  cmake --build "$repo/$build_dir" --target cpserve_attention_sweep cuda_attention_test
  sweep=$repo/$build_dir/bin/cpserve_attention_sweep
  test_bin=$repo/$build_dir/tests/cuda_attention_test
else
  sweep=$bin/cpserve_attention_sweep
  test_bin=$bin/cuda_attention_test
fi
# Our binaries run with the bundle's environment when there is one; Python without it.
tool_env=${bin:+$bin/../env.sh}
run_tool() {
  if [[ -n $tool_env && -f $tool_env ]]; then (source "$tool_env" && exec "$@"); else "$@"; fi
}
[[ -x $sweep ]] || { echo "bench_attention: missing $sweep" >&2; exit 2; }

work=$(mktemp -d /tmp/bench-attention.XXXXXX)
tests_line="not run"
tests_ok=1
if [[ $run_tests == 1 ]]; then
  if [[ -x $test_bin ]]; then
    echo "== check: $(basename "$test_bin")"
    if run_tool timeout "${CPSERVE_TEST_TIMEOUT:-300}" "$test_bin" >"$work/tests.log" 2>&1; then
      tests_line="PASS ($(grep -E '^\[  PASSED  \]' "$work/tests.log" | head -1 | sed 's/\[  PASSED  \] //'))"
    else
      tests_ok=0
      tests_line="FAIL (see below)"
      grep -E '^\[  FAILED  \]|Failure|error' "$work/tests.log" | head -20 || true
    fi
    grep -qE 'SKIPPED' "$work/tests.log" && tests_line="$tests_line; some SKIPPED"
    echo "   $tests_line"
  else
    tests_ok=0
    tests_line="FAIL (missing $test_bin)"
    echo "   $tests_line"
  fi
fi

echo "== time: cpserve_attention_sweep"
run_tool "$sweep" prefill "$prefill_sizes" >"$work/ours.jsonl"
run_tool "$sweep" decode "$batches" "$contexts" >>"$work/ours.jsonl"
cat "$work/ours.jsonl"
[[ -n ${OUT:-} ]] && cp "$work/ours.jsonl" "$OUT/attention_sweep.jsonl"

echo "== time: PyTorch in the same run; table"
python3 "$here/bench_attention.py" --ours "$work/ours.jsonl" --tests "$tests_line" --tests_ok "$tests_ok"
if grep -q '"error"' "$work/ours.jsonl"; then
  echo "bench_attention: FAIL (a cpserve kernel returned an error)"
  exit 1
fi
[[ $tests_ok == 1 ]] || { echo "bench_attention: FAIL (GPU attention tests)"; exit 1; }
echo "bench_attention: done"
