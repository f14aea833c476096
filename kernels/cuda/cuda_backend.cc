// CudaBackend construction, memory and copies.
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend_impl.h"

namespace cpserve {
namespace {

// Device memory for tensors, with a cache of freed blocks: cudaFree synchronises
// the whole device, so a model step that frees its temporaries would drain the GPU
// after every op (the host could never run ahead). Freed blocks are kept per
// (device, rounded size) and handed out again. Reuse is safe without events because
// every user of a tensor's memory is the owning backend's one stream (kernels,
// copies, NCCL), which orders the next user after the last; memory another stream
// reads while it lives (the KV cache, read by CUDA IPC copies) is freed only with
// the engine. So the cache is used only for devices whose owner asked for it
// (EnableCudaBlockCache: a pool rank, whose NCCL group runs on the backend's stream)
// and while exactly one backend (one stream) lives on the device; otherwise every
// free goes to cudaFree, as does every free under $CPSERVE_CUDA_ALLOCATOR=cudamalloc.
// Sizes round up to a power of two below 1 MiB, to 2 MiB multiples
// above; at most kMaxCachedBytes stay cached (the rest is cudaFree'd), and a failed
// cudaMalloc first returns the device's cached blocks and retries. Each block is a
// whole cudaMalloc allocation (cudaIpcGetMemHandle needs one).
class CudaAllocator final : public Allocator {
 public:
  // A backend (one stream) starts or stops using `device`.
  void AddStream(int device) {
    bool release = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      release = ++streams_[device] > 1;
    }
    if (release) ReleaseCached(device);  // blocks freed by the first stream's users
  }
  void RemoveStream(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    --streams_[device];
  }
  void Enable(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    enabled_devices_.insert(device);
  }

  absl::StatusOr<void*> Allocate(size_t bytes, Device device) override {
    const size_t size = RoundUp(bytes);
    // Callers rely on the allocation making the tensor's device current (the
    // backend's stream-ordered scratch allocations follow it), cache hit or not.
    if (cudaError_t e = cudaSetDevice(device.index); e != cudaSuccess) {
      return cuda::CudaStatus(e, "cudaSetDevice");
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find({device.index, size});
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_bytes_ -= size;
        return p;
      }
    }
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    if (e != cudaSuccess) {
      cudaGetLastError();  // an allocation failure is not sticky: clear it
      ReleaseCached(device.index);
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(absl::StrCat(
          "cudaMalloc of ", bytes, " bytes on cuda:", device.index, ": ", cudaGetErrorString(e)));
    }
    std::lock_guard<std::mutex> lock(mu_);
    sizes_[p] = size;
    return p;
  }

  void Free(void* ptr, Device device) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = sizes_.find(ptr);
      if (it != sizes_.end() && enabled_ && enabled_devices_.count(device.index) > 0 &&
          streams_[device.index] == 1 && cached_bytes_ + it->second <= kMaxCachedBytes) {
        free_[{device.index, it->second}].push_back(ptr);
        cached_bytes_ += it->second;
        return;
      }
      if (it != sizes_.end()) sizes_.erase(it);
    }
    cudaFree(ptr);
  }

 private:
  static constexpr size_t kMaxCachedBytes = size_t{8} << 30;

  static size_t RoundUp(size_t bytes) {
    constexpr size_t kLarge = size_t{1} << 20, kGranule = size_t{2} << 20;
    if (bytes <= kLarge) return std::bit_ceil(std::max<size_t>(bytes, 256));
    return (bytes + kGranule - 1) / kGranule * kGranule;
  }

  // Returns every cached block of `device` to CUDA (synchronises the device).
  void ReleaseCached(int device) {
    std::vector<void*> blocks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = free_.begin(); it != free_.end();) {
        if (it->first.first != device) {
          ++it;
          continue;
        }
        for (void* p : it->second) {
          cached_bytes_ -= it->first.second;
          sizes_.erase(p);
          blocks.push_back(p);
        }
        it = free_.erase(it);
      }
    }
    for (void* p : blocks) cudaFree(p);
  }

  const bool enabled_ = [] {
    const char* v = std::getenv("CPSERVE_CUDA_ALLOCATOR");
    return v == nullptr || std::string(v) != "cudamalloc";
  }();
  std::mutex mu_;
  std::map<int, int> streams_;  // device -> live backends
  std::set<int> enabled_devices_;
  std::map<std::pair<int, size_t>, std::vector<void*>> free_;  // (device, size) -> blocks
  std::unordered_map<void*, size_t> sizes_;                    // live and cached blocks
  size_t cached_bytes_ = 0;
};

// Never destroyed: tensors may be freed during static destruction.
CudaAllocator& g_cuda_allocator = *new CudaAllocator();

bool IsFloating(DType d) {
  return d == DType::kF32 || d == DType::kF64 || d == DType::kBF16 || d == DType::kF16;
}

absl::Status CheckCopy(const Tensor& src, const Tensor& dst, const char* op) {
  if (!src.defined() || !dst.defined()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": undefined tensor"));
  }
  if (src.shape() != dst.shape()) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": shape mismatch ", src.DebugString(), " vs ", dst.DebugString()));
  }
  if (src.dtype() != dst.dtype() && !(IsFloating(src.dtype()) && IsFloating(dst.dtype()))) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": cannot convert ", src.DebugString(), " to ", dst.DebugString()));
  }
  if (src.rank() > cuda::kMaxRank) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": rank > ", cuda::kMaxRank));
  }
  return absl::OkStatus();
}

cuda::StridedCopyParams CopyParams(const void* src, DType src_type, const Shape& src_strides,
                                   void* dst, DType dst_type, const Shape& dst_strides,
                                   const Shape& shape) {
  cuda::StridedCopyParams p;
  p.src = src;
  p.dst = dst;
  p.src_type = cuda::ToElemType(src_type);
  p.dst_type = cuda::ToElemType(dst_type);
  p.rank = static_cast<int>(shape.size());
  p.numel = 1;
  for (int i = 0; i < p.rank; ++i) {
    p.shape[i] = shape[i];
    p.src_stride[i] = src_strides[i];
    p.dst_stride[i] = dst_strides[i];
    p.numel *= shape[i];
  }
  return p;
}

}  // namespace

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

void EnableCudaBlockCache(int device) { g_cuda_allocator.Enable(device); }

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device) {
  const int n = CudaDeviceCount();
  if (device < 0 || device >= n) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device ", device, " (", n, " visible)"));
  }
  CPSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device), "cudaSetDevice");
  SetAllocator(DeviceType::kCUDA, &g_cuda_allocator);
  auto backend = std::make_unique<cuda::CudaBackend>(device);
  CPSERVE_RETURN_IF_ERROR(backend->Init());
  return std::unique_ptr<Backend>(std::move(backend));
}

namespace cuda {

CudaBackend::CudaBackend(int device) : device_(device) { g_cuda_allocator.AddStream(device); }

absl::Status CudaBackend::Init() {
  constexpr size_t kWorkspace = size_t{32} << 20;
  CPSERVE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                               "cudaStreamCreate");
  if (cublasStatus_t s = cublasLtCreate(&lt_); s != CUBLAS_STATUS_SUCCESS) {
    lt_ = nullptr;
    return absl::InternalError(absl::StrCat("cublasLtCreate: ", cublasLtGetStatusString(s)));
  }
  CPSERVE_CUDA_RETURN_IF_ERROR(cudaMalloc(&workspace_, kWorkspace), "cudaMalloc workspace");
  workspace_bytes_ = kWorkspace;
  CPSERVE_CUDA_RETURN_IF_ERROR(cudaMalloc(&error_flag_, sizeof(int)), "cudaMalloc error flag");
  CPSERVE_CUDA_RETURN_IF_ERROR(cudaMemset(error_flag_, 0, sizeof(int)), "cudaMemset error flag");
  return absl::OkStatus();
}

CudaBackend::~CudaBackend() {
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  for (auto& [key, ptr] : inv_freq_) cudaFree(ptr);
  if (error_flag_ != nullptr) cudaFree(error_flag_);
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (lt_ != nullptr) cublasLtDestroy(lt_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  g_cuda_allocator.RemoveStream(device_);
}

CudaBackend::Scratch::~Scratch() {
  for (void* p : ptrs_) cudaFreeAsync(p, stream_);
}

absl::StatusOr<void*> CudaBackend::Scratch::Get(size_t bytes) {
  void* p = nullptr;
  CPSERVE_CUDA_RETURN_IF_ERROR(cudaMallocAsync(&p, bytes == 0 ? 16 : bytes, stream_),
                               "cudaMallocAsync scratch");
  ptrs_.push_back(p);
  return p;
}

absl::StatusOr<void*> CudaBackend::Upload(Scratch& scratch, const void* host, size_t bytes) {
  CPSERVE_ASSIGN_OR_RETURN(void* p, scratch.Get(bytes));
  if (bytes > 0) {
    CPSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(p, host, bytes, cudaMemcpyHostToDevice, stream_),
                                 "upload");
  }
  return p;
}

absl::Status CudaBackend::CheckErrorFlag() {
  int flag = 0;
  CPSERVE_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(&flag, error_flag_, sizeof(int), cudaMemcpyDeviceToHost, stream_),
      "read error flag");
  CPSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  if (flag == 0) return absl::OkStatus();
  CPSERVE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(error_flag_, 0, sizeof(int), stream_),
                               "clear error flag");
  std::string ops;
  if (flag & kBadEmbeddingId) absl::StrAppend(&ops, " Embedding (id outside [0, V))");
  if (flag & kBadGatherIndex) absl::StrAppend(&ops, " GatherRows (index outside [0, T))");
  if (flag & kBadSlot) absl::StrAppend(&ops, " WriteKvCache (slot >= num_slots)");
  return absl::InvalidArgumentError(
      absl::StrCat("out-of-range index seen on the device since the last sync:", ops));
}

absl::Status CudaBackend::Synchronize() {
  CPSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  return CheckErrorFlag();
}

absl::Status CudaBackend::PinHostMemory(void* p, size_t bytes) {
  CPSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_), "cudaSetDevice");
  if (cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterDefault); e != cudaSuccess) {
    cudaGetLastError();  // not sticky: the caller goes on with pageable memory
    return absl::ResourceExhaustedError(
        absl::StrCat("cudaHostRegister of ", bytes, " bytes: ", cudaGetErrorString(e)));
  }
  return absl::OkStatus();
}

void CudaBackend::UnpinHostMemory(void* p) {
  cudaSetDevice(device_);
  cudaHostUnregister(p);
}

absl::StatusOr<Tensor> CudaBackend::Alloc(const Shape& shape, DType dtype) {
  return Tensor::Empty(shape, dtype, device());
}

absl::StatusOr<Tensor> CudaBackend::AllocKvCache(int64_t num_blocks, int64_t num_layers,
                                                 int64_t block_size, int64_t num_kv_heads,
                                                 int64_t head_dim) {
  if (num_blocks <= 0 || num_layers <= 0 || block_size <= 0 || num_kv_heads <= 0 || head_dim <= 0) {
    return absl::InvalidArgumentError("AllocKvCache: sizes must be positive");
  }
  return Tensor::Empty(
      KvCacheView::CacheShape(num_blocks, num_layers, block_size, num_kv_heads, head_dim),
      DType::kBF16, device());
}

absl::Status CudaBackend::CopyFromHost(const Tensor& src, const Tensor& dst) {
  CPSERVE_RETURN_IF_ERROR(CheckCopy(src, dst, "CopyFromHost"));
  if (!src.device().is_cpu() || !(dst.device() == device())) {
    return absl::InvalidArgumentError(absl::StrCat("CopyFromHost: want host ", src.DebugString(),
                                                   " -> device ", dst.DebugString()));
  }
  if (src.numel() == 0) return absl::OkStatus();
  Tensor host = src;
  if (!src.is_contiguous()) {  // pack on the host first
    CPSERVE_ASSIGN_OR_RETURN(host, Tensor::Empty(src.shape(), src.dtype()));
    CPSERVE_RETURN_IF_ERROR(MakeCpuBackend()->Copy(src, host));
  }
  if (src.dtype() == dst.dtype() && dst.is_contiguous()) {
    CPSERVE_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(dst.raw(), host.raw(), host.nbytes(), cudaMemcpyHostToDevice, stream_),
        "CopyFromHost");
    return absl::OkStatus();
  }
  Scratch scratch(stream_);
  CPSERVE_ASSIGN_OR_RETURN(void* staged, Upload(scratch, host.raw(), host.nbytes()));
  return CudaStatus(LaunchStridedCopy(CopyParams(staged, src.dtype(), host.strides(), dst.raw(),
                                                 dst.dtype(), dst.strides(), dst.shape()),
                                      stream_),
                    "CopyFromHost convert");
}

absl::Status CudaBackend::CopyToHost(const Tensor& src, const Tensor& dst) {
  CPSERVE_RETURN_IF_ERROR(CheckCopy(src, dst, "CopyToHost"));
  if (!(src.device() == device()) || !dst.device().is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat("CopyToHost: want device ", src.DebugString(),
                                                   " -> host ", dst.DebugString()));
  }
  if (src.numel() == 0) return Synchronize();
  Scratch scratch(stream_);
  const void* staged = src.raw();
  if (src.dtype() != dst.dtype() || !src.is_contiguous()) {  // convert / pack on the device
    CPSERVE_ASSIGN_OR_RETURN(void* p, scratch.Get(dst.nbytes()));
    CPSERVE_RETURN_IF_ERROR(CudaStatus(
        LaunchStridedCopy(CopyParams(src.raw(), src.dtype(), src.strides(), p, dst.dtype(),
                                     ContiguousStrides(dst.shape()), dst.shape()),
                          stream_),
        "CopyToHost convert"));
    staged = p;
  }
  Tensor host = dst;
  if (!dst.is_contiguous()) {
    CPSERVE_ASSIGN_OR_RETURN(host, Tensor::Empty(dst.shape(), dst.dtype()));
  }
  CPSERVE_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(host.raw(), staged, host.nbytes(), cudaMemcpyDeviceToHost, stream_),
      "CopyToHost");
  CPSERVE_RETURN_IF_ERROR(Synchronize());
  if (!dst.is_contiguous()) CPSERVE_RETURN_IF_ERROR(MakeCpuBackend()->Copy(host, dst));
  return absl::OkStatus();
}

absl::Status CudaBackend::Copy(const Tensor& src, const Tensor& dst) {
  CPSERVE_RETURN_IF_ERROR(CheckCopy(src, dst, "Copy"));
  if (src.dtype() != dst.dtype()) return absl::InvalidArgumentError("Copy: dtypes differ");
  if (!(src.device() == device()) || !(dst.device() == device())) {
    return absl::InvalidArgumentError(absl::StrCat("Copy: want device tensors, got ",
                                                   src.DebugString(), ", ", dst.DebugString()));
  }
  if (src.numel() == 0) return absl::OkStatus();
  if (src.is_contiguous() && dst.is_contiguous()) {
    return CudaStatus(
        cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, stream_),
        "Copy");
  }
  return CudaStatus(LaunchStridedCopy(CopyParams(src.raw(), src.dtype(), src.strides(), dst.raw(),
                                                 dst.dtype(), dst.strides(), dst.shape()),
                                      stream_),
                    "Copy");
}

absl::StatusOr<const double*> CudaBackend::InvFreq(const RopeConfig& config, int64_t head_dim) {
  const auto key = std::make_tuple(config.theta, static_cast<int>(config.scaling), config.factor,
                                   config.low_freq_factor, config.high_freq_factor,
                                   config.original_max_position_embeddings, head_dim);
  if (auto it = inv_freq_.find(key); it != inv_freq_.end()) return it->second;
  const std::vector<double> host = ComputeRopeInvFreq(config, head_dim);
  double* p = nullptr;
  CPSERVE_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, sizeof(double) * host.size()), "cudaMalloc inv_freq");
  inv_freq_[key] = p;
  CPSERVE_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(p, host.data(), sizeof(double) * host.size(), cudaMemcpyHostToDevice),
      "upload inv_freq");
  return p;
}

}  // namespace cuda
}  // namespace cpserve
