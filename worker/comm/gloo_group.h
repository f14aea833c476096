// Gloo backend of CollectiveGroup for CPU ranks: a full mesh of TCP connections
// bootstrapped through the pool's rendezvous store (DESIGN §2, §6).
//
// Algorithms (Gloo 0.5.0): all-gather, all-gather-v, all-reduce (ring / bcube picked
// by Gloo), broadcast and barrier are Gloo's. Gloo 0.5.0 has no reduce-scatter on its
// unbound-buffer API, so ReduceScatter is an all-to-all followed by a local reduction
// in rank order: the same bytes on the wire as a ring reduce-scatter, one temporary
// of the input's size, and a result independent of the ring order.
// Host tensors only; device tensors are INVALID_ARGUMENT (use the NCCL backend).
// Side effect: the first CreateGlooGroup sets SIGPIPE to SIG_IGN when it is still at
// its default, because Gloo's TCP writes to a dead peer would otherwise kill the rank.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/comm/collective_group.h"
#include "worker/comm/rendezvous_client.h"

namespace cpserve::comm {

struct GlooGroupOptions {
  // Address this rank's Gloo TCP device listens on and advertises to its peers:
  // 127.0.0.1 on one machine, the pod IP in a cluster.
  std::string hostname = "127.0.0.1";
  // Bounds the rendezvous (every rank must arrive within it) and every collective.
  std::chrono::milliseconds timeout = std::chrono::seconds(30);
};

// Joins the group of `world_size` ranks whose keys live under `prefix` (see
// RendezvousPrefix) in the store `client` talks to. Blocks until every rank has
// arrived and connected; DEADLINE_EXCEEDED / UNAVAILABLE when one does not within
// options.timeout (Gloo's own TCP connect may take up to a few timeouts when a peer
// publishes its address and then dies). `client` is only used during this call.
absl::StatusOr<std::unique_ptr<CollectiveGroup>> CreateGlooGroup(
    RendezvousClient& client, const std::string& prefix, int rank, int world_size,
    const GlooGroupOptions& options = {});

}  // namespace cpserve::comm
