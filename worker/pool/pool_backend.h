// What one pool rank runs on: its device, backend, weights and collective group.
// Shared by the pool engine (pool_engine.h) and the multi-GPU tests, so a CPU rank
// and a CUDA rank are set up by the same code.
//
// Device strings (the pools' --device flag):
//   "cpu"          every rank on the CPU backend (fp32)
//   "cuda"         rank r on GPU r
//   "cuda:B"       rank r on GPU B + r (a single-rank pool: GPU B)
//   "cuda:a,b,..." rank r on the r-th listed GPU
//
// Collective group of a CUDA pool: ONE NCCL communicator on the rank's GPU, running
// on the backend's stream (collectives are ordered after the compute that produced
// their inputs, no extra synchronisation), with host-tensor staging on
// (worker/comm/nccl_group.h): the engine's host-side control traffic (step plans,
// sampled tokens, outcome codes) and its device K/V/LSE collectives go through the
// same CollectiveGroup, so Engine/RunFollower/StepRunner/CpAttention have one code
// path for Gloo and NCCL pools.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/tensor.h"
#include "worker/comm/collective_group.h"
#include "worker/comm/rendezvous_client.h"
#include "worker/model/weights.h"

namespace cpserve {

// The device of `rank` under `device` (above). INVALID_ARGUMENT for a malformed
// string or a list without an entry for the rank.
absl::StatusOr<Device> PoolRankDevice(const std::string& device, int rank);

// True when this build has the CUDA backend.
bool PoolHasCuda();

// The backend of a device: CPU fp32, or CUDA bf16 (UNIMPLEMENTED in builds without
// CUDA; FAILED_PRECONDITION when the GPU is missing).
absl::StatusOr<std::unique_ptr<Backend>> CreateRankBackend(const Device& device);

// The model of directory `dir` on `backend`: a synthetic model's marker
// (worker/model/synthetic_weights.h) → generated on the backend (on the GPU for
// CUDA); else the Hugging Face checkpoint, loaded in fp32 and, for CUDA, uploaded in
// bf16.
absl::StatusOr<ModelWeights> LoadWeightsForBackend(const std::string& dir, Backend& backend);

// Joins the pool's collective group for a rank running `backend`: Gloo over TCP
// (listening on `listen_host`) for a CPU backend, NCCL as described above for CUDA.
absl::StatusOr<std::unique_ptr<comm::CollectiveGroup>> CreateRankGroup(
    Backend& backend, comm::RendezvousClient& client, const std::string& prefix, int rank,
    int world_size, const std::string& listen_host, std::chrono::milliseconds timeout);

}  // namespace cpserve
