// The router's gRPC services (DESIGN §6): the public cpserve.v1.Generation API and the
// PoolRegistry the pools register with. RouterCore holds the state they share (the
// router/ pure logic behind one mutex, the tokenizer, channels to the pools, metrics).
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cpserve/v1/generation.grpc.pb.h"
#include "cpserve/v1/pool.grpc.pb.h"
#include "router/admission.h"
#include "router/auth_tokens.h"
#include "router/client_stream_limiter.h"
#include "router/pool_registry.h"
#include "router/request_validation.h"
#include "router/routing_policy.h"
#include "services/common/metrics.h"
#include "worker/model/model_config.h"
#include "worker/tokenizer/tokenizer.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace cpserve::router {

struct RouterOptions {
  std::string model_name;  // reported by GetModelInfo
  int32_t long_prompt_tokens = 256;
  int32_t max_queued_requests = 256;
  absl::Duration heartbeat_timeout = absl::Seconds(3);
  // Registrations silent this long are forgotten (their heartbeats answer known=false).
  absl::Duration forget_after = absl::Minutes(5);
  // Reservations on a decode pool expire after this if no Decode claims them.
  absl::Duration reservation_ttl = absl::Seconds(60);
  // Deadline of the best-effort Cancel calls sent to pools.
  absl::Duration cancel_timeout = absl::Seconds(2);

  // Limits and security (0 / null: off).
  int32_t max_prompt_tokens = 0;
  int32_t max_streams_per_client = 0;
  absl::Duration default_deadline = absl::ZeroDuration();      // for calls without a deadline
  std::shared_ptr<const TokenAuthenticator> auth;              // bearer tokens on the public API
  std::shared_ptr<grpc::ChannelCredentials> pool_credentials;  // router -> pools; null: plaintext
  int max_message_bytes = 0;                                   // router -> pools channels
};

// Channels and stubs of one pool leader.
struct PoolClient {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::PrefillPool::Stub> prefill;
  std::unique_ptr<v1::DecodePool::Stub> decode;
};

class RouterCore {
 public:
  RouterCore(RouterOptions options, tokenizer::Tokenizer tokenizer, ModelConfig config,
             service::Metrics* metrics);
  ~RouterCore();

  const RouterOptions& options() const { return options_; }
  const tokenizer::Tokenizer& tokenizer() const { return tokenizer_; }
  const ModelConfig& config() const { return config_; }
  const ValidationLimits& limits() const { return limits_; }

  // Pool registry (thread-safe wrappers of PoolRegistry, with the clock).
  absl::StatusOr<std::string> Register(const PoolRegistration& reg);
  bool Heartbeat(const std::string& registration_id, const PoolLoadReport& load);
  std::vector<PoolState> Pools();
  std::optional<PoolState> FindPool(const std::string& name);
  void MarkDown(const std::string& name);
  void AddInflight(const std::string& name, int64_t delta);
  absl::StatusOr<RouteDecision> Route(int64_t prompt_tokens,
                                      const std::set<std::string>& excluded_prefill);

  // Admission (RESOURCE_EXHAUSTED when full; fails too once draining).
  absl::Status Admit();
  void Release();
  void StartDraining() { draining_ = true; }

  // The caller's identity for per-client limits: its token identity ("token-<line>") when
  // auth is on (UNAUTHENTICATED when its metadata does not pass), else its IP address.
  absl::StatusOr<std::string> Authenticate(const grpc::CallbackServerContext& ctx);
  // Per-client concurrent streams (RESOURCE_EXHAUSTED over max_streams_per_client).
  absl::Status AcquireClientStream(const std::string& client);
  void ReleaseClientStream(const std::string& client);

  // Shared channel to a pool leader (created on first use).
  std::shared_ptr<PoolClient> Client(const std::string& address);
  // Best-effort, fire-and-forget Cancel of `request_id` on a pool (frees its KV).
  void CancelOnPool(const PoolState& pool, const std::string& request_id);

  std::string NextRequestId();

  // Generate reactors alive (they may outlive their call while downstream calls end).
  void ReactorStarted() { live_reactors_.fetch_add(1); }
  void ReactorEnded() { live_reactors_.fetch_sub(1); }
  // Waits up to `timeout` for every reactor to end (before destroying the core).
  bool WaitIdle(absl::Duration timeout);

  // Metrics.
  void CountRequest(grpc::StatusCode code, const std::string& path);
  // cpserve_router_rejections_total{reason}: unauthenticated, prompt_too_long,
  // invalid_argument, client_stream_limit, router_full, draining, default_deadline.
  void CountRejection(const std::string& reason);
  prometheus::Histogram& ttft() { return *ttft_; }
  prometheus::Histogram& inter_token() { return *itl_; }

 private:
  void ExpiryLoop();
  void UpdatePoolGauges(const PoolState& pool, bool healthy);

  RouterOptions options_;
  tokenizer::Tokenizer tokenizer_;
  ModelConfig config_;
  ValidationLimits limits_;
  service::Metrics* metrics_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Gauge* queue_depth_;

  std::mutex mu_;
  PoolRegistry registry_;
  AdmissionController admission_;
  ClientStreamLimiter client_streams_;
  std::map<std::string, std::shared_ptr<PoolClient>> clients_;
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_request_{1};
  std::atomic<int64_t> live_reactors_{0};
  uint64_t id_prefix_;

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread expiry_thread_;
};

class GenerationService final : public v1::Generation::CallbackService {
 public:
  explicit GenerationService(RouterCore* core) : core_(core) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(grpc::CallbackServerContext* ctx,
                                                           const v1::GenerateRequest* req) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const v1::TokenizeRequest* req,
                                     v1::TokenizeResponse* resp) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const v1::GetModelInfoRequest* req,
                                         v1::ModelInfo* resp) override;

 private:
  RouterCore* core_;
};

class PoolRegistryService final : public v1::PoolRegistry::CallbackService {
 public:
  explicit PoolRegistryService(RouterCore* core) : core_(core) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx,
                                     const v1::RegisterPoolRequest* req,
                                     v1::RegisterPoolResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* resp) override;

 private:
  RouterCore* core_;
};

}  // namespace cpserve::router
