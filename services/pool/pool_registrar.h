// Keeps a pool leader registered with the router (DESIGN §6): Register once, then a
// Heartbeat with the engine's load every interval. Registers again when the router
// answers known=false (it restarted or dropped the pool) or after it was unreachable.
// Runs on its own thread; every call has a deadline shorter than the interval.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cpserve/v1/pool.pb.h"

namespace grpc {
class ChannelCredentials;
}  // namespace grpc

namespace cpserve::services {

struct RegistrarOptions {
  std::string router;  // host:port of the router's PoolRegistry
  // Null: plaintext. With mTLS, the pool's certificate and the internal CA (tls.h).
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  v1::RegisterPoolRequest registration;
  absl::Duration interval = absl::Seconds(1);
};

class Registrar {
 public:
  // load() is called on the registrar thread before each heartbeat.
  Registrar(RegistrarOptions options, std::function<v1::PoolLoad()> load);
  ~Registrar();  // stops the thread (waits for at most one call's deadline)
  Registrar(const Registrar&) = delete;
  Registrar& operator=(const Registrar&) = delete;

  // Number of successful Register calls so far (re-registrations included).
  int64_t registrations() const;
  // Blocks until the first successful registration or `timeout`; true if registered.
  bool WaitRegistered(absl::Duration timeout) const;

 private:
  class Client;
  void Loop();

  RegistrarOptions options_;
  std::function<v1::PoolLoad()> load_;
  std::unique_ptr<Client> client_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t registrations_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace cpserve::services
