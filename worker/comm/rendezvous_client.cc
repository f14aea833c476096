#include "worker/comm/rendezvous_client.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cpserve::comm {
namespace {

// The server answers a timed-out wait itself (with the key names); the RPC deadline
// gets this much slack so that answer wins over a bare "Deadline Exceeded".
constexpr std::chrono::milliseconds kWaitGrace(2000);

void PrepareContext(grpc::ClientContext& ctx, std::chrono::milliseconds budget) {
  ctx.set_deadline(std::chrono::system_clock::now() + budget);
  ctx.set_wait_for_ready(true);
}

absl::Status ToAbsl(const grpc::Status& s, const std::string& what, const std::string& address) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat("rendezvous ", what, " at ", address, ": ", s.error_message()));
}

}  // namespace

std::string RendezvousPrefix(const std::string& pool, int64_t generation,
                             const std::string& group) {
  return absl::StrCat(pool, "/", generation, "/", group, "/");
}

absl::StatusOr<std::unique_ptr<RendezvousClient>> RendezvousClient::Connect(
    const std::string& address, std::chrono::milliseconds timeout,
    std::chrono::milliseconds rpc_timeout) {
  std::unique_ptr<RendezvousClient> client(new RendezvousClient());
  client->address_ = address;
  client->rpc_timeout_ = rpc_timeout;
  grpc::ChannelArguments args;
  // Reconnect quickly while waiting for a leader that is still starting.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  client->stub_ = cpserve::v1::Rendezvous::NewStub(channel);
  grpc::ClientContext ctx;
  PrepareContext(ctx, timeout);
  cpserve::v1::RendezvousHelloRequest req;
  cpserve::v1::RendezvousHelloResponse resp;
  grpc::Status s = client->stub_->Hello(&ctx, req, &resp);
  if (!s.ok()) return ToAbsl(s, "Hello", address);
  client->incarnation_ = resp.incarnation();
  return client;
}

absl::Status RendezvousClient::Set(const std::string& key, const std::string& value) {
  grpc::ClientContext ctx;
  PrepareContext(ctx, rpc_timeout_);
  cpserve::v1::RendezvousSetRequest req;
  req.set_incarnation(incarnation_);
  req.set_key(key);
  req.set_value(value);
  cpserve::v1::RendezvousSetResponse resp;
  return ToAbsl(stub_->Set(&ctx, req, &resp), absl::StrCat("Set(", key, ")"), address_);
}

absl::StatusOr<std::string> RendezvousClient::Get(const std::string& key,
                                                  std::chrono::milliseconds timeout) {
  grpc::ClientContext ctx;
  PrepareContext(ctx, timeout + kWaitGrace);
  cpserve::v1::RendezvousGetRequest req;
  req.set_incarnation(incarnation_);
  req.set_key(key);
  req.set_timeout_ms(timeout.count());
  cpserve::v1::RendezvousGetResponse resp;
  grpc::Status s = stub_->Get(&ctx, req, &resp);
  if (!s.ok()) return ToAbsl(s, absl::StrCat("Get(", key, ")"), address_);
  return std::move(*resp.mutable_value());
}

absl::Status RendezvousClient::Wait(const std::vector<std::string>& keys,
                                    std::chrono::milliseconds timeout) {
  grpc::ClientContext ctx;
  PrepareContext(ctx, timeout + kWaitGrace);
  cpserve::v1::RendezvousWaitRequest req;
  req.set_incarnation(incarnation_);
  for (const auto& k : keys) req.add_keys(k);
  req.set_timeout_ms(timeout.count());
  cpserve::v1::RendezvousWaitResponse resp;
  return ToAbsl(stub_->Wait(&ctx, req, &resp),
                absl::StrCat("Wait(", absl::StrJoin(keys, ", "), ")"), address_);
}

absl::StatusOr<int64_t> RendezvousClient::Add(const std::string& key, int64_t delta) {
  grpc::ClientContext ctx;
  PrepareContext(ctx, rpc_timeout_);
  cpserve::v1::RendezvousAddRequest req;
  req.set_incarnation(incarnation_);
  req.set_key(key);
  req.set_delta(delta);
  cpserve::v1::RendezvousAddResponse resp;
  grpc::Status s = stub_->Add(&ctx, req, &resp);
  if (!s.ok()) return ToAbsl(s, absl::StrCat("Add(", key, ")"), address_);
  return resp.value();
}

absl::StatusOr<int64_t> RendezvousClient::DeletePrefix(const std::string& prefix) {
  grpc::ClientContext ctx;
  PrepareContext(ctx, rpc_timeout_);
  cpserve::v1::RendezvousDeletePrefixRequest req;
  req.set_incarnation(incarnation_);
  req.set_prefix(prefix);
  cpserve::v1::RendezvousDeletePrefixResponse resp;
  grpc::Status s = stub_->DeletePrefix(&ctx, req, &resp);
  if (!s.ok()) return ToAbsl(s, absl::StrCat("DeletePrefix(", prefix, ")"), address_);
  return resp.deleted();
}

}  // namespace cpserve::comm
