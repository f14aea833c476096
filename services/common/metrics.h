// A Prometheus registry and its pull endpoint (/metrics over HTTP, prometheus-cpp),
// with one-line helpers to get counters, gauges and histograms. A metric is
// identified by (name, labels): asking twice returns the same object, so callers
// can look metrics up where they use them or cache the references. All returned
// references stay valid as long as the Metrics object; updates are thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
}  // namespace prometheus

namespace cpserve::service {

class MetricsHttpServer;

using Labels = std::map<std::string, std::string>;

class Metrics {
 public:
  // A registry with no endpoint yet.
  Metrics();
  ~Metrics();
  // A registry with no endpoint (port -1), or with an endpoint on host:port (0 picks
  // a free port). Unavailable when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const std::string& host, int port);
  // Starts the endpoint on host:port (0 picks a free port; -1 does nothing). Once only.
  absl::Status Serve(const std::string& host, int port);

  prometheus::Counter& Counter(const std::string& name, const std::string& help,
                               const Labels& labels = {});
  prometheus::Gauge& Gauge(const std::string& name, const std::string& help,
                           const Labels& labels = {});
  // `buckets`: upper bounds, increasing (empty: LatencyBucketsSeconds()).
  prometheus::Histogram& Histogram(const std::string& name, const std::string& help,
                                   const Labels& labels = {}, std::vector<double> buckets = {});

  // 100 µs .. ~100 s, factor 2 per bucket (seconds): request and token latencies.
  static std::vector<double> LatencyBucketsSeconds();

  prometheus::Registry& registry() { return *registry_; }
  // The bound port, or -1 without an endpoint.
  int port() const { return port_; }
  // The registry in Prometheus text format (what /metrics serves).
  std::string Text() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsHttpServer> http_;
  int port_ = -1;
};

}  // namespace cpserve::service
