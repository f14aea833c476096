// Synthetic weight initialisation on the GPU (random_fill.h): one thread per
// element, grid-stride, bf16 round-to-nearest-even like the host's FloatToBF16.
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/random_fill.h"

namespace cpserve::cuda {
namespace {

__global__ void RandomFillBf16Kernel(uint16_t* out, int64_t n, uint64_t key, float scale,
                                     float offset) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    out[i] = FToBf16(RandomFillValue(key, static_cast<uint64_t>(i), scale, offset));
  }
}

}  // namespace

int LaunchRandomFillBf16(uint16_t* out, int64_t n, uint64_t key, float scale, float offset,
                         void* stream) {
  if (n <= 0) return 0;
  constexpr int kThreads = 256;
  RandomFillBf16Kernel<<<GridFor(n, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      out, n, key, scale, offset);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace cpserve::cuda
