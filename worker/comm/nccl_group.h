// NCCL backend of CollectiveGroup for CUDA ranks (one process per GPU). Compiled only
// when CPSERVE_HAVE_CUDA (target cpserve_comm_nccl).
//
// Bootstrap: rank 0 calls ncclGetUniqueId and publishes it under
// "<prefix>nccl/unique_id" in the pool's rendezvous store; the others Get it.
// The communicator is non-blocking (ncclConfig_t.blocking = 0): init and every
// collective are polled with ncclCommGetAsyncError and cudaStreamQuery against the
// group timeout. A dead or stalled peer therefore gives DEADLINE_EXCEEDED (or
// UNAVAILABLE when NCCL reports a remote/system error), the communicator is aborted
// with ncclCommAbort (which also stops its kernels), and the group is broken.
//
// Each call is synchronous for the host: it returns once the collective has finished
// on the group's stream. Tensors live on the group's device, or — with
// NcclGroupOptions::host_staging — both in host memory: host tensors are staged through a device
// buffer (upload on the group's stream, the device collective, download after it completed). That
// is how a CUDA pool runs its host-side control traffic — step-plan broadcasts, sampled-token
// all-reduces, transfer outcome codes — over the same communicator as its K/V/LSE collectives: one
// group, one failure state, and the engine keeps one code path for CPU (Gloo) and GPU (NCCL) pools.
// A follower idling in ReceiveStep waits in an NCCL broadcast (bounded by the timeout; the leader's
// idle keepalive renews it). When NcclGroupOptions::stream is set, collectives run on that stream
// (so they follow the compute that produced their inputs); otherwise on a stream the group owns,
// and the caller must have finished writing the inputs (e.g. synchronized its stream). AllGatherV
// is a group of ncclBroadcast calls, one per rank, into the output.
#pragma once

#include <cuda_runtime_api.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/comm/collective_group.h"
#include "worker/comm/rendezvous_client.h"

namespace cpserve::comm {

struct NcclGroupOptions {
  // CUDA device of this rank; -1 = rank % device count.
  int device = -1;
  // Bounds the rendezvous, the communicator init and every collective.
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
  // Not owned; null = the group creates (and destroys) a non-blocking stream.
  cudaStream_t stream = nullptr;
  // Accept host tensors by staging them through the device (a CUDA pool's control
  // traffic). Off: host tensors are INVALID_ARGUMENT.
  bool host_staging = false;
};

absl::StatusOr<std::unique_ptr<CollectiveGroup>> CreateNcclGroup(
    RendezvousClient& client, const std::string& prefix, int rank, int world_size,
    const NcclGroupOptions& options = {});

}  // namespace cpserve::comm
