// Hopper (sm_90a) flash-attention kernel for head dim 128: the prefill path of
// LaunchAttentionKernels on compute capability 9.0. Same Params / WorkItem /
// SegDesc contract as the mma.sync kernel (attention_flash.cuh), with work items
// of kHopperRows rows. C++17 header (included by the .cu files and the planner).
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/cuda/attention_params.h"

namespace cpserve::cuda::attn {

constexpr int kHopperHeadDim = 128;
constexpr int kHopperRows = 128;  // 2 consumer warpgroups x 64 rows
constexpr int kHopperKeys = 128;  // keys per pipeline stage

// True when the Hopper kernel can run on `device` (compute capability 9.0, for
// which the library carries sm_90a code).
bool HopperFlashSupported(int device);

// kPerWork: one block per work (item x KV head), the hardware schedules them;
// kPersistent: one block per SM taking works from a global counter
// (Params::work_counter, zeroed before the launch) and keeping its K/V ring
// running across them (measured 0-2% faster). 2-stage K/V ring.
enum class HopperVariant { kPerWork, kPersistent };

// Launches the Hopper flash kernel over num_items x Hkv works. Writes O/LSE, or
// partials for split segments (the combine kernel runs separately). Returns the
// launch error, if any.
cudaError_t LaunchHopperFlash(const Params& params, int num_items, HopperVariant variant,
                              cudaStream_t stream);

}  // namespace cpserve::cuda::attn
