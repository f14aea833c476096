// Attention of a single rank (no context parallelism): every token of the step
// writes its K/V into the paged cache, then each work item's queries attend its
// cached context plus the step's new keys, causally (DESIGN §4 with N = 1).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "kernels/kv_cache.h"
#include "worker/model/attention_layer.h"

namespace cpserve {

// One work item of a step, as rows of the step's token list.
struct StepSegment {
  int64_t row_start = 0;  // first row of this item in the step's tokens
  int64_t num_tokens = 0;
  int64_t context_len = 0;           // positions [0, context_len) already in the cache
  std::vector<int32_t> block_table;  // the request's blocks on this rank, local order
};

class LocalAttention final : public AttentionLayer {
 public:
  LocalAttention(Backend& backend, const KvCacheView& cache) : backend_(backend), cache_(cache) {}

  // Describes the next forward pass: its segments and the cache slot of every
  // row (slot_mapping[row] = block * B + offset).
  absl::Status SetStep(std::vector<StepSegment> segments, const std::vector<int64_t>& slots);

  absl::Status Forward(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& out) override;

 private:
  Backend& backend_;
  KvCacheView cache_;
  std::vector<StepSegment> segments_;
  std::vector<PrefillSegment> prefill_;  // views into segments_' block tables
  Tensor slots_;                         // int64 [T] on the device
  Tensor lse_;                           // fp32 [T, Hq] scratch
};

}  // namespace cpserve
