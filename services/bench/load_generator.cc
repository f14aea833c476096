#include "services/bench/load_generator.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "cpserve/v1/generation.grpc.pb.h"
#include "cpserve/v1/pool.grpc.pb.h"
#include "services/bench/stats.h"
#include "services/common/grpc_status.h"

namespace cpserve::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Shared by the driver thread and the gRPC callback threads.
struct LoadState {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<RequestRecord> records;
  int64_t finished = 0;
  int64_t ok = 0;
  int64_t in_flight = 0;
  int64_t peak_in_flight = 0;
  int64_t output_tokens = 0;
  Clock::time_point last_end;

  void Finish(size_t slot, RequestRecord record) {
    std::lock_guard<std::mutex> lock(mu);
    ok += record.status == "OK";
    output_tokens += record.output_tokens;
    records[slot] = std::move(record);
    ++finished;
    --in_flight;
    last_end = std::max(last_end, Clock::now());
    cv.notify_one();
  }
};

void ReadUsage(const v1::GenerateResponse& r, RequestRecord& rec) {
  if (r.has_usage()) rec.server_prompt_tokens = r.usage().prompt_tokens();
  if (r.has_timings() && !r.timings().transport().empty()) {
    rec.server_prefill_ms = static_cast<double>(r.timings().prefill_us()) / 1e3;
    rec.transfer_ms = static_cast<double>(r.timings().transfer_us()) / 1e3;
    rec.transfer_bytes = r.timings().transfer_bytes();
    rec.transport = r.timings().transport();
  }
}
void ReadUsage(const v1::DecodeResponse& /*r*/, RequestRecord& /*rec*/) {}

// One server-streaming call; deletes itself when the stream ends.
template <typename Request, typename Response>
class StreamCall final : public grpc::ClientReadReactor<Response> {
 public:
  StreamCall(LoadState* state, size_t slot, RequestRecord record, Clock::time_point t0,
             const std::atomic<bool>* stop)
      : state_(state), slot_(slot), record_(std::move(record)), t0_(t0), stop_(stop) {}

  grpc::ClientContext* context() { return &ctx_; }
  Request* request() { return &req_; }

  // Call after the stub's async() method bound this reactor.
  void Start() {
    start_ = last_ = Clock::now();
    record_.start_s = Ms(start_ - t0_) / 1000;
    this->StartRead(&resp_);
    this->StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    const Clock::time_point now = Clock::now();
    const int k = resp_.token_ids_size();
    if (k > 0) {
      if (record_.output_tokens == 0) {
        record_.ttft_ms = Ms(now - start_);
      } else {
        // Tokens that arrive together share the gap since the previous message.
        const double gap = Ms(now - last_) / k;
        record_.itl_ms.insert(record_.itl_ms.end(), k, gap);
      }
      record_.output_tokens += k;
      last_ = now;
    }
    ReadUsage(resp_, record_);
    if (stop_ != nullptr && stop_->load()) ctx_.TryCancel();  // OnDone gets CANCELLED
    this->StartRead(&resp_);
  }

  void OnDone(const grpc::Status& status) override {
    record_.e2e_ms = Ms(Clock::now() - start_);
    record_.status = service::GrpcCodeName(status.error_code());
    if (!status.ok()) record_.error = status.error_message();
    // Release the call (this reactor owns its ClientContext) before telling the driver:
    // once the last stream is reported, RunLoad returns and the caller may drop the
    // channels, and a context destroyed after that races with gRPC's teardown.
    LoadState* const state = state_;
    const size_t slot = slot_;
    RequestRecord record = std::move(record_);
    delete this;
    state->Finish(slot, std::move(record));
  }

 private:
  LoadState* const state_;
  const size_t slot_;
  RequestRecord record_;
  const Clock::time_point t0_;
  const std::atomic<bool>* const stop_;
  grpc::ClientContext ctx_;
  Request req_;
  Response resp_;
  Clock::time_point start_, last_;
};

using RouterCall = StreamCall<v1::GenerateRequest, v1::GenerateResponse>;
using PoolCall = StreamCall<v1::DecodeRequest, v1::DecodeResponse>;

void FillSampling(const PlannedRequest& p, const LoadOptions& o, v1::SamplingParams* s) {
  s->set_max_tokens(static_cast<int32_t>(p.max_tokens));
  s->set_ignore_eos(o.ignore_eos);
}

class Launcher {
 public:
  Launcher(const std::vector<std::shared_ptr<grpc::Channel>>& channels,
           const ConnectionOptions& connection, const LoadOptions& options, LoadState* state,
           Clock::time_point t0)
      : connection_(connection), options_(options), state_(state), t0_(t0) {
    for (const auto& ch : channels) {
      router_stubs_.push_back(v1::Generation::NewStub(ch));
      pool_stubs_.push_back(v1::DecodePool::NewStub(ch));
    }
  }

  void Launch(size_t slot, const PlannedRequest& p) {
    RequestRecord rec;
    rec.index = p.index;
    rec.prompt_tokens = p.prompt_tokens;
    rec.max_tokens = p.max_tokens;
    const std::string id = absl::StrCat(options_.request_id_prefix, "-", p.index);
    const size_t c = next_channel_++ % router_stubs_.size();
    if (options_.target == Target::kRouter) {
      auto* call = new RouterCall(state_, slot, std::move(rec), t0_, options_.stop);
      Prepare(*call->context());
      v1::GenerateRequest& req = *call->request();
      req.set_request_id(id);
      req.set_stream_text(options_.stream_text);
      if (!p.prompt_text.empty()) {
        req.mutable_prompt()->set_text(p.prompt_text);
      } else {
        req.mutable_prompt()->mutable_token_ids()->mutable_ids()->Add(p.prompt_ids.begin(),
                                                                      p.prompt_ids.end());
      }
      FillSampling(p, options_, req.mutable_sampling());
      router_stubs_[c]->async()->Generate(call->context(), &req, call);
      call->Start();
    } else {
      auto* call = new PoolCall(state_, slot, std::move(rec), t0_, options_.stop);
      Prepare(*call->context());
      v1::DecodeRequest& req = *call->request();
      req.set_request_id(id);
      req.mutable_prompt_token_ids()->Add(p.prompt_ids.begin(), p.prompt_ids.end());
      FillSampling(p, options_, req.mutable_sampling());
      pool_stubs_[c]->async()->Decode(call->context(), &req, call);
      call->Start();
    }
  }

 private:
  void Prepare(grpc::ClientContext& ctx) {
    ApplyCallCredentials(connection_, ctx);
    if (options_.timeout_ms > 0) {
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(options_.timeout_ms));
    }
  }

  const ConnectionOptions& connection_;
  const LoadOptions& options_;
  LoadState* const state_;
  const Clock::time_point t0_;
  std::vector<std::unique_ptr<v1::Generation::Stub>> router_stubs_;
  std::vector<std::unique_ptr<v1::DecodePool::Stub>> pool_stubs_;
  size_t next_channel_ = 0;
};

}  // namespace

LoadResult RunLoad(const std::vector<std::shared_ptr<grpc::Channel>>& channels,
                   const ConnectionOptions& connection, const std::vector<PlannedRequest>& requests,
                   const LoadOptions& options,
                   const std::function<void(const Progress&)>& on_progress,
                   double progress_period_s) {
  const int64_t n = static_cast<int64_t>(requests.size());
  const bool open = options.request_rate > 0;
  const std::vector<double> arrivals =
      open ? PoissonArrivals(n, options.request_rate, options.seed) : std::vector<double>();
  const int64_t clients = std::max<int64_t>(1, options.concurrency);
  const auto period = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(std::max(0.01, progress_period_s)));

  LoadState state;
  state.records.resize(requests.size());
  const Clock::time_point t0 = Clock::now();
  state.last_end = t0;
  Launcher launcher(channels, connection, options, &state, t0);
  auto due_at = [&](int64_t i) {
    return t0 +
           std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(arrivals[i]));
  };
  auto snapshot = [&] {
    Progress p;
    p.total = n;
    p.finished = state.finished;
    p.ok = state.ok;
    p.in_flight = state.in_flight;
    p.started = state.finished + state.in_flight;
    p.output_tokens = state.output_tokens;
    p.elapsed_s = Ms(Clock::now() - t0) / 1000;
    return p;
  };

  int64_t next = 0;
  bool stopped = false;
  Clock::time_point next_progress = t0 + period;
  std::unique_lock<std::mutex> lock(state.mu);
  while (state.finished < (stopped ? next : n)) {
    stopped = stopped || (options.stop != nullptr && options.stop->load());
    while (!stopped && next < n &&
           (open ? Clock::now() >= due_at(next) : state.in_flight < clients)) {
      ++state.in_flight;
      state.peak_in_flight = std::max(state.peak_in_flight, state.in_flight);
      lock.unlock();
      launcher.Launch(static_cast<size_t>(next), requests[next]);
      lock.lock();
      ++next;
    }
    if (stopped && state.finished == next) break;
    Clock::time_point wake = next_progress;
    if (open && next < n && !stopped) wake = std::min(wake, due_at(next));
    state.cv.wait_until(lock, wake);
    if (Clock::now() >= next_progress) {
      if (on_progress) {
        const Progress p = snapshot();
        lock.unlock();
        on_progress(p);
        lock.lock();
      }
      next_progress = Clock::now() + period;
    }
  }
  LoadResult result;
  result.duration_s = Ms(state.last_end - t0) / 1000;
  result.peak_in_flight = state.peak_in_flight;
  const Progress last = snapshot();
  result.stopped = stopped;
  result.records = std::move(state.records);
  result.records.resize(static_cast<size_t>(next));
  lock.unlock();
  if (on_progress) on_progress(last);
  return result;
}

}  // namespace cpserve::bench
