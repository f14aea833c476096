// One UCX transfer agent per worker (DESIGN §5): a ucp context and worker,
// progressed by one dedicated thread; the worker's registered KV region; the
// decode side's reservations; the prefill side's pushes.
//
// Protocol per (prefill rank -> decode rank), over active messages:
//   sender: BEGIN -> receiver: ACCEPT (or REJECT) -> sender: ucp_put_nbx per plan
//   run, ucp_ep_flush_nbx, DONE(OK). A receiver completes a transfer when all P
//   senders reported DONE(OK). Cancel/deadline on the receiver sends CANCEL to the
//   accepted senders; their blocks return to the free list only after each sender
//   answered DONE (its puts flushed) or died, so freed blocks are never written.
// Peer death is detected by UCX peer error handling on the endpoints of both
// directions (UCP_ERR_HANDLING_MODE_PEER): the survivor fails the request with
// UNAVAILABLE and frees its state.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cpserve/v1/kv_transfer.pb.h"
#include "worker/transfer/direct_copier.h"
#include "worker/transfer/kv_descriptor.h"

namespace cpserve::transfer {

enum class MemoryKind { kHost, kCuda };

struct AgentOptions {
  std::string name = "cpserve";
  // After a receiver failed a transfer, how long it waits for accepted senders to
  // confirm (DONE) or die before freeing the blocks anyway.
  absl::Duration cancel_grace = absl::Seconds(10);
  // The progress thread keeps polling this long after the last event before it
  // sleeps on the worker's event fd (latency vs. idle CPU).
  absl::Duration spin_before_sleep = absl::Microseconds(200);
  // UCP_ERR_HANDLING_MODE_PEER on every endpoint, so that a dead peer fails its
  // transfers at once. UCX 1.13's shared-memory transports (posix, sysv, cma)
  // cannot do it: set false for them; deadlines then bound a dead peer's damage.
  bool peer_failure_detection = true;
  // Test hooks, run on the progress thread (never set in production).
  std::function<void(const std::string& transfer_id)> before_puts_for_test;
};

// The worker's KV cache: one region shaped [num_blocks][layers][2][B][Hkv][D],
// block k at base + k * block_stride_bytes.
struct KvRegion {
  void* base = nullptr;
  uint64_t bytes = 0;
  int64_t num_blocks = 0;
  uint64_t block_stride_bytes = 0;
  KvPoolLayout layout;  // this worker's pool layout
  int rank = 0;         // this worker's rank in its pool
  // kCuda: registered directly when UCX supports CUDA memory; otherwise a pinned
  // host staging path is needed (not implemented: RegisterKvRegion -> Unimplemented).
  MemoryKind memory = MemoryKind::kHost;
  // Optional: direct copies to and from agents on the same host (CUDA IPC between
  // GPU caches whose host mirror is `base`). Receivers advertise it in their
  // destinations; senders use it when every destination of a push can be opened.
  std::shared_ptr<DirectCopier> direct;
};

// What a prefill rank pushes for one request.
struct PushRequest {
  v1::KvTransferTarget target;     // from the decode pool (via the router)
  int64_t prompt_len = 0;          // tokens whose KV is pushed
  std::vector<int32_t> block_ids;  // this rank's blocks of the request, local order
  absl::Time deadline = absl::InfiniteFuture();
  // Write through the region's DirectCopier instead of UCX puts (CanPushDirect).
  bool direct = false;
};

// Leak accounting; all zero (but registrations/endpoints) when idle.
struct AgentCounters {
  int64_t registrations = 0;  // ucp_mem_map'ed regions
  int64_t endpoints = 0;      // open endpoints (cached per peer worker address)
  int64_t pushes_in_flight = 0;
  int64_t receives_live = 0;  // reservations not yet released / freed
  int64_t reserved_blocks = 0;
  int64_t free_blocks = 0;
};

class TransferAgent {
 public:
  static absl::StatusOr<std::unique_ptr<TransferAgent>> Create(const AgentOptions& options);
  ~TransferAgent();  // fails live transfers with CANCELLED, stops the thread, frees UCX
  TransferAgent(const TransferAgent&) = delete;
  TransferAgent& operator=(const TransferAgent&) = delete;

  // Registers the worker's KV region (once). All blocks start free.
  absl::Status RegisterKvRegion(const KvRegion& region);
  const std::string& worker_address() const;
  uint64_t epoch() const;
  bool cuda_memory_supported() const;

  // ---- decode side -------------------------------------------------------
  // Takes `num_blocks` free blocks for `transfer_id` and returns the destination
  // to hand to the prefill pool. Not completed by `deadline` -> DEADLINE_EXCEEDED
  // and the blocks are freed. RESOURCE_EXHAUSTED when too few blocks are free.
  absl::StatusOr<v1::KvDestination> Reserve(const std::string& transfer_id, int64_t num_blocks,
                                            absl::Time deadline);
  // Like Reserve, for a pool whose scheduler chose the blocks (local block order):
  // each must be inside the region and not reserved by another live transfer
  // (FAILED_PRECONDITION otherwise; nothing is reserved).
  absl::StatusOr<v1::KvDestination> ReserveBlocks(const std::string& transfer_id,
                                                  std::vector<int32_t> block_ids,
                                                  absl::Time deadline);
  // Waits until the transfer completed (OK: every sender's KV is in the blocks)
  // or failed (its status: CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE for a dead
  // sender, ...) or until `wait_until` (then DEADLINE_EXCEEDED, transfer untouched).
  absl::Status WaitReceived(const std::string& transfer_id, absl::Time wait_until);
  // Non-blocking WaitReceived: nullopt while the transfer is in flight, else its
  // final status (NOT_FOUND for an unknown id).
  std::optional<absl::Status> PollReceived(const std::string& transfer_id);
  // Cancels a live reservation (senders are told to stop). The blocks are freed
  // once no sender can write any more.
  absl::Status CancelReceive(const std::string& transfer_id);
  // True when every sender of a completed transfer wrote directly (DirectCopier), so
  // the KV is already in the memory behind the region (no staging copy needed).
  // FAILED_PRECONDITION is the transfer's outcome when its senders mixed direct and
  // UCX writes (a staging copy would overwrite the direct ones).
  bool ReceivedDirect(const std::string& transfer_id);
  // Returns a completed (or failed) transfer's blocks to the free list and forgets
  // it. For a completed transfer this is when the decode request is finished.
  absl::Status Release(const std::string& transfer_id);

  // ---- prefill side ------------------------------------------------------
  // Whether a push to `target` can go direct: this region has a DirectCopier and it
  // opens every destination's exported memory (same host). Call on the pushing thread.
  bool CanPushDirect(const v1::KvTransferTarget& target);
  // Validates the target and this rank's blocks (InvalidArgument, nothing
  // written, on any mismatch), plans and pushes; the future resolves to OK
  // once every run is flushed and every decode rank was told DONE.
  std::future<absl::Status> PushAsync(PushRequest request);
  absl::Status Push(PushRequest request) { return PushAsync(std::move(request)).get(); }
  // Stops a push (CANCELLED): no new puts, outstanding ones flushed, receivers told.
  void CancelPush(const std::string& transfer_id);

  AgentCounters counters() const;

  class Impl;

 private:
  explicit TransferAgent(std::unique_ptr<Impl> impl);
  absl::StatusOr<v1::KvDestination> ReserveImpl(const std::string& transfer_id, int64_t num_blocks,
                                                std::vector<int32_t> block_ids,
                                                absl::Time deadline);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cpserve::transfer
