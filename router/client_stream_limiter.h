// Per-client limit on concurrent Generate streams (pure counter; the caller serializes
// access). A client is its token identity when auth is on, else its peer IP address.
#pragma once

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"

namespace cpserve::router {

class ClientStreamLimiter {
 public:
  // max_streams <= 0: no limit.
  explicit ClientStreamLimiter(int32_t max_streams) : max_(max_streams) {}

  // OK and counts a stream of `client`, or RESOURCE_EXHAUSTED (nothing counted) when the
  // client already has max_streams open.
  absl::Status TryAcquire(const std::string& client);
  // Ends a stream counted by TryAcquire.
  void Release(const std::string& client);

  int64_t open_streams(const std::string& client) const;
  size_t num_clients() const { return open_.size(); }  // clients with an open stream
  int32_t max_streams() const { return max_; }

 private:
  int32_t max_;
  absl::flat_hash_map<std::string, int64_t> open_;
};

// The client part of a gRPC peer string: "ipv4:1.2.3.4:567" -> "1.2.3.4",
// "ipv6:[::1]:567" -> "::1", "unix:/path" -> "unix:/path" (kept whole).
std::string PeerHost(const std::string& peer);

}  // namespace cpserve::router
