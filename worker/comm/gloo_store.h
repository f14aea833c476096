// gloo::rendezvous::Store over the pool's gRPC rendezvous store, so Gloo's
// connectFullMesh exchanges its TCP addresses through rank 0. Every key is put under
// `prefix` (RendezvousPrefix). Gloo's Store interface reports errors by throwing:
// failures throw gloo::IoException, and the last error is kept as an absl::Status
// (last_error) so the caller can return its real code.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gloo/rendezvous/store.h"
#include "worker/comm/rendezvous_client.h"

namespace cpserve::comm {

class GlooStore final : public gloo::rendezvous::Store {
 public:
  GlooStore(RendezvousClient& client, std::string prefix, std::chrono::milliseconds timeout);

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

  const absl::Status& last_error() const { return last_error_; }

 private:
  [[noreturn]] void Fail(absl::Status status);

  RendezvousClient& client_;
  const std::string prefix_;
  const std::chrono::milliseconds timeout_;
  absl::Status last_error_;
};

}  // namespace cpserve::comm
