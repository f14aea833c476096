// The engine's side of disaggregated serving (DESIGN §5): decode-side reservations
// that a prefill pool writes into, and prefill-side pushes after the first token.
// Every rank's transfer agent acts on TransferOps carried by the step commands; the
// engine thread owns the state below and reacts to the pool-wide outcome codes.
#include <glog/logging.h>

#include <future>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/status_macros.h"
#include "worker/engine/engine.h"

namespace cpserve {
namespace {

int64_t UnixMicros(absl::Time t) { return t == absl::InfiniteFuture() ? 0 : absl::ToUnixMicros(t); }

absl::Status NoTransfer() {
  return absl::UnimplementedError(
      "this pool was started without KV transfer (EngineOptions::enable_transfer)");
}

}  // namespace

void Engine::Post(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  tasks_.push_back(std::move(task));
}

v1::TransferOp Engine::BlocksOp(v1::TransferOp::Kind kind, const std::string& id,
                                const std::string& transfer_id) const {
  v1::TransferOp op;
  op.set_kind(kind);
  op.set_transfer_id(transfer_id);
  for (int r = 0; r < layout_.world_size; ++r) {
    v1::RankBlocks* b = op.add_blocks();
    if (const BlockTable* t = scheduler_.block_manager(r).Find(id); t != nullptr) {
      b->mutable_ids()->Add(t->blocks().begin(), t->blocks().end());
    }
  }
  return op;
}

absl::StatusOr<v1::KvTransferTarget> Engine::Reserve(const std::string& id, int64_t prompt_len,
                                                     int64_t max_tokens, absl::Duration ttl) {
  if (transfers_ == nullptr) return NoTransfer();
  if (!healthy_.load()) return absl::UnavailableError("the pool is unhealthy");
  auto promise = std::make_shared<std::promise<absl::StatusOr<v1::KvTransferTarget>>>();
  std::future<absl::StatusOr<v1::KvTransferTarget>> result = promise->get_future();
  Post([this, id, prompt_len, max_tokens, ttl, promise] {
    if (early_cancels_.erase(id) > 0) {
      promise->set_value(absl::CancelledError(absl::StrCat("request ", id, " was cancelled")));
      return;
    }
    RequestSpec spec{id, prompt_len, max_tokens, false};
    if (absl::Status s = scheduler_.AddPrefilled(spec); !s.ok()) {
      promise->set_value(s);
      return;
    }
    const std::string transfer_id = absl::StrCat(id, "#", ++transfer_counter_);
    const absl::Time deadline = absl::Now() + ttl;
    incoming_[id] = Incoming{transfer_id, deadline};
    v1::TransferOp op = BlocksOp(v1::TransferOp::KIND_RESERVE, id, transfer_id);
    op.set_deadline_unix_us(UnixMicros(deadline));
    queued_ops_.push_back({op, [this, id, op, promise](int32_t code) {
                             if (code != kTransferDone) {
                               (void)scheduler_.Cancel(id);  // no rank expects it
                               incoming_.erase(id);
                               PublishStats();
                               promise->set_value(TransferOutcome(code, "KV reservation"));
                               return;
                             }
                             incoming_[id].reserved = true;
                             PublishStats();
                             const ModelConfig& c = weights_.config;
                             v1::KvTransferTarget target;
                             target.set_transfer_id(op.transfer_id());
                             v1::KvLayout* l = target.mutable_layout();
                             l->set_world_size(layout_.world_size);
                             l->set_interleave(layout_.interleave);
                             l->set_block_size(layout_.block_size);
                             l->set_num_layers(static_cast<int32_t>(c.num_hidden_layers));
                             l->set_num_kv_heads(static_cast<int32_t>(c.num_key_value_heads));
                             l->set_head_dim(static_cast<int32_t>(c.head_dim));
                             l->set_dtype(DTypeName(backend_.ComputeDType()));
                             for (int r = 0; r < layout_.world_size; ++r) {
                               v1::KvDestination* d = target.add_destinations();
                               *d = templates_[r];
                               *d->mutable_block_ids() = op.blocks(r).ids();
                             }
                             promise->set_value(target);
                           }});
  });
  if (result.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    return absl::DeadlineExceededError("the engine did not answer the reservation in 60 s");
  }
  return result.get();
}

absl::Status Engine::SubmitPrefilled(const std::string& id, std::vector<int32_t> prompt,
                                     int32_t first_token, const GenerationParams& params,
                                     TokenCallback callback) {
  if (transfers_ == nullptr) return NoTransfer();
  const int64_t vocab = weights_.config.vocab_size;
  if (first_token < 0 || first_token >= vocab) {
    return absl::InvalidArgumentError(absl::StrCat("first token ", first_token, " outside vocab"));
  }
  if (!healthy_.load()) return absl::UnavailableError("the pool is unhealthy");
  Post([this, id, prompt = std::move(prompt), first_token, params,
        callback = std::move(callback)]() mutable {
    auto in = incoming_.find(id);
    absl::StatusOr<RequestInfo> info = scheduler_.GetRequest(id);
    absl::Status bad;
    if (!healthy_.load()) {
      // Break() dropped every reservation: the KV is lost with the pool.
      bad = absl::UnavailableError(absl::StrCat("the pool broke; request ", id, " lost its KV"));
    } else if (in == incoming_.end() || !in->second.reserved || in->second.submitted ||
               !info.ok()) {
      bad = absl::NotFoundError(absl::StrCat("no KV reservation for request ", id));
    } else if (info->spec.prompt_len != static_cast<int64_t>(prompt.size())) {
      bad = absl::InvalidArgumentError(absl::StrCat("request ", id, ": reserved for ",
                                                    info->spec.prompt_len, " prompt tokens, got ",
                                                    prompt.size()));
    }
    if (!bad.ok()) {
      callback(EndEvent(bad));
      return;
    }
    Live live;
    live.prompt_len = static_cast<int64_t>(prompt.size());
    live.tokens = std::move(prompt);
    live.tokens.push_back(first_token);  // sampled by the prefill pool, not streamed again
    live.params = params;
    live.callback = std::move(callback);
    live_.emplace(id, std::move(live));
    in->second.submitted = true;
  });
  return absl::OkStatus();
}

absl::Status Engine::SubmitPrefill(const std::string& id, std::vector<int32_t> prompt,
                                   const GenerationParams& params,
                                   const v1::KvTransferTarget& target, absl::Time deadline,
                                   PrefillCallback callback) {
  if (transfers_ == nullptr) return NoTransfer();
  GenerationParams first = params;
  first.max_tokens = 1;
  const absl::Time received = absl::Now();
  // The prompt goes through the normal path (validation, PCP prefill, sampling) with
  // its KV held after the first token; OnFinished then starts the push.
  Pending pending{id, std::move(prompt), first, nullptr, /*hold_kv=*/true};
  pending.callback = [this, id, target, deadline, received, callback](const TokenEvent& e) {
    auto it = outgoing_.find(id);
    if (it == outgoing_.end()) {
      Outgoing o;
      o.target = target;
      o.deadline = deadline;
      o.callback = callback;
      o.received = received;
      it = outgoing_.emplace(id, std::move(o)).first;
    }
    if (e.token >= 0) it->second.first_token = e.token;
    if (!e.status.ok()) FinishOutgoing(id, e.status);
  };
  return Enqueue(std::move(pending));
}

void Engine::OnFinished(const FinishedRequest& f) {
  if (auto in = incoming_.find(f.id); in != incoming_.end()) {
    ReleaseIncoming(f.id, absl::OkStatus());  // complete: just forget it on every rank
    return;
  }
  auto out = outgoing_.find(f.id);
  if (out == outgoing_.end() || !f.kv_held) return;
  Outgoing& o = out->second;
  o.prefilled = absl::Now();
  if (o.cancelled) {
    FinishOutgoing(f.id, absl::CancelledError(absl::StrCat("request ", f.id, " cancelled")));
    return;
  }
  o.pushing = true;
  o.prompt_len = scheduler_.GetRequest(f.id)->spec.prompt_len;
  v1::TransferOp op = BlocksOp(v1::TransferOp::KIND_PUSH, f.id, o.target.transfer_id());
  op.set_prompt_len(o.prompt_len);
  *op.mutable_target() = o.target;
  op.set_deadline_unix_us(UnixMicros(o.deadline));
  const std::string id = f.id;
  queued_ops_.push_back({op, [this, id](int32_t code) {
                           if (code >= kTransferFailedBase) {
                             FinishOutgoing(id, TransferOutcome(code, "KV push"));
                           } else if (auto it = outgoing_.find(id); it != outgoing_.end()) {
                             it->second.push_started = true;
                           }
                         }});
}

void Engine::FinishOutgoing(const std::string& id, absl::Status status) {
  auto it = outgoing_.find(id);
  if (it == outgoing_.end()) return;
  Outgoing o = std::move(it->second);
  outgoing_.erase(it);
  (void)scheduler_.Finish(id);  // frees the held blocks (NotFound if already gone)
  PublishStats();
  PrefillResult r;
  r.status = status;
  r.first_token = o.first_token;
  const absl::Time now = absl::Now();
  if (o.prefilled != absl::Time()) {
    r.prefill_us = absl::ToInt64Microseconds(o.prefilled - o.received);
    r.transfer_us = absl::ToInt64Microseconds(now - o.prefilled);
  }
  if (status.ok()) {
    // K and V of every prompt token in every layer.
    const ModelConfig& c = weights_.config;
    r.transfer_bytes = o.prompt_len * c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim *
                       static_cast<int64_t>(DTypeSize(backend_.ComputeDType()));
  }
  // The path this push took (rank_transfers.h): "cuda-ipc" or the UCX path.
  r.transport = transfers_ != nullptr ? transfers_->PushPath(o.target.transfer_id()) : "ucx";
  if (o.callback) o.callback(r);
}

void Engine::ReleaseIncoming(const std::string& id, absl::Status why) {
  auto it = incoming_.find(id);
  if (it == incoming_.end() || it->second.releasing) return;
  it->second.releasing = true;
  QueueRelease(id, it->second.transfer_id, std::move(why));
}

void Engine::QueueRelease(const std::string& id, const std::string& transfer_id, absl::Status why) {
  v1::TransferOp op;
  op.set_kind(v1::TransferOp::KIND_RELEASE);
  op.set_transfer_id(transfer_id);
  queued_ops_.push_back({op, [this, id, transfer_id, why](int32_t code) {
                           if (code == kTransferPending) {
                             // A sender may still write: keep the blocks, ask next step.
                             QueueRelease(id, transfer_id, why);
                             return;
                           }
                           if (code != kTransferDone) {
                             LOG(WARNING) << TransferOutcome(code, "KV release of " + id);
                           }
                           incoming_.erase(id);
                           if (why.ok()) return;
                           (void)scheduler_.Cancel(id);
                           PublishStats();
                           if (auto l = live_.find(id); l != live_.end()) {
                             TokenCallback cb = std::move(l->second.callback);
                             live_.erase(l);
                             cb(EndEvent(why));
                           }
                         }});
}

bool Engine::HasTransferWork() const {
  if (!queued_ops_.empty()) return true;
  for (const auto& [id, in] : incoming_) {
    if (!in.ready) return true;  // awaiting KV (poll) or its client (expiry)
  }
  for (const auto& [id, out] : outgoing_) {
    if (out.pushing) return true;
  }
  return false;
}

std::vector<std::function<void(int32_t)>> Engine::AttachTransferOps(v1::StepCommand* command) {
  std::vector<std::function<void(int32_t)>> handlers;
  std::vector<QueuedOp> ops;
  ops.swap(queued_ops_);
  const absl::Time now = absl::Now();
  for (auto& [id, in] : incoming_) {
    if (in.ready || in.releasing || !in.reserved) continue;
    if (!in.submitted) {
      if (now > in.deadline) {
        ReleaseIncoming(id, absl::DeadlineExceededError(
                                absl::StrCat("KV reservation of ", id, " expired unclaimed")));
      }
      continue;
    }
    v1::TransferOp poll;
    poll.set_kind(v1::TransferOp::KIND_POLL_RECEIVE);
    poll.set_transfer_id(in.transfer_id);
    const std::string rid = id;
    ops.push_back({poll, [this, rid](int32_t code) {
                     auto it = incoming_.find(rid);
                     if (it == incoming_.end() || code == kTransferPending) return;
                     if (code == kTransferDone) {
                       it->second.ready = true;
                       (void)scheduler_.MarkKvReady(rid);
                       return;
                     }
                     ReleaseIncoming(rid, TransferOutcome(code, "KV transfer"));
                   }});
  }
  // Releases queued while scanning (expiries) go out in this command too.
  for (QueuedOp& q : queued_ops_) ops.push_back(std::move(q));
  queued_ops_.clear();
  for (auto& [id, out] : outgoing_) {
    if (!out.push_started) continue;
    v1::TransferOp poll;
    poll.set_kind(v1::TransferOp::KIND_POLL_PUSH);
    poll.set_transfer_id(out.target.transfer_id());
    const std::string rid = id;
    ops.push_back({poll, [this, rid](int32_t code) {
                     if (code == kTransferPending) return;
                     FinishOutgoing(rid, TransferOutcome(code, "KV push"));
                   }});
  }
  for (QueuedOp& q : ops) {
    *command->add_transfers() = q.op;
    handlers.push_back(std::move(q.done));
  }
  return handlers;
}

absl::Status Engine::RunTransfers(const v1::StepCommand& command,
                                  std::vector<std::function<void(int32_t)>>& handlers) {
  if (command.transfers_size() == 0) return absl::OkStatus();
  if (transfers_ == nullptr) return NoTransfer();
  absl::StatusOr<std::vector<int32_t>> codes = transfers_->Run(command, 0, group_);
  if (!codes.ok()) {
    SettleUnrun(handlers);
    return codes.status();
  }
  for (size_t i = 0; i < codes->size(); ++i) {
    if (handlers[i]) handlers[i]((*codes)[i]);
  }
  return absl::OkStatus();
}

void Engine::SettleUnrun(std::vector<std::function<void(int32_t)>>& handlers) {
  std::vector<std::function<void(int32_t)>> unrun;
  unrun.swap(handlers);
  const int32_t code = kTransferFailedBase + static_cast<int32_t>(absl::StatusCode::kUnavailable);
  for (auto& handler : unrun) {
    if (handler) handler(code);
  }
}

void Engine::RunIdleTransfers() {
  v1::StepCommand command;
  command.set_kind(v1::StepCommand::KIND_IDLE);
  std::vector<std::function<void(int32_t)>> handlers = AttachTransferOps(&command);
  if (command.transfers_size() == 0 &&
      (group_ == nullptr || absl::Now() - last_broadcast_ < options_.idle_keepalive)) {
    return;
  }
  // A broken pool runs nothing: its ops fail at once (no broadcast on a dead group).
  absl::Status s =
      healthy_.load() ? Broadcast(command) : absl::UnavailableError("the pool is broken");
  if (s.ok()) s = RunTransfers(command, handlers);
  if (!s.ok()) {
    if (healthy_.load()) Break(s);
    SettleUnrun(handlers);
  }
}

}  // namespace cpserve
