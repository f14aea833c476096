// Host side of the CUDA attention kernels: one description for prefill and paged
// attention (segments whose keys are cached context followed by dense keys), its
// validation, the work plan (tiles, key splits) and the launches.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/kv_cache.h"
#include "kernels/tensor.h"

namespace cpserve::cuda::attn {

// Keys of a segment: ctx_len cached keys (block_table) then k_len rows of k/v.
struct Segment {
  int64_t q_start = 0, q_len = 0;
  int64_t k_start = 0, k_len = 0;
  int64_t ctx_len = 0;
  absl::Span<const int32_t> block_table;
};

struct Problem {
  const char* op = "";
  Tensor q, o, lse;  // bf16 [Tq, Hq, D], bf16 [Tq, Hq, D], fp32 [Tq, Hq]
  Tensor k, v;       // bf16 [Tk, Hkv, D]; undefined for paged attention
  int64_t num_kv_heads = 0;
  const KvCacheView* cache = nullptr;  // needed when a segment has ctx_len > 0
  bool require_cache = false;          // validate the cache even if no key is read
  int64_t layer = 0;
  float scale = 0.0f;  // 0 -> 1/sqrt(D)
  bool causal = false;
};

// Which kernel runs prefill attention (dense keys given) with head dim 128 on a
// compute capability 9.0 device; paged attention, other head dims and other
// devices always run the mma.sync kernel. kAuto = $CPSERVE_PREFILL_KERNEL (mma,
// hopper, hopper_persistent), the persistent Hopper kernel when unset. The Hopper
// kinds are attn::HopperVariant's (attention_hopper.h), in that order.
// Process-wide, for tests and benchmarks that compare the kernels.
enum class PrefillKernel {
  kAuto,
  kMmaSync,
  kHopper,
  kHopperPersistent,
};
void SetPrefillKernel(PrefillKernel kernel);

// Validates everything (writes nothing on error), uploads the plan and launches.
absl::Status RunAttention(const Problem& problem, absl::Span<const Segment> segments,
                          cudaStream_t stream);

}  // namespace cpserve::cuda::attn
