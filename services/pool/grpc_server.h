// The one place the pool and `up` processes build a gRPC server, so that switching
// to the shared server infrastructure (services/common) is a one-file change.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace grpc {
class Server;
class Service;
}  // namespace grpc

namespace cpserve::services {

struct GrpcServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

// Listens on host:port (0 picks a port) with grpc.health.v1 (overall status
// NOT_SERVING until SetServing(true)), optional server reflection, and `services`.
absl::StatusOr<GrpcServer> StartGrpcServer(const std::string& host, int port,
                                           const std::vector<grpc::Service*>& services,
                                           bool reflection);
// Health of the whole server ("") and of each named service.
void SetServing(grpc::Server& server, const std::vector<std::string>& service_names, bool serving);

// "host:port", bracketing IPv6 literals.
std::string HostPort(const std::string& host, int port);

}  // namespace cpserve::services
