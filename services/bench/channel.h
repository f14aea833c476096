// Channels and per-call credentials of `cpserve bench`.
//
// TLS and auth as `cpserve generate` does them: --tls_ca (+ --tls_cert/--tls_key) and a
// bearer token (--token or $CPSERVE_TOKEN).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/common/tls.h"

namespace cpserve::bench {

struct ConnectionOptions {
  std::string address;    // host:port
  service::TlsFiles tls;  // empty: plaintext; else TLS trusting tls.ca (+ client cert)
  std::string token;      // bearer token sent with every call; "": none
  // Separate HTTP/2 connections to spread the streams over (each has its own channel).
  int num_channels = 1;
};

// `num_channels` channels to `address`, each on its own connection.
absl::StatusOr<std::vector<std::shared_ptr<grpc::Channel>>> MakeChannels(
    const ConnectionOptions& options);

// Adds per-call credentials (the bearer token) to a call's context.
void ApplyCallCredentials(const ConnectionOptions& options, grpc::ClientContext& ctx);

}  // namespace cpserve::bench
