// PrefillAttentionCuda: ragged prefill over cached context + new keys.
#include <vector>

#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/attention_launch.h"

namespace cpserve::cuda {

absl::Status PrefillAttentionCuda(const Tensor& q, const Tensor& k, const Tensor& v,
                                  absl::Span<const PrefillSegment> segments,
                                  const KvCacheView* cache, int64_t layer,
                                  const AttentionOptions& options, const Tensor& o,
                                  const Tensor& lse, cudaStream_t stream) {
  attn::Problem p;
  p.op = "PrefillAttentionCuda";
  p.q = q;
  p.k = k;
  p.v = v;
  p.o = o;
  p.lse = lse;
  if (!k.defined()) return absl::InvalidArgumentError("PrefillAttentionCuda: k undefined");
  p.num_kv_heads = k.rank() == 3 ? k.dim(1) : 0;
  p.cache = cache;
  p.layer = layer;
  p.scale = options.scale;
  p.causal = options.causal;
  std::vector<attn::Segment> segs;
  segs.reserve(segments.size());
  for (const PrefillSegment& s : segments) {
    segs.push_back({s.q_start, s.q_len, s.k_start, s.k_len, s.ctx_len, s.block_table});
  }
  return attn::RunAttention(p, segs, stream);
}

}  // namespace cpserve::cuda
