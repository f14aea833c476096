#!/usr/bin/env bash
# The router load run of issue #10, on a local CPU cluster started here with `cpserve up`
# (router + PCP=2 prefill pool + DCP=2 decode pool, built-in model).
#
# Measures in one run:
#   1. sustained request rate and open streams the router holds: closed-loop ramps of
#      LEVELS concurrent short requests (ignore_eos, OUTPUT_TOKENS tokens each), with the
#      router's cpserve_router_queue_depth gauge (admitted, not yet done) sampled meanwhile;
#   2. the router's own added latency: the same requests (same prompts, same seed) sent
#      through the router and straight to the decode pool leader's DecodePool/Decode (the
#      path the router takes for short prompts), at concurrency 1 and 16, in alternating
#      rounds; the difference of the TTFT p50/p99 (and end-to-end p50) is what the router
#      adds.
# Prints a table and writes OUT_DIR/load-run.json (plus each bench report and the logs).
#
# usage: scripts/load-run.sh [OUT_DIR]
#   env: CPSERVE (default build/bin/cpserve), LEVELS ("16 64 256"), REQUESTS_PER_CLIENT (4),
#        PROMPT_TOKENS (32), OUTPUT_TOKENS (8), OVERHEAD_REQUESTS (200 per target and
#        concurrency, in OVERHEAD_ROUNDS (10) alternating rounds)
set -euo pipefail

CPSERVE=${CPSERVE:-build/bin/cpserve}
LEVELS=${LEVELS:-"16 64 256"}
REQUESTS_PER_CLIENT=${REQUESTS_PER_CLIENT:-4}
PROMPT_TOKENS=${PROMPT_TOKENS:-32}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-8}
OVERHEAD_REQUESTS=${OVERHEAD_REQUESTS:-200}
OVERHEAD_ROUNDS=${OVERHEAD_ROUNDS:-10}
OUT_DIR=${1:-load-run-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT_DIR"
command -v jq > /dev/null || { echo "load-run: needs jq" >&2; exit 1; }
[ -x "$CPSERVE" ] || { echo "load-run: no cpserve binary at $CPSERVE (set CPSERVE)" >&2; exit 1; }

"$CPSERVE" up --prefill_ranks=2 --decode_ranks=2 --metrics_port=0 \
  --cluster_log_dir="$OUT_DIR/cluster" > "$OUT_DIR/up.log" 2>&1 &
UP_PID=$!
SAMPLER_PID=
cleanup() {
  [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2> /dev/null || true
  kill -TERM "$UP_PID" 2> /dev/null || true
  wait "$UP_PID" 2> /dev/null || true
}
trap cleanup EXIT

for _ in $(seq 1 1800); do
  grep -q "router listening on" "$OUT_DIR/up.log" && break
  kill -0 "$UP_PID" 2> /dev/null || { cat "$OUT_DIR/up.log" >&2; exit 1; }
  sleep 0.1
done
ROUTER=$(sed -n 's/.*router listening on \([0-9.]*:[0-9]*\).*/\1/p' "$OUT_DIR/up.log")
DECODE=$(sed -n 's/.*decode-0\/rank0 *\([0-9.]*:[0-9]*\).*/\1/p' "$OUT_DIR/up.log" | head -1)
ROUTER_METRICS=$(sed -n 's/^ *router .*metrics :\([0-9]*\).*/\1/p' "$OUT_DIR/up.log" | head -1)
[ -n "$ROUTER" ] && [ -n "$DECODE" ] || { cat "$OUT_DIR/up.log" >&2; exit 1; }
echo "load-run: router $ROUTER, decode pool leader $DECODE, router metrics :$ROUTER_METRICS" >&2

# The router's queue depth, sampled every 0.1 s into a file while a ramp level runs.
sample_queue_depth() {
  while true; do
    curl -s "http://127.0.0.1:$ROUTER_METRICS/metrics" 2> /dev/null |
      sed -n 's/^cpserve_router_queue_depth\(\s\|{[^}]*}\s\)\([0-9.e+]*\).*/\2/p' | head -1
    sleep 0.1
  done
}

bench() {  # bench NAME FLAGS...  (the client's CPU seconds, user + sys, go to NAME.cpu)
  local name=$1
  shift
  local TIMEFORMAT='%U %S'
  { time "$CPSERVE" bench --json_out="$OUT_DIR/$name.json" "$@" > "$OUT_DIR/$name.txt" \
      2> "$OUT_DIR/$name.err"; } 2> "$OUT_DIR/$name.time"
  awk '{ print $1 + $2 }' "$OUT_DIR/$name.time" > "$OUT_DIR/$name.cpu"
}

COMMON=(--prompt_tokens="$PROMPT_TOKENS" --output_tokens="$OUTPUT_TOKENS" --ignore_eos
        --vocab_size=256 --workload_seed=10)

# 1. Ramp.
RAMP_ROWS=()
for c in $LEVELS; do
  echo "load-run: ramp, $c concurrent streams" >&2
  sample_queue_depth > "$OUT_DIR/queue-depth-$c.txt" &
  SAMPLER_PID=$!
  bench "ramp-$c" --address="$ROUTER" --concurrency="$c" \
    --num_requests=$((c * REQUESTS_PER_CLIENT)) --warmup_requests="$c" --num_channels=4 \
    "${COMMON[@]}"
  kill "$SAMPLER_PID" 2> /dev/null || true
  wait "$SAMPLER_PID" 2> /dev/null || true
  SAMPLER_PID=
  peak_depth=$(sort -g "$OUT_DIR/queue-depth-$c.txt" | tail -1)
  RAMP_ROWS+=("$(jq -c --arg c "$c" --arg depth "${peak_depth:-0}" \
    --arg cpu "$(cat "$OUT_DIR/ramp-$c.cpu")" \
    '{concurrency: ($c | tonumber), requests, ok, by_status, requests_per_s,
      client_cpu_s: ($cpu | tonumber), duration_s,
      output_tokens_per_s, peak_in_flight, router_peak_queue_depth: ($depth | tonumber),
      ttft_p50_ms: .ttft_ms.p50, ttft_p99_ms: .ttft_ms.p99, itl_p50_ms: .itl_ms.p50,
      itl_p99_ms: .itl_ms.p99, e2e_p50_ms: .e2e_ms.p50, e2e_p99_ms: .e2e_ms.p99}' \
    "$OUT_DIR/ramp-$c.json")")
done

# 2. Router overhead: the same requests through the router and straight to the decode pool,
# in alternating rounds (pool first in odd rounds, router first in even ones) so that a
# slow drift of the machine's load hits both sides alike; percentiles over all rounds.
# p-th percentile with linear interpolation (as `cpserve bench` computes them).
PCT='def pct(p): sort | if length == 0 then null else ((length - 1) * p / 100) as $h
  | ($h | floor) as $lo | ([$lo + 1, length - 1] | min) as $hi
  | .[$lo] + ($h - $lo) * (.[$hi] - .[$lo]) end;'
OVERHEAD_ROWS=()
for c in 1 16; do
  per_round=$(( OVERHEAD_REQUESTS / OVERHEAD_ROUNDS > 4 * c ? OVERHEAD_REQUESTS / OVERHEAD_ROUNDS : 4 * c ))
  echo "load-run: router vs decode pool, concurrency $c, $OVERHEAD_ROUNDS rounds of $per_round" >&2
  for r in $(seq 1 "$OVERHEAD_ROUNDS"); do
    order="pool router"
    [ $((r % 2)) -eq 0 ] && order="router pool"
    for t in $order; do
      addr=$ROUTER
      [ "$t" = pool ] && addr=$DECODE
      bench "$t-c$c-r$r" --target="$t" --address="$addr" --concurrency="$c" \
        --num_requests="$per_round" --warmup_requests=2 --num_channels=1 \
        --prompt_tokens="$PROMPT_TOKENS" --output_tokens="$OUTPUT_TOKENS" --ignore_eos \
        --vocab_size=256 --workload_seed="$((1000 * c + r))"
    done
  done
  OVERHEAD_ROWS+=("$(jq -c -n --arg c "$c" "$PCT"'
    [inputs | {target: .config.target, recs: .request_records}] as $runs
    | [$runs[] | select(.target == "router") | .recs[]] as $router
    | [$runs[] | select(.target == "pool") | .recs[]] as $pool
    | ([$router[] | select(.status == "OK") | .ttft_ms]) as $rt
    | ([$pool[] | select(.status == "OK") | .ttft_ms]) as $pt
    | ([$router[] | select(.status == "OK") | .e2e_ms]) as $re
    | ([$pool[] | select(.status == "OK") | .e2e_ms]) as $pe
    | {concurrency: ($c | tonumber), requests: ($router | length),
       ok_router: ([$router[] | select(.status == "OK")] | length),
       ok_pool: ([$pool[] | select(.status == "OK")] | length),
       router_ttft_p50_ms: ($rt | pct(50)), pool_ttft_p50_ms: ($pt | pct(50)),
       added_ttft_p50_ms: (($rt | pct(50)) - ($pt | pct(50))),
       router_ttft_p99_ms: ($rt | pct(99)), pool_ttft_p99_ms: ($pt | pct(99)),
       added_ttft_p99_ms: (($rt | pct(99)) - ($pt | pct(99))),
       router_ttft_mean_ms: ($rt | add / length), pool_ttft_mean_ms: ($pt | add / length),
       added_e2e_p50_ms: (($re | pct(50)) - ($pe | pct(50)))}' \
    "$OUT_DIR"/router-c"$c"-r*.json "$OUT_DIR"/pool-c"$c"-r*.json)")
done

printf '%s\n' "${RAMP_ROWS[@]}" | jq -s '.' > "$OUT_DIR/ramp.json"
printf '%s\n' "${OVERHEAD_ROWS[@]}" | jq -s '.' > "$OUT_DIR/overhead.json"
jq -n --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg host "$(uname -n)" \
  --arg nproc "$(nproc)" --arg prompt "$PROMPT_TOKENS" --arg output "$OUTPUT_TOKENS" \
  --slurpfile ramp "$OUT_DIR/ramp.json" --slurpfile overhead "$OUT_DIR/overhead.json" \
  '{date: $date, host: $host, cpus: ($nproc | tonumber),
    cluster: "cpserve up: router + PCP=2 prefill + DCP=2 decode, built-in model, CPU",
    prompt_tokens: ($prompt | tonumber), output_tokens: ($output | tonumber),
    ramp: $ramp[0], router_overhead: $overhead[0]}' > "$OUT_DIR/load-run.json"

echo
echo "Ramp through the router (closed loop, prompt $PROMPT_TOKENS, output $OUTPUT_TOKENS tokens, ignore_eos; latencies in ms)"
jq -r '["streams", "requests", "ok", "failed", "req/s", "tok/s", "peak in flight",
        "router queue peak", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "client CPU s"],
       (.ramp[] | [.concurrency, .requests, .ok,
        ([.by_status | to_entries[] | select(.key != "OK") | "\(.key) \(.value)"] | join(", ")
         | if . == "" then "-" else . end),
        (.requests_per_s * 10 | round / 10),
        (.output_tokens_per_s | round), .peak_in_flight, .router_peak_queue_depth,
        (.ttft_p50_ms * 10 | round / 10), (.ttft_p99_ms * 10 | round / 10),
        (.itl_p50_ms * 10 | round / 10), (.itl_p99_ms * 10 | round / 10),
        (.client_cpu_s * 100 | round / 100)]) | @tsv' \
  "$OUT_DIR/load-run.json" | column -t -s $'\t'
echo
echo "Router added latency (same requests: router vs decode pool DecodePool/Decode), ms"
jq -r '["clients", "requests", "TTFT p50 router", "pool", "added", "TTFT p99 router", "pool",
        "added", "TTFT mean added", "e2e p50 added"],
       (.router_overhead[] | [.concurrency, .requests,
        (.router_ttft_p50_ms * 100 | round / 100), (.pool_ttft_p50_ms * 100 | round / 100),
        (.added_ttft_p50_ms * 100 | round / 100), (.router_ttft_p99_ms * 100 | round / 100),
        (.pool_ttft_p99_ms * 100 | round / 100), (.added_ttft_p99_ms * 100 | round / 100),
        ((.router_ttft_mean_ms - .pool_ttft_mean_ms) * 100 | round / 100),
        (.added_e2e_p50_ms * 100 | round / 100)]) | @tsv' \
  "$OUT_DIR/load-run.json" | column -t -s $'\t'
echo
echo "JSON: $OUT_DIR/load-run.json"
