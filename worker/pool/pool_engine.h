// The engine of one pool rank. Every rank of a pool (prefill: PCP; decode: DCP)
// creates one; rank 0 (the leader) takes requests through the GenerationEngine
// API and drives the other ranks step by step over the pool's collective group;
// on the other ranks the object only runs the steps it is sent.
//
// Rank 0 must serve the rendezvous store (worker/comm/rendezvous_service.h) on
// `leader_address` before any rank calls CreatePoolEngine; the other ranks
// connect to it to form the collective group.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/engine/generation_engine.h"

namespace cpserve {

enum class PoolRole { kPrefill, kDecode };

struct PoolEngineOptions {
  PoolRole role = PoolRole::kDecode;
  std::string pool = "pool";  // name; namespaces the rendezvous keys
  int rank = 0;
  int world_size = 1;
  std::string leader_address;             // host:port of rank 0's rendezvous store
  std::string listen_host = "127.0.0.1";  // address this rank's Gloo/UCX endpoints use
  std::string model_dir;  // resolved model directory (ResolveModelDir; synthetic ones too)
  // "cpu" | "cuda" | "cuda:<first gpu>" | "cuda:<gpu>,<gpu>,..." (pool_backend.h).
  std::string device = "cpu";
  int32_t block_size = 16;
  int32_t interleave = 0;     // 0: = block_size
  int32_t num_kv_blocks = 0;  // 0: sized automatically
  int64_t max_batch_tokens = 2048;
  int32_t max_running = 64;
  absl::Duration collective_timeout = absl::Seconds(30);
  // One-rank pools on a GPU run decode steps through CUDA graphs (CUDA builds);
  // false: every step op by op (EngineOptions::cuda_graphs).
  bool cuda_graphs = true;
  // GPU caches: KV to decode ranks on this host through CUDA IPC (false: host
  // staging over UCX always; EngineOptions::kv_direct_copier).
  bool kv_direct = true;
};

// Creates this rank's engine (loads the model, forms the collective group, starts
// the KV transfer agent). On rank 0 the result takes requests; on other ranks
// its GenerationEngine methods answer FAILED_PRECONDITION and it runs until the
// leader stops or the group breaks (healthy() turns false).
absl::StatusOr<std::unique_ptr<GenerationEngine>> CreatePoolEngine(
    const PoolEngineOptions& options);

}  // namespace cpserve
