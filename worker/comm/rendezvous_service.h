// Server side of a pool's rendezvous store (DESIGN §6): an in-memory key/value map
// served over gRPC by rank 0, used by the ranks to bootstrap their collective group.
//
// RendezvousService is a gRPC callback service that any server can host (rank 0's
// pool server registers it next to its own services); RendezvousServer is a
// standalone helper that starts a server hosting only it. A Get or Wait for a key that
// is not there yet never pins a thread: its reactor is parked in a waiter list and
// finished by the Set that completes it, by a deadline thread when its timeout passes
// (DEADLINE_EXCEEDED), or by cancellation.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "cpserve/v1/rendezvous.grpc.pb.h"

namespace grpc {
class Server;
}

namespace cpserve::comm {

class RendezvousService final : public cpserve::v1::Rendezvous::CallbackService {
 public:
  // incarnation 0 picks a random non-zero one.
  explicit RendezvousService(uint64_t incarnation = 0);
  ~RendezvousService() override;
  RendezvousService(const RendezvousService&) = delete;
  RendezvousService& operator=(const RendezvousService&) = delete;

  uint64_t incarnation() const { return incarnation_; }
  // Fails every parked Get/Wait (UNAVAILABLE) and refuses later ones. Call before
  // shutting the hosting server down (its Shutdown would otherwise cancel them).
  void Shutdown();
  size_t num_keys() const;
  size_t num_waiters() const;

  grpc::ServerUnaryReactor* Hello(grpc::CallbackServerContext* ctx,
                                  const cpserve::v1::RendezvousHelloRequest* req,
                                  cpserve::v1::RendezvousHelloResponse* resp) override;
  grpc::ServerUnaryReactor* Set(grpc::CallbackServerContext* ctx,
                                const cpserve::v1::RendezvousSetRequest* req,
                                cpserve::v1::RendezvousSetResponse* resp) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx,
                                const cpserve::v1::RendezvousGetRequest* req,
                                cpserve::v1::RendezvousGetResponse* resp) override;
  grpc::ServerUnaryReactor* Wait(grpc::CallbackServerContext* ctx,
                                 const cpserve::v1::RendezvousWaitRequest* req,
                                 cpserve::v1::RendezvousWaitResponse* resp) override;
  grpc::ServerUnaryReactor* Add(grpc::CallbackServerContext* ctx,
                                const cpserve::v1::RendezvousAddRequest* req,
                                cpserve::v1::RendezvousAddResponse* resp) override;
  grpc::ServerUnaryReactor* DeletePrefix(
      grpc::CallbackServerContext* ctx, const cpserve::v1::RendezvousDeletePrefixRequest* req,
      cpserve::v1::RendezvousDeletePrefixResponse* resp) override;

 private:
  struct Waiter;
  class WaitReactor;
  using Clock = std::chrono::steady_clock;
  // A reactor to finish, collected under mu_ and finished after releasing it.
  struct Completion {
    std::shared_ptr<Waiter> waiter;
    grpc::Status status;
  };

  grpc::Status CheckIncarnation(uint64_t incarnation) const;
  // Parks or completes a Get (value_out != null) / Wait.
  grpc::ServerUnaryReactor* StartWait(grpc::CallbackServerContext* ctx,
                                      std::vector<std::string> keys, int64_t timeout_ms,
                                      std::string* value_out);
  // Under mu_: true (and fills the value) when every key of w is present; otherwise
  // (re-)registers w under its missing keys.
  bool ReadyLocked(Waiter& w);
  void SetLocked(const std::string& key, std::string value, std::vector<Completion>& done);
  void RemoveWaiterLocked(const std::shared_ptr<Waiter>& w);
  void Cancel(const std::shared_ptr<Waiter>& w);
  static void FinishAll(std::vector<Completion>& done);
  void DeadlineLoop();

  const uint64_t incarnation_;
  mutable std::mutex mu_;
  std::condition_variable cv_;  // wakes the deadline thread
  bool shutdown_ = false;
  absl::flat_hash_map<std::string, std::string> store_;
  absl::flat_hash_map<std::string, std::vector<std::shared_ptr<Waiter>>> waiters_;
  std::multimap<Clock::time_point, std::shared_ptr<Waiter>> deadlines_;
  std::thread deadline_thread_;
};

// A gRPC server hosting only a RendezvousService (tests, tools, or a leader that has
// no other server yet). Shuts down on destruction.
class RendezvousServer {
 public:
  // address: "host:port"; port 0 picks a free one (see port()).
  static absl::StatusOr<std::unique_ptr<RendezvousServer>> Start(const std::string& address);
  ~RendezvousServer();

  int port() const { return port_; }
  // "host:port" with the bound port, for clients.
  const std::string& address() const { return address_; }
  RendezvousService& service() { return *service_; }

 private:
  RendezvousServer() = default;
  std::unique_ptr<RendezvousService> service_;  // outlives server_
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
};

}  // namespace cpserve::comm
