// The KV-transfer side of one pool rank: its UCX transfer agent with the rank's KV
// cache registered, and the execution of the TransferOps a step command carries
// (protos/cpserve/v1/step.proto). Every rank runs the same ops; outcome codes are
// combined over the group (max) so the leader learns the pool-wide result.
#pragma once

#include <cstdint>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cpserve/v1/step.pb.h"
#include "kernels/kv_cache.h"
#include "worker/comm/collective_group.h"
#include "worker/kv/cp_layout.h"
#include "worker/transfer/transfer_agent.h"

namespace cpserve {

inline constexpr int32_t kTransferDone = 0;
inline constexpr int32_t kTransferPending = 1;
inline constexpr int32_t kTransferFailedBase = 100;  // + absl::StatusCode

class RankTransfers {
 public:
  // Creates the agent and registers `cache` (host memory) as this rank's region.
  static absl::StatusOr<std::unique_ptr<RankTransfers>> Create(const KvCacheView& cache,
                                                               const CpLayout& layout, int rank);

  // This rank's destination template (address, rkey, region; no blocks).
  v1::KvDestination DestinationTemplate() const;

  // Runs the ops on this rank; returns one code per op, combined over `group` (may
  // be null for a single rank) so that every rank returns the same codes.
  absl::StatusOr<std::vector<int32_t>> Run(const v1::StepCommand& command, int rank,
                                           comm::CollectiveGroup* group);

  transfer::TransferAgent& agent() { return *agent_; }

 private:
  int32_t RunOne(const v1::TransferOp& op, int rank);

  std::unique_ptr<transfer::TransferAgent> agent_;
  v1::KvDestination template_;
  std::map<std::string, std::future<absl::Status>> pushes_;
  std::map<std::string, absl::Status> finished_pushes_;
  std::deque<std::string> finished_order_;
};

// Every rank's destination template, in rank order, on every rank (all-gather).
absl::StatusOr<std::vector<v1::KvDestination>> ExchangeDestinations(const v1::KvDestination& mine,
                                                                    comm::CollectiveGroup* group);

// The outcome of a combined code.
absl::Status TransferOutcome(int32_t code, const std::string& what);

}  // namespace cpserve
