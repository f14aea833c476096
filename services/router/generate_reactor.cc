#include "services/router/generate_reactor.h"

#include <glog/logging.h>
#include <grpcpp/alarm.h>
#include <prometheus/histogram.h>

#include <chrono>
#include <deque>
#include <functional>
#include <optional>

#include "absl/strings/str_cat.h"
#include "router/stop_strings.h"
#include "services/router/router_service.h"
#include "worker/tokenizer/incremental_detokenizer.h"

namespace cpserve::router {
namespace {

using Clock = std::chrono::steady_clock;

int64_t Us(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

grpc::Status Prefixed(const std::string& prefix, const grpc::Status& s) {
  return grpc::Status(s.error_code(), absl::StrCat(prefix, s.error_message()));
}

// Work done by one downstream unary call (Reserve or Prefill). Kept until the reactor is
// destroyed, so a late TryCancel never touches a freed context.
template <typename Req, typename Resp>
struct UnaryCall {
  std::unique_ptr<grpc::ClientContext> ctx;
  Req req;
  Resp resp;
};

class GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateReactor(RouterCore* core, grpc::CallbackServerContext* ctx,
                  const v1::GenerateRequest* req, std::string client)
      : core_(core),
        ctx_(ctx),
        req_(*req),
        client_id_(std::move(client)),
        detok_(&core->tokenizer(), /*skip_special=*/true),
        t0_(Clock::now()) {
    core_->ReactorStarted();
    Post([this] { Begin(); });
  }

  ~GenerateReactor() override {
    if (client_stream_held_) core_->ReleaseClientStream(client_id_);  // normally at Finish
    for (const std::string& pool : held_pools_) core_->AddInflight(pool, -1);
    core_->ReactorEnded();
  }

  void OnWriteDone(bool ok) override {
    Post([this, ok] {
      writing_ = false;
      if (!ok && !done_) EndWith(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      MaybeWrite();
    });
  }

  void OnCancel() override {
    Post([this] {
      cancelled_ = true;
      has_pending_ = false;
      if (!done_) {
        // gRPC does not say why a call was cancelled. The client's deadline fires before
        // ours (ours starts when the request arrives, and a loaded client or router adds
        // tens of ms), so a cancel within 100 ms of our deadline counts as the deadline
        // for the status metric (the chaos run saw gaps beyond 10 ms under load).
        const bool expired =
            ctx_->deadline() <= std::chrono::system_clock::now() + std::chrono::milliseconds(100);
        EndWith(expired ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded")
                        : grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
      }
      MaybeWrite();
    });
  }

  void OnDone() override { Unref(); }

 private:
  // The downstream Decode stream. Deletes itself in OnDone; its context is owned by the
  // reactor (which outlives it).
  class DecodeCall final : public grpc::ClientReadReactor<v1::DecodeResponse> {
   public:
    explicit DecodeCall(GenerateReactor* owner) : owner_(owner) {}
    void Start(v1::DecodePool::Stub* stub, grpc::ClientContext* ctx, const v1::DecodeRequest* req) {
      stub->async()->Decode(ctx, req, this);
      StartRead(&resp_);
      StartCall();
    }
    void OnReadDone(bool ok) override {
      if (!ok) return;
      owner_->Post([o = owner_, msg = resp_] { o->OnDecodeMessage(msg); });
      StartRead(&resp_);
    }
    void OnDone(const grpc::Status& s) override {
      GenerateReactor* owner = owner_;
      delete this;
      owner->Post([owner, s] { owner->OnDecodeDone(s); });
      owner->Unref();
    }

   private:
    GenerateReactor* owner_;
    v1::DecodeResponse resp_;
  };

  // ---- serialization: every event runs as a closure, one at a time, never under a lock.
  void Post(std::function<void()> fn) {
    Ref();  // the runner keeps the reactor alive until the queue is empty
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      queue_.push_back(std::move(fn));
    }
    RunQueue();
    Unref();
  }
  void RunQueue() {
    while (true) {
      std::function<void()> fn;
      {
        std::lock_guard<std::mutex> lock(queue_mu_);
        if (running_ || queue_.empty()) return;
        running_ = true;
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
      std::lock_guard<std::mutex> lock(queue_mu_);
      running_ = false;
    }
  }
  void Ref() { refs_.fetch_add(1); }
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  // ---- request lifecycle (all run inside the serializer) ----
  void Begin() {
    request_id_ = req_.request_id().empty() ? core_->NextRequestId() : req_.request_id();
    switch (req_.prompt().kind_case()) {
      case v1::Prompt::kText:
        if (!req_.prompt().text().empty()) {
          prompt_ = core_->tokenizer().Encode(req_.prompt().text(), /*add_special=*/true);
        }
        break;
      case v1::Prompt::kTokenIds:
        prompt_.assign(req_.prompt().token_ids().ids().begin(),
                       req_.prompt().token_ids().ids().end());
        break;
      default:
        break;
    }
    const v1::SamplingParams& sp = req_.sampling();
    SamplingSpec spec;
    spec.max_tokens = sp.max_tokens();
    spec.temperature = sp.temperature();
    spec.top_k = sp.top_k();
    spec.top_p = sp.top_p();
    spec.stop_token_ids.assign(sp.stop_token_ids().begin(), sp.stop_token_ids().end());
    spec.stop.assign(sp.stop().begin(), sp.stop().end());
    if (absl::Status s = CheckPromptTokens(static_cast<int64_t>(prompt_.size()), core_->limits());
        !s.ok()) {
      core_->CountRejection("prompt_too_long");
      return EndWith(ToGrpc(s));
    }
    absl::StatusOr<int32_t> max_tokens = ValidateRequest(prompt_, spec, core_->limits());
    if (!max_tokens.ok()) {
      core_->CountRejection("invalid_argument");
      return EndWith(ToGrpc(max_tokens.status()));
    }
    if (absl::Status s = core_->AcquireClientStream(client_id_); !s.ok()) {
      core_->CountRejection("client_stream_limit");
      return EndWith(ToGrpc(s));
    }
    client_stream_held_ = true;
    if (absl::Status s = core_->Admit(); !s.ok()) {
      core_->CountRejection(s.code() == absl::StatusCode::kUnavailable ? "draining"
                                                                       : "router_full");
      return EndWith(ToGrpc(s));
    }
    admitted_ = true;
    StartDefaultDeadline();
    sampling_ = sp;
    sampling_.set_max_tokens(*max_tokens);
    stops_.emplace(spec.stop);
    stream_text_ = !req_.has_stream_text() || req_.stream_text();
    t_dispatch_ = Clock::now();
    Dispatch(/*local_only=*/false);
  }

  // A call without a deadline gets the router's default one (--default_deadline_ms): an
  // alarm ends it with DEADLINE_EXCEEDED, and the downstream calls carry that deadline.
  void StartDefaultDeadline() {
    const absl::Duration d = core_->options().default_deadline;
    if (d <= absl::ZeroDuration()) return;
    const auto now = std::chrono::system_clock::now();
    if (ctx_->deadline() < now + std::chrono::hours(24 * 365)) return;  // the client set one
    default_deadline_ = now + absl::ToChronoMilliseconds(d);
    alarm_ = std::make_unique<grpc::Alarm>();
    Ref();  // released by the alarm's callback (fired or cancelled)
    alarm_->Set(*default_deadline_, [this](bool fired) {
      if (fired) Post([this] { OnDefaultDeadline(); });
      Unref();
    });
  }

  void OnDefaultDeadline() {
    if (done_) return;
    EndWith(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "default deadline"));
  }

  // A downstream context: propagates cancellation and the client's deadline; with the
  // default deadline, a backstop a little after it (the alarm ends the call first).
  std::unique_ptr<grpc::ClientContext> DownstreamContext() {
    std::unique_ptr<grpc::ClientContext> c = grpc::ClientContext::FromCallbackServerContext(*ctx_);
    if (default_deadline_) c->set_deadline(*default_deadline_ + std::chrono::seconds(1));
    return c;
  }

  void Dispatch(bool local_only) {
    absl::StatusOr<RouteDecision> d =
        core_->Route(static_cast<int64_t>(prompt_.size()), excluded_prefill_);
    if (!d.ok()) return EndWith(ToGrpc(d.status()));
    std::optional<PoolState> decode = core_->FindPool(d->decode_pool);
    std::optional<PoolState> prefill;
    if (d->path == RoutePath::kDisaggregated && !local_only) {
      prefill = core_->FindPool(d->prefill_pool);
    }
    if (!decode) return EndWith(grpc::Status(grpc::StatusCode::UNAVAILABLE, "no decode pool"));
    decode_ = *decode;
    downstream_id_ = attempt_ == 0 ? request_id_ : absl::StrCat(request_id_, "/", attempt_);
    ++attempt_;
    Hold(decode_.reg.name);
    decode_active_ = true;
    if (!prefill) {
      path_ = "local";
      prefill_.reset();
      return StartDecode(std::nullopt, "");
    }
    path_ = "disaggregated";
    prefill_ = *prefill;
    StartReserve();
  }

  void StartReserve() {
    auto& call = reserves_.emplace_back(
        std::make_unique<UnaryCall<v1::ReserveRequest, v1::ReserveResponse>>());
    call->ctx = DownstreamContext();
    call->req.set_request_id(downstream_id_);
    call->req.set_prompt_tokens(static_cast<int32_t>(prompt_.size()));
    call->req.set_max_tokens(sampling_.max_tokens());
    call->req.set_ttl_ms(
        static_cast<int32_t>(absl::ToInt64Milliseconds(core_->options().reservation_ttl)));
    auto* c = call.get();
    client_ = core_->Client(decode_.reg.address);
    Ref();
    client_->decode->async()->Reserve(c->ctx.get(), &c->req, &c->resp, [this, c](grpc::Status s) {
      Post([this, c, s] { OnReserveDone(c->resp, s); });
      Unref();
    });
  }

  void OnReserveDone(const v1::ReserveResponse& resp, const grpc::Status& s) {
    if (done_) return;
    if (!s.ok()) {
      const grpc::StatusCode code = s.error_code();
      if (code == grpc::StatusCode::UNAVAILABLE) core_->MarkDown(decode_.reg.name);
      if (code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::CANCELLED ||
          code == grpc::StatusCode::DEADLINE_EXCEEDED ||
          code == grpc::StatusCode::RESOURCE_EXHAUSTED || ctx_->IsCancelled()) {
        return EndWith(Prefixed(absl::StrCat("decode pool ", decode_.reg.name, ": Reserve: "), s));
      }
      // The decode pool cannot take a transfer (e.g. UNIMPLEMENTED, a layout it cannot
      // accept): it can still prefill the prompt itself.
      LOG(WARNING) << request_id_ << ": Reserve on " << decode_.reg.name << " failed ("
                   << s.error_message() << "); falling back to local prefill";
      decode_active_ = false;
      prefill_failures_ = 2;
      return Dispatch(/*local_only=*/true);
    }
    StartPrefill(resp.target());
  }

  void StartPrefill(const v1::KvTransferTarget& target) {
    auto& call = prefills_.emplace_back(
        std::make_unique<UnaryCall<v1::PrefillRequest, v1::PrefillResponse>>());
    call->ctx = DownstreamContext();
    call->req.set_request_id(downstream_id_);
    call->req.mutable_prompt_token_ids()->Add(prompt_.begin(), prompt_.end());
    *call->req.mutable_sampling() = sampling_;
    *call->req.mutable_target() = target;
    transfer_id_ = target.transfer_id();
    Hold(prefill_->reg.name);
    prefill_active_ = true;
    auto* c = call.get();
    auto client = core_->Client(prefill_->reg.address);
    Ref();
    client->prefill->async()->Prefill(c->ctx.get(), &c->req, &c->resp, [this, c](grpc::Status s) {
      Post([this, c, s] { OnPrefillDone(c->resp, s); });
      Unref();
    });
  }

  void OnPrefillDone(const v1::PrefillResponse& resp, const grpc::Status& s) {
    prefill_active_ = false;
    if (done_) return;
    if (s.ok()) {
      pool_queue_us_ = resp.queue_us();
      pool_prefill_us_ = resp.prefill_us();
      transfer_us_ = resp.transfer_us();
      transport_ = resp.transport();
      transfer_bytes_ = resp.transfer_bytes();
      const int32_t first = resp.first_token_id();
      EmitTokens({first});
      if (done_) return;  // a stop string matched in the first token
      return StartDecode(first, transfer_id_);
    }
    const std::string name = prefill_->reg.name;
    // Free the reservation of this attempt; the retry reserves again.
    core_->CancelOnPool(decode_, downstream_id_);
    decode_active_ = false;
    if (s.error_code() == grpc::StatusCode::CANCELLED ||
        s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED || ctx_->IsCancelled()) {
      return EndWith(Prefixed(absl::StrCat("prefill pool ", name, ": "), s));
    }
    LOG(WARNING) << request_id_ << ": prefill on " << name << " failed (" << s.error_code() << ": "
                 << s.error_message() << "); "
                 << (prefill_failures_ == 0 ? "retrying" : "falling back to local prefill");
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) core_->MarkDown(name);
    excluded_prefill_.insert(name);
    ++prefill_failures_;
    Dispatch(/*local_only=*/prefill_failures_ >= 2);
  }

  void StartDecode(std::optional<int32_t> first_token, const std::string& transfer_id) {
    decode_ctx_.push_back(DownstreamContext());
    decode_req_.set_request_id(downstream_id_);
    decode_req_.clear_prompt_token_ids();
    decode_req_.mutable_prompt_token_ids()->Add(prompt_.begin(), prompt_.end());
    *decode_req_.mutable_sampling() = sampling_;
    decode_req_.set_transfer_id(transfer_id);
    if (first_token) {
      decode_req_.set_first_token_id(*first_token);
    } else {
      decode_req_.clear_first_token_id();
    }
    client_ = core_->Client(decode_.reg.address);
    Ref();
    (new DecodeCall(this))->Start(client_->decode.get(), decode_ctx_.back().get(), &decode_req_);
  }

  void OnDecodeMessage(const v1::DecodeResponse& msg) {
    if (done_) return;
    if (msg.token_ids_size() > 0) {
      EmitTokens({msg.token_ids().begin(), msg.token_ids().end()});
      if (done_) return;
    }
    if (msg.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      if (!prefill_) {
        pool_queue_us_ = msg.queue_us();
        pool_prefill_us_ = msg.prefill_us();
      }
      decode_active_ = false;  // the pool finished the request and freed its KV
      FinishOk(msg.finish_reason());
    }
  }

  void OnDecodeDone(const grpc::Status& s) {
    if (done_) return;
    if (s.ok()) {
      decode_active_ = false;
      return FinishOk(completion_tokens_ >= sampling_.max_tokens() ? v1::FINISH_REASON_LENGTH
                                                                   : v1::FINISH_REASON_UNSPECIFIED);
    }
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) core_->MarkDown(decode_.reg.name);
    EndWith(Prefixed(absl::StrCat("decode pool ", decode_.reg.name, ": "), s));
  }

  // Appends generated tokens to the next message (text through the detokenizer and the
  // stop strings); ends the request when a stop string matches.
  void EmitTokens(const std::vector<int32_t>& ids) {
    const Clock::time_point now = Clock::now();
    for (size_t i = 0; i < ids.size() && completion_tokens_ < sampling_.max_tokens(); ++i) {
      if (completion_tokens_ == 0) {
        t_first_ = now;
        core_->ttft().Observe(Seconds(now - t0_));
      } else {
        core_->inter_token().Observe(Seconds(now - t_last_) / static_cast<double>(ids.size()));
      }
      ++completion_tokens_;
      pending_.add_token_ids(ids[i]);
      has_pending_ = true;
      absl::StatusOr<std::string> piece = detok_.Add(ids[i]);
      if (!piece.ok()) {
        t_last_ = now;
        return EndWith(grpc::Status(
            grpc::StatusCode::INTERNAL,
            absl::StrCat("pool returned token id ", ids[i], ": ", piece.status().message())));
      }
      AppendText(stops_->Add(*piece));
      if (stops_->stopped()) {
        t_last_ = now;
        return FinishOk(v1::FINISH_REASON_STOP_STRING);
      }
    }
    t_last_ = now;
    MaybeWrite();
  }

  void AppendText(const std::string& text) {
    if (!stream_text_ || text.empty()) return;
    pending_.mutable_text()->append(text);
    has_pending_ = true;
  }

  void FinishOk(v1::FinishReason reason) {
    if (reason != v1::FINISH_REASON_STOP_STRING) {
      AppendText(stops_->Add(detok_.Flush()));
      AppendText(stops_->Flush());
      if (stops_->stopped()) reason = v1::FINISH_REASON_STOP_STRING;
    }
    done_ = true;
    CancelDownstream();
    pending_.set_finish_reason(reason);
    pending_.mutable_usage()->set_prompt_tokens(static_cast<int32_t>(prompt_.size()));
    pending_.mutable_usage()->set_completion_tokens(completion_tokens_);
    v1::Timings* t = pending_.mutable_timings();
    t->set_queue_us(Us(t_dispatch_ - t0_) + pool_queue_us_);
    t->set_prefill_us(pool_prefill_us_);
    t->set_transfer_us(transfer_us_);
    t->set_transport(transport_);
    t->set_transfer_bytes(transfer_bytes_);
    t->set_time_to_first_token_us(completion_tokens_ > 0 ? Us(t_first_ - t0_) : 0);
    t->set_total_us(Us(Clock::now() - t0_));
    t->set_mean_inter_token_us(
        completion_tokens_ > 1 ? Us(t_last_ - t_first_) / (completion_tokens_ - 1) : 0);
    t->set_path(path_);
    t->set_prefill_ranks(prefill_ ? prefill_->reg.world_size : 0);
    t->set_decode_ranks(decode_.reg.world_size);
    has_pending_ = true;
    finish_status_ = grpc::Status::OK;
    core_->CountRequest(grpc::StatusCode::OK, path_);
    MaybeWrite();
  }

  void EndWith(grpc::Status status) {
    if (done_) return;
    if (default_deadline_ && status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
        std::chrono::system_clock::now() >= *default_deadline_) {
      // The router's default deadline passed (whichever of the alarm and a downstream
      // call noticed first).
      core_->CountRejection("default_deadline");
      status = grpc::Status(
          grpc::StatusCode::DEADLINE_EXCEEDED,
          absl::StrCat("deadline exceeded: the call set no deadline and the router's default of ",
                       absl::FormatDuration(core_->options().default_deadline),
                       " (default_deadline_ms) passed"));
    }
    done_ = true;
    CancelDownstream();
    finish_status_ = status;
    VLOG(1) << request_id_ << ": " << status.error_code() << " " << status.error_message();
    core_->CountRequest(status.error_code(), path_);
    MaybeWrite();
  }

  // Cancels every downstream call and tells the pools to drop the request's KV.
  void CancelDownstream() {
    if (alarm_) alarm_->Cancel();  // its callback still runs (not fired) and drops its ref
    for (auto& c : reserves_) c->ctx->TryCancel();
    for (auto& c : prefills_) c->ctx->TryCancel();
    for (auto& c : decode_ctx_) c->TryCancel();
    if (prefill_active_ && prefill_) core_->CancelOnPool(*prefill_, downstream_id_);
    if (decode_active_) core_->CancelOnPool(decode_, downstream_id_);
    prefill_active_ = decode_active_ = false;
  }

  void MaybeWrite() {
    if (writing_ || finished_) return;
    if (has_pending_ && !cancelled_) {
      out_ = std::move(pending_);
      pending_.Clear();
      has_pending_ = false;
      out_.set_request_id(request_id_);
      writing_ = true;
      StartWrite(&out_);
      return;
    }
    if (finish_status_) {
      finished_ = true;
      if (admitted_) core_->Release();
      // Before Finish: once the client sees the status, its next stream is admitted.
      if (client_stream_held_) core_->ReleaseClientStream(client_id_);
      client_stream_held_ = false;
      Finish(*finish_status_);
    }
  }

  void Hold(const std::string& pool) {
    core_->AddInflight(pool, 1);
    held_pools_.push_back(pool);
  }

  RouterCore* core_;
  grpc::CallbackServerContext* ctx_;
  const v1::GenerateRequest req_;
  const std::string client_id_;  // identity for the per-client stream limit
  tokenizer::IncrementalDetokenizer detok_;
  std::optional<StopStringMatcher> stops_;
  const Clock::time_point t0_;

  // Serializer.
  std::mutex queue_mu_;
  std::deque<std::function<void()>> queue_;
  bool running_ = false;
  std::atomic<int> refs_{1};  // the server side, released in OnDone

  // Request.
  std::string request_id_;
  std::vector<int32_t> prompt_;
  v1::SamplingParams sampling_;
  bool stream_text_ = true;
  bool admitted_ = false;
  bool client_stream_held_ = false;
  std::optional<std::chrono::system_clock::time_point> default_deadline_;
  std::unique_ptr<grpc::Alarm> alarm_;

  // Routing and downstream calls.
  std::string path_;
  PoolState decode_;
  std::optional<PoolState> prefill_;
  std::set<std::string> excluded_prefill_;
  int prefill_failures_ = 0;
  int attempt_ = 0;
  std::string downstream_id_;
  std::string transfer_id_;
  bool decode_active_ = false;   // the decode pool may hold KV for downstream_id_
  bool prefill_active_ = false;  // a Prefill call is in flight
  std::shared_ptr<PoolClient> client_;
  std::vector<std::unique_ptr<UnaryCall<v1::ReserveRequest, v1::ReserveResponse>>> reserves_;
  std::vector<std::unique_ptr<UnaryCall<v1::PrefillRequest, v1::PrefillResponse>>> prefills_;
  std::vector<std::unique_ptr<grpc::ClientContext>> decode_ctx_;
  v1::DecodeRequest decode_req_;
  std::vector<std::string> held_pools_;

  // Timings (router clock) and pool-reported times.
  Clock::time_point t_dispatch_, t_first_, t_last_;
  int64_t pool_queue_us_ = 0, pool_prefill_us_ = 0, transfer_us_ = 0, transfer_bytes_ = 0;
  std::string transport_;  // of the KV transfer (PrefillResponse.transport)
  int32_t completion_tokens_ = 0;

  // Output.
  v1::GenerateResponse pending_, out_;
  bool has_pending_ = false;
  bool writing_ = false;
  bool cancelled_ = false;
  bool done_ = false;      // the request's outcome is decided
  bool finished_ = false;  // Finish() was called
  std::optional<grpc::Status> finish_status_;
};

}  // namespace

grpc::ServerWriteReactor<v1::GenerateResponse>* StartGenerate(RouterCore* core,
                                                              grpc::CallbackServerContext* ctx,
                                                              const v1::GenerateRequest* req,
                                                              std::string client) {
  return new GenerateReactor(core, ctx, req, std::move(client));
}

namespace {

class RejectedGenerate final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  explicit RejectedGenerate(const absl::Status& s) { Finish(ToGrpc(s)); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerWriteReactor<v1::GenerateResponse>* RejectGenerate(const absl::Status& status) {
  return new RejectedGenerate(status);
}

}  // namespace cpserve::router
