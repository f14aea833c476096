// Client of a pool's rendezvous store (rendezvous_service.h). Every call has a
// deadline; a server that is not up yet is waited for (wait_for_ready) until then.
//
// Namespacing: a client is bound to the server incarnation it saw at Connect, so it
// never reads keys of a restarted leader (FAILED_PRECONDITION instead), and callers
// put every key under a per-pool, per-generation prefix (RendezvousPrefix) so a group
// re-formed under the same leader never reads the keys of its predecessor.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cpserve/v1/rendezvous.grpc.pb.h"

namespace cpserve::comm {

// "<pool>/<generation>/<group>/": the key prefix of one collective group incarnation.
// The leader picks `generation` (e.g. its start count or a counter it bumps when it
// re-forms a broken group) and sends it to the other ranks with their assignment.
std::string RendezvousPrefix(const std::string& pool, int64_t generation,
                             const std::string& group = "cp");

class RendezvousClient {
 public:
  // Connects to host:port and fetches the server incarnation, waiting up to
  // `timeout` for the server to come up. `rpc_timeout` bounds later Set/Add calls.
  static absl::StatusOr<std::unique_ptr<RendezvousClient>> Connect(
      const std::string& address, std::chrono::milliseconds timeout,
      std::chrono::milliseconds rpc_timeout = std::chrono::seconds(10));

  const std::string& address() const { return address_; }
  uint64_t incarnation() const { return incarnation_; }

  absl::Status Set(const std::string& key, const std::string& value);
  // Waits up to `timeout` for key (timeout 0: NOT_FOUND at once when absent).
  absl::StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout);
  // Waits up to `timeout` until every key is set.
  absl::Status Wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout);
  // Atomically adds delta to the integer under key (absent = 0); returns the new value.
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta);
  // Deletes every key with the prefix; returns how many.
  absl::StatusOr<int64_t> DeletePrefix(const std::string& prefix);

 private:
  RendezvousClient() = default;
  std::string address_;
  uint64_t incarnation_ = 0;
  std::chrono::milliseconds rpc_timeout_{0};
  std::unique_ptr<cpserve::v1::Rendezvous::Stub> stub_;
};

}  // namespace cpserve::comm
