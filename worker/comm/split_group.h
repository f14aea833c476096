// A collective group that sends host tensors through one group and device tensors
// through another: a GPU pool's control traffic (step commands, transfer outcome
// codes) over Gloo (TCP) and its data (KV all-gathers, LSE merges) over NCCL.
//
// Why: a rank waiting for the next step command inside an NCCL collective keeps a
// kernel spinning on its GPU. When a rank of another pool shares that GPU (a prefill
// and a decode pool on the same two GPUs), the GPU time-slices between the spinning
// wait and the real work, halving the working rank's speed (measured on two H200s,
// 2026-11-22: PCP=2 prefill of a 16k prompt 0.81 s vs 0.52 s on one GPU). A Gloo
// wait blocks on a socket instead.
//
// Every rank issues the same collectives in the same order, so the two groups never
// wait on each other. A collective whose tensors are on different sides is
// INVALID_ARGUMENT. The group is healthy while both are.
#pragma once

#include <memory>

#include "worker/comm/collective_group.h"

namespace cpserve::comm {

// `host` serves tensors in host memory, `device` the others; both must have the same
// rank and world size.
absl::StatusOr<std::unique_ptr<CollectiveGroup>> CreateSplitGroup(
    std::unique_ptr<CollectiveGroup> host, std::unique_ptr<CollectiveGroup> device);

}  // namespace cpserve::comm
