// Paged KV cache: scatter new tokens' K/V by slot, gather one sequence back.
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/launch.h"

namespace cpserve::cuda {
namespace {

constexpr int kThreads = 128;

// Copies the `heads` rows of `dim` bf16 of one token between [T, H, D] and the cache.
__device__ void CopyHeads(const uint16_t* src, int64_t src_head_stride, uint16_t* dst,
                          int64_t dst_head_stride, int64_t heads, int64_t dim) {
  const bool vec = dim % 8 == 0 && src_head_stride % 8 == 0 && dst_head_stride % 8 == 0 &&
                   reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  if (vec) {
    const int64_t per_head = dim / 8;
    for (int64_t e = threadIdx.x; e < heads * per_head; e += blockDim.x) {
      const int64_t h = e / per_head, i = (e % per_head) * 8;
      *reinterpret_cast<uint4*>(dst + h * dst_head_stride + i) =
          *reinterpret_cast<const uint4*>(src + h * src_head_stride + i);
    }
  } else {
    for (int64_t e = threadIdx.x; e < heads * dim; e += blockDim.x) {
      const int64_t h = e / dim, i = e % dim;
      dst[h * dst_head_stride + i] = src[h * src_head_stride + i];
    }
  }
}

__global__ void WriteKvKernel(WriteKvParams p) {
  const CacheView& c = p.cache;
  for (int64_t t = blockIdx.x; t < p.k.tokens; t += gridDim.x) {
    const int64_t slot = p.slots[t * p.slots_stride];
    if (slot < 0) continue;
    if (slot >= c.num_blocks * c.block_size) {
      if (threadIdx.x == 0) atomicOr(p.error_flag, kBadSlot);
      continue;
    }
    const int64_t block = slot / c.block_size, off = slot % c.block_size;
    uint16_t* dst =
        c.base + block * c.block_stride + p.layer * c.layer_stride + off * c.token_stride;
    CopyHeads(p.k.data + t * p.k.token_stride, p.k.head_stride, dst, c.head_stride, c.heads, c.dim);
    CopyHeads(p.v.data + t * p.v.token_stride, p.v.head_stride, dst + c.kv_stride, c.head_stride,
              c.heads, c.dim);
  }
}

__global__ void GatherKvKernel(GatherKvParams p) {
  const CacheView& c = p.cache;
  for (int64_t t = blockIdx.x; t < p.len; t += gridDim.x) {
    const int64_t block = p.block_table[t / c.block_size], off = t % c.block_size;
    const uint16_t* src =
        c.base + block * c.block_stride + p.layer * c.layer_stride + off * c.token_stride;
    CopyHeads(src, c.head_stride, p.k.data + t * p.k.token_stride, p.k.head_stride, c.heads, c.dim);
    CopyHeads(src + c.kv_stride, c.head_stride, p.v.data + t * p.v.token_stride, p.v.head_stride,
              c.heads, c.dim);
  }
}

unsigned RowGrid(int64_t rows) {
  return static_cast<unsigned>(rows < 1 ? 1 : (rows > (1 << 20) ? (1 << 20) : rows));
}

}  // namespace

cudaError_t LaunchWriteKv(const WriteKvParams& p, cudaStream_t stream) {
  if (p.k.tokens == 0) return cudaSuccess;
  WriteKvKernel<<<RowGrid(p.k.tokens), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchGatherKv(const GatherKvParams& p, cudaStream_t stream) {
  if (p.len == 0) return cudaSuccess;
  GatherKvKernel<<<RowGrid(p.len), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace cpserve::cuda
