// CUDA bf16 attention kernels (DESIGN §4; semantics of kernels/attention.h and
// Backend::PrefillAttention / PagedAttention in kernels/backend.h).
//
// Device tensors: q, o bf16 [Tq, Hq, D]; k, v bf16 [Tk, Hkv, D] (unit last stride,
// any token / head strides that keep rows 16-byte aligned); lse fp32 [Tq, Hq] (any
// strides). The paged cache is bf16 on the same device (KvCacheView strides).
// Segment metadata and block tables are host memory; each call uploads them to
// stream-ordered scratch (cudaMallocAsync / cudaFreeAsync on `stream`), so the
// host spans may be released as soon as the call returns. Head dims 32, 64, 128.
// Work is queued on `stream`; errors found before launch write nothing.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/attention.h"
#include "kernels/kv_cache.h"
#include "kernels/tensor.h"

namespace cpserve::cuda {

// Ragged prefill; `cache` may be null when no segment has ctx_len > 0.
absl::Status PrefillAttentionCuda(const Tensor& q, const Tensor& k, const Tensor& v,
                                  absl::Span<const PrefillSegment> segments,
                                  const KvCacheView* cache, int64_t layer,
                                  const AttentionOptions& options, const Tensor& o,
                                  const Tensor& lse, cudaStream_t stream);

// Paged, unmasked attention over cached keys (decode; CP attention to a shard).
absl::Status PagedAttentionCuda(const Tensor& q, absl::Span<const PagedSegment> segments,
                                const KvCacheView& cache, int64_t layer,
                                const AttentionOptions& options, const Tensor& o, const Tensor& lse,
                                cudaStream_t stream);

}  // namespace cpserve::cuda
