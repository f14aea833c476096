// A grpc.health.v1.Health/Check client that needs no generated health stubs (the
// Debian gRPC package ships none): the request and the answer are tiny protobuf
// messages written and read by hand.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace grpc {
class ChannelCredentials;
}  // namespace grpc

namespace cpserve::up {

enum class HealthStatus { kUnknown, kServing, kNotServing, kServiceUnknown };

// Checks `service` ("" = the whole server) at host:port within `timeout`. Errors
// are the call's status (UNAVAILABLE while nothing listens, DEADLINE_EXCEEDED...).
absl::StatusOr<HealthStatus> CheckHealth(const std::string& address, const std::string& service,
                                         absl::Duration timeout);
// The same over `credentials` (TLS / mTLS; null: plaintext).
absl::StatusOr<HealthStatus> CheckHealth(const std::string& address, const std::string& service,
                                         absl::Duration timeout,
                                         std::shared_ptr<grpc::ChannelCredentials> credentials);

}  // namespace cpserve::up
