// The CUDA bf16 backend (DESIGN §7): activations, weights and the KV cache in
// bf16, fp32 accumulation and fp32 LSE; one GPU, one stream, GEMMs on cuBLASLt.
//
// Differences from the CPU reference a caller can observe:
// - Ops are asynchronous on the backend's stream. CopyToHost and Synchronize
//   wait for the stream.
// - Index checks that need device data (Embedding ids, GatherRows indices,
//   WriteKvCache slots) cannot fail the launching call without a sync: the kernel
//   skips the bad row (Embedding zeroes it) and sets a device error flag, and the
//   next Synchronize or CopyToHost returns InvalidArgument naming the op.
// - Sample: greedy rows (temperature 0) run on the device; rows with
//   temperature > 0 are copied to the host and sampled there with the CPU
//   reference's exact algorithm (kernels/sampling.h), then uploaded.
// - Linear accepts a bf16 or fp32 `out` (fp32 for logits); x, w and bias are bf16.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace cpserve {

// A backend on CUDA device `device`. FailedPrecondition if there is no such
// device; INTERNAL if CUDA or cuBLASLt fail to initialise. Installs the
// DeviceType::kCUDA allocator (cudaMalloc / cudaFree) on first use.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device);

// Lets the CUDA tensor allocator keep freed blocks of `device` for reuse instead of
// cudaFree (which synchronises the device). The caller promises that all device work
// on the tensors of `device` runs on the stream of that device's one backend (its
// kernels, copies and NCCL collectives; pool ranks: worker/pool/pool_backend.cc).
// The cache stays off while two backends live on the device, and with
// $CPSERVE_CUDA_ALLOCATOR=cudamalloc.
void EnableCudaBlockCache(int device);

// Number of visible CUDA devices (0 when the driver or a GPU is missing).
int CudaDeviceCount();

}  // namespace cpserve
