// Prometheus metrics of one pool rank (DESIGN §6, issue 6): requests by RPC and
// status, time to first token and inter-token latency, queue depth, running
// requests, KV blocks used and free, KV transfer bytes and time. Every metric
// carries the labels pool, role and rank. Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "worker/engine/engine_types.h"

namespace cpserve::services {

class PoolMetrics {
 public:
  // Registers the metrics in `registry`, which must outlive this object.
  PoolMetrics(prometheus::Registry& registry, const std::string& pool, const std::string& role,
              int rank);

  // One finished RPC: rpc is "Decode", "Prefill", "Reserve" or "Cancel".
  void RequestDone(const std::string& rpc, absl::StatusCode code);
  void ObserveTimeToFirstToken(double seconds);
  void ObserveInterTokenLatency(double seconds);
  // One finished KV push, by the path it took ("cuda-ipc", "ucx-pinned-staging", ...).
  void ObserveTransfer(const std::string& transport, int64_t bytes, double seconds);
  // Engine load and the RPCs in flight on this rank.
  void SetLoad(const EngineStats& stats, int64_t active_rpcs);

 private:
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Family<prometheus::Counter>* transfer_bytes_;      // label transport
  prometheus::Family<prometheus::Histogram>* transfer_seconds_;  // label transport
  prometheus::Gauge* queue_depth_;
  prometheus::Gauge* running_;
  prometheus::Gauge* active_rpcs_;
  prometheus::Gauge* kv_used_;
  prometheus::Gauge* kv_free_;
};

}  // namespace cpserve::services
