#include "worker/cp/cp_attention.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "worker/cp/dual_chunk_swap.h"

namespace cpserve {

CpAttention::CpAttention(Backend& backend, comm::CollectiveGroup* group, const KvCacheView& cache,
                         const CpLayout& kv_layout)
    : backend_(backend), group_(group), cache_(cache), kv_layout_(kv_layout) {}

absl::StatusOr<Tensor> CpAttention::Upload(const std::vector<int64_t>& host) {
  const int64_t n = static_cast<int64_t>(host.size());
  CPSERVE_ASSIGN_OR_RETURN(Tensor t, backend_.Alloc({n}, DType::kI64));
  if (n > 0) {
    CPSERVE_RETURN_IF_ERROR(backend_.CopyFromHost(
        Tensor::Borrow(const_cast<int64_t*>(host.data()), {n}, DType::kI64), t));
  }
  return t;
}

absl::Status CpAttention::SetStep(std::vector<CpWork> works, CpStepLayout layout,
                                  std::vector<std::vector<int32_t>> block_tables,
                                  const std::vector<int64_t>& global_slots) {
  if (layout.world_size > 1 && group_ == nullptr) {
    return absl::FailedPreconditionError("CP attention over several ranks needs a group");
  }
  works_ = std::move(works);
  layout_ = std::move(layout);
  tables_ = std::move(block_tables);
  chunk_segments_.clear();
  context_segments_.clear();
  for (size_t i = 0; i < works_.size(); ++i) {
    const CpWork& w = works_[i];
    const int64_t base = layout_.base[i];
    if (w.partitioned && layout_.world_size > 1) {
      // The rank's two chunks; each sees the item's new keys up to its own end.
      const ChunkPair pair = RankChunks(w.num_tokens, layout_.world_size, layout_.rank);
      int64_t row = layout_.local_start[i];
      for (const TokenRange& c : {pair.early, pair.late}) {
        if (c.size() > 0) {
          chunk_segments_.push_back({row, c.size(), base, c.end, 0, {}});
        }
        row += c.size();
      }
    } else if (w.num_tokens > 0) {
      chunk_segments_.push_back({layout_.local_start[i], w.num_tokens, base, w.num_tokens, 0, {}});
    }
    if (w.num_tokens > 0) {
      PagedSegment s;
      s.q_start = base;
      s.q_len = w.num_tokens;
      s.kv_len = kv_layout_.LocalLength(w.context_len, layout_.rank);
      s.block_table = tables_[i];
      context_segments_.push_back(s);
    }
  }
  CPSERVE_ASSIGN_OR_RETURN(slots_, Upload(global_slots));
  CPSERVE_ASSIGN_OR_RETURN(full_index_, Upload(layout_.full_index));
  std::vector<int64_t> part_rows = layout_.partitioned_local_rows;
  CPSERVE_ASSIGN_OR_RETURN(partitioned_rows_, Upload(part_rows));
  CPSERVE_ASSIGN_OR_RETURN(local_to_global_, Upload(layout_.local_to_global));
  return absl::OkStatus();
}

absl::StatusOr<Tensor> CpAttention::ToGlobalOrder(const Tensor& x) {
  const int64_t t = layout_.local_tokens(), n = layout_.total_tokens;
  const int64_t h = x.dim(1), d = x.dim(2);
  if (!layout_.any_partitioned) return x;  // every row is local, already in global order
  const int64_t g = layout_.gathered_tokens();
  const int64_t mine = layout_.gather_counts[layout_.rank];
  // [local rows] ++ [gathered partitioned rows of every rank], then one gather.
  CPSERVE_ASSIGN_OR_RETURN(Tensor combined, backend_.Alloc({t + g, h, d}, x.dtype()));
  if (t > 0) CPSERVE_RETURN_IF_ERROR(backend_.Copy(x, combined.Slice(0, 0, t)));
  CPSERVE_ASSIGN_OR_RETURN(Tensor send, backend_.Alloc({mine, h, d}, x.dtype()));
  if (mine > 0) CPSERVE_RETURN_IF_ERROR(backend_.GatherRows(x, partitioned_rows_, send));
  Tensor gathered = combined.Slice(0, t, t + g);
  CPSERVE_RETURN_IF_ERROR(group_->AllGatherV(send, gathered, layout_.gather_counts));
  CPSERVE_ASSIGN_OR_RETURN(Tensor full, backend_.Alloc({n, h, d}, x.dtype()));
  if (n > 0) CPSERVE_RETURN_IF_ERROR(backend_.GatherRows(combined, full_index_, full));
  return full;
}

absl::Status CpAttention::ContextAttention(int64_t layer, const Tensor& qf, const Tensor& o,
                                           const Tensor& lse) {
  const int64_t n = layout_.total_tokens, hq = qf.dim(1);
  AttentionOptions options;
  options.causal = false;
  CPSERVE_RETURN_IF_ERROR(
      backend_.PagedAttention(qf, context_segments_, cache_, layer, options, o, lse));
  if (layout_.world_size == 1) return absl::OkStatus();
  // lse = log Σ_r exp(lse_r); O = Σ_r exp(lse_r − lse)·O_r.
  const int64_t world = layout_.world_size;
  CPSERVE_ASSIGN_OR_RETURN(Tensor parts, backend_.Alloc({world * n, hq}, DType::kF32));
  CPSERVE_RETURN_IF_ERROR(group_->AllGather(lse, parts));
  CPSERVE_ASSIGN_OR_RETURN(Tensor parts3, parts.Reshape({world, n, hq}));
  CPSERVE_ASSIGN_OR_RETURN(Tensor total, backend_.Alloc({n, hq}, DType::kF32));
  CPSERVE_RETURN_IF_ERROR(backend_.CombineLse(parts3, total));
  CPSERVE_RETURN_IF_ERROR(backend_.RescaleAttentionOutput(o, lse, total));
  Tensor o_mut = o;
  CPSERVE_RETURN_IF_ERROR(group_->AllReduce(o_mut));
  return backend_.Copy(total, lse);
}

absl::Status CpAttention::Forward(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out) {
  const int64_t t = layout_.local_tokens(), n = layout_.total_tokens;
  const int64_t hq = q.dim(1), d = q.dim(2);
  if (q.dim(0) != t) {
    return absl::InternalError(absl::StrCat("CP attention: ", q.dim(0), " query rows, step has ", t,
                                            " on rank ", layout_.rank));
  }
  // The step's token count is the same on every rank: all skip, or none does.
  if (n == 0) return absl::OkStatus();
  // 1. K/V in global order; store the owned tokens.
  CPSERVE_ASSIGN_OR_RETURN(Tensor kf, ToGlobalOrder(k));
  CPSERVE_ASSIGN_OR_RETURN(Tensor vf, ToGlobalOrder(v));
  CPSERVE_RETURN_IF_ERROR(backend_.WriteKvCache(layer, kf, vf, slots_, cache_));

  // 2. Causal attention within the step's new tokens.
  CPSERVE_ASSIGN_OR_RETURN(Tensor lse, backend_.Alloc({t, hq}, DType::kF32));
  AttentionOptions causal;
  causal.causal = true;
  if (t > 0) {
    CPSERVE_RETURN_IF_ERROR(
        backend_.PrefillAttention(q, kf, vf, chunk_segments_, nullptr, layer, causal, out, lse));
  }
  if (!layout_.any_context) return absl::OkStatus();

  // 3. Sharded context, combined over ranks, merged into the in-chunk result.
  CPSERVE_ASSIGN_OR_RETURN(Tensor qf, ToGlobalOrder(q));
  CPSERVE_ASSIGN_OR_RETURN(Tensor oc, backend_.Alloc({n, hq, d}, q.dtype()));
  CPSERVE_ASSIGN_OR_RETURN(Tensor lsec, backend_.Alloc({n, hq}, DType::kF32));
  CPSERVE_RETURN_IF_ERROR(ContextAttention(layer, qf, oc, lsec));
  if (t == 0) return absl::OkStatus();
  if (layout_.any_partitioned) {
    CPSERVE_ASSIGN_OR_RETURN(Tensor oc_local, backend_.Alloc({t, hq, d}, q.dtype()));
    CPSERVE_ASSIGN_OR_RETURN(Tensor lse_local, backend_.Alloc({t, hq}, DType::kF32));
    CPSERVE_RETURN_IF_ERROR(backend_.GatherRows(oc, local_to_global_, oc_local));
    CPSERVE_RETURN_IF_ERROR(backend_.GatherRows(lsec, local_to_global_, lse_local));
    return backend_.MergeAttentionStates(out, lse, oc_local, lse_local, out, lse);
  }
  return backend_.MergeAttentionStates(out, lse, oc, lsec, out, lse);
}

}  // namespace cpserve
