// Placeholder for the CUDA attention kernels until the cuda-attention branch is
// merged (built only with -DCPSERVE_CUDA_ATTENTION_STUB=ON).
#include "kernels/cuda/attention_cuda.h"

namespace cpserve::cuda {

absl::Status PrefillAttentionCuda(const Tensor&, const Tensor&, const Tensor&,
                                  absl::Span<const PrefillSegment>, const KvCacheView*, int64_t,
                                  const AttentionOptions&, const Tensor&, const Tensor&,
                                  cudaStream_t) {
  return absl::UnimplementedError("PrefillAttentionCuda: CUDA attention kernels not built (stub)");
}

absl::Status PagedAttentionCuda(const Tensor&, absl::Span<const PagedSegment>, const KvCacheView&,
                                int64_t, const AttentionOptions&, const Tensor&, const Tensor&,
                                cudaStream_t) {
  return absl::UnimplementedError("PagedAttentionCuda: CUDA attention kernels not built (stub)");
}

}  // namespace cpserve::cuda
