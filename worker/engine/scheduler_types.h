// Value types exchanged between the continuous-batching Scheduler and the engine that
// executes its plans (scheduler.h). Plain data, no behaviour.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/kv/cp_layout.h"

namespace cpserve {

struct SchedulerConfig {
  CpLayout layout;  // the pool's context-parallel group (N, I, B)
  // KV blocks of each rank of the group; size == layout.world_size. Ranks may differ.
  std::vector<int32_t> num_blocks;
  // Tokens computed per step over all requests (one per decode + prefill chunk lengths).
  int64_t max_batch_tokens = 2048;
  // Requests holding KV and stepped (running + awaiting transferred KV). Must be <=
  // max_batch_tokens so that every running request's decode always fits one step.
  int32_t max_running = 256;
  // Longest sequence, prompt + generated tokens (the model's context window).
  int64_t max_model_len = 32768;
  // Admitting a new request must leave this many blocks free on every rank, so running
  // requests can keep decoding without immediate preemption (vLLM's watermark).
  int32_t watermark_blocks = 0;

  absl::Status Validate() const;
};

struct RequestSpec {
  std::string id;          // unique among live requests
  int64_t prompt_len = 0;  // tokens, >= 1
  int64_t max_tokens = 1;  // tokens to generate, >= 1 (generation may stop earlier)
  // Keep the KV blocks after the request finishes (phase kFinished) until Finish() or
  // Cancel(): a prefill pool transfers them to the decode pool before freeing.
  bool hold_kv_on_finish = false;
};

enum class WorkKind { kPrefill, kDecode };

// One request's work in a step: compute global positions [start, end) of its sequence
// (prompt tokens followed by the tokens generated so far) and write their KV.
// A prefill chunk covers part of the tokens still to compute at admission (the prompt; after
// a recompute preemption the prompt plus the tokens generated before it). A decode computes
// the last generated token: end == start + 1.
struct ScheduledWork {
  std::string id;
  WorkKind kind = WorkKind::kPrefill;
  int64_t start = 0;
  int64_t end = 0;
  // True when end reaches the sequence's current length: the engine samples one new token
  // from the logits at position end - 1. Always true for decodes and final prefill chunks.
  bool samples = false;

  int64_t num_tokens() const { return end - start; }
};

struct StepPlan {
  int64_t step = 0;  // 0, 1, 2, ... in Schedule() order
  // Decodes first (in admission order), then chunks of running prefills (admission order),
  // then first chunks of requests admitted in this step. Each request appears at most once.
  std::vector<ScheduledWork> work;
  // Requests preempted while planning this step: their KV is freed and they wait again
  // (recomputed from position 0 when re-admitted). The engine drops any per-request KV state.
  std::vector<std::string> preempted;
  int64_t num_tokens = 0;  // sum of work[i].num_tokens() <= max_batch_tokens

  bool empty() const { return work.empty(); }
};

enum class RequestPhase {
  kWaiting,     // queued (new or preempted); holds no KV
  kAwaitingKv,  // AddPrefilled: blocks reserved, KV arriving by transfer; not scheduled
  kRunning,     // admitted: holds KV, scheduled every step it can be
  kFinished,    // done, KV still held (hold_kv_on_finish) until Finish()/Cancel()
};

enum class FinishReason { kNone, kLength, kStop };

// Snapshot of one request's progress.
struct RequestInfo {
  RequestSpec spec;
  RequestPhase phase = RequestPhase::kWaiting;
  int64_t num_generated = 0;  // output tokens produced so far
  int64_t num_computed = 0;   // leading positions whose KV is in the cache
  int32_t num_preemptions = 0;
  FinishReason finish_reason = FinishReason::kNone;
};

// A request that finished in Update().
struct FinishedRequest {
  std::string id;
  FinishReason reason = FinishReason::kNone;
  int64_t num_generated = 0;
  bool kv_held = false;  // hold_kv_on_finish: blocks kept until Finish()/Cancel()
};

}  // namespace cpserve
