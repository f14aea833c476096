// In-place rotary embedding (rotate_half convention of kernels/rope.h) on bf16
// q [T, Hq, D] and k [T, Hkv, D]. The angle pos * inv_freq is formed in double
// (inv_freq precomputed in double on the host) and reduced mod 2*pi, so large
// positions lose no precision; cos/sin are then evaluated in fp32.
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch.h"

namespace cpserve::cuda {
namespace {

constexpr int kThreads = 128;

__device__ void RotateToken(const HeadsView& x, int64_t t, const float* cs, const float* sn) {
  const int64_t half = x.dim / 2;
  for (int64_t e = threadIdx.x; e < x.heads * half; e += blockDim.x) {
    const int64_t h = e / half, i = e % half;
    uint16_t* p = x.data + t * x.token_stride + h * x.head_stride;
    const float a = Bf16ToF(p[i]), b = Bf16ToF(p[i + half]);
    p[i] = FToBf16(a * cs[i] - b * sn[i]);
    p[i + half] = FToBf16(b * cs[i] + a * sn[i]);
  }
}

__global__ void RopeKernel(RopeParams p) {
  extern __shared__ float smem[];  // cos[half], sin[half]
  const int64_t half = p.q.dim / 2;
  float* cs = smem;
  float* sn = smem + half;
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  for (int64_t t = blockIdx.x; t < p.q.tokens; t += gridDim.x) {
    const int64_t pos = p.positions_i64
                            ? static_cast<const int64_t*>(p.positions)[t * p.positions_stride]
                            : static_cast<const int32_t*>(p.positions)[t * p.positions_stride];
    __syncthreads();  // the previous token's readers are done with cs/sn
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
      const double angle = fmod(static_cast<double>(pos) * p.inv_freq[i], kTwoPi);
      float s, c;
      sincosf(static_cast<float>(angle), &s, &c);
      cs[i] = c;
      sn[i] = s;
    }
    __syncthreads();
    RotateToken(p.q, t, cs, sn);
    if (p.k.data != nullptr) RotateToken(p.k, t, cs, sn);
  }
}

}  // namespace

cudaError_t LaunchRope(const RopeParams& p, cudaStream_t stream) {
  if (p.q.tokens == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(p.q.tokens > (1 << 20) ? (1 << 20) : p.q.tokens);
  const size_t smem = sizeof(float) * static_cast<size_t>(p.q.dim);
  RopeKernel<<<grid, kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cpserve::cuda
