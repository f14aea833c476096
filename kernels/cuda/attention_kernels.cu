// Instantiates the attention kernels for head dims 32, 64, 128 and launches them
// (the one place the head dim is dispatched). Includes no C++20 project headers.
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/attention_flash.cuh"
#include "kernels/cuda/attention_hopper.h"
#include "kernels/cuda/attention_params.h"

namespace cpserve::cuda::attn {
namespace {

template <int D>
cudaError_t Launch(const Params& params, int num_items, int num_split_segs, int max_combine_rows,
                   const int* split_segs, int hopper_variant, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  if (hopper_variant > 0) {
    if (D != kHopperHeadDim) return cudaErrorInvalidValue;
    err = LaunchHopperFlash(params, num_items, static_cast<HopperVariant>(hopper_variant - 1),
                            stream);
  } else {
    constexpr int smem = FlashSmemBytes<D>();
    err =
        cudaFuncSetAttribute(FlashAttnKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
    const dim3 grid(static_cast<unsigned>(num_items), static_cast<unsigned>(params.num_kv_heads));
    FlashAttnKernel<D><<<grid, kThreads, smem, stream>>>(params);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess) return err;
  if (num_split_segs > 0) {
    const int y = std::clamp((max_combine_rows + kWarps - 1) / kWarps, 1, 1024);
    const dim3 cgrid(static_cast<unsigned>(num_split_segs), static_cast<unsigned>(y));
    CombineSplitsKernel<D><<<cgrid, kThreads, 0, stream>>>(params, split_segs);
    err = cudaGetLastError();
  }
  return err;
}

}  // namespace

cudaError_t LaunchAttentionKernels(int head_dim, const Params& params, int num_items,
                                   int num_split_segs, int max_combine_rows, const int* split_segs,
                                   int hopper_variant, cudaStream_t stream) {
  switch (head_dim) {
    case 32:
      return Launch<32>(params, num_items, num_split_segs, max_combine_rows, split_segs,
                        hopper_variant, stream);
    case 64:
      return Launch<64>(params, num_items, num_split_segs, max_combine_rows, split_segs,
                        hopper_variant, stream);
    case 128:
      return Launch<128>(params, num_items, num_split_segs, max_combine_rows, split_segs,
                         hopper_variant, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace cpserve::cuda::attn
