// Shared server infrastructure of every cpserve service binary (router, pool leaders):
//
//   cpserve::service::InitLogging(argv0, verbosity);        // glog to stderr, once
//   cpserve::service::InstallShutdownSignalHandlers();       // SIGTERM / SIGINT
//   GrpcServer server({.host = ..., .port = ..., .metrics_port = ..., .name = "router"});
//   server.AddService(&generation_service, Generation::service_full_name());
//   CHECK_OK(server.Start());                                // health SERVING, reflection on
//   std::cout << server.address();                           // port 0 -> the picked port
//   server.metrics().Counter("cpserve_x_total", "help", {{"code", "OK"}}).Increment();
//   server.RunUntilShutdownSignal();  // blocks; then drains (see below) and stops
//
// Graceful shutdown (SIGTERM/SIGINT or RequestShutdown()): every health status turns
// NOT_SERVING and the on-drain callbacks run (services stop admitting new work there),
// in-flight calls get up to `drain_grace` to finish, then the gRPC server is shut down
// (remaining calls are cancelled) and RunUntilShutdownSignal() returns.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "services/common/metrics.h"

namespace grpc {
class Server;
class ServerCredentials;
class Service;
}  // namespace grpc

namespace cpserve::service {

// Initializes glog once per process: logs to stderr, VLOG level `verbosity`.
void InitLogging(const char* program, int verbosity);

// Installs async-signal-safe SIGTERM/SIGINT handlers that make WaitForShutdownSignal()
// return. Idempotent. A second signal while draining exits at once (status 130).
void InstallShutdownSignalHandlers();
// Blocks until a shutdown signal arrived or RequestShutdown() was called.
void WaitForShutdownSignal();
// Wakes WaitForShutdownSignal() as a signal would (tests, admin endpoints).
void RequestShutdown();
bool ShutdownRequested();

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;                  // 0: pick a free port (see GrpcServer::port())
  int metrics_port = -1;         // -1: no /metrics endpoint; 0: pick a free port
  std::string name = "cpserve";  // for logs
  absl::Duration drain_grace = absl::Seconds(10);
  // Null: plaintext (grpc::InsecureServerCredentials). See services/common/tls.h.
  std::shared_ptr<grpc::ServerCredentials> credentials = nullptr;
  // Largest message received or sent; 0: gRPC's defaults (4 MiB in, unlimited out).
  // A larger one ends the call with RESOURCE_EXHAUSTED.
  int max_message_bytes = 0;
};

class GrpcServer {
 public:
  explicit GrpcServer(ServerOptions options);
  ~GrpcServer();  // Shuts down (without grace) if still running.
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // Registers a service (not owned; must outlive the server). Before Start() only.
  // Its health status is reported under `full_name` (e.g. "cpserve.v1.Generation", which
  // the generated class returns from service_full_name()).
  void AddService(grpc::Service* service, std::string full_name);
  // Runs on the start of a drain, before health NOT_SERVING is observable to all.
  void OnDrain(std::function<void()> callback);

  // Starts the metrics endpoint and the gRPC server; health SERVING for "" and every
  // service; server reflection enabled. Unavailable when the port cannot be bound.
  absl::Status Start();

  int port() const { return port_; }
  std::string address() const;  // host:port
  // The registry exists from construction (services can create their metrics before
  // Start()); the endpoint starts with Start().
  Metrics& metrics() { return *metrics_; }
  grpc::Server* server() { return server_.get(); }
  bool draining() const { return draining_.load(); }

  // Stop admitting: health NOT_SERVING, on-drain callbacks. Idempotent.
  void BeginDrain();
  // BeginDrain(), then gRPC Shutdown with `grace` for in-flight calls, then Wait.
  void Shutdown(absl::Duration grace);
  // WaitForShutdownSignal(), then Shutdown(options.drain_grace).
  void RunUntilShutdownSignal();

 private:
  ServerOptions options_;
  std::unique_ptr<Metrics> metrics_;
  std::vector<grpc::Service*> services_;
  std::vector<std::string> service_names_;
  std::vector<std::function<void()>> on_drain_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<bool> draining_{false};
  bool shut_down_ = false;
};

}  // namespace cpserve::service
