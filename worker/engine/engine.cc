#include "worker/engine/engine.h"

#include <algorithm>
#include <future>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace cpserve {

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const ModelWeights& weights,
                                                       Backend& backend,
                                                       const EngineOptions& options) {
  const ModelConfig& c = weights.config;
  SchedulerConfig sc;
  sc.layout = CpLayout{1, options.block_size, options.block_size};
  sc.num_blocks = {options.num_kv_blocks};
  sc.max_batch_tokens = options.max_batch_tokens;
  sc.max_running = options.max_running;
  sc.max_model_len = options.max_model_len > 0 ? options.max_model_len : c.max_position_embeddings;
  CPSERVE_ASSIGN_OR_RETURN(Scheduler scheduler, Scheduler::Create(sc));
  CPSERVE_ASSIGN_OR_RETURN(
      Tensor cache, backend.AllocKvCache(options.num_kv_blocks, c.num_hidden_layers,
                                         options.block_size, c.num_key_value_heads, c.head_dim));
  CPSERVE_ASSIGN_OR_RETURN(KvCacheView view, KvCacheView::FromTensor(cache));
  return std::unique_ptr<Engine>(
      new Engine(weights, backend, options, std::move(scheduler), std::move(cache), view));
}

Engine::Engine(const ModelWeights& weights, Backend& backend, const EngineOptions& options,
               Scheduler scheduler, Tensor cache, const KvCacheView& view)
    : weights_(weights),
      backend_(backend),
      options_(options),
      model_(weights, backend),
      cache_tensor_(std::move(cache)),
      cache_(view),
      attention_(backend, view),
      scheduler_(std::move(scheduler)) {
  for (int64_t id : weights.config.eos_token_ids) eos_.push_back(static_cast<int32_t>(id));
  {
    absl::MutexLock lock(&mu_);
    stats_.total_kv_blocks = options.num_kv_blocks;
    stats_.free_kv_blocks = options.num_kv_blocks;
  }
  thread_ = std::thread([this] { Loop(); });
}

Engine::~Engine() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

absl::Status Engine::Submit(const std::string& id, std::vector<int32_t> prompt,
                            const GenerationParams& params, TokenCallback callback) {
  const int64_t vocab = weights_.config.vocab_size;
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("request ", id, ": token ", i, " is ",
                                                     prompt[i], ", outside [0, ", vocab, ")"));
    }
  }
  if (params.sampling.temperature < 0 || params.sampling.top_k < 0 ||
      !(params.sampling.top_p > 0 && params.sampling.top_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", id, ": need temperature >= 0, top_k >= 0 and top_p in (0, 1]"));
  }
  absl::MutexLock lock(&mu_);
  if (stop_) return absl::UnavailableError("engine is stopping");
  inbox_.push_back(Pending{id, std::move(prompt), params, std::move(callback)});
  return absl::OkStatus();
}

void Engine::Cancel(const std::string& id) {
  absl::MutexLock lock(&mu_);
  cancels_.push_back(id);
}

absl::StatusOr<std::vector<int32_t>> Engine::Generate(std::vector<int32_t> prompt,
                                                      const GenerationParams& params) {
  static std::atomic<int64_t> counter{0};
  const std::string id = absl::StrCat("generate-", counter++);
  auto tokens = std::make_shared<std::vector<int32_t>>();
  std::promise<absl::Status> done;
  std::future<absl::Status> result = done.get_future();
  CPSERVE_RETURN_IF_ERROR(
      Submit(id, std::move(prompt), params, [tokens, &done](const TokenEvent& e) {
        if (e.token >= 0) tokens->push_back(e.token);
        if (!e.status.ok())
          done.set_value(e.status);
        else if (e.finished)
          done.set_value(absl::OkStatus());
      }));
  CPSERVE_RETURN_IF_ERROR(result.get());
  return *tokens;
}

absl::StatusOr<v1::KvTransferTarget> Engine::Reserve(const std::string&, int64_t, int64_t,
                                                     absl::Duration) {
  return absl::UnimplementedError("the in-process engine has no KV transfer; use a pool engine");
}

absl::Status Engine::SubmitPrefilled(const std::string&, std::vector<int32_t>, int32_t,
                                     const GenerationParams&, TokenCallback) {
  return absl::UnimplementedError("the in-process engine has no KV transfer; use a pool engine");
}

absl::Status Engine::SubmitPrefill(const std::string&, std::vector<int32_t>,
                                   const GenerationParams&, const v1::KvTransferTarget&, absl::Time,
                                   PrefillCallback) {
  return absl::UnimplementedError("the in-process engine has no KV transfer; use a pool engine");
}

EngineStats Engine::Stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

bool Engine::Admit() {
  std::deque<Pending> inbox;
  std::vector<std::string> cancels;
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return false;
    // Sleep until there is something to do.
    if (inbox_.empty() && cancels_.empty() && !scheduler_.HasWork()) {
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stop_ || !inbox_.empty() || !cancels_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return false;
    }
    inbox.swap(inbox_);
    cancels.swap(cancels_);
  }
  for (Pending& p : inbox) {
    RequestSpec spec;
    spec.id = p.id;
    spec.prompt_len = static_cast<int64_t>(p.prompt.size());
    spec.max_tokens = p.params.max_tokens;
    absl::Status added = live_.contains(p.id)
                             ? absl::AlreadyExistsError(absl::StrCat("request ", p.id, " exists"))
                             : scheduler_.Add(spec);
    if (!added.ok()) {
      p.callback(TokenEvent{-1, true, FinishReason::kNone, added});
      continue;
    }
    Live live;
    live.prompt_len = spec.prompt_len;
    live.tokens = std::move(p.prompt);
    live.params = p.params;
    live.callback = std::move(p.callback);
    live_.emplace(p.id, std::move(live));
  }
  for (const std::string& id : cancels) {
    auto it = live_.find(id);
    if (it == live_.end()) continue;
    (void)scheduler_.Cancel(id);
    TokenCallback callback = std::move(it->second.callback);
    live_.erase(it);
    PublishStats();
    callback(TokenEvent{-1, true, FinishReason::kNone,
                        absl::CancelledError(absl::StrCat("request ", id, " cancelled"))});
  }
  return true;
}

void Engine::Loop() {
  while (Admit()) {
    if (!scheduler_.HasWork()) continue;
    absl::StatusOr<StepPlan> plan = scheduler_.Schedule();
    if (!plan.ok()) {
      FailAll(plan.status());
      continue;
    }
    if (plan->empty()) {
      // Waiting requests cannot be admitted yet; look again after a short pause.
      absl::MutexLock lock(&mu_);
      auto woken = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stop_ || !inbox_.empty() || !cancels_.empty();
      };
      mu_.AwaitWithTimeout(absl::Condition(&woken), absl::Milliseconds(5));
      continue;
    }
    preemptions_ += static_cast<int64_t>(plan->preempted.size());
    std::vector<std::string> stopped;
    const absl::Status ran = RunStep(*plan, &stopped);
    if (!ran.ok()) {
      // The step's requests cannot continue: end them with the error.
      for (const ScheduledWork& w : plan->work) {
        auto it = live_.find(w.id);
        if (it == live_.end()) continue;
        (void)scheduler_.Cancel(w.id);
        it->second.callback(TokenEvent{-1, true, FinishReason::kNone, ran});
        live_.erase(it);
      }
    }
    absl::StatusOr<std::vector<FinishedRequest>> finished =
        scheduler_.Update(*plan, ran.ok() ? stopped : std::vector<std::string>());
    ++steps_;
    PublishStats();  // before the final events, so woken clients see their blocks freed
    if (!finished.ok()) {
      FailAll(finished.status());
      continue;
    }
    for (const FinishedRequest& f : *finished) {
      auto it = live_.find(f.id);
      if (it == live_.end()) continue;
      TokenCallback callback = std::move(it->second.callback);
      live_.erase(it);
      callback(TokenEvent{-1, true, f.reason, absl::OkStatus()});
    }
  }
  FailAll(absl::CancelledError("engine stopped"));
  std::deque<Pending> never_admitted;
  {
    absl::MutexLock lock(&mu_);
    never_admitted.swap(inbox_);
  }
  for (Pending& p : never_admitted) {
    p.callback(TokenEvent{-1, true, FinishReason::kNone, absl::CancelledError("engine stopped")});
  }
}

void Engine::PublishStats() {
  absl::MutexLock lock(&mu_);
  stats_.steps = steps_;
  stats_.preemptions = preemptions_;
  stats_.waiting = scheduler_.num_waiting();
  stats_.running = scheduler_.num_running();
  stats_.free_kv_blocks = scheduler_.block_manager(0).num_free();
}

void Engine::FailAll(const absl::Status& status) {
  absl::flat_hash_map<std::string, Live> failed;
  failed.swap(live_);
  for (auto& [id, live] : failed) (void)scheduler_.Cancel(id);
  PublishStats();
  for (auto& [id, live] : failed) live.callback(TokenEvent{-1, true, FinishReason::kNone, status});
}

absl::Status Engine::RunStep(const StepPlan& plan, std::vector<std::string>* stopped) {
  const BlockManager& blocks = scheduler_.block_manager(0);
  ForwardInput in;
  std::vector<StepSegment> segments;
  std::vector<int64_t> slots;
  std::vector<const ScheduledWork*> sampled;
  for (const ScheduledWork& w : plan.work) {
    const Live& r = live_.at(w.id);
    const BlockTable* table = blocks.Find(w.id);
    if (table == nullptr) return absl::InternalError(absl::StrCat("no KV blocks for ", w.id));
    StepSegment s;
    s.row_start = static_cast<int64_t>(in.tokens.size());
    s.num_tokens = w.num_tokens();
    s.context_len = w.start;
    s.block_table.assign(table->blocks().begin(), table->blocks().end());
    for (int64_t p = w.start; p < w.end; ++p) {
      in.tokens.push_back(r.tokens[p]);
      in.positions.push_back(p);
    }
    CPSERVE_RETURN_IF_ERROR(table->AppendSlotMapping(w.start, w.end, &slots));
    if (w.samples) {
      in.logit_rows.push_back(s.row_start + s.num_tokens - 1);
      sampled.push_back(&w);
    }
    segments.push_back(std::move(s));
  }
  CPSERVE_RETURN_IF_ERROR(attention_.SetStep(std::move(segments), slots));
  CPSERVE_ASSIGN_OR_RETURN(Tensor logits, model_.Forward(in, attention_));
  if (sampled.empty()) return absl::OkStatus();

  const int64_t n = static_cast<int64_t>(sampled.size());
  std::vector<SamplingParams> params;
  for (const ScheduledWork* w : sampled) {
    const Live& r = live_.at(w->id);
    SamplingParams p = r.params.sampling;
    p.step = static_cast<uint64_t>(static_cast<int64_t>(r.tokens.size()) - r.prompt_len);
    params.push_back(p);
  }
  CPSERVE_ASSIGN_OR_RETURN(Tensor ids, backend_.Alloc({n}, DType::kI32));
  CPSERVE_RETURN_IF_ERROR(backend_.Sample(logits, params, ids));
  std::vector<int32_t> host(n);
  CPSERVE_RETURN_IF_ERROR(backend_.CopyToHost(ids, Tensor::Borrow(host.data(), {n}, DType::kI32)));
  for (int64_t i = 0; i < n; ++i) {
    Live& r = live_.at(sampled[i]->id);
    const int32_t token = host[i];
    r.tokens.push_back(token);
    const auto& stops = r.params.stop_token_ids;
    if (std::find(stops.begin(), stops.end(), token) != stops.end() ||
        (!r.params.ignore_eos && std::find(eos_.begin(), eos_.end(), token) != eos_.end())) {
      stopped->push_back(sampled[i]->id);
    }
    r.callback(TokenEvent{token, false, FinishReason::kNone, absl::OkStatus()});
  }
  return absl::OkStatus();
}

}  // namespace cpserve
