#include "worker/engine/engine.h"

#include <algorithm>
#include <future>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace cpserve {

CpLayout EngineKvLayout(const EngineOptions& options, int world_size) {
  return CpLayout{world_size, options.interleave > 0 ? options.interleave : options.block_size,
                  options.block_size};
}

namespace {

struct RankState {
  CpLayout layout;
  Tensor cache;
  KvCacheView view;
  std::unique_ptr<RankTransfers> transfers;  // with enable_transfer
  std::vector<v1::KvDestination> templates;  // every rank's, with enable_transfer
};

absl::StatusOr<RankState> MakeRankState(const ModelWeights& weights, Backend& backend,
                                        const EngineOptions& options,
                                        comm::CollectiveGroup* group) {
  const int world_size = group != nullptr ? group->world_size() : 1;
  const int rank = group != nullptr ? group->rank() : 0;
  const ModelConfig& c = weights.config;
  RankState st;
  st.layout = EngineKvLayout(options, world_size);
  CPSERVE_RETURN_IF_ERROR(st.layout.Validate());
  CPSERVE_ASSIGN_OR_RETURN(
      st.cache, backend.AllocKvCache(options.num_kv_blocks, c.num_hidden_layers, options.block_size,
                                     c.num_key_value_heads, c.head_dim));
  CPSERVE_ASSIGN_OR_RETURN(st.view, KvCacheView::FromTensor(st.cache));
  if (options.enable_transfer) {
    CPSERVE_ASSIGN_OR_RETURN(st.transfers, RankTransfers::Create(st.view, st.layout, rank, &backend,
                                                                 options.kv_direct_copier));
    CPSERVE_ASSIGN_OR_RETURN(st.templates,
                             ExchangeDestinations(st.transfers->DestinationTemplate(), group));
  }
  return st;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const ModelWeights& weights,
                                                       Backend& backend,
                                                       const EngineOptions& options,
                                                       comm::CollectiveGroup* group) {
  if (group != nullptr && group->rank() != 0) {
    return absl::InvalidArgumentError("the engine runs on rank 0; other ranks use RunFollower");
  }
  const int world = group != nullptr ? group->world_size() : 1;
  CPSERVE_ASSIGN_OR_RETURN(RankState st, MakeRankState(weights, backend, options, group));
  SchedulerConfig sc;
  sc.layout = st.layout;
  sc.num_blocks.assign(world, options.num_kv_blocks);
  sc.max_batch_tokens = options.max_batch_tokens;
  sc.max_running = options.max_running;
  sc.max_model_len =
      options.max_model_len > 0 ? options.max_model_len : weights.config.max_position_embeddings;
  CPSERVE_ASSIGN_OR_RETURN(Scheduler scheduler, Scheduler::Create(sc));
  auto engine = std::unique_ptr<Engine>(new Engine(weights, backend, options, group, st.layout,
                                                   std::move(scheduler), std::move(st.cache),
                                                   st.view, std::move(st.transfers)));
  engine->templates_ = std::move(st.templates);
  if (world == 1 && options.cuda_graphs && options.decode_accelerator) {
    CPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<DecodeStepAccelerator> accelerator,
                             options.decode_accelerator(engine->model_, backend, st.view));
    engine->runner_.SetAccelerator(std::move(accelerator));
  }
  engine->Start();
  return engine;
}

Engine::Engine(const ModelWeights& weights, Backend& backend, const EngineOptions& options,
               comm::CollectiveGroup* group, const CpLayout& layout, Scheduler scheduler,
               Tensor cache, const KvCacheView& view, std::unique_ptr<RankTransfers> transfers)
    : weights_(weights),
      backend_(backend),
      options_(options),
      group_(group),
      layout_(layout),
      model_(weights, backend),
      cache_tensor_(std::move(cache)),
      runner_(model_, backend, group, view, layout, 0),
      transfers_(std::move(transfers)),
      scheduler_(std::move(scheduler)) {
  for (int64_t id : weights.config.eos_token_ids) eos_.push_back(static_cast<int32_t>(id));
  {
    absl::MutexLock lock(&mu_);
    stats_.total_kv_blocks = options.num_kv_blocks;
    stats_.free_kv_blocks = options.num_kv_blocks;
  }
}

void Engine::Start() {
  thread_ = std::thread([this] { Loop(); });
}

Engine::~Engine() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();  // not started when Create failed
  if (group_ != nullptr && healthy_.load()) {
    v1::StepCommand stop;
    stop.set_kind(v1::StepCommand::KIND_STOP);
    (void)SendStep(*group_, stop);
  }
}

absl::Status Engine::Submit(const std::string& id, std::vector<int32_t> prompt,
                            const GenerationParams& params, TokenCallback callback) {
  return Enqueue(Pending{id, std::move(prompt), params, std::move(callback)});
}

absl::Status Engine::Enqueue(Pending p) {
  const std::string& id = p.id;
  const GenerationParams& params = p.params;
  const std::vector<int32_t>& prompt = p.prompt;
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
  if (!healthy_.load()) {
    return absl::UnavailableError("the pool is unhealthy (a rank or collective failed)");
  }
  absl::MutexLock lock(&mu_);
  if (stop_) return absl::UnavailableError("engine is stopping");
  inbox_.push_back(std::move(p));
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

EngineStats Engine::Stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

bool Engine::Admit() {
  std::deque<Pending> inbox;
  std::vector<std::string> cancels;
  std::deque<std::function<void()>> tasks;
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return false;
    // Sleep until there is something to do.
    if (inbox_.empty() && cancels_.empty() && tasks_.empty() && !scheduler_.HasWork()) {
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stop_ || !inbox_.empty() || !cancels_.empty() || !tasks_.empty();
      };
      if (HasTransferWork()) {
        // Transfers in flight: look again soon (the loop polls them).
        mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(2));
      } else if (group_ == nullptr || !healthy_.load()) {
        mu_.Await(absl::Condition(&ready));
      } else if (!mu_.AwaitWithTimeout(absl::Condition(&ready), options_.idle_keepalive)) {
        // Idle: keep the followers' collective waits alive.
        mu_.Unlock();
        v1::StepCommand idle;
        idle.set_kind(v1::StepCommand::KIND_IDLE);
        const absl::Status sent = Broadcast(idle);
        mu_.Lock();
        if (!sent.ok()) {
          mu_.Unlock();
          Break(sent);
          mu_.Lock();
        }
      }
      if (stop_) return false;
    }
    inbox.swap(inbox_);
    cancels.swap(cancels_);
    tasks.swap(tasks_);
  }
  for (auto& task : tasks) task();
  for (Pending& p : inbox) {
    RequestSpec spec;
    spec.id = p.id;
    spec.prompt_len = static_cast<int64_t>(p.prompt.size());
    spec.max_tokens = p.params.max_tokens;
    spec.hold_kv_on_finish = p.hold_kv;
    absl::Status added = live_.contains(p.id)
                             ? absl::AlreadyExistsError(absl::StrCat("request ", p.id, " exists"))
                             : scheduler_.Add(spec);
    if (!added.ok()) {
      p.callback(EndEvent(added));
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
    if (incoming_.contains(id)) {
      // Its blocks may still be written by a prefill pool: release them first.
      ReleaseIncoming(id, absl::CancelledError(absl::StrCat("request ", id, " cancelled")));
      continue;
    }
    if (auto out = outgoing_.find(id); out != outgoing_.end()) {
      out->second.cancelled = true;  // reported when its push (if any) settles
    }
    auto it = live_.find(id);
    if (it == live_.end()) {
      if (!outgoing_.contains(id)) {
        if (early_cancels_.size() >= 1024) {
          absl::erase_if(early_cancels_, [now = absl::Now()](const auto& e) {
            return now - e.second > absl::Minutes(1);
          });
        }
        early_cancels_[id] = absl::Now();
      }
      continue;
    }
    (void)scheduler_.Cancel(id);
    TokenCallback callback = std::move(it->second.callback);
    live_.erase(it);
    PublishStats();
    callback(EndEvent(absl::CancelledError(absl::StrCat("request ", id, " cancelled"))));
  }
  return true;
}

void Engine::Loop() {
  while (Admit()) {
    if (!scheduler_.HasWork()) {
      if (HasTransferWork()) RunIdleTransfers();
      continue;
    }
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
    if (!ran.ok() && group_ != nullptr) {
      // The ranks may now disagree about the step: the group cannot continue.
      (void)scheduler_.Update(*plan, {});
      Break(ran);
      SettleUnrun(unrun_);
      continue;
    }
    if (!ran.ok()) {
      // The step's requests cannot continue: end them with the error.
      for (const ScheduledWork& w : plan->work) {
        auto it = live_.find(w.id);
        if (it == live_.end()) continue;
        (void)scheduler_.Cancel(w.id);
        it->second.callback(EndEvent(ran));
        live_.erase(it);
      }
    }
    absl::StatusOr<std::vector<FinishedRequest>> finished =
        scheduler_.Update(*plan, ran.ok() ? stopped : std::vector<std::string>());
    SettleUnrun(unrun_);
    ++steps_;
    PublishStats();  // before the final events, so woken clients see their blocks freed
    if (!finished.ok()) {
      FailAll(finished.status());
      continue;
    }
    for (const FinishedRequest& f : *finished) {
      OnFinished(f);
      auto it = live_.find(f.id);
      if (it == live_.end()) continue;
      TokenCallback callback = std::move(it->second.callback);
      live_.erase(it);
      callback(EndEvent(absl::OkStatus(), f.reason));
    }
  }
  FailAll(absl::CancelledError("engine stopped"));
  std::deque<Pending> never_admitted;
  {
    absl::MutexLock lock(&mu_);
    never_admitted.swap(inbox_);
  }
  for (Pending& p : never_admitted) {
    p.callback(EndEvent(absl::CancelledError("engine stopped")));
  }
}

void Engine::PublishStats() {
  absl::MutexLock lock(&mu_);
  stats_.steps = steps_;
  stats_.preemptions = preemptions_;
  stats_.waiting = scheduler_.num_waiting();
  stats_.running = scheduler_.num_running();
  stats_.free_kv_blocks = scheduler_.block_manager(0).num_free();
  stats_.accelerated_steps = runner_.accelerated_steps();
  if (runner_.accelerator() != nullptr) {
    stats_.graphs_captured = runner_.accelerator()->graphs_captured();
  }
}

void Engine::FailAll(const absl::Status& status) {
  absl::flat_hash_map<std::string, Live> failed;
  failed.swap(live_);
  for (auto& [id, live] : failed) (void)scheduler_.Cancel(id);
  PublishStats();
  for (auto& [id, live] : failed) live.callback(EndEvent(status));
}

v1::StepCommand Engine::MakeCommand(const StepPlan& plan) const {
  v1::StepCommand command;
  command.set_kind(v1::StepCommand::KIND_STEP);
  command.set_step(plan.step);
  for (const ScheduledWork& w : plan.work) {
    const Live& r = live_.at(w.id);
    v1::StepWork* sw = command.add_work();
    sw->set_id(w.id);
    sw->set_start(w.start);
    sw->set_end(w.end);
    sw->set_samples(w.samples);
    sw->set_partitioned(options_.partition_prefill && w.kind == WorkKind::kPrefill);
    sw->mutable_tokens()->Add(r.tokens.begin() + w.start, r.tokens.begin() + w.end);
    for (int rank = 0; rank < layout_.world_size; ++rank) {
      const BlockTable* table = scheduler_.block_manager(rank).Find(w.id);
      v1::RankBlocks* blocks = sw->add_blocks();
      if (table != nullptr)
        blocks->mutable_ids()->Add(table->blocks().begin(), table->blocks().end());
    }
    const SamplingParams& p = r.params.sampling;
    sw->set_temperature(p.temperature);
    sw->set_top_k(p.top_k);
    sw->set_top_p(p.top_p);
    sw->set_seed(p.seed);
    sw->set_sample_index(
        static_cast<uint64_t>(static_cast<int64_t>(r.tokens.size()) - r.prompt_len));
    sw->set_return_logits(r.params.return_logits);
  }
  return command;
}

absl::Status Engine::Broadcast(const v1::StepCommand& command) {
  if (group_ == nullptr) return absl::OkStatus();
  last_broadcast_ = absl::Now();
  return SendStep(*group_, command);
}

void Engine::Break(const absl::Status& status) {
  healthy_.store(false);
  const absl::Status broken =
      absl::UnavailableError(absl::StrCat("pool broken: ", status.message()));
  FailAll(broken);
  // No rank moves KV any more: end the pushes (their Prefill calls wait on them) and
  // forget the reservations (no KV will arrive; their Decode calls ended in FailAll).
  std::vector<std::string> pushes;
  for (const auto& [id, out] : outgoing_) pushes.push_back(id);
  for (const std::string& id : pushes) FinishOutgoing(id, broken);
  for (const auto& [id, in] : incoming_) (void)scheduler_.Cancel(id);
  incoming_.clear();
  PublishStats();
}

absl::Status Engine::RunStep(const StepPlan& plan, std::vector<std::string>* stopped) {
  v1::StepCommand command = MakeCommand(plan);
  std::vector<std::function<void(int32_t)>> handlers = AttachTransferOps(&command);
  // On an error below the handlers that did not run are settled by the Loop (SettleUnrun).
  unrun_ = handlers;
  CPSERVE_RETURN_IF_ERROR(Broadcast(command));
  CPSERVE_ASSIGN_OR_RETURN(StepOutput out, runner_.Run(command));
  size_t k = 0, logits_k = 0;
  for (int i = 0; i < command.work_size(); ++i) {
    const v1::StepWork& w = command.work(i);
    if (!w.samples()) continue;
    const int32_t token = out.tokens[k++];
    std::vector<float> logits;
    if (w.return_logits()) logits = std::move(out.logits[logits_k++]);
    auto live = live_.find(w.id());
    if (live == live_.end()) continue;  // defensive: ended while its step ran
    Live& r = live->second;
    r.tokens.push_back(token);
    const auto& stops = r.params.stop_token_ids;
    if (std::find(stops.begin(), stops.end(), token) != stops.end() ||
        (!r.params.ignore_eos && std::find(eos_.begin(), eos_.end(), token) != eos_.end())) {
      stopped->push_back(w.id());
    }
    TokenEvent event;
    event.token = token;
    event.logits = std::move(logits);
    r.callback(event);
  }
  // Transfer outcomes last: their handlers may end requests of this very step.
  unrun_.clear();
  return RunTransfers(command, handlers);
}

absl::Status RunFollower(const ModelWeights& weights, Backend& backend,
                         const EngineOptions& options, comm::CollectiveGroup& group) {
  CPSERVE_ASSIGN_OR_RETURN(RankState st, MakeRankState(weights, backend, options, &group));
  LlamaModel model(weights, backend);
  StepRunner runner(model, backend, &group, st.view, st.layout, group.rank());
  while (true) {
    CPSERVE_ASSIGN_OR_RETURN(v1::StepCommand command, ReceiveStep(group));
    if (command.kind() == v1::StepCommand::KIND_STOP) return absl::OkStatus();
    if (command.kind() == v1::StepCommand::KIND_STEP) {
      CPSERVE_RETURN_IF_ERROR(runner.Run(command).status());
    }
    if (command.transfers_size() > 0) {
      if (st.transfers == nullptr)
        return absl::InternalError("transfer op on a pool without KV transfer");
      CPSERVE_RETURN_IF_ERROR(st.transfers->Run(command, group.rank(), &group).status());
    }
  }
}

}  // namespace cpserve
