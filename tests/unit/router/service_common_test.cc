// services/common: the metrics registry and its /metrics endpoint, the gRPC server
// wrapper's start (picked port) and drain/shutdown.
#include <gtest/gtest.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include "services/common/grpc_server.h"
#include "services/common/metrics.h"

namespace cpserve::service {
namespace {

TEST(MetricsTest, SameNameAndLabelsIsTheSameMetric) {
  auto m = Metrics::Create("127.0.0.1", -1);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)->port(), -1);
  auto& a = (*m)->Counter("cpserve_test_total", "help", {{"code", "OK"}});
  auto& b = (*m)->Counter("cpserve_test_total", "help", {{"code", "OK"}});
  EXPECT_EQ(&a, &b);
  a.Increment(2);
  (*m)->Counter("cpserve_test_total", "help", {{"code", "CANCELLED"}}).Increment();
  (*m)->Gauge("cpserve_depth", "help").Set(5);
  (*m)->Histogram("cpserve_lat_seconds", "help").Observe(0.003);
  const std::string text = (*m)->Text();
  EXPECT_NE(text.find("cpserve_test_total{code=\"OK\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("cpserve_test_total{code=\"CANCELLED\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("cpserve_depth 5"), std::string::npos) << text;
  EXPECT_NE(text.find("cpserve_lat_seconds_count 1"), std::string::npos) << text;
  const auto buckets = Metrics::LatencyBucketsSeconds();
  EXPECT_DOUBLE_EQ(buckets.front(), 1e-4);
  EXPECT_TRUE(std::is_sorted(buckets.begin(), buckets.end()));
}

TEST(MetricsTest, EndpointOnPickedPort) {
  auto m = Metrics::Create("127.0.0.1", 0);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_GT((*m)->port(), 0);
  // The same port cannot be bound twice.
  auto again = Metrics::Create("127.0.0.1", (*m)->port());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);
}

TEST(GrpcServerTest, StartsOnPickedPortDrainsAndStops) {
  GrpcServer server({.host = "127.0.0.1", .port = 0, .metrics_port = 0, .name = "test"});
  int drained = 0;
  server.OnDrain([&] { ++drained; });
  ASSERT_TRUE(server.Start().ok());
  EXPECT_GT(server.port(), 0);
  EXPECT_EQ(server.address(), "127.0.0.1:" + std::to_string(server.port()));
  EXPECT_GT(server.metrics().port(), 0);
  EXPECT_FALSE(server.draining());
  // A second server on the same port fails cleanly.
  GrpcServer clash({.host = "127.0.0.1", .port = server.port(), .name = "clash"});
  EXPECT_EQ(clash.Start().code(), absl::StatusCode::kUnavailable);
  server.BeginDrain();
  server.BeginDrain();
  EXPECT_TRUE(server.draining());
  EXPECT_EQ(drained, 1);
  server.Shutdown(absl::Milliseconds(100));
}

TEST(ShutdownSignalTest, RequestShutdownWakesTheWaiter) {
  InstallShutdownSignalHandlers();
  EXPECT_FALSE(ShutdownRequested());
  RequestShutdown();
  EXPECT_TRUE(ShutdownRequested());
  WaitForShutdownSignal();  // returns at once
  WaitForShutdownSignal();  // and again (the wake-up stays)
}

}  // namespace
}  // namespace cpserve::service
