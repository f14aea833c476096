#include "services/pool/pool_metrics.h"

#include <map>

#include "absl/strings/str_cat.h"

namespace cpserve::services {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

// Latency buckets in seconds: 1 ms to 60 s, roughly ×2.5 apart.
Histogram::BucketBoundaries LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

}  // namespace

PoolMetrics::PoolMetrics(prometheus::Registry& registry, const std::string& pool,
                         const std::string& role, int rank) {
  const prometheus::Labels labels{{"pool", pool}, {"role", role}, {"rank", absl::StrCat(rank)}};
  requests_ = &BuildCounter()
                   .Name("cpserve_pool_requests_total")
                   .Help("Finished pool RPCs by method and gRPC status code.")
                   .Labels(labels)
                   .Register(registry);
  ttft_ = &BuildHistogram()
               .Name("cpserve_pool_time_to_first_token_seconds")
               .Help("From receipt of a Decode or Prefill call to its first token.")
               .Labels(labels)
               .Register(registry)
               .Add({}, LatencyBuckets());
  itl_ = &BuildHistogram()
              .Name("cpserve_pool_inter_token_latency_seconds")
              .Help("Time between consecutive output tokens of a Decode stream.")
              .Labels(labels)
              .Register(registry)
              .Add({}, LatencyBuckets());
  transfer_bytes_ = &BuildCounter()
                         .Name("cpserve_pool_transfer_bytes_total")
                         .Help(
                             "KV bytes pushed to decode pools, by transport (cuda-ipc, "
                             "ucx-pinned-staging, ucx-host-staging, ucx-cuda, ucx-host).")
                         .Labels(labels)
                         .Register(registry);
  transfer_seconds_ = &BuildHistogram()
                           .Name("cpserve_pool_transfer_seconds")
                           .Help("Time of one request's KV transfer, by transport.")
                           .Labels(labels)
                           .Register(registry);
  auto& gauges = BuildGauge()
                     .Name("cpserve_pool_load")
                     .Help("Load of the pool's engine (kind: queued, running, active_rpcs).")
                     .Labels(labels)
                     .Register(registry);
  queue_depth_ = &gauges.Add({{"kind", "queued"}});
  running_ = &gauges.Add({{"kind", "running"}});
  active_rpcs_ = &gauges.Add({{"kind", "active_rpcs"}});
  auto& kv = BuildGauge()
                 .Name("cpserve_pool_kv_blocks")
                 .Help("KV cache blocks of this rank by state (used, free).")
                 .Labels(labels)
                 .Register(registry);
  kv_used_ = &kv.Add({{"state", "used"}});
  kv_free_ = &kv.Add({{"state", "free"}});
}

void PoolMetrics::RequestDone(const std::string& rpc, absl::StatusCode code) {
  requests_->Add({{"rpc", rpc}, {"code", absl::StatusCodeToString(code)}}).Increment();
}

void PoolMetrics::ObserveTimeToFirstToken(double seconds) { ttft_->Observe(seconds); }
void PoolMetrics::ObserveInterTokenLatency(double seconds) { itl_->Observe(seconds); }

void PoolMetrics::ObserveTransfer(const std::string& transport, int64_t bytes, double seconds) {
  const std::map<std::string, std::string> label = {{"transport", transport}};
  transfer_bytes_->Add(label).Increment(static_cast<double>(bytes));
  transfer_seconds_->Add(label, LatencyBuckets()).Observe(seconds);
}

void PoolMetrics::SetLoad(const EngineStats& stats, int64_t active_rpcs) {
  queue_depth_->Set(static_cast<double>(stats.waiting));
  running_->Set(static_cast<double>(stats.running));
  active_rpcs_->Set(static_cast<double>(active_rpcs));
  kv_free_->Set(stats.free_kv_blocks);
  kv_used_->Set(stats.total_kv_blocks - stats.free_kv_blocks);
}

}  // namespace cpserve::services
