// Helpers of the CUDA attention tests and benchmark: device buffers, bf16 host
// data, and one randomized attention problem run on both the CPU reference
// backend (fp32) and the CUDA kernels (bf16) on identical bf16-rounded inputs.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "kernels/attention.h"
#include "kernels/kv_cache.h"
#include "kernels/tensor.h"

namespace cpserve::cuda::testing {

// True when a CUDA device is usable (false on CPU-only machines).
bool HaveGpu();

// Owns cudaMalloc'ed memory.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  void Upload(const void* src, size_t bytes) const;
  void Download(void* dst, size_t bytes) const;

 private:
  void* ptr_ = nullptr;
};

// Values drawn from N(0, sigma), rounded to bf16: `bits` for the device and `f32`
// (the same values) for the CPU reference.
struct Bf16Data {
  std::vector<uint16_t> bits;
  std::vector<float> f32;
};
Bf16Data RandomBf16(size_t n, float sigma, std::mt19937& rng);

// One attention problem. Prefill when `paged` is false (segments' k_len rows of
// k/v follow ctx_len cached keys), paged otherwise (ctx_len = kv_len, k_len 0).
struct SegSpec {
  int64_t q_start, q_len, k_start, k_len, ctx_len;
};
struct CaseSpec {
  int64_t tq = 0, tk = 0, hq = 1, hkv = 1, d = 64;
  int64_t block_size = 16, num_blocks = 0, num_layers = 2, layer = 1;
  bool causal = true;
  bool paged = false;
  float scale = 0.0f;
  float q_sigma = 1.0f;
  std::vector<SegSpec> segs;
  uint32_t seed = 1;
};

struct CaseResult {
  absl::Status cpu_status, gpu_status;
  std::vector<float> o_ref, lse_ref;  // CPU [tq, hq, d], [tq, hq]
  std::vector<float> o, lse;          // GPU (bf16 O widened), NaN-poisoned before the run
  std::vector<bool> covered;          // per query row
};

// Runs paged attention on the device in place of PagedAttentionCuda (e.g. through a
// CUDA graph); same arguments and contract.
using PagedRunner = std::function<absl::Status(
    const Tensor& q, absl::Span<const PagedSegment> segments, const KvCacheView& cache,
    int64_t layer, const AttentionOptions& options, const Tensor& o, const Tensor& lse,
    cudaStream_t stream)>;

// Builds random inputs (q and k/v as strided views of wider buffers, a bf16
// cache with shuffled block tables), runs both backends and downloads. Paged
// cases run `paged_runner` on the device when it is set.
CaseResult RunCase(const CaseSpec& spec, const PagedRunner& paged_runner = nullptr);

}  // namespace cpserve::cuda::testing
