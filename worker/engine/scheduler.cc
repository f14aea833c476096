#include "worker/engine/scheduler.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace cpserve {

absl::Status SchedulerConfig::Validate() const {
  if (absl::Status s = layout.Validate(); !s.ok()) return s;
  if (static_cast<int64_t>(num_blocks.size()) != layout.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("num_blocks lists ", num_blocks.size(),
                                                   " ranks, the group has ", layout.world_size));
  }
  for (int32_t n : num_blocks) {
    if (n < 0) return absl::InvalidArgumentError(absl::StrCat("negative block count ", n));
  }
  if (max_running < 1 || max_running > max_batch_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_running ", max_running, " must be in [1, max_batch_tokens = ", max_batch_tokens, "]"));
  }
  if (max_model_len < 2) {
    return absl::InvalidArgumentError(absl::StrCat("max_model_len ", max_model_len, " < 2"));
  }
  if (watermark_blocks < 0) {
    return absl::InvalidArgumentError(absl::StrCat("negative watermark ", watermark_blocks));
  }
  return absl::OkStatus();
}

absl::StatusOr<Scheduler> Scheduler::Create(const SchedulerConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  Scheduler scheduler(config);
  for (int r = 0; r < config.layout.world_size; ++r) {
    absl::StatusOr<BlockManager> manager =
        BlockManager::Create(config.layout, r, config.num_blocks[r]);
    if (!manager.ok()) return manager.status();
    scheduler.managers_.push_back(*std::move(manager));
  }
  return scheduler;
}

absl::Status Scheduler::CheckSpec(const RequestSpec& spec) const {
  if (spec.id.empty()) return absl::InvalidArgumentError("empty request id");
  if (spec.prompt_len < 1 || spec.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("request ", spec.id, ": prompt_len ",
                                                   spec.prompt_len, " and max_tokens ",
                                                   spec.max_tokens, " must be >= 1"));
  }
  if (spec.prompt_len + spec.max_tokens > config_.max_model_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request ", spec.id, ": prompt_len ", spec.prompt_len, " + max_tokens ", spec.max_tokens,
        " exceeds the maximum context of ", config_.max_model_len, " tokens"));
  }
  // The last generated token is never fed back, so its KV is never stored.
  const int64_t kv_len = spec.prompt_len + spec.max_tokens - 1;
  const int64_t first_chunk = std::min(kv_len, config_.max_batch_tokens);
  for (const BlockManager& m : managers_) {
    if (m.BlocksForLength(kv_len) > m.num_blocks() ||
        m.BlocksForLength(first_chunk) + config_.watermark_blocks > m.num_blocks()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "request ", spec.id, ": ", kv_len, " tokens of KV need ", m.BlocksForLength(kv_len),
          " blocks on rank ", m.rank(), ", which has ", m.num_blocks(), " (watermark ",
          config_.watermark_blocks, "); it can never run"));
    }
  }
  if (requests_.contains(spec.id)) {
    return absl::AlreadyExistsError(absl::StrCat("request ", spec.id, " already exists"));
  }
  return absl::OkStatus();
}

absl::Status Scheduler::Add(const RequestSpec& spec) {
  if (absl::Status s = CheckSpec(spec); !s.ok()) return s;
  Request r;
  r.info.spec = spec;
  requests_.emplace(spec.id, std::move(r));
  waiting_.push_back(spec.id);
  return absl::OkStatus();
}

absl::Status Scheduler::AddPrefilled(const RequestSpec& spec) {
  if (absl::Status s = CheckSpec(spec); !s.ok()) return s;
  if (spec.max_tokens < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request ", spec.id, ": a prefilled request already has its first token; max_tokens ",
        spec.max_tokens, " leaves nothing to decode"));
  }
  if (num_running() + num_awaiting_kv_ >= config_.max_running) {
    return absl::ResourceExhaustedError(
        absl::StrCat("request ", spec.id, ": all ", config_.max_running, " request slots busy"));
  }
  if (!CanGrowAll(spec.id, spec.prompt_len, config_.watermark_blocks)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request ", spec.id, ": not enough free KV blocks for ", spec.prompt_len, " tokens now"));
  }
  GrowAll(spec.id, spec.prompt_len);
  Request r;
  r.info.spec = spec;
  r.info.phase = RequestPhase::kAwaitingKv;
  r.info.num_generated = 1;
  r.info.num_computed = spec.prompt_len;
  r.prefill_end = spec.prompt_len;
  requests_.emplace(spec.id, std::move(r));
  ++num_awaiting_kv_;
  return absl::OkStatus();
}

absl::Status Scheduler::MarkKvReady(const std::string& id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return absl::NotFoundError(absl::StrCat("no request ", id));
  if (it->second.info.phase != RequestPhase::kAwaitingKv) {
    return absl::FailedPreconditionError(absl::StrCat("request ", id, " is not awaiting KV"));
  }
  it->second.info.phase = RequestPhase::kRunning;
  --num_awaiting_kv_;
  running_.push_back(id);
  return absl::OkStatus();
}

bool Scheduler::CanGrowAll(const std::string& id, int64_t len, int64_t reserve) const {
  return std::all_of(managers_.begin(), managers_.end(),
                     [&](const BlockManager& m) { return m.CanGrow(id, len, reserve); });
}

void Scheduler::GrowAll(const std::string& id, int64_t len) {
  for (BlockManager& m : managers_) {
    const absl::Status s = m.Grow(id, len);  // checked by the caller: cannot fail
    CHECK(s.ok()) << s;
  }
}

void Scheduler::FreeAll(const std::string& id) {
  for (BlockManager& m : managers_) {
    if (!m.Contains(id)) continue;
    const absl::Status s = m.Free(id);
    CHECK(s.ok()) << s;
  }
}

int64_t Scheduler::FittingLength(const std::string& id) const {
  int64_t len = std::numeric_limits<int64_t>::max();
  for (const BlockManager& m : managers_) {
    const BlockTable* t = m.Find(id);
    const int64_t held = t == nullptr ? 0 : static_cast<int64_t>(t->blocks().size());
    len = std::min(len, m.MaxLengthForBlocks(held + m.num_free()));
  }
  return len;
}

void Scheduler::RemoveFromRunning(const std::string& id) {
  auto it = std::find(running_.begin(), running_.end(), id);
  CHECK(it != running_.end()) << id;
  running_.erase(it);
}

void Scheduler::Preempt(const std::string& id, StepPlan* plan) {
  Request& r = requests_.at(id);
  FreeAll(id);
  RemoveFromRunning(id);
  r.info.phase = RequestPhase::kWaiting;
  r.info.num_computed = 0;
  ++r.info.num_preemptions;
  waiting_.push_front(id);
  plan->preempted.push_back(id);
}

void Scheduler::Plan(Request& r, WorkKind kind, int64_t end, StepPlan* plan) {
  GrowAll(r.info.spec.id, end);
  ScheduledWork w;
  w.id = r.info.spec.id;
  w.kind = kind;
  w.start = r.info.num_computed;
  w.end = end;
  w.samples = end == SequenceLength(r);
  plan->num_tokens += w.num_tokens();
  plan->work.push_back(std::move(w));
  r.planned_step = plan->step;
}

absl::StatusOr<StepPlan> Scheduler::Schedule() {
  if (pending_) {
    return absl::FailedPreconditionError(
        absl::StrCat("step ", pending_plan_.step, " is planned but not yet updated"));
  }
  StepPlan plan;
  plan.step = next_step_++;
  int64_t budget = config_.max_batch_tokens;
  bool stalled = false;  // something preempted or short of blocks: admit nothing new

  // 1. Decodes, oldest first. Requests after index i are not planned yet, so the tail is the
  // youngest unplanned request: the preemption victim (possibly the decoding one itself).
  for (size_t i = 0; i < running_.size(); ++i) {
    Request& r = requests_.at(running_[i]);
    if (r.info.num_computed < r.prefill_end) continue;
    const int64_t end = r.info.num_computed + 1;
    bool self_preempted = false;
    while (!CanGrowAll(r.info.spec.id, end, 0)) {
      stalled = true;
      const std::string victim = running_.back();
      self_preempted = victim == r.info.spec.id;
      Preempt(victim, &plan);
      if (self_preempted) break;
    }
    if (self_preempted) break;  // it was the tail: nothing left after it
    CHECK_GT(budget, 0) << "max_running <= max_batch_tokens guarantees every decode fits";
    Plan(r, WorkKind::kDecode, end, &plan);
    budget -= 1;
  }

  // 2. Next chunks of running prefills, oldest first.
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Request& r = requests_.at(running_[i]);
    if (r.info.num_computed >= r.prefill_end) continue;
    const std::string& id = r.info.spec.id;
    int64_t fit = FittingLength(id);
    while (fit <= r.info.num_computed) {
      // Youngest unplanned request after this one, if any.
      size_t j = running_.size();
      while (j > i + 1 && requests_.at(running_[j - 1]).planned_step == plan.step) --j;
      if (j == i + 1) break;
      Preempt(running_[j - 1], &plan);
      fit = FittingLength(id);
    }
    const int64_t end = std::min({r.prefill_end, r.info.num_computed + budget, fit});
    if (end < std::min(r.prefill_end, r.info.num_computed + budget)) stalled = true;
    if (end <= r.info.num_computed) continue;  // waits for blocks, keeping its own
    budget -= end - r.info.num_computed;
    Plan(r, WorkKind::kPrefill, end, &plan);
  }
  if (!plan.preempted.empty()) stalled = true;

  // 3. Admissions, FIFO, all-or-nothing per request (no overtaking the queue head).
  while (!stalled && budget > 0 && !waiting_.empty() &&
         num_running() + num_awaiting_kv_ < config_.max_running) {
    Request& r = requests_.at(waiting_.front());
    r.prefill_end = SequenceLength(r);  // recompute everything after a preemption
    const int64_t end = std::min(r.prefill_end, budget);
    if (!CanGrowAll(r.info.spec.id, end, config_.watermark_blocks)) break;
    waiting_.pop_front();
    r.info.phase = RequestPhase::kRunning;
    r.info.num_computed = 0;
    running_.push_back(r.info.spec.id);
    budget -= end;
    Plan(r, WorkKind::kPrefill, end, &plan);
  }

  pending_ = !plan.empty();
  if (pending_) pending_plan_ = plan;
  return plan;
}

absl::StatusOr<std::vector<FinishedRequest>> Scheduler::Update(
    const StepPlan& plan, absl::Span<const std::string> stopped) {
  if (!pending_ || plan.step != pending_plan_.step) {
    if (!pending_ && plan.empty()) return std::vector<FinishedRequest>{};
    return absl::FailedPreconditionError(absl::StrCat("step ", plan.step, " is not pending"));
  }
  for (const std::string& id : stopped) {
    const auto& work = pending_plan_.work;
    if (std::none_of(work.begin(), work.end(),
                     [&](const ScheduledWork& w) { return w.id == id && w.samples; })) {
      return absl::InvalidArgumentError(
          absl::StrCat("request ", id, " did not sample a token in step ", plan.step));
    }
  }
  pending_ = false;
  std::vector<FinishedRequest> finished;
  for (const ScheduledWork& w : pending_plan_.work) {
    auto it = requests_.find(w.id);
    if (it == requests_.end()) continue;  // cancelled meanwhile
    Request& r = it->second;
    if (r.info.phase != RequestPhase::kRunning || r.info.num_computed != w.start) continue;
    r.info.num_computed = w.end;
    if (!w.samples) continue;
    ++r.info.num_generated;
    const bool stop = std::find(stopped.begin(), stopped.end(), w.id) != stopped.end();
    if (!stop && r.info.num_generated < r.info.spec.max_tokens) continue;
    r.info.finish_reason = stop ? FinishReason::kStop : FinishReason::kLength;
    finished.push_back(
        {w.id, r.info.finish_reason, r.info.num_generated, r.info.spec.hold_kv_on_finish});
    RemoveFromRunning(w.id);
    if (r.info.spec.hold_kv_on_finish) {
      r.info.phase = RequestPhase::kFinished;
    } else {
      FreeAll(w.id);
      requests_.erase(it);
    }
  }
  return finished;
}

absl::Status Scheduler::Remove(const std::string& id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return absl::NotFoundError(absl::StrCat("no request ", id));
  switch (it->second.info.phase) {
    case RequestPhase::kWaiting:
      waiting_.erase(std::find(waiting_.begin(), waiting_.end(), id));
      break;
    case RequestPhase::kAwaitingKv:
      --num_awaiting_kv_;
      break;
    case RequestPhase::kRunning:
      RemoveFromRunning(id);
      break;
    case RequestPhase::kFinished:
      break;
  }
  FreeAll(id);
  requests_.erase(it);
  return absl::OkStatus();
}

absl::Status Scheduler::Finish(const std::string& id) { return Remove(id); }
absl::Status Scheduler::Cancel(const std::string& id) { return Remove(id); }

absl::StatusOr<RequestInfo> Scheduler::GetRequest(const std::string& id) const {
  auto it = requests_.find(id);
  if (it == requests_.end()) return absl::NotFoundError(absl::StrCat("no request ", id));
  return it->second.info;
}

int64_t Scheduler::MinFreeBlocks() const {
  int64_t m = std::numeric_limits<int64_t>::max();
  for (const BlockManager& b : managers_) m = std::min<int64_t>(m, b.num_free());
  return m;
}

}  // namespace cpserve
