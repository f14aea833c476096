#!/usr/bin/env bash
# The whole-system figures on a two-GPU machine, in one run (docs/perf.md, session 3):
# reference copy rates, TTFT and KV transfer with PCP=2 vs PCP=1 (16k..128k prompts),
# decode step at 32k context with DCP=1 vs DCP=2, and the longest context a DCP=1 vs a
# DCP=2 decode pool holds at 4200 KV blocks per rank. About 6 minutes on 2x H200.
#
#   scripts/gpu/run-cluster-figures.sh BUNDLE [OUT_DIR]
#
# BUNDLE: a runtime bundle with cpserve and gpu_cp_rank (see run-gpu-suite.sh). PyTorch
# (for the copy rates) runs without the bundle's environment.
set -uo pipefail
bundle=$(cd "${1:?usage: run-cluster-figures.sh BUNDLE [OUT_DIR]}" && pwd)
out=${2:-${OUT:-/tmp/cpserve-cluster-figures}}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 "$here/copy_bandwidth.py" --json "$out/copy.json" | tee "$out/copy.txt"
(
  source "$bundle/env.sh"
  "$here/cluster-ttft.sh" pcp2 "$out" --prefill_ranks=2 --decode_ranks=2 \
    --prefill_device=cuda:0,1 --decode_device=cuda:0,1
  "$here/cluster-ttft.sh" pcp1 "$out" --prefill_ranks=1 --decode_ranks=2 \
    --prefill_device=cuda:0 --decode_device=cuda:0,1
  "$here/dcp-decode.sh" "$out"
  LENS="65536 131000" NREQ=1 KV_BLOCKS=4200 "$here/cluster-ttft.sh" dcp1cap "$out" \
    --prefill_ranks=2 --decode_ranks=1 --prefill_device=cuda:0,1 --decode_device=cuda:1
  LENS="131000" KV_BLOCKS=4200 "$here/cluster-ttft.sh" dcp2cap "$out" \
    --prefill_ranks=2 --decode_ranks=2 --prefill_device=cuda:0,1 --decode_device=cuda:0,1
) 2>&1 | tee "$out/figures.txt"
