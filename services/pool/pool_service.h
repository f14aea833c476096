// The gRPC API of a pool leader (rank 0): cpserve.v1.DecodePool and
// cpserve.v1.PrefillPool (protos/cpserve/v1/pool.proto) over a GenerationEngine,
// with the gRPC callback API.
//
// Each Decode stream is one ServerWriteReactor; the engine's token callbacks (on the
// engine thread) only queue tokens under the reactor's mutex and start a write when
// none is in flight, so nothing blocks in a reaction or on the engine thread. A
// client cancel, a deadline or a broken stream cancels the request in the engine
// (which frees its KV). Prefill is a unary reactor finished by the engine's
// PrefillCallback. absl status codes map 1:1 onto gRPC codes.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cpserve/v1/pool.grpc.pb.h"
#include "services/pool/pool_metrics.h"
#include "worker/engine/generation_engine.h"

namespace cpserve::services {

// A live RPC that the pool can end early (shutdown, unhealthy engine).
class AbortableCall {
 public:
  virtual ~AbortableCall() = default;
  virtual void Abort(const absl::Status& status) = 0;
};

// State shared by a pool's services: the engine (null until it is ready), whether
// new work is admitted, the live calls by request id, and a thread for the engine
// methods that may block (Reserve).
class PoolCore {
 public:
  PoolCore(PoolMetrics* metrics, uint64_t seed_base);
  ~PoolCore();

  // Called once the engine is created; the engine must outlive every call.
  void SetEngine(GenerationEngine* engine);
  GenerationEngine* engine() const { return engine_.load(); }
  PoolMetrics& metrics() { return *metrics_; }

  // OK when new requests are taken; UNAVAILABLE while starting, draining or unhealthy.
  absl::Status Admission() const;
  void StopAdmitting(const std::string& why);

  // Live calls. Begin fails (ALREADY_EXISTS) when the id is already live.
  absl::Status Begin(const std::string& id, std::weak_ptr<AbortableCall> call);
  void End(const std::string& id);
  bool IsLive(const std::string& id) const;
  int64_t num_live() const;
  // Waits until no call is live or `timeout` passed; true when idle.
  bool WaitIdle(absl::Duration timeout);
  // Ends every live call with `status` (and cancels it in the engine).
  void AbortAll(const absl::Status& status);

  // Reservations made through Reserve, until a Decode claims them, Cancel drops
  // them or their ttl passes. Returns the transfer id reserved for `id`, if any.
  void AddReservation(const std::string& id, const std::string& transfer_id, absl::Time expiry);
  bool TakeReservation(const std::string& id, std::string* transfer_id);

  // Runs fn on the pool's blocking-call thread (engine methods that may wait).
  void RunBlocking(std::function<void()> fn);

  // A per-request seed when the client gave none.
  uint64_t NextSeed();

 private:
  void BlockingLoop();

  PoolMetrics* metrics_;
  const uint64_t seed_base_;
  std::atomic<uint64_t> seed_counter_{0};
  std::atomic<GenerationEngine*> engine_{nullptr};

  mutable absl::Mutex mu_;
  std::string refusal_ ABSL_GUARDED_BY(mu_) = "pool is starting";
  bool admitting_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, std::weak_ptr<AbortableCall>> live_ ABSL_GUARDED_BY(mu_);
  struct Reservation {
    std::string transfer_id;
    absl::Time expiry;
  };
  absl::flat_hash_map<std::string, Reservation> reservations_ ABSL_GUARDED_BY(mu_);

  absl::Mutex work_mu_;
  std::deque<std::function<void()>> work_ ABSL_GUARDED_BY(work_mu_);
  bool stop_ ABSL_GUARDED_BY(work_mu_) = false;
  std::thread worker_;
};

// Converts the public sampling parameters to the engine's; INVALID_ARGUMENT on bad ones.
absl::Status ToGenerationParams(const v1::SamplingParams& in, uint64_t default_seed,
                                GenerationParams* out);

class DecodePoolService final : public v1::DecodePool::CallbackService {
 public:
  explicit DecodePoolService(PoolCore* core) : core_(core) {}

  grpc::ServerUnaryReactor* Reserve(grpc::CallbackServerContext* ctx, const v1::ReserveRequest* req,
                                    v1::ReserveResponse* resp) override;
  grpc::ServerWriteReactor<v1::DecodeResponse>* Decode(grpc::CallbackServerContext* ctx,
                                                       const v1::DecodeRequest* req) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* ctx, const v1::CancelRequest* req,
                                   v1::CancelResponse* resp) override;

 private:
  PoolCore* core_;
};

class PrefillPoolService final : public v1::PrefillPool::CallbackService {
 public:
  explicit PrefillPoolService(PoolCore* core) : core_(core) {}

  grpc::ServerUnaryReactor* Prefill(grpc::CallbackServerContext* ctx, const v1::PrefillRequest* req,
                                    v1::PrefillResponse* resp) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* ctx, const v1::CancelRequest* req,
                                   v1::CancelResponse* resp) override;

 private:
  PoolCore* core_;
};

}  // namespace cpserve::services
