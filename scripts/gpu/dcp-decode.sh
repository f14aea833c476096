#!/usr/bin/env bash
# Decode step time at 32k context, DCP=1 vs DCP=2, synthetic Llama-3-8B shape, through
# gpu_cp_rank (tests/gpu/cp): B requests of 32768 random tokens, 96 tokens each; the
# figure is the median gap between tokens while all B requests decode together
# ("full_batch_step_ms"). Needs gpu_cp_rank on PATH (source a runtime bundle's env.sh)
# and two GPUs for DCP=2.
#
#   scripts/gpu/dcp-decode.sh LOG_DIR
set -u
log=${1:?usage: dcp-decode.sh LOG_DIR}
mkdir -p "$log"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 - <<'PY'
import random
random.seed(2)
for b in (1, 24, 32):
    with open(f"/tmp/dcp-{b}.txt", "w") as f:
        for i in range(b):
            f.write("96 " + " ".join(str(random.randrange(128256)) for _ in range(32768)) + "\n")
PY
m=synthetic:llama3-8b
common=(--model=$m --logits=0 --batch_tokens=32768)
# one_gpu BATCH KV_BLOCKS [--cuda_graphs]
one_gpu() {
  timeout 150 gpu_cp_rank --rank=0 --world=1 --requests=/tmp/dcp-$1.txt --out=/tmp/o1-$1.txt \
    --kv_blocks=$2 "${common[@]}" ${3:-} >"$log/dcp1-b$1${3:-}.log" 2>&1
  echo "DCP=1 batch $1 ${3:-} rc=$?"
  tail -1 "$log/dcp1-b$1${3:-}.log"
}
# two_gpus BATCH KV_BLOCKS
two_gpus() {
  local rdzv=127.0.0.1:29611
  timeout 200 gpu_cp_rank --rank=1 --world=2 --rdzv=$rdzv --kv_blocks=$2 "${common[@]}" \
    >"$log/dcp2-b$1-r1.log" 2>&1 &
  timeout 200 gpu_cp_rank --rank=0 --world=2 --rdzv=$rdzv --serve_rdzv --kv_blocks=$2 \
    --requests=/tmp/dcp-$1.txt --out=/tmp/o2-$1.txt "${common[@]}" >"$log/dcp2-b$1.log" 2>&1
  echo "DCP=2 batch $1 rc=$?"
  wait
  tail -1 "$log/dcp2-b$1.log"
}
one_gpu 1 2100
one_gpu 1 2100 --cuda_graphs
two_gpus 1 1100
two_gpus 32 33000           # 32 x 32k does not fit one H200 (128 GiB of KV)
one_gpu 24 50000 --cuda_graphs  # the largest batch of 32k contexts one H200 holds here
