// RMSNorm and fused residual-add + RMSNorm over bf16 rows, fp32 math inside.
// One block per row; 16-byte vector loads when the rows allow them.
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch.h"

namespace cpserve::cuda {
namespace {

constexpr int kThreads = 256;

template <int kVec>  // elements per access: 8 (uint4) or 1
__global__ void RmsNormKernel(RmsNormParams p) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const int64_t n = p.x.cols;
  const uint16_t* x = static_cast<const uint16_t*>(p.x.data) + row * p.x.stride;
  uint16_t* out = static_cast<uint16_t*>(p.out.data) + row * p.out.stride;
  uint16_t* res =
      p.residual.data ? static_cast<uint16_t*>(p.residual.data) + row * p.residual.stride : nullptr;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x * kVec; i < n; i += int64_t{blockDim.x} * kVec) {
    uint16_t xv[kVec];
    if constexpr (kVec == 8) {
      *reinterpret_cast<uint4*>(xv) = *reinterpret_cast<const uint4*>(x + i);
    } else {
      xv[0] = x[i];
    }
    if (res != nullptr) {
      uint16_t rv[kVec];
      if constexpr (kVec == 8) {
        *reinterpret_cast<uint4*>(rv) = *reinterpret_cast<const uint4*>(res + i);
      } else {
        rv[0] = res[i];
      }
#pragma unroll
      for (int j = 0; j < kVec; ++j) xv[j] = FToBf16(Bf16ToF(rv[j]) + Bf16ToF(xv[j]));
      if constexpr (kVec == 8) {
        *reinterpret_cast<uint4*>(res + i) = *reinterpret_cast<const uint4*>(xv);
      } else {
        res[i] = xv[0];
      }
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float f = Bf16ToF(xv[j]);
      ss += f * f;
    }
  }
  ss = BlockSum(ss, scratch);
  const float inv = rsqrtf(ss / static_cast<float>(n) + p.eps);
  const uint16_t* src = res != nullptr ? res : x;
  for (int64_t i = threadIdx.x * kVec; i < n; i += int64_t{blockDim.x} * kVec) {
    uint16_t xv[kVec], wv[kVec];
    if constexpr (kVec == 8) {
      *reinterpret_cast<uint4*>(xv) = *reinterpret_cast<const uint4*>(src + i);
      *reinterpret_cast<uint4*>(wv) = *reinterpret_cast<const uint4*>(p.weight + i);
    } else {
      xv[0] = src[i];
      wv[0] = p.weight[i];
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) xv[j] = FToBf16(Bf16ToF(xv[j]) * inv * Bf16ToF(wv[j]));
    if constexpr (kVec == 8) {
      *reinterpret_cast<uint4*>(out + i) = *reinterpret_cast<const uint4*>(xv);
    } else {
      out[i] = xv[0];
    }
  }
}

bool Aligned16(const void* p, int64_t stride_elems) {
  return (reinterpret_cast<uintptr_t>(p) % 16 == 0) && (stride_elems % 8 == 0);
}

}  // namespace

cudaError_t LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream) {
  if (p.x.rows == 0 || p.x.cols == 0) return cudaSuccess;
  const bool vec = p.x.cols % 8 == 0 && Aligned16(p.x.data, p.x.stride) &&
                   Aligned16(p.out.data, p.out.stride) && Aligned16(p.weight, 0) &&
                   (p.residual.data == nullptr || Aligned16(p.residual.data, p.residual.stride));
  const unsigned grid = static_cast<unsigned>(p.x.rows);
  if (vec) {
    RmsNormKernel<8><<<grid, kThreads, 0, stream>>>(p);
  } else {
    RmsNormKernel<1><<<grid, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace cpserve::cuda
