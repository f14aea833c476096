// Instantiates the paged decode attention kernels for head dims 32, 64, 128 and
// launches them. Includes no C++20 project headers.
#include <cuda_runtime.h>

#include "kernels/cuda/attention_decode.cuh"
#include "kernels/cuda/attention_decode.h"

namespace cpserve::cuda::attn {
namespace {

template <int D>
cudaError_t Launch(const DecodeParams& params, int num_items, int num_split_segs, int max_rows,
                   cudaStream_t stream) {
  constexpr int smem = DecodeKernelSmem<D>();
  cudaError_t err =
      cudaFuncSetAttribute(DecodeAttnKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(num_items), static_cast<unsigned>(params.num_kv_heads));
  DecodeAttnKernel<D><<<grid, kDecodeThreads, smem, stream>>>(params);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  if (num_split_segs > 0) {
    const dim3 cgrid(static_cast<unsigned>(num_split_segs),
                     static_cast<unsigned>(params.num_kv_heads * max_rows));
    DecodeCombineKernel<D><<<cgrid, kDecodeThreads, 0, stream>>>(params);
    err = cudaGetLastError();
  }
  return err;
}

}  // namespace

cudaError_t LaunchDecodeAttention(int head_dim, const DecodeParams& params, int num_items,
                                  int num_split_segs, int max_rows, cudaStream_t stream) {
  if (num_items <= 0) return cudaSuccess;
  if (max_rows < 1 || max_rows > kDecodeRows) return cudaErrorInvalidValue;
  switch (head_dim) {
    case 32:
      return Launch<32>(params, num_items, num_split_segs, max_rows, stream);
    case 64:
      return Launch<64>(params, num_items, num_split_segs, max_rows, stream);
    case 128:
      return Launch<128>(params, num_items, num_split_segs, max_rows, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace cpserve::cuda::attn
