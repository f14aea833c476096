// Value types of the engines' streaming API (engine.h, generation_engine.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/kv_cache.h"
#include "kernels/sampling.h"
#include "worker/engine/decode_step_accelerator.h"
#include "worker/engine/scheduler_types.h"
#include "worker/transfer/direct_copier.h"

namespace cpserve {

struct GenerationParams {
  int64_t max_tokens = 16;
  // temperature / top_k / top_p / seed; the engine fills in `step`.
  SamplingParams sampling;
  // Generation stops after any of these tokens (included in the output), and
  // after the model's EOS tokens unless ignore_eos.
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  // Attach each sampled token's full logits row to its TokenEvent (tests, log-probs).
  bool return_logits = false;
};

// One streamed event. Every request gets tokens in order, then exactly one event
// with finished == true (which may carry the last token), or one with an error.
struct TokenEvent {
  int32_t token = -1;  // -1 when this event carries no token
  bool finished = false;
  FinishReason reason = FinishReason::kNone;  // kLength or kStop when finished normally
  absl::Status status;        // CANCELLED, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ... on failure
  std::vector<float> logits;  // with GenerationParams::return_logits: the row `token` came from
};
using TokenCallback = std::function<void(const TokenEvent&)>;

// The last event of a request: an error (reason kNone) or a normal finish (OK status).
inline TokenEvent EndEvent(absl::Status status, FinishReason reason = FinishReason::kNone) {
  TokenEvent e;
  e.finished = true;
  e.reason = reason;
  e.status = std::move(status);
  return e;
}

// Makes the direct KV copier (transfer/direct_copier.h) of a rank's GPU KV cache:
// CudaIpcCopierFactory() (cuda_ipc_copier.h, CUDA builds). An error: UCX only.
using KvDirectCopierFactory =
    std::function<absl::StatusOr<std::shared_ptr<transfer::DirectCopier>>(const KvCacheView&)>;

struct EngineOptions {
  int32_t num_kv_blocks = 1024;  // per rank
  int32_t block_size = 16;
  // KV interleave across the ranks of a CP pool (DESIGN §3); 0 means block_size.
  int32_t interleave = 0;
  // Prefill chunks are split across the ranks by DualChunkSwap (a PCP prefill pool);
  // otherwise every rank computes every token (DCP decode pool, single rank).
  bool partition_prefill = false;
  // A leader with nothing to do tells its followers so at this interval, so their
  // collective waits do not time out.
  absl::Duration idle_keepalive = absl::Milliseconds(500);
  // Give every rank a UCX transfer agent with its KV cache registered, for
  // disaggregated prefill -> decode handoff (DESIGN §5).
  bool enable_transfer = false;
  // With enable_transfer and a GPU KV cache: KV moves GPU to GPU through this
  // copier between ranks on one host (CUDA IPC), through host staging over UCX
  // otherwise. Null: always host staging.
  KvDirectCopierFactory kv_direct_copier;
  int64_t max_batch_tokens = 2048;
  int32_t max_running = 64;
  int64_t max_model_len = 0;  // 0: the model's max_position_embeddings
  // Decode steps (every item one sampled token, nothing partitioned) of a one-rank
  // engine go through the accelerator this factory makes — CUDA graphs:
  // CudaGraphAcceleratorFactory() (cuda_graph_accelerator.h, CUDA builds), which the
  // pool engine passes on CUDA builds. Null: no accelerator. cuda_graphs = false
  // turns it off (every step takes the normal path) without removing the factory.
  DecodeAcceleratorFactory decode_accelerator;
  bool cuda_graphs = true;
};

struct EngineStats {
  int64_t steps = 0;
  int64_t preemptions = 0;  // requests preempted (recomputed later) so far
  int64_t waiting = 0;
  int64_t running = 0;
  int32_t free_kv_blocks = 0;
  int32_t total_kv_blocks = 0;
  int64_t accelerated_steps = 0;  // steps run by the decode accelerator (CUDA graphs)
  int32_t graphs_captured = 0;    // its CUDA graphs (one per batch bucket used)
};

}  // namespace cpserve
