// The engine of a pool's leader: a continuous-batching scheduler and a step
// executor around one model on one backend, with an in-process streaming API.
// Alone (no group) it is a single-rank engine; with a collective group it is rank 0
// of a context-parallel pool and every step it plans is broadcast to the other
// ranks, which run it through RunFollower().
//
//   auto engine = Engine::Create(weights, backend, options);
//   engine->Submit("r1", prompt_ids, params, [](const TokenEvent& e) { ... });
//   engine->Cancel("r1");
//
// One thread (the engine thread) owns the scheduler, the KV cache and the model;
// Submit and Cancel only queue work for it. Callbacks run on the engine thread
// and must not block.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/backend.h"
#include "kernels/sampling.h"
#include "worker/comm/collective_group.h"
#include "worker/engine/engine_types.h"
#include "worker/engine/generation_engine.h"
#include "worker/engine/rank_transfers.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/step_runner.h"
#include "worker/model/llama_model.h"

namespace cpserve {

class Engine final : public GenerationEngine {
 public:
  // group: the pool's collective group with this process as rank 0, or null for a
  // single-rank engine. weights, backend and group must outlive the engine.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const ModelWeights& weights,
                                                        Backend& backend,
                                                        const EngineOptions& options,
                                                        comm::CollectiveGroup* group = nullptr);
  ~Engine();  // stops the thread; unfinished requests end with CANCELLED

  // Queues a request. Bad token ids are refused here (InvalidArgument); other
  // refusals (too long, duplicate id, can never fit) arrive as an error event.
  absl::Status Submit(const std::string& id, std::vector<int32_t> prompt,
                      const GenerationParams& params, TokenCallback callback) override;
  // Ends a request wherever it is; its callback gets CANCELLED. Unknown ids are ignored.
  void Cancel(const std::string& id) override;

  // Blocking convenience: all generated tokens, or the request's error.
  absl::StatusOr<std::vector<int32_t>> Generate(std::vector<int32_t> prompt,
                                                const GenerationParams& params);

  EngineStats Stats() const override;
  const ModelConfig& config() const override { return model_.config(); }
  bool healthy() const override { return healthy_.load(); }

  // Disaggregation (engine_transfer.cc): needs EngineOptions::enable_transfer,
  // else UNIMPLEMENTED.
  absl::StatusOr<v1::KvTransferTarget> Reserve(const std::string& id, int64_t prompt_len,
                                               int64_t max_tokens, absl::Duration ttl) override;
  absl::Status SubmitPrefilled(const std::string& id, std::vector<int32_t> prompt,
                               int32_t first_token, const GenerationParams& params,
                               TokenCallback callback) override;
  absl::Status SubmitPrefill(const std::string& id, std::vector<int32_t> prompt,
                             const GenerationParams& params, const v1::KvTransferTarget& target,
                             absl::Time deadline, PrefillCallback callback) override;

 private:
  struct Pending {
    std::string id;
    std::vector<int32_t> prompt;
    GenerationParams params;
    TokenCallback callback;
    bool hold_kv = false;  // prefill pools: keep the KV after the first token
  };
  struct Live {
    std::vector<int32_t> tokens;  // prompt followed by generated tokens
    int64_t prompt_len = 0;
    GenerationParams params;
    TokenCallback callback;
  };

  absl::Status Enqueue(Pending pending);
  Engine(const ModelWeights& weights, Backend& backend, const EngineOptions& options,
         comm::CollectiveGroup* group, const CpLayout& layout, Scheduler scheduler, Tensor cache,
         const KvCacheView& view, std::unique_ptr<RankTransfers> transfers);
  void Start();

  // ---- Disaggregation (engine_transfer.cc; engine thread unless noted) ----
  struct Incoming {  // decode side: a reservation awaiting a prefill pool's KV
    std::string transfer_id;
    absl::Time deadline;
    bool reserved = false;   // every rank's agent expects it
    bool submitted = false;  // SubmitPrefilled arrived (tokens known)
    bool ready = false;      // KV complete on every rank; decoding
    bool releasing = false;
  };
  struct Outgoing {  // prefill side: prefill, then push to a decode pool
    v1::KvTransferTarget target;
    absl::Time deadline;
    PrefillCallback callback;
    int32_t first_token = -1;
    int64_t prompt_len = 0;
    absl::Time received, prefilled;
    bool pushing = false, push_started = false, cancelled = false;
  };
  struct QueuedOp {
    v1::TransferOp op;
    std::function<void(int32_t)> done;  // called with the pool-wide outcome code
  };
  // Runs `task` on the engine thread (any thread).
  void Post(std::function<void()> task);
  bool HasTransferWork() const;
  std::vector<std::function<void(int32_t)>> AttachTransferOps(v1::StepCommand* command);
  absl::Status RunTransfers(const v1::StepCommand& command,
                            std::vector<std::function<void(int32_t)>>& handlers);
  void RunIdleTransfers();
  // Transfer ops that no rank will run (their step or broadcast failed) end as
  // UNAVAILABLE, so the reservations, pushes and releases waiting on them never hang.
  void SettleUnrun(std::vector<std::function<void(int32_t)>>& handlers);
  void ReleaseIncoming(const std::string& id, absl::Status why);
  void QueueRelease(const std::string& id, const std::string& transfer_id, absl::Status why);
  void OnFinished(const FinishedRequest& f);
  void FinishOutgoing(const std::string& id, absl::Status status);
  v1::TransferOp BlocksOp(v1::TransferOp::Kind kind, const std::string& id,
                          const std::string& transfer_id) const;
  void Loop();
  // Drains the inbox into the scheduler; returns false when stopping.
  bool Admit();
  absl::Status RunStep(const StepPlan& plan, std::vector<std::string>* stopped);
  v1::StepCommand MakeCommand(const StepPlan& plan) const;
  // Sends a command to the followers (no-op for a single rank).
  absl::Status Broadcast(const v1::StepCommand& command);
  // A collective failed: the pool can no longer run steps.
  void Break(const absl::Status& status);
  void FailAll(const absl::Status& status);
  void PublishStats();

  const ModelWeights& weights_;
  Backend& backend_;
  EngineOptions options_;
  comm::CollectiveGroup* group_;  // null for a single rank
  CpLayout layout_;
  LlamaModel model_;
  Tensor cache_tensor_;
  StepRunner runner_;
  std::vector<int32_t> eos_;
  std::atomic<bool> healthy_{true};
  std::unique_ptr<RankTransfers> transfers_;  // with enable_transfer
  std::vector<v1::KvDestination> templates_;  // every rank's destination fields

  // Engine-thread state.
  Scheduler scheduler_;
  absl::flat_hash_map<std::string, Live> live_;
  int64_t steps_ = 0;
  absl::flat_hash_map<std::string, Incoming> incoming_;
  absl::flat_hash_map<std::string, Outgoing> outgoing_;
  std::vector<QueuedOp> queued_ops_;
  std::vector<std::function<void(int32_t)>> unrun_;  // of a failed RunStep; see SettleUnrun
  // Cancels of ids the engine did not know yet (a Cancel can overtake its Reserve):
  // a reservation for one of them is refused, so its KV is never stranded.
  absl::flat_hash_map<std::string, absl::Time> early_cancels_;
  int64_t transfer_counter_ = 0;
  absl::Time last_broadcast_;
  int64_t preemptions_ = 0;

  mutable absl::Mutex mu_;
  std::deque<Pending> inbox_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> cancels_ ABSL_GUARDED_BY(mu_);
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  EngineStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// Runs the steps the leader (rank 0 of `group`) broadcasts, on a rank > 0 of a
// pool, until the leader stops (OK) or a collective fails (its error). options
// must match the leader's.
absl::Status RunFollower(const ModelWeights& weights, Backend& backend,
                         const EngineOptions& options, comm::CollectiveGroup& group);

// The KV layout and scheduler configuration both sides derive from the options.
CpLayout EngineKvLayout(const EngineOptions& options, int world_size);

}  // namespace cpserve
