#include "worker/model/synthetic_weights_cuda.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/random_fill.h"

namespace cpserve {

absl::StatusOr<ModelWeights> GenerateSyntheticWeightsCuda(const SyntheticSpec& spec,
                                                          Backend& backend) {
  const Device device = backend.device();
  if (device.type != DeviceType::kCUDA) {
    return absl::InvalidArgumentError(
        absl::StrCat("GenerateSyntheticWeightsCuda needs a CUDA backend, got ", backend.name()));
  }
  if (cudaError_t e = cudaSetDevice(device.index); e != cudaSuccess) {
    return absl::InternalError(absl::StrCat("cudaSetDevice: ", cudaGetErrorString(e)));
  }
  absl::StatusOr<ModelWeights> w = BuildSyntheticWeights(
      spec, [&](const Shape& shape) { return backend.Alloc(shape, DType::kBF16); },
      [&](const Tensor& t, const SyntheticFill& f) -> absl::Status {
        const int e = cuda::LaunchRandomFillBf16(t.data<uint16_t>(), t.numel(), f.key, f.scale,
                                                 f.offset, /*stream=*/nullptr);
        if (e != 0) {
          return absl::InternalError(
              absl::StrCat("random fill: ", cudaGetErrorString(static_cast<cudaError_t>(e))));
        }
        return absl::OkStatus();
      });
  // The fills ran on the legacy default stream; the backend's stream does not wait
  // for it, so finish them before anyone reads the weights.
  if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess) {
    return absl::InternalError(absl::StrCat("synthetic weights: ", cudaGetErrorString(e)));
  }
  return w;
}

}  // namespace cpserve
