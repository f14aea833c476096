#include "worker/engine/local_attention.h"

#include "kernels/status_macros.h"

namespace cpserve {

absl::Status LocalAttention::SetStep(std::vector<StepSegment> segments,
                                     const std::vector<int64_t>& slots) {
  segments_ = std::move(segments);
  prefill_.clear();
  for (const StepSegment& s : segments_) {
    PrefillSegment p;
    p.q_start = p.k_start = s.row_start;
    p.q_len = p.k_len = s.num_tokens;
    p.ctx_len = s.context_len;
    p.block_table = s.block_table;
    prefill_.push_back(p);
  }
  const int64_t t = static_cast<int64_t>(slots.size());
  CPSERVE_ASSIGN_OR_RETURN(slots_, backend_.Alloc({t}, DType::kI64));
  return backend_.CopyFromHost(Tensor::Borrow(const_cast<int64_t*>(slots.data()), {t}, DType::kI64),
                               slots_);
}

absl::Status LocalAttention::Forward(int64_t layer, const Tensor& q, const Tensor& k,
                                     const Tensor& v, const Tensor& out) {
  if (!lse_.defined() || lse_.dim(0) != q.dim(0) || lse_.dim(1) != q.dim(1)) {
    CPSERVE_ASSIGN_OR_RETURN(lse_, backend_.Alloc({q.dim(0), q.dim(1)}, DType::kF32));
  }
  CPSERVE_RETURN_IF_ERROR(backend_.WriteKvCache(layer, k, v, slots_, cache_));
  AttentionOptions options;
  options.causal = true;
  return backend_.PrefillAttention(q, k, v, prefill_, &cache_, layer, options, out, lse_);
}

}  // namespace cpserve
