#include "services/router/router_service.h"

#include <glog/logging.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "services/common/grpc_status.h"
#include "services/router/generate_reactor.h"

namespace cpserve::router {
namespace {

grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message())));
  return reactor;
}

}  // namespace

RouterCore::RouterCore(RouterOptions options, tokenizer::Tokenizer tokenizer, ModelConfig config,
                       service::Metrics* metrics)
    : options_(std::move(options)),
      tokenizer_(std::move(tokenizer)),
      config_(std::move(config)),
      metrics_(metrics),
      registry_(options_.heartbeat_timeout, options_.forget_after),
      admission_(options_.max_queued_requests),
      client_streams_(options_.max_streams_per_client) {
  limits_.vocab_size = config_.vocab_size;
  limits_.max_prompt_tokens = options_.max_prompt_tokens;
  limits_.max_context_tokens = config_.max_position_embeddings;
  ttft_ = &metrics_->Histogram("cpserve_router_time_to_first_token_seconds",
                               "Time from receiving a Generate request to its first token.");
  itl_ = &metrics_->Histogram("cpserve_router_inter_token_latency_seconds",
                              "Time between consecutive output tokens of a stream.");
  queue_depth_ = &metrics_->Gauge("cpserve_router_queue_depth",
                                  "Generate requests admitted by the router and not yet done.");
  std::random_device rd;
  id_prefix_ = (static_cast<uint64_t>(rd()) << 16) ^ rd();
  expiry_thread_ = std::thread([this] { ExpiryLoop(); });
}

RouterCore::~RouterCore() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  expiry_thread_.join();
}

// Once per 250 ms: forget long-silent pools and refresh the pool-health gauges.
void RouterCore::ExpiryLoop() {
  std::unique_lock<std::mutex> stop_lock(stop_mu_);
  while (!stop_cv_.wait_for(stop_lock, std::chrono::milliseconds(250), [this] { return stop_; })) {
    std::vector<PoolState> pools;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const std::string& gone : registry_.Expire(absl::Now())) {
        LOG(INFO) << "pool " << gone << " forgotten (silent for " << options_.forget_after << ")";
      }
      pools = registry_.Snapshot(absl::Now());
    }
    for (const PoolState& p : pools) UpdatePoolGauges(p, p.healthy);
  }
}

void RouterCore::UpdatePoolGauges(const PoolState& p, bool healthy) {
  const service::Labels labels = {{"pool", p.reg.name}, {"role", PoolRoleName(p.reg.role)}};
  metrics_->Gauge("cpserve_router_pool_up", "1 while the pool is live.", labels)
      .Set(healthy ? 1 : 0);
  metrics_
      ->Gauge("cpserve_router_pool_free_kv_blocks",
              "Free KV blocks reported by the pool (rank with the fewest).", labels)
      .Set(static_cast<double>(p.load.free_kv_blocks));
  metrics_
      ->Gauge("cpserve_router_pool_total_kv_blocks", "KV blocks of the pool (per rank).", labels)
      .Set(static_cast<double>(p.load.total_kv_blocks));
  metrics_
      ->Gauge("cpserve_router_pool_queued_requests", "Queued requests reported by the pool.",
              labels)
      .Set(p.load.queued_requests);
  metrics_
      ->Gauge("cpserve_router_pool_running_requests", "Running requests reported by the pool.",
              labels)
      .Set(p.load.running_requests);
}

absl::StatusOr<std::string> RouterCore::Register(const PoolRegistration& reg) {
  absl::StatusOr<std::string> id;
  std::optional<PoolState> state;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = registry_.Register(reg, absl::Now());
    if (id.ok()) state = registry_.Find(reg.name);
  }
  if (id.ok()) {
    // A pool that restarted on the same address: the channel to it may be waiting out
    // a reconnect backoff (up to minutes) from its downtime and would fail every call
    // meanwhile with the old incarnation's error. The pool is back: connect now.
    std::shared_ptr<PoolClient> client;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = clients_.find(reg.address); it != clients_.end()) client = it->second;
    }
    if (client != nullptr) grpc::experimental::ChannelResetConnectionBackoff(client->channel.get());
    LOG(INFO) << "pool " << reg.name << " (" << PoolRoleName(reg.role) << ", " << reg.world_size
              << " ranks, epoch " << reg.epoch << ") registered at " << reg.address << " as "
              << *id;
    UpdatePoolGauges(*state, true);
  }
  return id;
}

bool RouterCore::Heartbeat(const std::string& registration_id, const PoolLoadReport& load) {
  std::optional<PoolState> state;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!registry_.Heartbeat(registration_id, load, absl::Now())) return false;
    auto name = registration_id.substr(0, registration_id.rfind('/'));
    state = registry_.Find(name);
  }
  if (state) UpdatePoolGauges(*state, true);
  return true;
}

std::vector<PoolState> RouterCore::Pools() {
  std::lock_guard<std::mutex> lock(mu_);
  return registry_.Snapshot(absl::Now());
}

std::optional<PoolState> RouterCore::FindPool(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  return registry_.Find(name);
}

void RouterCore::MarkDown(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  registry_.MarkDown(name);
}

void RouterCore::AddInflight(const std::string& name, int64_t delta) {
  std::lock_guard<std::mutex> lock(mu_);
  registry_.AddInflight(name, delta);
}

absl::StatusOr<RouteDecision> RouterCore::Route(int64_t prompt_tokens,
                                                const std::set<std::string>& excluded_prefill) {
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time now = absl::Now();
  return ChooseRoute(prompt_tokens, options_.long_prompt_tokens,
                     registry_.Live(PoolRole::kPrefill, now),
                     registry_.Live(PoolRole::kDecode, now), excluded_prefill);
}

absl::Status RouterCore::Admit() {
  if (draining_) return absl::UnavailableError("router is shutting down");
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status s = admission_.TryAdmit();
  queue_depth_->Set(static_cast<double>(admission_.in_flight()));
  return s;
}

void RouterCore::Release() {
  std::lock_guard<std::mutex> lock(mu_);
  admission_.Release();
  queue_depth_->Set(static_cast<double>(admission_.in_flight()));
}

absl::StatusOr<std::string> RouterCore::Authenticate(const grpc::CallbackServerContext& ctx) {
  if (options_.auth == nullptr) return PeerHost(ctx.peer());
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  std::optional<absl::string_view> value;
  if (it != md.end()) value.emplace(it->second.data(), it->second.size());
  absl::StatusOr<std::string> id = options_.auth->Authenticate(value ? &*value : nullptr);
  if (!id.ok()) CountRejection("unauthenticated");
  return id;
}

absl::Status RouterCore::AcquireClientStream(const std::string& client) {
  std::lock_guard<std::mutex> lock(mu_);
  return client_streams_.TryAcquire(client);
}

void RouterCore::ReleaseClientStream(const std::string& client) {
  std::lock_guard<std::mutex> lock(mu_);
  client_streams_.Release(client);
}

std::shared_ptr<PoolClient> RouterCore::Client(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<PoolClient>& c = clients_[address];
  if (c == nullptr) {
    c = std::make_shared<PoolClient>();
    grpc::ChannelArguments args;
    if (options_.max_message_bytes > 0) {
      args.SetMaxReceiveMessageSize(options_.max_message_bytes);
      args.SetMaxSendMessageSize(options_.max_message_bytes);
    }
    c->channel = grpc::CreateCustomChannel(
        address,
        options_.pool_credentials ? options_.pool_credentials : grpc::InsecureChannelCredentials(),
        args);
    c->prefill = v1::PrefillPool::NewStub(c->channel);
    c->decode = v1::DecodePool::NewStub(c->channel);
  }
  return c;
}

void RouterCore::CancelOnPool(const PoolState& pool, const std::string& request_id) {
  struct Call {
    grpc::ClientContext ctx;
    v1::CancelRequest req;
    v1::CancelResponse resp;
    std::shared_ptr<PoolClient> client;  // keeps the stub alive
  };
  auto* call = new Call();
  call->client = Client(pool.reg.address);
  call->req.set_request_id(request_id);
  call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.cancel_timeout));
  auto done = [call, pool = pool.reg.name, request_id](grpc::Status s) {
    VLOG(1) << "cancel " << request_id << " on " << pool << ": " << s.error_code()
            << " found=" << call->resp.found();
    delete call;
  };
  if (pool.reg.role == PoolRole::kPrefill) {
    call->client->prefill->async()->Cancel(&call->ctx, &call->req, &call->resp, std::move(done));
  } else {
    call->client->decode->async()->Cancel(&call->ctx, &call->req, &call->resp, std::move(done));
  }
}

bool RouterCore::WaitIdle(absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (live_reactors_.load() > 0) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

std::string RouterCore::NextRequestId() {
  return absl::StrCat("req-", absl::Hex(id_prefix_), "-", next_request_.fetch_add(1));
}

void RouterCore::CountRequest(grpc::StatusCode code, const std::string& path) {
  const std::string name = service::GrpcCodeName(code);
  metrics_
      ->Counter("cpserve_router_requests_total", "Generate requests by final status and path.",
                {{"code", name}, {"path", path.empty() ? "none" : path}})
      .Increment();
}

void RouterCore::CountRejection(const std::string& reason) {
  metrics_
      ->Counter("cpserve_router_rejections_total",
                "Public API calls refused by the router's checks, by reason.", {{"reason", reason}})
      .Increment();
}

// ---- Generation ----

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerationService::Generate(
    grpc::CallbackServerContext* ctx, const v1::GenerateRequest* req) {
  absl::StatusOr<std::string> client = core_->Authenticate(*ctx);
  if (!client.ok()) return RejectGenerate(client.status());
  return StartGenerate(core_, ctx, req, *std::move(client));
}

grpc::ServerUnaryReactor* GenerationService::Tokenize(grpc::CallbackServerContext* ctx,
                                                      const v1::TokenizeRequest* req,
                                                      v1::TokenizeResponse* resp) {
  if (absl::StatusOr<std::string> client = core_->Authenticate(*ctx); !client.ok()) {
    return FinishUnary(ctx, client.status());
  }
  const tokenizer::Tokenizer& tok = core_->tokenizer();
  std::vector<int32_t> ids = tok.Encode(req->text(), /*add_special=*/false);
  if (req->add_bos() && tok.bos_id().has_value()) ids.insert(ids.begin(), *tok.bos_id());
  for (int32_t id : ids) {
    resp->add_token_ids(id);
    absl::StatusOr<std::string> piece = tok.Decode({id});
    resp->add_pieces(piece.ok() ? *piece : std::string());
  }
  return FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* GenerationService::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                          const v1::GetModelInfoRequest*,
                                                          v1::ModelInfo* resp) {
  if (absl::StatusOr<std::string> client = core_->Authenticate(*ctx); !client.ok()) {
    return FinishUnary(ctx, client.status());
  }
  const ModelConfig& c = core_->config();
  const tokenizer::Tokenizer& tok = core_->tokenizer();
  resp->set_name(core_->options().model_name);
  resp->set_architecture(c.architecture);
  resp->set_vocab_size(static_cast<int32_t>(c.vocab_size));
  resp->set_max_context_tokens(static_cast<int32_t>(c.max_position_embeddings));
  resp->set_num_layers(static_cast<int32_t>(c.num_hidden_layers));
  resp->set_hidden_size(static_cast<int32_t>(c.hidden_size));
  resp->set_num_attention_heads(static_cast<int32_t>(c.num_attention_heads));
  resp->set_num_kv_heads(static_cast<int32_t>(c.num_key_value_heads));
  resp->set_head_dim(static_cast<int32_t>(c.head_dim));
  resp->set_dtype(c.torch_dtype.empty() ? "float32" : c.torch_dtype);
  if (c.bos_token_id.has_value()) {
    resp->set_bos_token_id(static_cast<int32_t>(*c.bos_token_id));
  } else if (tok.bos_id().has_value()) {
    resp->set_bos_token_id(*tok.bos_id());
  }
  for (int64_t eos : c.eos_token_ids) resp->add_eos_token_ids(static_cast<int32_t>(eos));
  if (c.eos_token_ids.empty() && tok.eos_id().has_value()) resp->add_eos_token_ids(*tok.eos_id());
  resp->set_long_prompt_tokens(core_->options().long_prompt_tokens);
  for (const PoolState& p : core_->Pools()) {
    v1::PoolSummary* s = resp->add_pools();
    s->set_name(p.reg.name);
    s->set_role(PoolRoleName(p.reg.role));
    s->set_world_size(p.reg.world_size);
    s->set_healthy(p.healthy);
  }
  return FinishUnary(ctx, absl::OkStatus());
}

// ---- PoolRegistry ----

grpc::ServerUnaryReactor* PoolRegistryService::Register(grpc::CallbackServerContext* ctx,
                                                        const v1::RegisterPoolRequest* req,
                                                        v1::RegisterPoolResponse* resp) {
  PoolRegistration reg;
  reg.name = req->pool();
  switch (req->role()) {
    case v1::POOL_ROLE_PREFILL:
      reg.role = PoolRole::kPrefill;
      break;
    case v1::POOL_ROLE_DECODE:
      reg.role = PoolRole::kDecode;
      break;
    default:
      return FinishUnary(
          ctx, absl::InvalidArgumentError(absl::StrCat("role: must be POOL_ROLE_PREFILL or "
                                                       "POOL_ROLE_DECODE for pool '",
                                                       req->pool(), "'")));
  }
  reg.address = req->address();
  reg.world_size = req->world_size();
  reg.epoch = req->epoch();
  reg.heartbeat_interval_ms = req->heartbeat_interval_ms();
  absl::StatusOr<std::string> id = core_->Register(reg);
  if (id.ok()) resp->set_registration_id(*id);
  return FinishUnary(ctx, id.status());
}

grpc::ServerUnaryReactor* PoolRegistryService::Heartbeat(grpc::CallbackServerContext* ctx,
                                                         const v1::HeartbeatRequest* req,
                                                         v1::HeartbeatResponse* resp) {
  PoolLoadReport load;
  load.queued_requests = req->load().queued_requests();
  load.running_requests = req->load().running_requests();
  load.free_kv_blocks = req->load().free_kv_blocks();
  load.total_kv_blocks = req->load().total_kv_blocks();
  resp->set_known(core_->Heartbeat(req->registration_id(), load));
  return FinishUnary(ctx, absl::OkStatus());
}

}  // namespace cpserve::router
