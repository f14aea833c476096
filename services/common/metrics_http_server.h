// A minimal HTTP server for Prometheus scrapes: GET /metrics answers the text that
// `render` returns (the Prometheus text exposition); anything else is 404. One thread, one
// connection at a time, every read and write bounded by a timeout.
//
// Why not prometheus-cpp's Exposer: it runs civetweb, whose threads get a fixed
// 100 KiB stack, and glibc carves the static TLS of the process out of that stack
// (OpenBLAS + glog alone take ~90 KiB in cpserve), so civetweb's first thread
// overflows its stack and the process dies.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace cpserve::service {

class MetricsHttpServer {
 public:
  // Listens on host:port (port 0 picks one). host is an IPv4 address or a name.
  // `render` runs on the server's thread, once per scrape.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& host, int port, std::function<std::string()> render);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;
  void Loop();
  void Serve(int fd);

  std::function<std::string()> render_;
  int listen_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  int port_ = 0;
  std::thread thread_;
};

}  // namespace cpserve::service
