// PagedAttentionCuda: unmasked attention over cached keys only. It is the prefill
// kernel with ctx_len = kv_len and no dense keys; query rows of one KV head group
// share a tile, and long key ranges are split across blocks (flash-decoding) and
// merged by LSE when the batch alone would not fill the GPU.
#include <vector>

#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/attention_launch.h"

namespace cpserve::cuda {

absl::Status PagedAttentionCuda(const Tensor& q, absl::Span<const PagedSegment> segments,
                                const KvCacheView& cache, int64_t layer,
                                const AttentionOptions& options, const Tensor& o, const Tensor& lse,
                                cudaStream_t stream) {
  attn::Problem p;
  p.op = "PagedAttentionCuda";
  p.q = q;
  p.o = o;
  p.lse = lse;
  p.num_kv_heads = cache.num_kv_heads;
  p.cache = &cache;
  p.require_cache = true;
  p.layer = layer;
  p.scale = options.scale;
  p.causal = false;
  std::vector<attn::Segment> segs;
  segs.reserve(segments.size());
  for (const PagedSegment& s : segments) {
    segs.push_back({s.q_start, s.q_len, 0, 0, s.kv_len, s.block_table});
  }
  return attn::RunAttention(p, segs, stream);
}

}  // namespace cpserve::cuda
