#include "services/pool/pool_service.h"

#include <chrono>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "kernels/sampling.h"

namespace cpserve::services {
namespace {

using Clock = std::chrono::steady_clock;

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
int64_t Micros(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP_TOKEN;
    case FinishReason::kNone:
      break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

absl::Time ToAbslDeadline(std::chrono::system_clock::time_point deadline) {
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// One Decode stream. Owned by shared_ptr: gRPC holds it through self_ until OnDone,
// the engine through the token callback, so a late engine event never touches
// freed memory (it finds finishing_ set and does nothing).
class DecodeReactor final : public grpc::ServerWriteReactor<v1::DecodeResponse>,
                            public AbortableCall {
 public:
  DecodeReactor(PoolCore* core, std::string id, bool prefilled)
      : core_(core), id_(std::move(id)), prefilled_(prefilled), start_(Clock::now()) {}

  void Bind(std::shared_ptr<DecodeReactor> self) { self_ = std::move(self); }
  void MarkBegun() { begun_ = true; }

  // Engine thread.
  void OnEvent(const TokenEvent& e) {
    {
      absl::MutexLock l(&mu_);
      if (final_) return;
      if (e.token >= 0) {
        const Clock::time_point now = Clock::now();
        if (!first_token_at_) {
          first_token_at_ = now;
          core_->metrics().ObserveTimeToFirstToken(Seconds(now - start_));
        } else {
          core_->metrics().ObserveInterTokenLatency(Seconds(now - last_token_at_));
        }
        last_token_at_ = now;
        pending_.push_back(e.token);
      }
      if (e.finished || !e.status.ok()) {
        final_ = true;
        final_status_ = e.status;
        reason_ = e.reason;
      }
    }
    Pump();
  }

  // Ends the stream with `status` before the engine finished it.
  void Fail(const absl::Status& status) {
    {
      absl::MutexLock l(&mu_);
      if (final_) return;
      final_ = true;
      final_status_ = status;
    }
    Pump();
  }

  void Abort(const absl::Status& status) override {
    CancelInEngine();
    Fail(status);
  }

  // After the engine took the request: a cancel or abort that raced with the
  // submission found nothing to cancel yet, so cancel now.
  void Submitted() {
    bool ended;
    {
      absl::MutexLock l(&mu_);
      ended = broken_ || (final_ && !final_status_.ok());
    }
    if (ended) CancelInEngine();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock l(&mu_);
      writing_ = false;
      if (!ok) broken_ = true;  // the client is gone or the call was cancelled
    }
    if (!ok) CancelInEngine();
    Pump();
  }

  void OnCancel() override {
    {
      absl::MutexLock l(&mu_);
      broken_ = true;
    }
    CancelInEngine();
    Pump();
  }

  void OnDone() override {
    if (begun_) core_->End(id_);
    self_.reset();  // may delete this; nothing after it
  }

 private:
  void CancelInEngine() {
    GenerationEngine* engine = core_->engine();
    if (begun_ && engine != nullptr) engine->Cancel(id_);
  }

  // Starts the next write, or finishes the call; never blocks, never holds mu_ while
  // calling into gRPC.
  void Pump() {
    enum { kNothing, kWrite, kFinish } action = kNothing;
    grpc::Status finish_status;
    {
      absl::MutexLock l(&mu_);
      if (writing_ || finishing_) return;
      const bool ok_end = final_ && final_status_.ok();
      if (broken_) {
        finishing_ = true;
        action = kFinish;
        finish_status = grpc::Status(grpc::StatusCode::CANCELLED, "decode stream cancelled");
      } else if (!pending_.empty() || (ok_end && !last_sent_)) {
        response_.Clear();
        for (int32_t t : pending_) response_.add_token_ids(t);
        pending_.clear();
        if (ok_end) {
          last_sent_ = true;
          response_.set_finish_reason(ToProto(reason_));
          // The pool cannot tell queueing from computing: the wait to the first
          // token counts as prefill on the local path and as queue after a transfer.
          const int64_t to_first = first_token_at_ ? Micros(*first_token_at_ - start_) : 0;
          if (prefilled_) {
            response_.set_queue_us(to_first);
          } else {
            response_.set_prefill_us(to_first);
          }
        }
        writing_ = true;
        action = kWrite;
      } else if (final_) {
        finishing_ = true;
        action = kFinish;
        finish_status = ToGrpc(final_status_);
      }
    }
    if (action == kWrite) {
      StartWrite(&response_);
    } else if (action == kFinish) {
      core_->metrics().RequestDone("Decode",
                                   static_cast<absl::StatusCode>(finish_status.error_code()));
      Finish(finish_status);
    }
  }

  PoolCore* const core_;
  const std::string id_;
  const bool prefilled_;
  const Clock::time_point start_;
  std::atomic<bool> begun_{false};
  std::shared_ptr<DecodeReactor> self_;

  absl::Mutex mu_;
  std::vector<int32_t> pending_ ABSL_GUARDED_BY(mu_);
  bool final_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
  FinishReason reason_ ABSL_GUARDED_BY(mu_) = FinishReason::kNone;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool last_sent_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<Clock::time_point> first_token_at_ ABSL_GUARDED_BY(mu_);
  Clock::time_point last_token_at_ ABSL_GUARDED_BY(mu_);
  v1::DecodeResponse response_;  // touched only while no write is in flight
};

// One Prefill call, finished once by the engine's PrefillCallback, a client cancel
// or an abort, whichever comes first.
class PrefillReactor final : public grpc::ServerUnaryReactor, public AbortableCall {
 public:
  PrefillReactor(PoolCore* core, std::string id, v1::PrefillResponse* response)
      : core_(core), id_(std::move(id)), response_(response), start_(Clock::now()) {}

  void Bind(std::shared_ptr<PrefillReactor> self) { self_ = std::move(self); }
  void MarkBegun() { begun_ = true; }

  // Engine thread.
  void OnResult(const PrefillResult& r) {
    {
      absl::MutexLock l(&mu_);
      if (finishing_) return;
      finishing_ = true;
      if (r.status.ok()) {
        response_->set_first_token_id(r.first_token);
        response_->set_queue_us(r.queue_us);
        response_->set_prefill_us(r.prefill_us);
        response_->set_transfer_us(r.transfer_us);
        response_->set_transfer_bytes(r.transfer_bytes);
        response_->set_transport(r.transport);
        core_->metrics().ObserveTimeToFirstToken(Seconds(Clock::now() - start_));
        core_->metrics().ObserveTransfer(r.transport, r.transfer_bytes, r.transfer_us * 1e-6);
      }
    }
    FinishWith(r.status);
  }

  void Fail(const absl::Status& status) {
    {
      absl::MutexLock l(&mu_);
      if (finishing_) return;
      finishing_ = true;
    }
    FinishWith(status);
  }

  void Abort(const absl::Status& status) override {
    CancelInEngine();
    Fail(status);
  }

  void OnCancel() override { Abort(absl::CancelledError("prefill call cancelled")); }

  // See DecodeReactor::Submitted.
  void Submitted() {
    bool ended;
    {
      absl::MutexLock l(&mu_);
      ended = finishing_;
    }
    if (ended) CancelInEngine();
  }

  void OnDone() override {
    if (begun_) core_->End(id_);
    self_.reset();  // may delete this; nothing after it
  }

 private:
  void CancelInEngine() {
    GenerationEngine* engine = core_->engine();
    if (begun_ && engine != nullptr) engine->Cancel(id_);
  }
  void FinishWith(const absl::Status& status) {
    core_->metrics().RequestDone("Prefill", status.code());
    Finish(ToGrpc(status));
  }

  PoolCore* const core_;
  const std::string id_;
  v1::PrefillResponse* const response_;
  const Clock::time_point start_;
  std::atomic<bool> begun_{false};
  std::shared_ptr<PrefillReactor> self_;
  absl::Mutex mu_;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
};

absl::Status CheckPrompt(const std::string& id, int prompt_size) {
  if (id.empty()) return absl::InvalidArgumentError("request_id is empty");
  if (prompt_size == 0) return absl::InvalidArgumentError("prompt_token_ids is empty");
  return absl::OkStatus();
}

}  // namespace

// ---- PoolCore ----

PoolCore::PoolCore(PoolMetrics* metrics, uint64_t seed_base)
    : metrics_(metrics), seed_base_(seed_base) {
  worker_ = std::thread([this] { BlockingLoop(); });
}

PoolCore::~PoolCore() {
  {
    absl::MutexLock l(&work_mu_);
    stop_ = true;
  }
  worker_.join();
}

void PoolCore::SetEngine(GenerationEngine* engine) {
  engine_.store(engine);
  absl::MutexLock l(&mu_);
  admitting_ = engine != nullptr;
}

absl::Status PoolCore::Admission() const {
  absl::MutexLock l(&mu_);
  if (admitting_) return absl::OkStatus();
  return absl::UnavailableError(refusal_);
}

void PoolCore::StopAdmitting(const std::string& why) {
  absl::MutexLock l(&mu_);
  admitting_ = false;
  refusal_ = why;
}

absl::Status PoolCore::Begin(const std::string& id, std::weak_ptr<AbortableCall> call) {
  absl::MutexLock l(&mu_);
  if (!admitting_) return absl::UnavailableError(refusal_);
  if (!live_.emplace(id, std::move(call)).second) {
    return absl::AlreadyExistsError(absl::StrCat("request ", id, " is already running"));
  }
  return absl::OkStatus();
}

void PoolCore::End(const std::string& id) {
  absl::MutexLock l(&mu_);
  live_.erase(id);
}

bool PoolCore::IsLive(const std::string& id) const {
  absl::MutexLock l(&mu_);
  return live_.contains(id);
}

int64_t PoolCore::num_live() const {
  absl::MutexLock l(&mu_);
  return static_cast<int64_t>(live_.size());
}

bool PoolCore::WaitIdle(absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  auto idle = [](absl::flat_hash_map<std::string, std::weak_ptr<AbortableCall>>* live) {
    return live->empty();
  };
  return mu_.AwaitWithTimeout(absl::Condition(+idle, &live_), timeout);
}

void PoolCore::AbortAll(const absl::Status& status) {
  std::vector<std::shared_ptr<AbortableCall>> calls;
  {
    absl::MutexLock l(&mu_);
    for (auto& [id, weak] : live_) {
      if (auto call = weak.lock()) calls.push_back(std::move(call));
    }
  }
  for (auto& call : calls) call->Abort(status);
}

void PoolCore::AddReservation(const std::string& id, const std::string& transfer_id,
                              absl::Time expiry) {
  absl::MutexLock l(&mu_);
  const absl::Time now = absl::Now();
  absl::erase_if(reservations_, [now](const auto& kv) { return kv.second.expiry < now; });
  reservations_[id] = Reservation{transfer_id, expiry};
}

bool PoolCore::TakeReservation(const std::string& id, std::string* transfer_id) {
  absl::MutexLock l(&mu_);
  auto it = reservations_.find(id);
  if (it == reservations_.end()) return false;
  if (transfer_id != nullptr) *transfer_id = it->second.transfer_id;
  reservations_.erase(it);
  return true;
}

void PoolCore::RunBlocking(std::function<void()> fn) {
  absl::MutexLock l(&work_mu_);
  work_.push_back(std::move(fn));
}

void PoolCore::BlockingLoop() {
  for (;;) {
    std::function<void()> fn;
    {
      absl::MutexLock l(&work_mu_);
      auto ready = [](PoolCore* self) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return self->stop_ || !self->work_.empty();
      };
      work_mu_.Await(absl::Condition(+ready, this));
      if (work_.empty()) return;  // stopping and nothing left
      fn = std::move(work_.front());
      work_.pop_front();
    }
    fn();
  }
}

uint64_t PoolCore::NextSeed() { return Mix64(seed_base_ ^ Mix64(seed_counter_.fetch_add(1))); }

absl::Status ToGenerationParams(const v1::SamplingParams& in, uint64_t default_seed,
                                GenerationParams* out) {
  if (in.max_tokens() < 0) return absl::InvalidArgumentError("max_tokens must be >= 0");
  if (!(in.temperature() >= 0) || std::isinf(in.temperature())) {
    return absl::InvalidArgumentError("temperature must be a finite number >= 0");
  }
  if (in.top_k() < 0) return absl::InvalidArgumentError("top_k must be >= 0");
  if (!(in.top_p() >= 0 && in.top_p() <= 1)) {
    return absl::InvalidArgumentError("top_p must be in (0, 1]");
  }
  out->max_tokens = in.max_tokens() == 0 ? 16 : in.max_tokens();
  out->sampling.temperature = in.temperature();
  out->sampling.top_k = in.top_k();
  out->sampling.top_p = in.top_p() == 0 ? 1.0f : in.top_p();
  out->sampling.seed = in.has_seed() ? in.seed() : default_seed;
  out->stop_token_ids.assign(in.stop_token_ids().begin(), in.stop_token_ids().end());
  out->ignore_eos = in.ignore_eos();
  return absl::OkStatus();
}

// ---- DecodePool ----

grpc::ServerUnaryReactor* DecodePoolService::Reserve(grpc::CallbackServerContext* ctx,
                                                     const v1::ReserveRequest* req,
                                                     v1::ReserveResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::Status s = core_->Admission();
  if (s.ok() && req->request_id().empty()) s = absl::InvalidArgumentError("request_id is empty");
  if (s.ok() && req->prompt_tokens() <= 0) {
    s = absl::InvalidArgumentError("prompt_tokens must be > 0");
  }
  if (!s.ok()) {
    core_->metrics().RequestDone("Reserve", s.code());
    reactor->Finish(ToGrpc(s));
    return reactor;
  }
  // Reserve may wait for the other ranks: run it off the gRPC threads.
  core_->RunBlocking([core = core_, reactor, req, resp] {
    const absl::Duration ttl = absl::Milliseconds(req->ttl_ms() > 0 ? req->ttl_ms() : 30000);
    absl::StatusOr<v1::KvTransferTarget> target =
        core->engine()->Reserve(req->request_id(), req->prompt_tokens(), req->max_tokens(), ttl);
    if (target.ok()) {
      core->AddReservation(req->request_id(), target->transfer_id(), absl::Now() + ttl);
      *resp->mutable_target() = *std::move(target);
    }
    core->metrics().RequestDone("Reserve", target.status().code());
    reactor->Finish(ToGrpc(target.status()));
  });
  return reactor;
}

grpc::ServerWriteReactor<v1::DecodeResponse>* DecodePoolService::Decode(
    grpc::CallbackServerContext* /*ctx*/, const v1::DecodeRequest* req) {
  const bool prefilled = !req->transfer_id().empty();
  auto reactor = std::make_shared<DecodeReactor>(core_, req->request_id(), prefilled);
  reactor->Bind(reactor);
  GenerationParams params;
  absl::Status s = core_->Admission();
  if (s.ok()) s = CheckPrompt(req->request_id(), req->prompt_token_ids_size());
  if (s.ok()) s = ToGenerationParams(req->sampling(), core_->NextSeed(), &params);
  if (s.ok() && prefilled) {
    std::string reserved;
    if (!req->has_first_token_id()) {
      s = absl::InvalidArgumentError("first_token_id is required with transfer_id");
    } else if (core_->TakeReservation(req->request_id(), &reserved) &&
               reserved != req->transfer_id()) {
      s = absl::InvalidArgumentError(absl::StrCat("transfer_id ", req->transfer_id(),
                                                  " is not the one reserved for request ",
                                                  req->request_id()));
    }
  }
  if (s.ok()) s = core_->Begin(req->request_id(), reactor);
  if (!s.ok()) {
    reactor->Fail(s);
    return reactor.get();
  }
  reactor->MarkBegun();
  std::vector<int32_t> prompt(req->prompt_token_ids().begin(), req->prompt_token_ids().end());
  TokenCallback callback = [reactor](const TokenEvent& e) { reactor->OnEvent(e); };
  GenerationEngine* engine = core_->engine();
  s = prefilled ? engine->SubmitPrefilled(req->request_id(), std::move(prompt),
                                          req->first_token_id(), params, std::move(callback))
                : engine->Submit(req->request_id(), std::move(prompt), params, std::move(callback));
  if (s.ok()) {
    reactor->Submitted();
  } else {
    reactor->Fail(s);
  }
  return reactor.get();
}

grpc::ServerUnaryReactor* DecodePoolService::Cancel(grpc::CallbackServerContext* ctx,
                                                    const v1::CancelRequest* req,
                                                    v1::CancelResponse* resp) {
  const bool live = core_->IsLive(req->request_id());
  const bool reserved = core_->TakeReservation(req->request_id(), nullptr);
  if (GenerationEngine* engine = core_->engine(); engine != nullptr) {
    engine->Cancel(req->request_id());
  }
  resp->set_found(live || reserved);
  core_->metrics().RequestDone("Cancel", absl::StatusCode::kOk);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

// ---- PrefillPool ----

grpc::ServerUnaryReactor* PrefillPoolService::Prefill(grpc::CallbackServerContext* ctx,
                                                      const v1::PrefillRequest* req,
                                                      v1::PrefillResponse* resp) {
  auto reactor = std::make_shared<PrefillReactor>(core_, req->request_id(), resp);
  reactor->Bind(reactor);
  GenerationParams params;
  absl::Status s = core_->Admission();
  if (s.ok()) s = CheckPrompt(req->request_id(), req->prompt_token_ids_size());
  if (s.ok()) s = ToGenerationParams(req->sampling(), core_->NextSeed(), &params);
  if (s.ok()) s = core_->Begin(req->request_id(), reactor);
  if (!s.ok()) {
    reactor->Fail(s);
    return reactor.get();
  }
  reactor->MarkBegun();
  std::vector<int32_t> prompt(req->prompt_token_ids().begin(), req->prompt_token_ids().end());
  s = core_->engine()->SubmitPrefill(req->request_id(), std::move(prompt), params, req->target(),
                                     ToAbslDeadline(ctx->deadline()),
                                     [reactor](const PrefillResult& r) { reactor->OnResult(r); });
  if (s.ok()) {
    reactor->Submitted();
  } else {
    reactor->Fail(s);
  }
  return reactor.get();
}

grpc::ServerUnaryReactor* PrefillPoolService::Cancel(grpc::CallbackServerContext* ctx,
                                                     const v1::CancelRequest* req,
                                                     v1::CancelResponse* resp) {
  const bool live = core_->IsLive(req->request_id());
  if (GenerationEngine* engine = core_->engine(); engine != nullptr) {
    engine->Cancel(req->request_id());
  }
  resp->set_found(live);
  core_->metrics().RequestDone("Cancel", absl::StatusCode::kOk);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace cpserve::services
