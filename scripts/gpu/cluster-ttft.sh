#!/usr/bin/env bash
# Time to first token and KV transfer through a whole GPU cluster (synthetic Llama-3-8B
# shape): starts `cpserve up` with the given flags, runs `cpserve bench` for each prompt
# length in $LENS (default 16k 32k 64k 131000; 1 warm-up + $NREQ requests, 1 above 100k
# tokens), stops the cluster. Needs cpserve on PATH (source a runtime bundle's env.sh).
#
#   scripts/gpu/cluster-ttft.sh NAME LOG_DIR [cpserve up flags...]
#   e.g. scripts/gpu/cluster-ttft.sh pcp2 /tmp/out --prefill_ranks=2 --decode_ranks=2 \
#          --prefill_device=cuda:0,1 --decode_device=cuda:0,1
# Writes LOG_DIR/NAME-<len>.{txt,json} (bench table / JSON) and NAME-up.log.
set -u
name=${1:?usage: cluster-ttft.sh NAME LOG_DIR [up flags]}
log=${2:?usage: cluster-ttft.sh NAME LOG_DIR [up flags]}
shift 2
mkdir -p "$log"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
cpserve up --model=synthetic:llama3-8b --port=${PORT:-50051} --long_prompt_tokens=256 \
  --num_kv_blocks=${KV_BLOCKS:-8400} --max_batch_tokens=131072 \
  --cluster_log_dir="$log/$name-logs" "$@" >"$log/$name-up.log" 2>&1 &
up=$!
for i in $(seq 120); do
  grep -q "cluster ready" "$log/$name-up.log" && break
  kill -0 $up 2>/dev/null || break
  sleep 1
done
echo "$name: up after $i s"
for n in ${LENS:-16384 32768 65536 131000}; do
  nreq=${NREQ:-3}
  ((n > 100000)) && nreq=1
  timeout "${BENCH_TIMEOUT:-80}" cpserve bench --address=127.0.0.1:${PORT:-50051} \
    --num_requests=$nreq --warmup_requests=1 --prompt_tokens=$n --output_tokens=4 \
    --vocab_size=128256 --json_out="$log/$name-$n.json" >"$log/$name-$n.txt" 2>&1
  echo "$name $n rc=$?"
  grep -E "requests|time to first|prefill \(|KV transfer|transports|first:" "$log/$name-$n.txt"
done
kill -TERM $up
for i in $(seq 20); do kill -0 $up 2>/dev/null || break; sleep 1; done
kill -9 $up 2>/dev/null
pkill -9 -f "cpserve (prefill|decode|router)" 2>/dev/null
sleep 1
