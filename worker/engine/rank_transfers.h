// The KV-transfer side of one pool rank: its UCX transfer agent with the rank's KV
// cache registered, and the execution of the TransferOps a step command carries
// (protos/cpserve/v1/step.proto). Every rank runs the same ops; outcome codes are
// combined over the group (max) so the leader learns the pool-wide result.
//
// Transfer paths (path() names the UCX one; logged at start):
//  - "ucx-host": a host KV cache (CPU backend) is registered with UCX directly.
//  - "ucx-cuda": a GPU KV cache registered with UCX directly, when the UCX build has
//    CUDA support (Debian's has not: never exercised here).
//  - "ucx-pinned-staging" / "ucx-host-staging": otherwise a GPU KV cache is mirrored
//    by a host buffer of the same layout, which UCX registers and the descriptors
//    address; the first staged copy page-locks it when the backend can
//    (Backend::PinHostMemory; pools whose pushes all go through CUDA IPC never pay
//    that host memory, since the untouched mirror is never faulted in). A
//    push first copies the request's blocks device → host (on the backend's stream,
//    after the prefill that wrote them); a receive, once every put has landed,
//    copies the reserved blocks host → device before the request is marked ready.
//  - "cuda-ipc": a GPU KV cache with a direct copier (EngineOptions::
//    kv_direct_copier; cuda_ipc_copier.h). Receivers advertise their cache; a push
//    whose every destination opens (same host) is copied GPU to GPU and skips the
//    staging copies on both sides; other pushes take the UCX path above. Chosen
//    per push; PushPath() reports the one a push took.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cpserve/v1/step.pb.h"
#include "kernels/backend.h"
#include "kernels/kv_cache.h"
#include "worker/comm/collective_group.h"
#include "worker/engine/engine_types.h"
#include "worker/kv/cp_layout.h"
#include "worker/transfer/transfer_agent.h"

namespace cpserve {

inline constexpr int32_t kTransferDone = 0;
inline constexpr int32_t kTransferPending = 1;
inline constexpr int32_t kTransferFailedBase = 100;  // + absl::StatusCode

class RankTransfers {
 public:
  // Creates the agent and registers `cache` as this rank's region: directly when it
  // is host memory, through a host mirror when it is on a GPU (`backend` — the one
  // owning the cache — does the copies; required then).
  // With `direct` (GPU caches only) pushes to ranks on this host go direct; a
  // factory error is logged and leaves staging.
  static absl::StatusOr<std::unique_ptr<RankTransfers>> Create(
      const KvCacheView& cache, const CpLayout& layout, int rank, Backend* backend = nullptr,
      const KvDirectCopierFactory& direct = nullptr);

  // "ucx-host", "ucx-cuda", "ucx-pinned-staging" or "ucx-host-staging" (above).
  const char* path() const {
    if (staged()) return pinned_ != nullptr ? "ucx-pinned-staging" : "ucx-host-staging";
    return ucx_cuda() ? "ucx-cuda" : "ucx-host";
  }
  // The path the push of `transfer_id` took on this rank ("cuda-ipc" or path()).
  std::string PushPath(const std::string& transfer_id) const;

  // This rank's destination template (address, rkey, region; no blocks).
  v1::KvDestination DestinationTemplate() const;

  // Runs the ops on this rank; returns one code per op, combined over `group` (may
  // be null for a single rank) so that every rank returns the same codes.
  absl::StatusOr<std::vector<int32_t>> Run(const v1::StepCommand& command, int rank,
                                           comm::CollectiveGroup* group);

  transfer::TransferAgent& agent() { return *agent_; }

 private:
  int32_t RunOne(const v1::TransferOp& op, int rank);
  bool staged() const { return mirror_.defined(); }
  // A GPU cache (backend_ is set for those) registered with UCX itself.
  bool ucx_cuda() const { return backend_ != nullptr && !staged(); }
  // Copies blocks between the GPU cache and the host mirror (staged path only),
  // coalescing runs of consecutive block ids.
  absl::Status CopyBlocks(std::vector<int32_t> ids, bool to_host);

  std::unique_ptr<transfer::TransferAgent> agent_;
  Backend* backend_ = nullptr;
  Tensor device_blocks_;  // staged: the GPU cache as [num_blocks, block elements]
  Tensor mirror_;         // staged: its host mirror, same shape
  // staged: unpins the mirror (declared after it, so it runs before the mirror goes).
  std::unique_ptr<void, std::function<void(void*)>> pinned_;
  bool pin_tried_ = false;
  int rank_ = 0;
  void PinMirrorOnce();  // staged: before the first copy through the mirror
  std::map<std::string, std::vector<int32_t>> receiving_;  // staged: reserved blocks per transfer
  v1::KvDestination template_;
  std::shared_ptr<transfer::DirectCopier> direct_;
  std::map<std::string, std::future<absl::Status>> pushes_;
  std::map<std::string, bool> push_direct_;  // per push (bounded like finished_pushes_)
  std::map<std::string, absl::Status> finished_pushes_;
  std::deque<std::string> finished_order_;
};

// Every rank's destination template, in rank order, on every rank (all-gather).
absl::StatusOr<std::vector<v1::KvDestination>> ExchangeDestinations(const v1::KvDestination& mine,
                                                                    comm::CollectiveGroup* group);

// The outcome of a combined code.
absl::Status TransferOutcome(int32_t code, const std::string& what);

}  // namespace cpserve
