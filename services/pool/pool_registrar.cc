#include "services/pool/pool_registrar.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>

#include "cpserve/v1/pool.grpc.pb.h"
#include "glog/logging.h"

namespace cpserve::services {

class Registrar::Client {
 public:
  Client(const std::string& router, std::shared_ptr<grpc::ChannelCredentials> credentials)
      : stub_(v1::PoolRegistry::NewStub(grpc::CreateChannel(
            router, credentials ? credentials : grpc::InsecureChannelCredentials()))) {}
  v1::PoolRegistry::Stub& stub() { return *stub_; }

 private:
  std::unique_ptr<v1::PoolRegistry::Stub> stub_;
};

Registrar::Registrar(RegistrarOptions options, std::function<v1::PoolLoad()> load)
    : options_(std::move(options)),
      load_(std::move(load)),
      client_(std::make_unique<Client>(options_.router, options_.credentials)) {
  options_.registration.set_heartbeat_interval_ms(
      static_cast<int32_t>(absl::ToInt64Milliseconds(options_.interval)));
  thread_ = std::thread([this] { Loop(); });
}

Registrar::~Registrar() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  thread_.join();
}

int64_t Registrar::registrations() const {
  absl::MutexLock l(&mu_);
  return registrations_;
}

bool Registrar::WaitRegistered(absl::Duration timeout) const {
  absl::MutexLock l(&mu_);
  auto registered = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return registrations_ > 0; };
  return mu_.AwaitWithTimeout(absl::Condition(&registered), timeout);
}

void Registrar::Loop() {
  const absl::Duration call_timeout =
      std::clamp(options_.interval, absl::Milliseconds(200), absl::Seconds(2));
  std::string registration_id;  // empty: not registered
  bool warned = false;
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(call_timeout));
    if (registration_id.empty()) {
      v1::RegisterPoolResponse resp;
      const grpc::Status s = client_->stub().Register(&ctx, options_.registration, &resp);
      if (s.ok()) {
        registration_id = resp.registration_id();
        warned = false;
        LOG(INFO) << "registered pool " << options_.registration.pool() << " with router "
                  << options_.router << " (registration " << registration_id << ")";
        absl::MutexLock l(&mu_);
        ++registrations_;
      } else if (!warned) {
        LOG(WARNING) << "cannot register with router " << options_.router << ": "
                     << s.error_message() << " (retrying every interval)";
        warned = true;
      }
    } else {
      v1::HeartbeatRequest req;
      req.set_registration_id(registration_id);
      *req.mutable_load() = load_();
      v1::HeartbeatResponse resp;
      const grpc::Status s = client_->stub().Heartbeat(&ctx, req, &resp);
      if (s.ok() && !resp.known()) {
        LOG(INFO) << "router " << options_.router << " forgot registration " << registration_id
                  << "; registering again";
        registration_id.clear();
        continue;  // at once
      }
      if (!s.ok()) {
        // The router may be restarting: register again once it answers.
        LOG(WARNING) << "heartbeat to router " << options_.router
                     << " failed: " << s.error_message() << "; registering again when it answers";
        warned = true;  // one warning per outage
        registration_id.clear();
      }
    }
    absl::MutexLock l(&mu_);
    if (mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.interval)) return;
  }
}

}  // namespace cpserve::services
