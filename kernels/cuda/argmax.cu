// Greedy sampling on the device: ids[r] = argmax of logits row r, ties to the
// lowest id (kernels/sampling.h), logits fp32 or bf16.
#include <math_constants.h>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch.h"

namespace cpserve::cuda {
namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ bool Better(float v, int64_t i, float bv, int64_t bi) {
  return v > bv || (v == bv && i < bi);
}

__global__ void ArgmaxKernel(ArgmaxParams p) {
  __shared__ float sv[kThreads / 32];
  __shared__ int64_t si[kThreads / 32];
  const int64_t row = blockIdx.x;
  const int64_t n = p.logits.cols;
  float best = -CUDART_INF_F;
  int64_t bi = INT64_MAX;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float v =
        p.logits_f32
            ? static_cast<const float*>(p.logits.data)[row * p.logits.stride + i]
            : Bf16ToF(static_cast<const uint16_t*>(p.logits.data)[row * p.logits.stride + i]);
    if (Better(v, i, best, bi)) {
      best = v;
      bi = i;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (Better(ov, oi, best, bi)) {
      best = ov;
      bi = oi;
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sv[warp] = best;
    si[warp] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) {
      if (Better(sv[w], si[w], best, bi)) {
        best = sv[w];
        bi = si[w];
      }
    }
    // All -inf (or NaN) rows: id 0, as the CPU's strict comparison gives.
    p.ids[row * p.ids_stride] = static_cast<int32_t>(bi == INT64_MAX ? 0 : bi);
  }
}

}  // namespace

cudaError_t LaunchArgmax(const ArgmaxParams& p, cudaStream_t stream) {
  if (p.logits.rows == 0) return cudaSuccess;
  ArgmaxKernel<<<static_cast<unsigned>(p.logits.rows), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cpserve::cuda
