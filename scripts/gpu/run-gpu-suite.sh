#!/usr/bin/env bash
# Runs every GPU test, the GPU benchmarks, the attention benchmark beside PyTorch and the
# Hugging Face reference check from a runtime bundle, in one go, on a GPU machine.
#
#   scripts/gpu/run-gpu-suite.sh BUNDLE [OUT_DIR]
#
# BUNDLE: made on the build machine by
#   bundle-runtime.sh BUNDLE build/bin/* build/tests/<gpu tests> build/bench/cuda_*_bench
# (see README "Building by hand"). OUT_DIR (default $OUT, else /tmp/cpserve-gpu-suite) gets
# summary.txt (one line per step with its exit status and time), logs.tar.gz (every log),
# bench_attention.json and hf_check.json. Our binaries run with BUNDLE/env.sh; PyTorch runs
# without it (env.sh puts the system's cuDNN ahead of PyTorch's own). NCCL_NVLS_ENABLE=0 is
# exported for every process (with the other NVLink-multicast switches); each step is
# stopped after $CPSERVE_STEP_TIMEOUT s (300). CPSERVE_SUITE=tests runs the tests only.
# Exit status: number of failed steps (0 = all passed).
set -uo pipefail
bundle=$(cd "${1:?usage: run-gpu-suite.sh BUNDLE [OUT_DIR]}" && pwd)
out=${2:-${OUT:-/tmp/cpserve-gpu-suite}}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$out/logs"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export CPSERVE_BIN_DIR=$bundle/bin PYTHONUNBUFFERED=1
step_timeout=${CPSERVE_STEP_TIMEOUT:-300}  # seconds per step
summary=$out/summary.txt
: >"$summary"
failed=0

# step NAME WITH_ENV(0|1) COMMAND...: runs COMMAND, logs to logs/NAME.log, records the result.
step() {
  local name=$1 with_env=$2
  shift 2
  local t0=$SECONDS rc
  if [[ $with_env == 1 ]]; then
    (source "$bundle/env.sh" && timeout "$step_timeout" "$@") >"$out/logs/$name.log" 2>&1
  else
    timeout "$step_timeout" "$@" >"$out/logs/$name.log" 2>&1
  fi
  rc=$?
  ((rc == 0)) || failed=$((failed + 1))
  printf '%-28s rc=%-3d %4ds  %s\n' "$name" "$rc" $((SECONDS - t0)) \
    "$(grep -E 'PASSED|FAILED|SKIPPED' "$out/logs/$name.log" | tail -1)" | tee -a "$summary"
}

# finish: packs the logs, prints the count of failed steps and exits with it.
finish() {
  tar -C "$out" -czf "$out/logs.tar.gz" logs && rm -rf "$out/logs"
  echo "failed steps: $failed" | tee -a "$summary"
  exit "$failed"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$summary"
for t in cuda_backend_test cuda_attention_test cuda_attention_decode_test \
  cuda_graph_decoder_test gpu_engine_test gpu_graph_engine_test synthetic_gpu_test \
  nccl_group_test nccl_host_staging_test gpu_cp_equivalence_test gpu_kv_staging_test; do
  [[ -x $bundle/bin/$t ]] && step "$t" 1 "$bundle/bin/$t"
done
[[ ${CPSERVE_SUITE:-all} == tests ]] && finish
[[ -x $bundle/bin/cpserve_attention_sweep ]] &&
  step bench_attention 0 env OUT="$out" bash "$here/bench_attention.sh" --bin "$bundle/bin" --skip-tests
for b in cuda_graph_decoder_bench cuda_kernels_bench; do
  [[ -x $bundle/bin/$b ]] && step "$b" 1 "$bundle/bin/$b"
done
[[ -x $bundle/bin/cpserve_hf_dump ]] &&
  step hf_check 0 env OUT="$out" python3 "$here/hf_check.py" --bin "$bundle/bin" --work /tmp/hf-check
finish
