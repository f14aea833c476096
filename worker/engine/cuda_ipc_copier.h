// CUDA IPC for KV transfers between pool ranks on one host (DESIGN §5): a
// transfer::DirectCopier over a GPU KV cache. Export() describes the cache (host
// identity, process, device, cudaIpcMemHandle); a sender on the same host opens
// it with cudaIpcOpenMemHandle (peer access enabled lazily) — or uses the pointer
// itself inside one process — and copies device to device on its own stream, over
// NVLink between two GPUs. Other hosts (or containers with another hostname or
// boot id) are UNAVAILABLE, so those pushes stay on UCX with host staging.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/kv_cache.h"
#include "worker/engine/engine_types.h"
#include "worker/transfer/direct_copier.h"

namespace cpserve {

// The copier of one rank's GPU KV cache (its base must be the start of a
// cudaMalloc allocation, as Backend::AllocKvCache gives). INVALID_ARGUMENT for a
// host cache; the CUDA error when the handle cannot be made.
absl::StatusOr<std::shared_ptr<transfer::DirectCopier>> CreateCudaIpcCopier(
    const KvCacheView& cache);

// CreateCudaIpcCopier as an EngineOptions::kv_direct_copier.
KvDirectCopierFactory CudaIpcCopierFactory();

}  // namespace cpserve
