// The load generator of `cpserve bench`: drives hundreds of concurrent server-streaming
// calls from one thread with the gRPC callback API, closed loop (N clients, each sending
// its next request when the previous one ends) or open loop (Poisson arrivals at a fixed
// rate, whatever the number in flight), and records each stream's token timings.
//
// Targets: the router's public Generation/Generate, or a decode pool leader's
// DecodePool/Decode with local prefill (no transfer_id) — the same work a router does for
// a short prompt, minus the router — to measure the router's added latency.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "services/bench/bench_report.h"
#include "services/bench/channel.h"
#include "services/bench/workload.h"

namespace cpserve::bench {

enum class Target { kRouter, kPool };

struct LoadOptions {
  Target target = Target::kRouter;
  int64_t concurrency = 1;  // closed loop: clients (used when request_rate <= 0)
  double request_rate = 0;  // > 0: open loop at this many requests per second
  uint64_t seed = 0;        // of the arrival schedule
  bool ignore_eos = true;
  bool stream_text = true;  // router only: ask for text deltas besides token ids
  int64_t timeout_ms = 0;   // per-request deadline; 0: none
  std::string request_id_prefix = "bench";
  // When it becomes true (e.g. from a SIGINT handler): send nothing more, cancel the
  // streams in flight at their next message, and return what was sent. May be null.
  const std::atomic<bool>* stop = nullptr;
};

struct Progress {
  int64_t total = 0;
  int64_t started = 0;
  int64_t finished = 0;
  int64_t ok = 0;
  int64_t in_flight = 0;
  int64_t output_tokens = 0;
  double elapsed_s = 0;
};

struct LoadResult {
  // In the order of `requests`; only those sent when `stop` ended the run early.
  std::vector<RequestRecord> records;
  bool stopped = false;
  double duration_s = 0;  // first send to last stream end
  int64_t peak_in_flight = 0;
};

// Sends `requests` over `channels` (round robin) and waits for every stream to end.
// `on_progress` (may be null) is called from the calling thread about every
// `progress_period_s` while requests run, and once at the end.
LoadResult RunLoad(const std::vector<std::shared_ptr<grpc::Channel>>& channels,
                   const ConnectionOptions& connection, const std::vector<PlannedRequest>& requests,
                   const LoadOptions& options,
                   const std::function<void(const Progress&)>& on_progress,
                   double progress_period_s = 0.2);

}  // namespace cpserve::bench
