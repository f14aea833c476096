#include "tests/e2e/chaos/chaos_load.h"

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "cpserve/v1/generation.grpc.pb.h"

namespace cpserve::chaos {
namespace {

// Cancels registered calls at their time, from one thread. A call unregisters before
// its context is destroyed, so a cancel never touches a freed context.
class Canceller {
 public:
  Canceller() : thread_([this] { Loop(); }) {}
  ~Canceller() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  uint64_t Add(Clock::time_point when, grpc::ClientContext* ctx, std::atomic<bool>* fired) {
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t id = next_++;
    queue_.emplace(std::make_pair(when, id), Entry{ctx, fired});
    cv_.notify_all();
    return id;
  }
  void Remove(Clock::time_point when, uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.erase(std::make_pair(when, id));
  }

 private:
  struct Entry {
    grpc::ClientContext* ctx;
    std::atomic<bool>* fired;
  };
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (queue_.empty()) {
        cv_.wait(lock);
        continue;
      }
      auto first = queue_.begin();
      // A copy: wait_until reads its deadline again after waking, when Remove() may
      // have erased this node (found by the ASan run).
      const Clock::time_point when = first->first.first;
      if (Clock::now() < when) {
        cv_.wait_until(lock, when);
        continue;
      }
      first->second.fired->store(true);
      first->second.ctx->TryCancel();
      queue_.erase(first);
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<Clock::time_point, uint64_t>, Entry> queue_;
  uint64_t next_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

RequestResult RunOne(v1::Generation::Stub& stub, Canceller& canceller,
                     const std::vector<int32_t>& prompt, const RequestSpec& spec) {
  RequestResult r;
  grpc::ClientContext ctx;
  r.start = Clock::now();
  r.deadline = r.start + spec.deadline;
  ctx.set_deadline(std::chrono::system_clock::now() + spec.deadline);
  v1::GenerateRequest req;
  for (int32_t t : prompt) req.mutable_prompt()->mutable_token_ids()->add_ids(t);
  req.mutable_sampling()->set_max_tokens(spec.max_tokens);
  req.set_stream_text(false);
  req.set_request_id(spec.id);
  std::atomic<bool> fired{false};
  Clock::time_point cancel_at;
  uint64_t cancel_id = 0;
  if (spec.cancel == CancelMode::kAfterTime) {
    cancel_at = r.start + spec.cancel_after;
    cancel_id = canceller.Add(cancel_at, &ctx, &fired);
  }
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
    r.tokens.insert(r.tokens.end(), resp.token_ids().begin(), resp.token_ids().end());
    if (resp.has_timings()) r.path = resp.timings().path();
    if (resp.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) r.finished = true;
    if (spec.cancel == CancelMode::kAfterTokens && !fired.load() &&
        static_cast<int>(r.tokens.size()) >= spec.cancel_after_tokens) {
      fired.store(true);
      ctx.TryCancel();
    }
  }
  const grpc::Status status = reader->Finish();
  r.end = Clock::now();
  if (spec.cancel == CancelMode::kAfterTime) canceller.Remove(cancel_at, cancel_id);
  r.client_cancelled = fired.load();
  r.code = status.error_code();
  r.message = status.error_message();
  return r;
}

}  // namespace

std::vector<RequestSpec> MakeRequests(const LoadOptions& o, int num_prompts) {
  std::mt19937 rng(o.seed);
  auto uniform = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  std::vector<RequestSpec> out(o.requests);
  for (size_t i = 0; i < out.size(); ++i) {
    RequestSpec& s = out[i];
    s.id = "chaos-" + std::to_string(o.seed) + "-" + std::to_string(i);
    s.prompt = static_cast<int>(rng() % num_prompts);
    s.max_tokens = 1 + static_cast<int>(rng() % o.max_tokens);
    s.deadline = uniform(o.short_deadline_fraction)
                     ? std::chrono::milliseconds(20 + rng() % o.short_deadline_max.count())
                     : o.long_deadline;
    if (uniform(o.cancel_fraction)) {
      if (rng() % 2 == 0) {
        s.cancel = CancelMode::kAfterTokens;
        s.cancel_after_tokens = 1 + static_cast<int>(rng() % s.max_tokens);
      } else {
        s.cancel = CancelMode::kAfterTime;
        s.cancel_after = std::chrono::milliseconds(rng() % 1000);
      }
    }
  }
  return out;
}

std::vector<RequestResult> RunLoad(const std::string& address,
                                   const std::vector<std::vector<int32_t>>& prompts,
                                   const std::vector<RequestSpec>& requests, int concurrency) {
  std::vector<RequestResult> results(requests.size());
  Canceller canceller;
  std::atomic<size_t> next{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < concurrency; ++t) {
    threads.emplace_back([&] {
      // One channel per client thread: many clients, many connections.
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      auto stub = v1::Generation::NewStub(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
      std::mt19937 rng(
          static_cast<uint32_t>(std::hash<std::thread::id>()(std::this_thread::get_id())));
      for (size_t i; (i = next.fetch_add(1)) < requests.size();) {
        results[i] = RunOne(*stub, canceller, prompts[requests[i].prompt], requests[i]);
        // Like a real client, back off a little after UNAVAILABLE (a pool is down).
        if (results[i].code == grpc::StatusCode::UNAVAILABLE) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 200));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return results;
}

}  // namespace cpserve::chaos
