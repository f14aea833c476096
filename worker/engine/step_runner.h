// Executes one step plan on one rank of a pool (every rank runs every step,
// DESIGN §6): builds this rank's token list from the plan (its DualChunkSwap share
// of partitioned items, all tokens of replicated ones), runs the model with the CP
// attention layer, samples the rows this rank holds and shares the sampled tokens
// with every rank (all-reduce), so the leader learns tokens sampled elsewhere.
// With a decode accelerator (one rank only), steps IsAcceleratedDecodeStep accepts
// run the model through it instead; sampling is the same.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "cpserve/v1/step.pb.h"
#include "kernels/backend.h"
#include "worker/comm/collective_group.h"
#include "worker/cp/cp_attention.h"
#include "worker/engine/decode_step_accelerator.h"
#include "worker/model/llama_model.h"

namespace cpserve {

struct StepOutput {
  // One entry per work item with samples, in plan order.
  std::vector<int32_t> tokens;
  // Logits rows [vocab] of the items that asked for them (empty otherwise).
  std::vector<std::vector<float>> logits;
};

class StepRunner {
 public:
  // group may be null for a single-rank pool. kv_layout: N = group size.
  StepRunner(LlamaModel& model, Backend& backend, comm::CollectiveGroup* group,
             const KvCacheView& cache, const CpLayout& kv_layout, int rank);

  absl::StatusOr<StepOutput> Run(const v1::StepCommand& command);

  // Routes the steps IsAcceleratedDecodeStep accepts to `accelerator` (null: none).
  // Single-rank runners only (the caller checks).
  void SetAccelerator(std::unique_ptr<DecodeStepAccelerator> accelerator) {
    accelerator_ = std::move(accelerator);
  }
  const DecodeStepAccelerator* accelerator() const { return accelerator_.get(); }
  int64_t accelerated_steps() const { return accelerated_steps_; }

  int rank() const { return rank_; }
  int world_size() const { return kv_layout_.world_size; }

 private:
  LlamaModel& model_;
  Backend& backend_;
  comm::CollectiveGroup* group_;
  CpLayout kv_layout_;
  int rank_;
  CpAttention attention_;
  std::unique_ptr<DecodeStepAccelerator> accelerator_;
  int64_t accelerated_steps_ = 0;
};

// Broadcasts a step command from rank 0 (size, then bytes) / receives it on the others.
absl::Status SendStep(comm::CollectiveGroup& group, const v1::StepCommand& command);
absl::StatusOr<v1::StepCommand> ReceiveStep(comm::CollectiveGroup& group);

}  // namespace cpserve
