// The CPU fp32 backend: the reference implementation of kernels/backend.h.
// Activations, weights and the KV cache are fp32; GEMMs run on OpenBLAS.
// Op definitions are split by family over cpu/*.cc.
#pragma once

#include <memory>

#include "kernels/backend.h"

namespace cpserve {

std::unique_ptr<Backend> MakeCpuBackend();

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  Device device() const override { return Device::CPU(); }
  DType ComputeDType() const override { return DType::kF32; }

  // cpu_backend.cc
  absl::StatusOr<Tensor> Alloc(const Shape& shape, DType dtype) override;
  absl::StatusOr<Tensor> AllocKvCache(int64_t num_blocks, int64_t num_layers, int64_t block_size,
                                      int64_t num_kv_heads, int64_t head_dim) override;
  absl::Status CopyFromHost(const Tensor& src, const Tensor& dst) override;
  absl::Status CopyToHost(const Tensor& src, const Tensor& dst) override;
  absl::Status Copy(const Tensor& src, const Tensor& dst) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }

  // elementwise.cc
  absl::Status Embedding(const Tensor& table, const Tensor& ids, const Tensor& out) override;
  absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps,
                       const Tensor& out) override;
  absl::Status AddRmsNorm(const Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                          const Tensor& out) override;
  absl::Status SiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) override;
  absl::Status Add(const Tensor& a, const Tensor& b, const Tensor& out) override;
  absl::Status GatherRows(const Tensor& x, const Tensor& index, const Tensor& out) override;

  // linear.cc
  absl::Status Linear(const Tensor& x, const Tensor& w, const Tensor& bias,
                      const Tensor& out) override;

  // rope.cc
  absl::Status Rope(const Tensor& q, const Tensor& k, const Tensor& positions,
                    const RopeConfig& config) override;

  // kv_cache_ops.cc
  absl::Status WriteKvCache(int64_t layer, const Tensor& k, const Tensor& v,
                            const Tensor& slot_mapping, const KvCacheView& cache) override;
  absl::Status GatherKvCache(int64_t layer, absl::Span<const int32_t> block_table, int64_t len,
                             const KvCacheView& cache, const Tensor& k_out,
                             const Tensor& v_out) override;

  // attention.cc
  absl::Status PrefillAttention(const Tensor& q, const Tensor& k, const Tensor& v,
                                absl::Span<const PrefillSegment> segments, const KvCacheView* cache,
                                int64_t layer, const AttentionOptions& options, const Tensor& o,
                                const Tensor& lse) override;
  absl::Status PagedAttention(const Tensor& q, absl::Span<const PagedSegment> segments,
                              const KvCacheView& cache, int64_t layer,
                              const AttentionOptions& options, const Tensor& o,
                              const Tensor& lse) override;

  // merge.cc
  absl::Status MergeAttentionStates(const Tensor& o_a, const Tensor& lse_a, const Tensor& o_b,
                                    const Tensor& lse_b, const Tensor& o,
                                    const Tensor& lse) override;
  absl::Status CombineLse(const Tensor& lse_parts, const Tensor& lse) override;
  absl::Status RescaleAttentionOutput(const Tensor& o, const Tensor& lse_local,
                                      const Tensor& lse_total) override;

  // sampling.cc
  absl::Status Sample(const Tensor& logits, absl::Span<const SamplingParams> params,
                      const Tensor& ids) override;
};

}  // namespace cpserve
