// Continuous-batching scheduler of one pool (vLLM-style; DESIGN §6: runs on the pool leader).
//
// Loop, single-threaded, no callbacks:
//   Add()/AddPrefilled()/Cancel()/Finish() as requests arrive or go away;
//   plan = Schedule();  execute plan on every rank;  Update(plan, stopped);  repeat.
//
// Policy per step (token budget max_batch_tokens, at most max_running admitted requests):
//  1. every running request in its decode phase gets one decode token, in admission order;
//  2. running requests still prefilling get their next chunk, in admission order, each
//     [num_computed, min(prefill end, num_computed + remaining budget));
//  3. waiting requests are admitted in FIFO order with a first chunk while budget, request
//     slots and KV blocks last — unless step 1 or 2 preempted or was short of blocks, so
//     new work never overtakes stalled running work.
// A request's chunks are planned in order and each starts where the previous one ended.
//
// KV admission: the scheduler keeps one BlockManager per rank of the CP group, mirroring
// the block allocation of every rank exactly (the layout gives each rank a different share
// of each sequence). Work is planned only if its blocks can be taken on EVERY rank; then they
// are taken on all ranks at once, so no rank ever runs out mid-step. The engine reads each
// rank's block table / slot mapping from block_manager(r) (or ranks replay the same
// deterministic calls). A new admission must also leave watermark_blocks free on each rank.
//
// Out of blocks: a decode that cannot get a block preempts the most recently admitted
// running request not yet planned in this step — possibly itself — until it fits (vLLM
// recompute preemption: blocks freed, request back at the head of the waiting queue, its
// generated tokens kept and recomputed on re-admission). A prefill chunk that does not fit
// is shortened to what fits; if nothing fits it preempts younger unplanned requests, else it
// waits a step holding its blocks.
//
// Progress: a request accepted by Add() fits an empty pool, and younger work yields to
// older work, so every request finishes — provided the engine releases the blocks of
// kFinished (held) requests and completes the transfers of kAwaitingKv ones, which no
// preemption can reclaim.
//
// Deterministic: the same sequence of calls yields the same plans and block ids.
// Pure logic: no threads, no I/O; not thread-safe (owned by the engine's scheduler thread).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/engine/scheduler_types.h"
#include "worker/kv/block_table.h"

namespace cpserve {

class Scheduler {
 public:
  // InvalidArgument for an invalid config (see SchedulerConfig).
  static absl::StatusOr<Scheduler> Create(const SchedulerConfig& config);

  // Queues a new request at the tail of the waiting queue. Refused (nothing changes):
  //  InvalidArgument: empty id, prompt_len < 1, max_tokens < 1, or prompt_len + max_tokens
  //    > max_model_len;
  //  ResourceExhausted: its KV at full length (prompt_len + max_tokens - 1 positions) exceeds
  //    some rank's whole pool, or its first chunk cannot be admitted on an empty pool
  //    within the watermark — it could never run;
  //  AlreadyExists: a live request has this id.
  absl::Status Add(const RequestSpec& spec);

  // Decode side of disaggregation: a request whose prompt was prefilled elsewhere and whose
  // first token was sampled there. Reserves the prompt's blocks on every rank now (for the
  // KV transfer: block_manager(r).Find(id)->blocks()) in phase kAwaitingKv; MarkKvReady()
  // makes it run, decoding from position prompt_len. Errors as Add(), plus InvalidArgument
  // for max_tokens < 2, and ResourceExhausted when the blocks (with the watermark) or a
  // request slot are not free right now.
  absl::Status AddPrefilled(const RequestSpec& spec);

  // The transferred KV of an AddPrefilled request is complete: it joins the running set.
  // NotFound for an unknown id, FailedPrecondition unless it is awaiting KV.
  absl::Status MarkKvReady(const std::string& id);

  // Plans the next step and takes the KV blocks it needs on every rank. The plan is pending
  // until Update(); FailedPrecondition if one is already pending. An empty plan (nothing
  // can run) is never pending.
  absl::StatusOr<StepPlan> Schedule();

  // Applies the executed pending plan: each work item's positions become computed; each
  // item with samples == true appended one generated token. A request finishes when it has
  // max_tokens tokens (kLength) or is listed in `stopped` (kStop: EOS / stop sequence seen
  // in the token it just sampled). Finished requests free their KV (unless
  // hold_kv_on_finish) and are returned. Items of requests cancelled since Schedule() are
  // skipped. FailedPrecondition if plan is not the pending one; InvalidArgument if `stopped`
  // names a request that did not sample in the plan (then nothing changes).
  absl::StatusOr<std::vector<FinishedRequest>> Update(const StepPlan& plan,
                                                      absl::Span<const std::string> stopped);

  // Both end a request in any phase, free all its blocks on every rank and forget it:
  // Finish() when the engine is done with it (e.g. after transferring held KV), Cancel()
  // when the client or a deadline aborts it. NotFound for an unknown (or already gone) id.
  absl::Status Finish(const std::string& id);
  absl::Status Cancel(const std::string& id);

  // ---- Inspection ----
  const SchedulerConfig& config() const { return config_; }
  const BlockManager& block_manager(int rank) const { return managers_.at(rank); }
  // NotFound for an unknown id.
  absl::StatusOr<RequestInfo> GetRequest(const std::string& id) const;
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_awaiting_kv() const { return num_awaiting_kv_; }
  int64_t num_requests() const { return static_cast<int64_t>(requests_.size()); }
  // Running requests in admission order / waiting queue front to back.
  const std::vector<std::string>& running() const { return running_; }
  const std::deque<std::string>& waiting() const { return waiting_; }
  // Whether Schedule() has anything to plan (waiting or running requests).
  bool HasWork() const { return !waiting_.empty() || !running_.empty(); }
  // Fewest free blocks over the ranks (the load figure a pool reports to the router).
  int64_t MinFreeBlocks() const;

 private:
  struct Request {
    RequestInfo info;
    int64_t prefill_end = 0;    // positions to compute before decoding (set at admission)
    int64_t planned_step = -1;  // last step that planned work for it
  };

  explicit Scheduler(const SchedulerConfig& config) : config_(config) {}

  absl::Status CheckSpec(const RequestSpec& spec) const;
  int64_t SequenceLength(const Request& r) const {
    return r.info.spec.prompt_len + r.info.num_generated;
  }
  bool CanGrowAll(const std::string& id, int64_t len, int64_t reserve) const;
  void GrowAll(const std::string& id, int64_t len);
  void FreeAll(const std::string& id);
  // Longest prefix [0, len) of id's sequence whose KV fits on every rank right now.
  int64_t FittingLength(const std::string& id) const;
  void Preempt(const std::string& id, StepPlan* plan);
  void RemoveFromRunning(const std::string& id);
  void Plan(Request& r, WorkKind kind, int64_t end, StepPlan* plan);
  absl::Status Remove(const std::string& id);

  SchedulerConfig config_;
  std::vector<BlockManager> managers_;  // [world_size]
  // Looked up only, never iterated, so hash order cannot affect plans.
  absl::flat_hash_map<std::string, Request> requests_;
  std::deque<std::string> waiting_;   // FIFO; preempted requests re-enter at the front
  std::vector<std::string> running_;  // admission order
  int64_t num_awaiting_kv_ = 0;
  int64_t next_step_ = 0;
  bool pending_ = false;
  StepPlan pending_plan_;
};

}  // namespace cpserve
