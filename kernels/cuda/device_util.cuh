// Device helpers shared by the .cu files: bf16 bit patterns <-> float, grid sizes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace cpserve::cuda {

__device__ __forceinline__ float Bf16ToF(uint16_t h) {
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}
// Round to nearest even (NaN stays NaN), as kernels/tensor.h FloatToBF16.
__device__ __forceinline__ uint16_t FToBf16(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

inline unsigned GridFor(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 32 ? 65535 * 32 : blocks));
}

// Block-wide sum over blockDim.x threads (a multiple of 32, <= 1024).
__device__ __forceinline__ float BlockSum(float v, float* scratch /* >= 32 floats */) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int nwarps = (blockDim.x + 31) >> 5;
  v = lane < nwarps ? scratch[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace cpserve::cuda
