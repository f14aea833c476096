// Strided copy with floating-point conversion (Copy, CopyFromHost, CopyToHost).
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch.h"

namespace cpserve::cuda {
namespace {

__device__ float LoadF(const char* p, ElemType t) {
  switch (t) {
    case ElemType::kF32:
      return *reinterpret_cast<const float*>(p);
    case ElemType::kF64:
      return static_cast<float>(*reinterpret_cast<const double*>(p));
    case ElemType::kBF16:
      return Bf16ToF(*reinterpret_cast<const uint16_t*>(p));
    case ElemType::kF16:
      return __half2float(*reinterpret_cast<const __half*>(p));
    default:
      return 0.0f;
  }
}

__device__ void StoreF(float v, char* p, ElemType t) {
  switch (t) {
    case ElemType::kF32:
      *reinterpret_cast<float*>(p) = v;
      break;
    case ElemType::kF64:
      *reinterpret_cast<double*>(p) = v;
      break;
    case ElemType::kBF16:
      *reinterpret_cast<uint16_t*>(p) = FToBf16(v);
      break;
    case ElemType::kF16:
      *reinterpret_cast<__half*>(p) = __float2half_rn(v);
      break;
    default:
      break;
  }
}

__host__ __device__ int ElemSize(ElemType t) {
  switch (t) {
    case ElemType::kF64:
    case ElemType::kI64:
      return 8;
    case ElemType::kF32:
    case ElemType::kI32:
      return 4;
    case ElemType::kBF16:
    case ElemType::kF16:
      return 2;
    default:
      return 1;
  }
}

__global__ void StridedCopyKernel(StridedCopyParams p) {
  const int ss = ElemSize(p.src_type), ds = ElemSize(p.dst_type);
  const bool same = p.src_type == p.dst_type;
  // f64 -> f64 copies must not go through float.
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < p.numel;
       i += int64_t{gridDim.x} * blockDim.x) {
    int64_t rem = i, so = 0, dof = 0;
    for (int d = p.rank - 1; d >= 0; --d) {
      const int64_t idx = rem % p.shape[d];
      rem /= p.shape[d];
      so += idx * p.src_stride[d];
      dof += idx * p.dst_stride[d];
    }
    const char* s = static_cast<const char*>(p.src) + so * ss;
    char* dst = static_cast<char*>(p.dst) + dof * ds;
    if (same) {
      switch (ss) {
        case 8:
          *reinterpret_cast<uint64_t*>(dst) = *reinterpret_cast<const uint64_t*>(s);
          break;
        case 4:
          *reinterpret_cast<uint32_t*>(dst) = *reinterpret_cast<const uint32_t*>(s);
          break;
        case 2:
          *reinterpret_cast<uint16_t*>(dst) = *reinterpret_cast<const uint16_t*>(s);
          break;
        default:
          *dst = *s;
      }
    } else {
      StoreF(LoadF(s, p.src_type), dst, p.dst_type);
    }
  }
}

}  // namespace

cudaError_t LaunchStridedCopy(const StridedCopyParams& p, cudaStream_t stream) {
  if (p.numel == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  StridedCopyKernel<<<GridFor(p.numel, kThreads), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cpserve::cuda
