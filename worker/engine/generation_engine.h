// What a pool's gRPC service drives. The single-rank Engine (engine.h) and the
// multi-rank context-parallel engine (one per pool, run by every rank; rank 0
// takes requests) both implement it, so the services never see ranks.
//
// Threading: every method may be called from any thread; callbacks run on the
// engine's own thread and must not block (hand work to a queue or a reactor).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cpserve/v1/kv_transfer.pb.h"
#include "worker/engine/engine_types.h"
#include "worker/model/model_config.h"

namespace cpserve {

// Result of a prefill-and-push on a prefill pool.
struct PrefillResult {
  absl::Status status;  // OK, or why the prefill or the transfer failed
  int32_t first_token = -1;
  int64_t queue_us = 0;
  int64_t prefill_us = 0;
  int64_t transfer_us = 0;
  int64_t transfer_bytes = 0;
  std::string transport;  // e.g. "ucx-tcp", "ucx-shm"
};
using PrefillCallback = std::function<void(const PrefillResult&)>;

class GenerationEngine {
 public:
  virtual ~GenerationEngine() = default;

  virtual const ModelConfig& config() const = 0;
  virtual EngineStats Stats() const = 0;
  // False once the engine can no longer run steps (e.g. a rank of its group died);
  // the pool then reports itself unhealthy and refuses new work.
  virtual bool healthy() const = 0;

  // Local path: prefill the prompt here and stream tokens (see TokenEvent).
  virtual absl::Status Submit(const std::string& id, std::vector<int32_t> prompt,
                              const GenerationParams& params, TokenCallback callback) = 0;
  // Ends a request in any state (queued, running, reserved, transferring); its
  // callback gets CANCELLED and its KV blocks are freed on every rank.
  virtual void Cancel(const std::string& id) = 0;

  // ---- Disaggregation: decode pool side (DESIGN §5) ----
  // Reserves KV for a prompt of prompt_len tokens on every rank and returns where a
  // prefill pool must write it. The reservation expires after `ttl` unless
  // SubmitPrefilled claims it.
  virtual absl::StatusOr<v1::KvTransferTarget> Reserve(const std::string& id, int64_t prompt_len,
                                                       int64_t max_tokens, absl::Duration ttl) = 0;
  // Decodes a request whose KV was pushed into its reservation; first_token was
  // sampled by the prefill pool and is not streamed again. Waits for the transfer
  // to complete (or fail) before decoding.
  virtual absl::Status SubmitPrefilled(const std::string& id, std::vector<int32_t> prompt,
                                       int32_t first_token, const GenerationParams& params,
                                       TokenCallback callback) = 0;

  // ---- Disaggregation: prefill pool side ----
  // Prefills the prompt (PCP across the pool's ranks), samples the first token,
  // pushes every rank's KV to `target` before `deadline`, then frees it here.
  virtual absl::Status SubmitPrefill(const std::string& id, std::vector<int32_t> prompt,
                                     const GenerationParams& params,
                                     const v1::KvTransferTarget& target, absl::Time deadline,
                                     PrefillCallback callback) = 0;
};

}  // namespace cpserve
