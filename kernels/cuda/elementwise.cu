// Embedding, row gather, SwiGLU, residual add and bias add on bf16 rows.
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch.h"

namespace cpserve::cuda {
namespace {

constexpr int kThreads = 256;

// Copies `bytes` from src to dst with the widest access all three allow; the
// block's threads share the row.
__device__ void CopyRowBytes(const char* src, char* dst, int64_t bytes) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst) |
                      static_cast<uintptr_t>(bytes);
  if (a % 16 == 0) {
    for (int64_t i = threadIdx.x; i < bytes / 16; i += blockDim.x) {
      reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
    }
  } else if (a % 4 == 0) {
    for (int64_t i = threadIdx.x; i < bytes / 4; i += blockDim.x) {
      reinterpret_cast<uint32_t*>(dst)[i] = reinterpret_cast<const uint32_t*>(src)[i];
    }
  } else {
    for (int64_t i = threadIdx.x; i < bytes; i += blockDim.x) dst[i] = src[i];
  }
}

__device__ void ZeroRowBytes(char* dst, int64_t bytes) {
  for (int64_t i = threadIdx.x; i < bytes; i += blockDim.x) dst[i] = 0;
}

__global__ void EmbeddingKernel(EmbeddingParams p) {
  for (int64_t t = blockIdx.x; t < p.out.rows; t += gridDim.x) {
    const int32_t id = p.ids[t * p.ids_stride];
    char* dst = static_cast<char*>(p.out.data) + t * p.out.stride * 2;
    if (id < 0 || id >= p.table.rows) {
      if (threadIdx.x == 0) atomicOr(p.error_flag, kBadEmbeddingId);
      ZeroRowBytes(dst, p.out.cols * 2);
      continue;
    }
    const char* src = static_cast<const char*>(p.table.data) + id * p.table.stride * 2;
    CopyRowBytes(src, dst, p.out.cols * 2);
  }
}

__global__ void GatherRowsKernel(GatherRowsParams p) {
  for (int64_t i = blockIdx.x; i < p.out_rows; i += gridDim.x) {
    const int64_t j = p.index_i64 ? static_cast<const int64_t*>(p.index)[i * p.index_stride]
                                  : static_cast<const int32_t*>(p.index)[i * p.index_stride];
    char* dst = p.out + i * p.out_stride_bytes;
    if (j < 0 || j >= p.x_rows) {
      if (threadIdx.x == 0) atomicOr(p.error_flag, kBadGatherIndex);
      continue;
    }
    CopyRowBytes(p.x + j * p.x_stride_bytes, dst, p.row_bytes);
  }
}

__device__ __forceinline__ float Apply(BinaryOp op, float a, float b) {
  return op == BinaryOp::kAdd ? a + b : a / (1.0f + __expf(-a)) * b;
}

template <int kVec>
__global__ void BinaryKernel(BinaryParams p) {
  const int64_t vecs_per_row = p.a.cols / kVec;
  const int64_t total = p.a.rows * vecs_per_row;
  for (int64_t v = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; v < total;
       v += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = v / vecs_per_row, c = (v % vecs_per_row) * kVec;
    const uint16_t* pa = static_cast<const uint16_t*>(p.a.data) + r * p.a.stride + c;
    const uint16_t* pb = static_cast<const uint16_t*>(p.b.data) + r * p.b.stride + c;
    uint16_t* po = static_cast<uint16_t*>(p.out.data) + r * p.out.stride + c;
    uint16_t av[kVec], bv[kVec];
    if constexpr (kVec == 8) {
      *reinterpret_cast<uint4*>(av) = *reinterpret_cast<const uint4*>(pa);
      *reinterpret_cast<uint4*>(bv) = *reinterpret_cast<const uint4*>(pb);
    } else {
      av[0] = *pa;
      bv[0] = *pb;
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) av[j] = FToBf16(Apply(p.op, Bf16ToF(av[j]), Bf16ToF(bv[j])));
    if constexpr (kVec == 8) {
      *reinterpret_cast<uint4*>(po) = *reinterpret_cast<const uint4*>(av);
    } else {
      *po = av[0];
    }
  }
}

__global__ void AddBiasKernel(BiasParams p) {
  const int64_t total = p.out.rows * p.out.cols;
  for (int64_t v = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; v < total;
       v += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = v / p.out.cols, c = v % p.out.cols;
    const float b = p.bias_f32 ? static_cast<const float*>(p.bias)[c]
                               : Bf16ToF(static_cast<const uint16_t*>(p.bias)[c]);
    if (p.out_f32) {
      static_cast<float*>(p.out.data)[r * p.out.stride + c] += b;
    } else {
      uint16_t* o = static_cast<uint16_t*>(p.out.data) + r * p.out.stride + c;
      *o = FToBf16(Bf16ToF(*o) + b);
    }
  }
}

bool Aligned16(const void* p, int64_t stride_elems) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && stride_elems % 8 == 0;
}

unsigned RowGrid(int64_t rows) {
  return static_cast<unsigned>(rows < 1 ? 1 : (rows > (1 << 20) ? (1 << 20) : rows));
}

}  // namespace

cudaError_t LaunchEmbedding(const EmbeddingParams& p, cudaStream_t stream) {
  if (p.out.rows == 0) return cudaSuccess;
  EmbeddingKernel<<<RowGrid(p.out.rows), 128, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchGatherRows(const GatherRowsParams& p, cudaStream_t stream) {
  if (p.out_rows == 0) return cudaSuccess;
  GatherRowsKernel<<<RowGrid(p.out_rows), 128, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchBinary(const BinaryParams& p, cudaStream_t stream) {
  const int64_t n = p.a.rows * p.a.cols;
  if (n == 0) return cudaSuccess;
  const bool vec = p.a.cols % 8 == 0 && Aligned16(p.a.data, p.a.stride) &&
                   Aligned16(p.b.data, p.b.stride) && Aligned16(p.out.data, p.out.stride);
  if (vec) {
    BinaryKernel<8><<<GridFor(n / 8, kThreads), kThreads, 0, stream>>>(p);
  } else {
    BinaryKernel<1><<<GridFor(n, kThreads), kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

cudaError_t LaunchAddBias(const BiasParams& p, cudaStream_t stream) {
  const int64_t n = p.out.rows * p.out.cols;
  if (n == 0) return cudaSuccess;
  AddBiasKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cpserve::cuda
