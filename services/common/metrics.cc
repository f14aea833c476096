#include "services/common/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <exception>
#include <sstream>

#include "absl/strings/str_cat.h"

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
  if (exposer_ != nullptr) return absl::FailedPreconditionError("metrics endpoint already started");
  try {
    // civetweb takes "host:port"; port 0 binds an ephemeral port.
    exposer_ = std::make_unique<prometheus::Exposer>(absl::StrCat(host, ":", port), 1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", host, ":", port, ": ", e.what()));
  }
  exposer_->RegisterCollectable(registry_);
  const std::vector<int> ports = exposer_->GetListeningPorts();
  port_ = ports.empty() ? port : ports.front();
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
