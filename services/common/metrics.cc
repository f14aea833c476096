#include "services/common/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <exception>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "services/common/metrics_http_server.h"

namespace cpserve::service {

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {}
Metrics::~Metrics() = default;

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const std::string& host, int port) {
  auto m = std::make_unique<Metrics>();
  if (absl::Status s = m->Serve(host, port); !s.ok()) return s;
  return m;
}

absl::Status Metrics::Serve(const std::string& host, int port) {
  if (port < 0) return absl::OkStatus();
  if (http_ != nullptr) return absl::FailedPreconditionError("metrics endpoint already started");
  // Our own small HTTP server rather than prometheus-cpp's civetweb Exposer: civetweb
  // threads have a fixed 100 KiB stack, from which glibc takes this binary's
  // thread-local storage (OpenBLAS, glog), and they crashed (metrics_http_server.h).
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
      MetricsHttpServer::Start(host, port, [this] { return Text(); });
  if (!http.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", host, ":", port, ": ", http.status().message()));
  }
  http_ = *std::move(http);
  port_ = http_->port();
  return absl::OkStatus();
}

prometheus::Counter& Metrics::Counter(const std::string& name, const std::string& help,
                                      const Labels& labels) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(*registry_).Add(labels);
}

prometheus::Gauge& Metrics::Gauge(const std::string& name, const std::string& help,
                                  const Labels& labels) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add(labels);
}

prometheus::Histogram& Metrics::Histogram(const std::string& name, const std::string& help,
                                          const Labels& labels, std::vector<double> buckets) {
  if (buckets.empty()) buckets = LatencyBucketsSeconds();
  return prometheus::BuildHistogram()
      .Name(name)
      .Help(help)
      .Register(*registry_)
      .Add(labels, prometheus::Histogram::BucketBoundaries(std::move(buckets)));
}

std::vector<double> Metrics::LatencyBucketsSeconds() {
  std::vector<double> b;
  for (double v = 1e-4; v < 120.0; v *= 2) b.push_back(v);
  return b;
}

std::string Metrics::Text() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace cpserve::service
