#include "worker/engine/cuda_ipc_copier.h"

#include <cuda_runtime_api.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"

namespace cpserve {
namespace {

using Clock = std::chrono::steady_clock;

// Export layout (version 1): magic, pid, device ordinal, device pointer, region
// bytes, the IPC handle, then the host identity (rest of the string).
constexpr char kMagic[8] = {'C', 'P', 'I', 'P', 'C', '1', 0, 0};
struct ExportHeader {
  char magic[8];
  int64_t pid;
  int64_t device;
  uint64_t pointer;
  uint64_t bytes;
  cudaIpcMemHandle_t handle;
};

// hostname + boot id: equal only for processes of one booted machine that also
// share a UTS namespace (pods of one node have their own hostnames).
std::string HostIdentity() {
  char name[256] = {};
  (void)gethostname(name, sizeof(name) - 1);
  std::string boot;
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::getline(in, boot);
  return absl::StrCat(name, "/", boot);
}

absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA IPC: ", what, ": ", cudaGetErrorString(e)));
}

class CudaIpcCopier final : public transfer::DirectCopier {
 public:
  static absl::StatusOr<std::shared_ptr<transfer::DirectCopier>> Create(const KvCacheView& c) {
    if (c.device.type != DeviceType::kCUDA || c.base == nullptr) {
      return absl::InvalidArgumentError("CUDA IPC needs a KV cache in GPU memory");
    }
    auto self = std::shared_ptr<CudaIpcCopier>(new CudaIpcCopier());
    self->device_ = c.device.index;
    self->base_ = static_cast<char*>(c.base);
    self->host_ = HostIdentity();
    const int64_t bytes = c.num_blocks * c.block_stride * c.element_size();
    if (absl::Status s = CudaStatus(cudaSetDevice(self->device_), "cudaSetDevice"); !s.ok()) {
      return s;
    }
    ExportHeader h{};
    std::memcpy(h.magic, kMagic, sizeof(kMagic));
    h.pid = getpid();
    h.device = self->device_;
    h.pointer = reinterpret_cast<uint64_t>(c.base);
    h.bytes = static_cast<uint64_t>(bytes);
    if (absl::Status s = CudaStatus(cudaIpcGetMemHandle(&h.handle, c.base), "cudaIpcGetMemHandle");
        !s.ok()) {
      return s;
    }
    self->export_.assign(reinterpret_cast<const char*>(&h), sizeof(h));
    self->export_ += self->host_;
    if (absl::Status s = CudaStatus(
            cudaStreamCreateWithFlags(&self->stream_, cudaStreamNonBlocking), "cudaStreamCreate");
        !s.ok()) {
      return s;
    }
    return std::shared_ptr<transfer::DirectCopier>(std::move(self));
  }

  ~CudaIpcCopier() override {
    (void)cudaSetDevice(device_);
    for (auto& [key, m] : mapped_) {
      if (m.opened) (void)cudaIpcCloseMemHandle(m.ptr);
    }
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }

  const char* name() const override { return "cuda-ipc"; }
  std::string Export() const override { return export_; }
  char* local_base() const override { return base_; }

  absl::StatusOr<char*> Open(const std::string& exported) override {
    if (exported.size() <= sizeof(ExportHeader) ||
        std::memcmp(exported.data(), kMagic, sizeof(kMagic)) != 0) {
      return absl::UnavailableError("CUDA IPC: not a CUDA IPC export");
    }
    ExportHeader h;
    std::memcpy(&h, exported.data(), sizeof(h));
    if (exported.compare(sizeof(h), std::string::npos, host_) != 0) {
      return absl::UnavailableError("CUDA IPC: the peer is on another host");
    }
    std::lock_guard<std::mutex> lock(mu_);
    const Clock::time_point now = Clock::now();
    if (auto it = mapped_.find(exported); it != mapped_.end()) {
      it->second.last_use = now;
      return it->second.ptr;
    }
    Mapping m;
    m.last_use = now;
    if (absl::Status s = CudaStatus(cudaSetDevice(device_), "cudaSetDevice"); !s.ok()) return s;
    if (h.pid == getpid()) {  // one process: the pointer itself (IPC refuses own memory)
      m.ptr = reinterpret_cast<char*>(h.pointer);
      int can = 0;
      if (h.device != device_ &&
          cudaDeviceCanAccessPeer(&can, device_, static_cast<int>(h.device)) == cudaSuccess &&
          can) {
        const cudaError_t e = cudaDeviceEnablePeerAccess(static_cast<int>(h.device), 0);
        if (e == cudaErrorPeerAccessAlreadyEnabled) (void)cudaGetLastError();
      }
    } else {
      void* p = nullptr;
      const cudaError_t e = cudaIpcOpenMemHandle(&p, h.handle, cudaIpcMemLazyEnablePeerAccess);
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return absl::UnavailableError(absl::StrCat("CUDA IPC: cudaIpcOpenMemHandle of process ",
                                                   h.pid, ": ", cudaGetErrorString(e)));
      }
      m.ptr = static_cast<char*>(p);
      m.opened = true;
    }
    EvictIdle(now);
    mapped_[exported] = m;
    return m.ptr;
  }

  absl::Status Copy(char* dst, const char* src, uint64_t bytes) override {
    if (absl::Status s = CudaStatus(cudaSetDevice(device_), "cudaSetDevice"); !s.ok()) return s;
    return CudaStatus(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_),
                      "cudaMemcpyAsync");
  }

  absl::Status Wait() override {
    return CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

 private:
  struct Mapping {
    char* ptr = nullptr;
    bool opened = false;  // through cudaIpcOpenMemHandle (closed on eviction)
    Clock::time_point last_use;
  };

  // Peers come and go (a restarted decode rank exports a new handle, and an open
  // mapping keeps the dead process's memory alive): beyond kMaxMappings, mappings
  // unused for a minute are closed. A push uses its mapping for milliseconds.
  void EvictIdle(Clock::time_point now) {
    constexpr size_t kMaxMappings = 16;
    for (auto it = mapped_.begin(); it != mapped_.end() && mapped_.size() >= kMaxMappings;) {
      if (now - it->second.last_use > std::chrono::minutes(1)) {
        if (it->second.opened) (void)cudaIpcCloseMemHandle(it->second.ptr);
        it = mapped_.erase(it);
      } else {
        ++it;
      }
    }
  }

  CudaIpcCopier() = default;

  int device_ = 0;
  char* base_ = nullptr;
  std::string host_;
  std::string export_;
  cudaStream_t stream_ = nullptr;
  std::mutex mu_;
  std::map<std::string, Mapping> mapped_;  // by export
};

}  // namespace

absl::StatusOr<std::shared_ptr<transfer::DirectCopier>> CreateCudaIpcCopier(
    const KvCacheView& cache) {
  return CudaIpcCopier::Create(cache);
}

KvDirectCopierFactory CudaIpcCopierFactory() {
  return [](const KvCacheView& cache) { return CreateCudaIpcCopier(cache); };
}

}  // namespace cpserve
