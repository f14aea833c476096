#include "worker/comm/rendezvous_service.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cpserve::comm {

// One parked Get/Wait. Guarded by the service's mu_; `done` makes sure exactly one
// party (Set, deadline thread, cancellation, shutdown) finishes the reactor.
struct RendezvousService::Waiter {
  grpc::ServerUnaryReactor* reactor = nullptr;
  std::vector<std::string> keys;
  std::string* value_out = nullptr;  // Get only; owned by gRPC until Finish
  int64_t timeout_ms = 0;
  std::multimap<Clock::time_point, std::shared_ptr<Waiter>>::iterator deadline_it;
  bool done = false;
};

class RendezvousService::WaitReactor final : public grpc::ServerUnaryReactor {
 public:
  WaitReactor(RendezvousService* service, std::shared_ptr<Waiter> waiter)
      : service_(service), waiter_(std::move(waiter)) {}
  void OnCancel() override { service_->Cancel(waiter_); }
  void OnDone() override { delete this; }

 private:
  RendezvousService* service_;
  std::shared_ptr<Waiter> waiter_;
};

namespace {

uint64_t RandomIncarnation() {
  std::random_device rd;
  uint64_t v = 0;
  while (v == 0) v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return v;
}

grpc::ServerUnaryReactor* Finished(grpc::CallbackServerContext* ctx, const grpc::Status& s) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(s);
  return reactor;
}

}  // namespace

RendezvousService::RendezvousService(uint64_t incarnation)
    : incarnation_(incarnation != 0 ? incarnation : RandomIncarnation()) {
  deadline_thread_ = std::thread([this] { DeadlineLoop(); });
}

RendezvousService::~RendezvousService() {
  Shutdown();
  deadline_thread_.join();
}

void RendezvousService::Shutdown() {
  std::vector<Completion> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_ = true;
    for (auto& [when, w] : deadlines_) {
      if (w->done) continue;
      w->done = true;
      done.push_back(
          {w, grpc::Status(grpc::StatusCode::UNAVAILABLE, "rendezvous server shutting down")});
    }
    deadlines_.clear();
    waiters_.clear();
  }
  cv_.notify_all();
  FinishAll(done);
}

size_t RendezvousService::num_keys() const {
  std::lock_guard<std::mutex> lock(mu_);
  return store_.size();
}

size_t RendezvousService::num_waiters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return deadlines_.size();
}

grpc::Status RendezvousService::CheckIncarnation(uint64_t incarnation) const {
  if (incarnation != 0 && incarnation != incarnation_) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("rendezvous server restarted: incarnation ", incarnation_,
                                     ", client expected ", incarnation));
  }
  return grpc::Status::OK;
}

void RendezvousService::FinishAll(std::vector<Completion>& done) {
  for (auto& c : done) c.waiter->reactor->Finish(c.status);
  done.clear();
}

bool RendezvousService::ReadyLocked(Waiter& w) {
  bool ready = true;
  for (const auto& key : w.keys) {
    if (!store_.contains(key)) {
      ready = false;
      break;
    }
  }
  if (ready) {
    if (w.value_out != nullptr) *w.value_out = store_.at(w.keys[0]);
    return true;
  }
  return false;
}

void RendezvousService::RemoveWaiterLocked(const std::shared_ptr<Waiter>& w) {
  deadlines_.erase(w->deadline_it);
  for (const auto& key : w->keys) {
    auto it = waiters_.find(key);
    if (it == waiters_.end()) continue;
    auto& list = it->second;
    list.erase(std::remove(list.begin(), list.end(), w), list.end());
    if (list.empty()) waiters_.erase(it);
  }
}

grpc::ServerUnaryReactor* RendezvousService::StartWait(grpc::CallbackServerContext* ctx,
                                                       std::vector<std::string> keys,
                                                       int64_t timeout_ms, std::string* value_out) {
  auto waiter = std::make_shared<Waiter>();
  waiter->keys = std::move(keys);
  waiter->value_out = value_out;
  waiter->timeout_ms = timeout_ms;
  // The earlier of the requested timeout and the client's own deadline.
  auto deadline = Clock::now() + std::chrono::milliseconds(std::max<int64_t>(timeout_ms, 0));
  auto client_left = ctx->deadline() - std::chrono::system_clock::now();
  if (client_left < deadline - Clock::now()) {
    deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(client_left);
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (shutdown_) {
    return Finished(ctx,
                    grpc::Status(grpc::StatusCode::UNAVAILABLE, "rendezvous server shutting down"));
  }
  if (ReadyLocked(*waiter)) {
    lock.unlock();
    return Finished(ctx, grpc::Status::OK);
  }
  if (timeout_ms <= 0) {
    return Finished(ctx, grpc::Status(grpc::StatusCode::NOT_FOUND,
                                      absl::StrCat("rendezvous: key ",
                                                   absl::StrJoin(waiter->keys, ", "), " not set")));
  }
  auto* reactor = new WaitReactor(this, waiter);
  waiter->reactor = reactor;
  for (const auto& key : waiter->keys) {
    if (!store_.contains(key)) waiters_[key].push_back(waiter);
  }
  waiter->deadline_it = deadlines_.emplace(deadline, waiter);
  lock.unlock();
  cv_.notify_all();
  return reactor;
}

void RendezvousService::SetLocked(const std::string& key, std::string value,
                                  std::vector<Completion>& done) {
  store_[key] = std::move(value);
  auto it = waiters_.find(key);
  if (it == waiters_.end()) return;
  std::vector<std::shared_ptr<Waiter>> list = std::move(it->second);
  waiters_.erase(it);
  for (auto& w : list) {
    if (w->done) continue;
    if (ReadyLocked(*w)) {
      w->done = true;
      RemoveWaiterLocked(w);
      done.push_back({w, grpc::Status::OK});
    } else {
      // Still missing other keys; it stays registered under those.
      for (const auto& k : w->keys) {
        if (!store_.contains(k)) {
          auto& l = waiters_[k];
          if (std::find(l.begin(), l.end(), w) == l.end()) l.push_back(w);
        }
      }
    }
  }
}

void RendezvousService::Cancel(const std::shared_ptr<Waiter>& w) {
  std::unique_lock<std::mutex> lock(mu_);
  if (w->done) return;
  w->done = true;
  RemoveWaiterLocked(w);
  lock.unlock();
  w->reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "rendezvous wait cancelled"));
}

void RendezvousService::DeadlineLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!shutdown_) {
    if (deadlines_.empty()) {
      cv_.wait(lock);
      continue;
    }
    auto first = deadlines_.begin()->first;
    if (Clock::now() < first) {
      cv_.wait_until(lock, first);
      continue;
    }
    std::vector<Completion> done;
    while (!deadlines_.empty() && deadlines_.begin()->first <= Clock::now()) {
      std::shared_ptr<Waiter> w = deadlines_.begin()->second;
      w->done = true;
      RemoveWaiterLocked(w);
      std::vector<std::string> missing;
      for (const auto& k : w->keys) {
        if (!store_.contains(k)) missing.push_back(k);
      }
      done.push_back(
          {w, grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                           absl::StrCat("rendezvous: key(s) ", absl::StrJoin(missing, ", "),
                                        " not set within ", w->timeout_ms, " ms"))});
    }
    lock.unlock();
    FinishAll(done);
    lock.lock();
  }
}

grpc::ServerUnaryReactor* RendezvousService::Hello(grpc::CallbackServerContext* ctx,
                                                   const cpserve::v1::RendezvousHelloRequest*,
                                                   cpserve::v1::RendezvousHelloResponse* resp) {
  resp->set_incarnation(incarnation_);
  return Finished(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* RendezvousService::Set(grpc::CallbackServerContext* ctx,
                                                 const cpserve::v1::RendezvousSetRequest* req,
                                                 cpserve::v1::RendezvousSetResponse*) {
  if (auto s = CheckIncarnation(req->incarnation()); !s.ok()) return Finished(ctx, s);
  std::vector<Completion> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    SetLocked(req->key(), req->value(), done);
  }
  FinishAll(done);
  return Finished(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* RendezvousService::Get(grpc::CallbackServerContext* ctx,
                                                 const cpserve::v1::RendezvousGetRequest* req,
                                                 cpserve::v1::RendezvousGetResponse* resp) {
  if (auto s = CheckIncarnation(req->incarnation()); !s.ok()) return Finished(ctx, s);
  return StartWait(ctx, {req->key()}, req->timeout_ms(), resp->mutable_value());
}

grpc::ServerUnaryReactor* RendezvousService::Wait(grpc::CallbackServerContext* ctx,
                                                  const cpserve::v1::RendezvousWaitRequest* req,
                                                  cpserve::v1::RendezvousWaitResponse*) {
  if (auto s = CheckIncarnation(req->incarnation()); !s.ok()) return Finished(ctx, s);
  if (req->keys().empty()) return Finished(ctx, grpc::Status::OK);
  return StartWait(ctx, {req->keys().begin(), req->keys().end()}, req->timeout_ms(), nullptr);
}

grpc::ServerUnaryReactor* RendezvousService::Add(grpc::CallbackServerContext* ctx,
                                                 const cpserve::v1::RendezvousAddRequest* req,
                                                 cpserve::v1::RendezvousAddResponse* resp) {
  if (auto s = CheckIncarnation(req->incarnation()); !s.ok()) return Finished(ctx, s);
  std::vector<Completion> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t value = 0;
    auto it = store_.find(req->key());
    if (it != store_.end() && !absl::SimpleAtoi(it->second, &value)) {
      return Finished(ctx, grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                        absl::StrCat("rendezvous: key ", req->key(),
                                                     " does not hold an integer")));
    }
    value += req->delta();
    resp->set_value(value);
    SetLocked(req->key(), absl::StrCat(value), done);
  }
  FinishAll(done);
  return Finished(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* RendezvousService::DeletePrefix(
    grpc::CallbackServerContext* ctx, const cpserve::v1::RendezvousDeletePrefixRequest* req,
    cpserve::v1::RendezvousDeletePrefixResponse* resp) {
  if (auto s = CheckIncarnation(req->incarnation()); !s.ok()) return Finished(ctx, s);
  int64_t deleted = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = store_.begin(); it != store_.end();) {
      if (absl::StartsWith(it->first, req->prefix())) {
        store_.erase(it++);
        ++deleted;
      } else {
        ++it;
      }
    }
  }
  resp->set_deleted(deleted);
  return Finished(ctx, grpc::Status::OK);
}

absl::StatusOr<std::unique_ptr<RendezvousServer>> RendezvousServer::Start(
    const std::string& address) {
  std::unique_ptr<RendezvousServer> server(new RendezvousServer());
  server->service_ = std::make_unique<RendezvousService>();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &server->port_);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("rendezvous: cannot listen on ", address));
  }
  std::string host = address.substr(0, address.rfind(':'));
  server->address_ = absl::StrCat(host, ":", server->port_);
  return server;
}

RendezvousServer::~RendezvousServer() {
  if (service_ != nullptr) service_->Shutdown();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_->Wait();
  }
}

}  // namespace cpserve::comm
