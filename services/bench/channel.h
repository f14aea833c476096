// Channels and per-call credentials of `cpserve bench`.
//
// Hook for TLS and auth: `cpserve generate` is getting --tls_ca / --token (another
// change). When it lands, fill ConnectionOptions from those flags in bench_main.cc and
// build the credentials here (or call the shared helper of services/client); until then
// a non-empty tls_ca or token is refused with UNIMPLEMENTED rather than silently ignored.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cpserve::bench {

struct ConnectionOptions {
  std::string address;  // host:port
  std::string tls_ca;   // PEM file of the CA that signed the server's certificate; "": plain
  std::string token;    // bearer token sent with every call; "": none
  // Separate HTTP/2 connections to spread the streams over (each has its own channel).
  int num_channels = 1;
};

// `num_channels` channels to `address`, each on its own connection.
absl::StatusOr<std::vector<std::shared_ptr<grpc::Channel>>> MakeChannels(
    const ConnectionOptions& options);

// Adds per-call credentials (the bearer token) to a call's context.
void ApplyCallCredentials(const ConnectionOptions& options, grpc::ClientContext& ctx);

}  // namespace cpserve::bench
