// KV cache write/gather, attention (forwarded to attention_cuda.h) and the
// merge of partial attention states: checks, then launch.
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/cuda_backend_impl.h"

namespace cpserve::cuda {
namespace {

CacheView ToCacheView(const KvCacheView& c) {
  return CacheView{static_cast<uint16_t*>(c.base),
                   c.num_blocks,
                   c.block_size,
                   c.num_kv_heads,
                   c.head_dim,
                   c.block_stride,
                   c.layer_stride,
                   c.kv_stride,
                   c.token_stride,
                   c.head_stride};
}

absl::Status SameHeads(const HeadsView& a, const HeadsView& b, const char* op) {
  if (a.tokens != b.tokens || a.heads != b.heads || a.dim != b.dim) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": [T, H, D] shapes differ"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CudaBackend::CheckCache(const KvCacheView& cache, int64_t layer, const HeadsView& k,
                                     const char* op) const {
  CPSERVE_RETURN_IF_ERROR(cache.Validate());
  if (cache.dtype != DType::kBF16 || !(cache.device == device())) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": cache must be bf16 on cuda:", device_));
  }
  if (layer < 0 || layer >= cache.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": layer ", layer, " outside [0, ", cache.num_layers, ")"));
  }
  if (k.heads != cache.num_kv_heads || k.dim != cache.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": K/V have ", k.heads, " heads of ", k.dim,
                                                   ", cache has ", cache.num_kv_heads, " of ",
                                                   cache.head_dim));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::WriteKvCache(int64_t layer, const Tensor& k, const Tensor& v,
                                       const Tensor& slot_mapping, const KvCacheView& cache) {
  CPSERVE_ASSIGN_OR_RETURN(HeadsView kh, AsHeads(k, device(), "WriteKvCache k"));
  CPSERVE_ASSIGN_OR_RETURN(HeadsView vh, AsHeads(v, device(), "WriteKvCache v"));
  CPSERVE_RETURN_IF_ERROR(SameHeads(kh, vh, "WriteKvCache"));
  CPSERVE_RETURN_IF_ERROR(CheckCache(cache, layer, kh, "WriteKvCache"));
  CPSERVE_RETURN_IF_ERROR(
      CheckIndexVector(slot_mapping, device(), kh.tokens, false, "WriteKvCache slot_mapping"));
  WriteKvParams p{kh,
                  vh,
                  ToCacheView(cache),
                  layer,
                  slot_mapping.data<int64_t>(),
                  slot_mapping.stride(0),
                  error_flag_};
  return CudaStatus(LaunchWriteKv(p, stream_), "WriteKvCache");
}

absl::Status CudaBackend::GatherKvCache(int64_t layer, absl::Span<const int32_t> block_table,
                                        int64_t len, const KvCacheView& cache, const Tensor& k_out,
                                        const Tensor& v_out) {
  CPSERVE_ASSIGN_OR_RETURN(HeadsView kh, AsHeads(k_out, device(), "GatherKvCache k_out"));
  CPSERVE_ASSIGN_OR_RETURN(HeadsView vh, AsHeads(v_out, device(), "GatherKvCache v_out"));
  CPSERVE_RETURN_IF_ERROR(SameHeads(kh, vh, "GatherKvCache"));
  CPSERVE_RETURN_IF_ERROR(CheckCache(cache, layer, kh, "GatherKvCache"));
  if (len < 0 || kh.tokens != len) {
    return absl::InvalidArgumentError(
        absl::StrCat("GatherKvCache: len ", len, " but outputs hold ", kh.tokens, " tokens"));
  }
  CPSERVE_RETURN_IF_ERROR(cache.CheckBlockTable(block_table, len, "GatherKvCache"));
  const int64_t nblocks = (len + cache.block_size - 1) / cache.block_size;
  if (len == 0) return absl::OkStatus();
  Scratch scratch(stream_);
  CPSERVE_ASSIGN_OR_RETURN(void* table,
                           Upload(scratch, block_table.data(), sizeof(int32_t) * nblocks));
  GatherKvParams p{kh, vh, ToCacheView(cache), layer, static_cast<const int32_t*>(table), len};
  return CudaStatus(LaunchGatherKv(p, stream_), "GatherKvCache");
}

absl::Status CudaBackend::PrefillAttention(const Tensor& q, const Tensor& k, const Tensor& v,
                                           absl::Span<const PrefillSegment> segments,
                                           const KvCacheView* cache, int64_t layer,
                                           const AttentionOptions& options, const Tensor& o,
                                           const Tensor& lse) {
  return PrefillAttentionCuda(q, k, v, segments, cache, layer, options, o, lse, stream_);
}

absl::Status CudaBackend::PagedAttention(const Tensor& q, absl::Span<const PagedSegment> segments,
                                         const KvCacheView& cache, int64_t layer,
                                         const AttentionOptions& options, const Tensor& o,
                                         const Tensor& lse) {
  return PagedAttentionCuda(q, segments, cache, layer, options, o, lse, stream_);
}

absl::Status CudaBackend::MergeAttentionStates(const Tensor& o_a, const Tensor& lse_a,
                                               const Tensor& o_b, const Tensor& lse_b,
                                               const Tensor& o, const Tensor& lse) {
  MergeParams p;
  CPSERVE_ASSIGN_OR_RETURN(p.o_a, AsHeads(o_a, device(), "MergeAttentionStates o_a"));
  CPSERVE_ASSIGN_OR_RETURN(p.o_b, AsHeads(o_b, device(), "MergeAttentionStates o_b"));
  CPSERVE_ASSIGN_OR_RETURN(p.o, AsHeads(o, device(), "MergeAttentionStates o"));
  CPSERVE_RETURN_IF_ERROR(SameHeads(p.o_a, p.o_b, "MergeAttentionStates"));
  CPSERVE_RETURN_IF_ERROR(SameHeads(p.o_a, p.o, "MergeAttentionStates"));
  const int64_t t = p.o.tokens, h = p.o.heads;
  CPSERVE_ASSIGN_OR_RETURN(p.lse_a, AsLse(lse_a, device(), t, h, "MergeAttentionStates lse_a"));
  CPSERVE_ASSIGN_OR_RETURN(p.lse_b, AsLse(lse_b, device(), t, h, "MergeAttentionStates lse_b"));
  CPSERVE_ASSIGN_OR_RETURN(p.lse, AsLse(lse, device(), t, h, "MergeAttentionStates lse"));
  return CudaStatus(LaunchMergeStates(p, stream_), "MergeAttentionStates");
}

absl::Status CudaBackend::CombineLse(const Tensor& lse_parts, const Tensor& lse) {
  CPSERVE_RETURN_IF_ERROR(
      CheckDeviceTensor(lse_parts, device(), DType::kF32, "CombineLse lse_parts"));
  if (lse_parts.rank() != 3 || lse.rank() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("CombineLse: lse_parts ", lse_parts.DebugString(), " vs lse ",
                     lse.defined() ? lse.DebugString() : "undefined", " (want [N,T,H], [T,H])"));
  }
  CombineLseParams p;
  p.parts = lse_parts.data<float>();
  p.n = lse_parts.dim(0);
  p.tokens = lse_parts.dim(1);
  p.heads = lse_parts.dim(2);
  p.part_stride = lse_parts.stride(0);
  p.token_stride = lse_parts.stride(1);
  p.head_stride = lse_parts.stride(2);
  CPSERVE_ASSIGN_OR_RETURN(p.lse, AsLse(lse, device(), p.tokens, p.heads, "CombineLse lse"));
  return CudaStatus(LaunchCombineLse(p, stream_), "CombineLse");
}

absl::Status CudaBackend::RescaleAttentionOutput(const Tensor& o, const Tensor& lse_local,
                                                 const Tensor& lse_total) {
  RescaleParams p;
  CPSERVE_ASSIGN_OR_RETURN(p.o, AsHeads(o, device(), "RescaleAttentionOutput o"));
  CPSERVE_ASSIGN_OR_RETURN(p.local, AsLse(lse_local, device(), p.o.tokens, p.o.heads,
                                          "RescaleAttentionOutput lse_local"));
  CPSERVE_ASSIGN_OR_RETURN(p.total, AsLse(lse_total, device(), p.o.tokens, p.o.heads,
                                          "RescaleAttentionOutput lse_total"));
  return CudaStatus(LaunchRescale(p, stream_), "RescaleAttentionOutput");
}

}  // namespace cpserve::cuda
