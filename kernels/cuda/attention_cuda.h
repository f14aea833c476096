// CUDA attention kernels (prefill: ragged, causal, cached context; paged decode),
// same semantics and argument meaning as Backend::PrefillAttention /
// PagedAttention (kernels/backend.h, kernels/attention.h). q/k/v/o bf16 device
// tensors, lse fp32; segment metadata in host memory (uploaded here); launched
// on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/attention.h"
#include "kernels/kv_cache.h"
#include "kernels/tensor.h"

namespace cpserve::cuda {

absl::Status PrefillAttentionCuda(const Tensor& q, const Tensor& k, const Tensor& v,
                                  absl::Span<const PrefillSegment> segments,
                                  const KvCacheView* cache, int64_t layer,
                                  const AttentionOptions& options, const Tensor& o,
                                  const Tensor& lse, cudaStream_t stream);

absl::Status PagedAttentionCuda(const Tensor& q, absl::Span<const PagedSegment> segments,
                                const KvCacheView& cache, int64_t layer,
                                const AttentionOptions& options, const Tensor& o, const Tensor& lse,
                                cudaStream_t stream);

}  // namespace cpserve::cuda
