#!/usr/bin/env bash
# The README's demo (`make demo`): starts a local cluster with `cpserve up` (router +
# prefill pool + decode pool on loopback, built-in model, CPU), sends a short prompt
# (prefilled by the decode pool: the "local" path) and a long one (at least
# --long_prompt_tokens tokens: the "disaggregated" PCP path when a prefill pool is
# up), prints each answer with its path and time to first token, and stops the
# cluster. Every step has a timeout; exits non-zero when any step fails.
#
#   scripts/demo.sh [BUILD_DIR]
#   CPSERVE_DEMO_PREFILL_RANKS / CPSERVE_DEMO_DECODE_RANKS: pool sizes (default 2 and 2:
#     PCP=2 prefill, DCP=2 decode; with 0 prefill ranks the long prompt is prefilled
#     by the decode pool)
set -uo pipefail

build=${1:-build}
cpserve="$build/bin/cpserve"
prefill_ranks=${CPSERVE_DEMO_PREFILL_RANKS:-2}
decode_ranks=${CPSERVE_DEMO_DECODE_RANKS:-2}
long_prompt_tokens=${CPSERVE_DEMO_LONG_PROMPT_TOKENS:-256}
startup_timeout_s=${CPSERVE_DEMO_STARTUP_TIMEOUT_S:-180}

if [[ ! -x "$cpserve" ]]; then
  echo "demo: $cpserve is not built (run: make build)" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/cpserve-demo-XXXXXX")
up_log="$work/up.log"
up_pid=""

stop_cluster() {
  [[ -z "$up_pid" ]] && return 0
  if kill -0 "$up_pid" 2>/dev/null; then
    kill -TERM "$up_pid" 2>/dev/null
    for _ in $(seq 1 400); do
      kill -0 "$up_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$up_pid" 2>/dev/null; then
      echo "demo: cpserve up did not stop in 40 s; killing it" >&2
      kill -KILL "$up_pid" 2>/dev/null
    fi
  fi
  wait "$up_pid" 2>/dev/null
  local rc=$?
  up_pid=""
  return $rc
}
trap 'stop_cluster >/dev/null 2>&1' EXIT
trap 'echo "demo: interrupted" >&2; exit 130' INT TERM

echo "== starting the cluster: prefill pool of $prefill_ranks ranks, decode pool of" \
     "$decode_ranks ranks (logs: $work)"
"$cpserve" up --prefill_ranks="$prefill_ranks" --decode_ranks="$decode_ranks" \
  --long_prompt_tokens="$long_prompt_tokens" --cluster_log_dir="$work/logs" \
  --startup_timeout_ms=$((startup_timeout_s * 1000)) >"$up_log" 2>&1 &
up_pid=$!

address=""
for _ in $(seq 1 $((startup_timeout_s * 10 + 100))); do
  address=$(sed -n 's/^cpserve up: router listening on \(.*\)$/\1/p' "$up_log")
  [[ -n "$address" ]] && break
  kill -0 "$up_pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$address" ]]; then
  echo "demo: the cluster did not start; cpserve up said:" >&2
  cat "$up_log" >&2
  exit 1
fi
sed -n '/cluster ready/,/router listening/p' "$up_log"

failed=0
# generate NAME PROMPT: prints the answer, the path and the time to first token.
generate() {
  local name=$1 prompt=$2
  echo
  echo "== $name prompt (${#prompt} characters)"
  if ! timeout 120 "$cpserve" generate --address="$address" --prompt="$prompt" \
      --max_tokens=24 --timeout_ms=90000 >"$work/$name.out" 2>"$work/$name.err"; then
    echo "demo: the $name request failed:" >&2
    cat "$work/$name.err" >&2
    failed=1
    return
  fi
  echo "answer: $(cat "$work/$name.out")"
  # `generate` writes the finish line (with the path) and the timings to stderr.
  sed 's/^/  /' "$work/$name.err"
  if [[ $name == long && $prefill_ranks -eq 0 ]] && grep -q "path local" "$work/$name.err"; then
    echo "  (no prefill pool in this cluster: the long prompt was prefilled by the decode pool)"
  fi
}

generate short "Tell me a story about a small fox."
long_prompt=""
for _ in $(seq 1 12); do
  long_prompt+="The quick brown fox jumps over the lazy dog while the river runs by. "
done
generate long "$long_prompt"

echo
echo "== stopping the cluster"
stop_cluster
up_rc=$?
tail -n 1 "$up_log"
if [[ $up_rc -ne 0 ]]; then
  echo "demo: cpserve up exited with status $up_rc; its output:" >&2
  cat "$up_log" >&2
  exit 1
fi
if [[ $failed -ne 0 ]]; then
  exit 1
fi
echo "demo: done"
