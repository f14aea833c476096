// Gloo collective throughput on one machine: W ranks as threads of this process, TCP
// over loopback, bootstrapped through a real gRPC rendezvous server.
//
// Sizes are the tensor each rank ends with: for all-gather the gathered output
// (W x the per-rank input), for all-reduce the reduced tensor. Counters follow
// nccl-tests: algbw = size / time; busbw = algbw x (W-1)/W for all-gather and
// x 2(W-1)/W for all-reduce (the bytes each rank's link actually carries).
//
//   build/bench/collectives_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "glog/logging.h"
#include "worker/comm/gloo_group.h"
#include "worker/comm/rendezvous_client.h"
#include "worker/comm/rendezvous_service.h"

namespace cpserve::comm {
namespace {

enum class Op { kAllGather, kAllReduce };

// W ranks: rank 0 runs on the benchmark thread, ranks 1..W-1 on worker threads that
// execute the same (op, bytes, iterations) jobs.
class ThreadPool {
 public:
  explicit ThreadPool(int world) : world_(world) {
    auto server = RendezvousServer::Start("127.0.0.1:0");
    CHECK(server.ok()) << server.status();
    server_ = std::move(*server);
    groups_.resize(world);
    std::vector<std::thread> joiners;
    for (int r = 0; r < world; ++r) {
      joiners.emplace_back([this, r] {
        auto client = RendezvousClient::Connect(server_->address(), std::chrono::seconds(10));
        CHECK(client.ok()) << client.status();
        auto g = CreateGlooGroup(**client, RendezvousPrefix("bench", 1), r, world_,
                                 {.timeout = std::chrono::seconds(60)});
        CHECK(g.ok()) << g.status();
        groups_[r] = std::move(*g);
      });
    }
    for (auto& t : joiners) t.join();
    for (int r = 1; r < world; ++r) workers_.emplace_back([this, r] { Work(r); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  // Posts a job (op, bytes, iterations) to ranks 1..W-1.
  void Post(Op op, size_t bytes, int64_t iterations) {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = {op, bytes, iterations};
    ++generation_;
    pending_ = world_ - 1;
    cv_.notify_all();
  }
  void WaitWorkers() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return pending_ == 0; });
  }
  static std::function<void()> Step(CollectiveGroup& g, Op op, size_t bytes,
                                    std::vector<Tensor>& keep) {
    const int64_t elems = static_cast<int64_t>(bytes / sizeof(float));
    if (op == Op::kAllGather) {
      keep = {Tensor::Zeros({elems / g.world_size()}, DType::kF32),
              Tensor::Zeros({elems / g.world_size() * g.world_size()}, DType::kF32)};
      return [&g, &keep] { CHECK(g.AllGather(keep[0], keep[1]).ok()); };
    }
    keep = {Tensor::Zeros({elems}, DType::kF32)};
    return [&g, &keep] { CHECK(g.AllReduce(keep[0]).ok()); };
  }
  CollectiveGroup& group(int r) { return *groups_[r]; }
  int world() const { return world_; }

 private:
  struct Job {
    Op op;
    size_t bytes;
    int64_t iterations;
  };
  void Work(int r) {
    int64_t seen = 0;
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
      }
      std::vector<Tensor> keep;
      auto step = Step(*groups_[r], job.op, job.bytes, keep);
      for (int64_t i = 0; i < job.iterations; ++i) step();
      {
        std::lock_guard<std::mutex> lock(mu_);
        --pending_;
      }
      cv_.notify_all();
    }
  }

  const int world_;
  std::unique_ptr<RendezvousServer> server_;
  std::vector<std::unique_ptr<CollectiveGroup>> groups_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  Job job_{};
  int64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

ThreadPool& Pool(int world) {
  static std::map<int, std::unique_ptr<ThreadPool>> pools;
  auto& p = pools[world];
  if (p == nullptr) p = std::make_unique<ThreadPool>(world);
  return *p;
}

void BM_Collective(benchmark::State& state, Op op) {
  const int world = static_cast<int>(state.range(0));
  const size_t bytes = static_cast<size_t>(state.range(1));
  ThreadPool& pool = Pool(world);
  std::vector<Tensor> keep;
  auto step = ThreadPool::Step(pool.group(0), op, bytes, keep);
  pool.Post(op, bytes, state.max_iterations);
  for (auto _ : state) step();
  pool.WaitWorkers();
  const double algbw = static_cast<double>(bytes);
  const double factor = op == Op::kAllGather ? (world - 1.0) / world : 2.0 * (world - 1.0) / world;
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
  state.counters["algbw"] =
      benchmark::Counter(algbw, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["busbw"] =
      benchmark::Counter(algbw * factor, benchmark::Counter::kIsIterationInvariantRate);
}

void Args(benchmark::internal::Benchmark* b) {
  for (int world : {2, 4}) {
    for (int64_t bytes :
         {int64_t{4} << 10, int64_t{256} << 10, int64_t{4} << 20, int64_t{32} << 20}) {
      b->Args({world, bytes});
    }
  }
  b->ArgNames({"world", "bytes"})->UseRealTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK_CAPTURE(BM_Collective, all_gather, Op::kAllGather)->Apply(Args);
BENCHMARK_CAPTURE(BM_Collective, all_reduce, Op::kAllReduce)->Apply(Args);

}  // namespace
}  // namespace cpserve::comm

BENCHMARK_MAIN();
