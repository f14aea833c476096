// Attention of one rank of a context-parallel pool (DESIGN §4), for any mix of
// partitioned (PCP prefill) and replicated (DCP decode / decode-side prefill) work
// items in one step:
//
//  1. K/V of partitioned tokens are all-gathered (AllGatherV) and, with the
//     replicated ones, put in global order; each rank writes only the tokens it
//     owns under the CP layout into its paged cache (slot −1 elsewhere).
//  2. In-chunk causal attention: each local query attends the new keys of its item
//     up to its own position (PCP: the rank's two chunks against the gathered keys).
//  3. Cached context [0, context_len) is sharded across ranks: queries (all-gathered
//     if partitioned) attend this rank's shard; partial results are combined across
//     ranks by log-sum-exp (all-gather of LSE, rescale, all-reduce of O), then merged
//     with the in-chunk result.
//
// Every rank issues the same collectives in the same order (decided by the step
// plan only), also when it holds no tokens of the step.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "kernels/kv_cache.h"
#include "worker/comm/collective_group.h"
#include "worker/cp/cp_step.h"
#include "worker/model/attention_layer.h"

namespace cpserve {

class CpAttention final : public AttentionLayer {
 public:
  // group may be null when the pool has one rank.
  CpAttention(Backend& backend, comm::CollectiveGroup* group, const KvCacheView& cache,
              const CpLayout& kv_layout);

  // The next step: its items, the layout BuildCpStepLayout made for this rank, each
  // item's block table on this rank (local order) and the cache slot on this rank of
  // every global-order token (−1 where another rank owns it).
  absl::Status SetStep(std::vector<CpWork> works, CpStepLayout layout,
                       std::vector<std::vector<int32_t>> block_tables,
                       const std::vector<int64_t>& global_slots);

  absl::Status Forward(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& out) override;

 private:
  // Rows of x (this rank's [T, H, D]) in global order [N, H, D]; all-gathers the
  // partitioned rows when the step has any.
  absl::StatusOr<Tensor> ToGlobalOrder(const Tensor& x);
  absl::StatusOr<Tensor> Upload(const std::vector<int64_t>& host);
  // Attention of the global-order queries qf to this rank's context shard, combined
  // over ranks: o [N, Hq, D], lse [N, Hq].
  absl::Status ContextAttention(int64_t layer, const Tensor& qf, const Tensor& o,
                                const Tensor& lse);

  Backend& backend_;
  comm::CollectiveGroup* group_;
  KvCacheView cache_;
  CpLayout kv_layout_;

  std::vector<CpWork> works_;
  CpStepLayout layout_;
  std::vector<std::vector<int32_t>> tables_;
  std::vector<PrefillSegment> chunk_segments_;
  std::vector<PagedSegment> context_segments_;
  Tensor slots_;             // i64 [N]
  Tensor full_index_;        // i64 [N]
  Tensor partitioned_rows_;  // i64 [gather_counts[rank]]
  Tensor local_to_global_;   // i64 [T]
};

}  // namespace cpserve
