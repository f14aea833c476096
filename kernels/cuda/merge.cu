// Merging partial attention states (DESIGN §4): two-way merge, the DCP LSE
// combine, and the DCP rescale. O is bf16 [T, H, D], LSE fp32 [T, H]; weights in fp32.
#include <math_constants.h>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch.h"

namespace cpserve::cuda {
namespace {

constexpr int kThreads = 128;  // 4 warps, one (token, head) row each

__device__ __forceinline__ float& LseAt(const LseView& l, int64_t t, int64_t h) {
  return l.data[t * l.token_stride + h * l.head_stride];
}

__device__ __forceinline__ uint16_t* RowAt(const HeadsView& x, int64_t t, int64_t h) {
  return x.data + t * x.token_stride + h * x.head_stride;
}

__global__ void MergeKernel(MergeParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = p.o.tokens * p.o.heads;
  for (int64_t r = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32; r < rows;
       r += int64_t{gridDim.x} * (blockDim.x / 32)) {
    const int64_t t = r / p.o.heads, h = r % p.o.heads;
    const float a = LseAt(p.lse_a, t, h), b = LseAt(p.lse_b, t, h);
    const uint16_t* pa = RowAt(p.o_a, t, h);
    const uint16_t* pb = RowAt(p.o_b, t, h);
    uint16_t* out = RowAt(p.o, t, h);
    const float m = fmaxf(a, b);
    float lse;
    if (m == -CUDART_INF_F) {
      for (int64_t i = lane; i < p.o.dim; i += 32) out[i] = 0;
      lse = -CUDART_INF_F;
    } else {
      const float wa = expf(a - m), wb = expf(b - m);
      if (wb == 0.0f || wa == 0.0f) {  // exactly one side, bit for bit
        const uint16_t* src = wb == 0.0f ? pa : pb;
        for (int64_t i = lane; i < p.o.dim; i += 32) out[i] = src[i];
        lse = wb == 0.0f ? a : b;
      } else {
        const float inv = 1.0f / (wa + wb), fa = wa * inv, fb = wb * inv;
        for (int64_t i = lane; i < p.o.dim; i += 32) {
          out[i] = FToBf16(fa * Bf16ToF(pa[i]) + fb * Bf16ToF(pb[i]));
        }
        lse = m + logf(wa + wb);
      }
    }
    __syncwarp();  // every lane has read lse_a/lse_b before they may be overwritten
    if (lane == 0) LseAt(p.lse, t, h) = lse;
  }
}

__global__ void CombineLseKernel(CombineLseParams p) {
  const int64_t rows = p.tokens * p.heads;
  for (int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; r < rows;
       r += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = r / p.heads, h = r % p.heads;
    const float* base = p.parts + t * p.token_stride + h * p.head_stride;
    float m = -CUDART_INF_F;
    for (int64_t k = 0; k < p.n; ++k) m = fmaxf(m, base[k * p.part_stride]);
    float out = -CUDART_INF_F;
    if (m != -CUDART_INF_F) {
      float sum = 0.0f;
      for (int64_t k = 0; k < p.n; ++k) sum += expf(base[k * p.part_stride] - m);
      out = m + logf(sum);
    }
    LseAt(p.lse, t, h) = out;
  }
}

__global__ void RescaleKernel(RescaleParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = p.o.tokens * p.o.heads;
  for (int64_t r = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32; r < rows;
       r += int64_t{gridDim.x} * (blockDim.x / 32)) {
    const int64_t t = r / p.o.heads, h = r % p.o.heads;
    const float local = LseAt(p.local, t, h), total = LseAt(p.total, t, h);
    const float w = local == -CUDART_INF_F ? 0.0f : expf(local - total);
    uint16_t* o = RowAt(p.o, t, h);
    for (int64_t i = lane; i < p.o.dim; i += 32) {
      o[i] = w == 0.0f ? uint16_t{0} : FToBf16(Bf16ToF(o[i]) * w);  // clears garbage rows too
    }
  }
}

}  // namespace

cudaError_t LaunchMergeStates(const MergeParams& p, cudaStream_t stream) {
  const int64_t rows = p.o.tokens * p.o.heads;
  if (rows == 0) return cudaSuccess;
  MergeKernel<<<GridFor(rows, kThreads / 32), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchCombineLse(const CombineLseParams& p, cudaStream_t stream) {
  const int64_t rows = p.tokens * p.heads;
  if (rows == 0) return cudaSuccess;
  CombineLseKernel<<<GridFor(rows, kThreads), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchRescale(const RescaleParams& p, cudaStream_t stream) {
  const int64_t rows = p.o.tokens * p.o.heads;
  if (rows == 0) return cudaSuccess;
  RescaleKernel<<<GridFor(rows, kThreads / 32), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cpserve::cuda
