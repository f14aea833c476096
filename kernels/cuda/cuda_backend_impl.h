// The CudaBackend class; its op definitions are split by family over
// kernels/cuda/*.cc (launchers in *.cu). Use MakeCudaBackend (cuda_backend.h).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_common.h"

namespace cpserve::cuda {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);
  // Creates the stream, the cuBLASLt handle, the workspace and the error flag;
  // the destructor releases whatever was created.
  absl::Status Init();
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const char* name() const override { return "cuda"; }
  Device device() const override { return Device::CUDA(device_); }
  DType ComputeDType() const override { return DType::kBF16; }
  cudaStream_t stream() const { return stream_; }

  // cuda_backend.cc
  absl::StatusOr<Tensor> Alloc(const Shape& shape, DType dtype) override;
  absl::StatusOr<Tensor> AllocKvCache(int64_t num_blocks, int64_t num_layers, int64_t block_size,
                                      int64_t num_kv_heads, int64_t head_dim) override;
  absl::Status CopyFromHost(const Tensor& src, const Tensor& dst) override;
  absl::Status CopyToHost(const Tensor& src, const Tensor& dst) override;
  absl::Status Copy(const Tensor& src, const Tensor& dst) override;
  absl::Status Synchronize() override;
  absl::Status PinHostMemory(void* p, size_t bytes) override;
  void UnpinHostMemory(void* p) override;

  // dense_ops.cc
  absl::Status Embedding(const Tensor& table, const Tensor& ids, const Tensor& out) override;
  absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps,
                       const Tensor& out) override;
  absl::Status AddRmsNorm(const Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                          const Tensor& out) override;
  absl::Status SiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) override;
  absl::Status Add(const Tensor& a, const Tensor& b, const Tensor& out) override;
  absl::Status GatherRows(const Tensor& x, const Tensor& index, const Tensor& out) override;
  absl::Status Rope(const Tensor& q, const Tensor& k, const Tensor& positions,
                    const RopeConfig& config) override;

  // linear.cc
  absl::Status Linear(const Tensor& x, const Tensor& w, const Tensor& bias,
                      const Tensor& out) override;

  // kv_merge_ops.cc (attention forwards to kernels/cuda/attention_cuda.h)
  absl::Status WriteKvCache(int64_t layer, const Tensor& k, const Tensor& v,
                            const Tensor& slot_mapping, const KvCacheView& cache) override;
  absl::Status GatherKvCache(int64_t layer, absl::Span<const int32_t> block_table, int64_t len,
                             const KvCacheView& cache, const Tensor& k_out,
                             const Tensor& v_out) override;
  absl::Status PrefillAttention(const Tensor& q, const Tensor& k, const Tensor& v,
                                absl::Span<const PrefillSegment> segments, const KvCacheView* cache,
                                int64_t layer, const AttentionOptions& options, const Tensor& o,
                                const Tensor& lse) override;
  absl::Status PagedAttention(const Tensor& q, absl::Span<const PagedSegment> segments,
                              const KvCacheView& cache, int64_t layer,
                              const AttentionOptions& options, const Tensor& o,
                              const Tensor& lse) override;
  absl::Status MergeAttentionStates(const Tensor& o_a, const Tensor& lse_a, const Tensor& o_b,
                                    const Tensor& lse_b, const Tensor& o,
                                    const Tensor& lse) override;
  absl::Status CombineLse(const Tensor& lse_parts, const Tensor& lse) override;
  absl::Status RescaleAttentionOutput(const Tensor& o, const Tensor& lse_local,
                                      const Tensor& lse_total) override;

  // sampling.cc
  absl::Status Sample(const Tensor& logits, absl::Span<const SamplingParams> params,
                      const Tensor& ids) override;

 private:
  // Stream-ordered scratch memory (cudaMallocAsync), freed on the stream.
  class Scratch {
   public:
    explicit Scratch(cudaStream_t stream) : stream_(stream) {}
    ~Scratch();
    absl::StatusOr<void*> Get(size_t bytes);

   private:
    cudaStream_t stream_;
    std::vector<void*> ptrs_;
  };
  // Uploads host bytes to scratch memory on the stream.
  absl::StatusOr<void*> Upload(Scratch& scratch, const void* host, size_t bytes);
  // Reads and clears the device error flag (synchronises); InvalidArgument if set.
  absl::Status CheckErrorFlag();
  // Device copy of inv_freq for (config, head_dim), uploaded once.
  absl::StatusOr<const double*> InvFreq(const RopeConfig& config, int64_t head_dim);
  absl::Status CheckCache(const KvCacheView& cache, int64_t layer, const HeadsView& k,
                          const char* op) const;

  int device_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  int* error_flag_ = nullptr;  // device int, ErrorBits
  std::map<std::tuple<double, int, double, double, double, double, int64_t>, double*> inv_freq_;
  // cuBLASLt algorithm per (T, N, K, ld x/w/out, out fp32, alignments w/x/out).
  std::map<std::array<int64_t, 10>, cublasLtMatmulAlgo_t> algo_cache_;
};

}  // namespace cpserve::cuda
