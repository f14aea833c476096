#include "tests/unit/comm/cuda_device_io.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace cpserve::comm::testing {
namespace {

class CudaTestAllocator final : public Allocator {
 public:
  absl::StatusOr<void*> Allocate(size_t bytes, Device device) override {
    cudaSetDevice(device.index);
    void* p = nullptr;
    if (cudaError_t e = cudaMalloc(&p, bytes == 0 ? 1 : bytes); e != cudaSuccess) {
      return absl::ResourceExhaustedError(absl::StrCat("cudaMalloc: ", cudaGetErrorString(e)));
    }
    return p;
  }
  void Free(void* ptr, Device device) override {
    cudaSetDevice(device.index);
    cudaFree(ptr);
  }
};

}  // namespace

void InstallCudaTestAllocator() {
  static CudaTestAllocator allocator;
  if (GetAllocator(DeviceType::kCUDA) == nullptr) SetAllocator(DeviceType::kCUDA, &allocator);
}

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

DeviceIO CudaDeviceIO(int device) {
  InstallCudaTestAllocator();
  auto to_device = [device](const Tensor& host) {
    auto t = Tensor::Empty(host.shape(), host.dtype(), Device::CUDA(device));
    CHECK(t.ok()) << t.status();
    if (host.nbytes() > 0) {
      CHECK_EQ(cudaMemcpy(t->raw(), host.raw(), host.nbytes(), cudaMemcpyHostToDevice),
               cudaSuccess);
    }
    return *t;
  };
  auto to_host = [](const Tensor& dev) {
    Tensor h = Tensor::Zeros(dev.shape(), dev.dtype());
    if (dev.nbytes() > 0) {
      CHECK_EQ(cudaMemcpy(h.raw(), dev.raw(), dev.nbytes(), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return h;
  };
  return {to_device, to_host};
}

}  // namespace cpserve::comm::testing
