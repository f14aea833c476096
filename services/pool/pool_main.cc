// `cpserve prefill` and `cpserve decode`: one rank of a pool (DESIGN §6).
//
// Rank 0 (the leader) serves the rendezvous store, the pool API (DecodePool or
// PrefillPool), health and reflection, creates the engine (which forms the pool's
// collective group through the store) and registers with the router. Ranks > 0
// serve health only and run the engine's steps. Every rank exits non-zero when its
// engine becomes unhealthy so that its orchestrator restarts it; SIGTERM drains.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <unistd.h>

#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "services/cli/flags.h"
#include "services/common/grpc_server.h"
#include "services/common/tls.h"
#include "services/pool/pool_metrics.h"
#include "services/pool/pool_registrar.h"
#include "services/pool/pool_service.h"
#include "worker/builtin/builtin_model.h"
#include "worker/comm/rendezvous_service.h"
#include "worker/pool/pool_engine.h"

namespace cpserve {
namespace services {

namespace {

std::string HostPort(const std::string& host, int port) {
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

// Health of the whole server ("") and of each named service.
void SetServing(grpc::Server& server, const std::vector<std::string>& service_names, bool serving) {
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  for (const std::string& name : service_names) health->SetServingStatus(name, serving);
}

std::string AdvertiseHost(const std::string& host) {
  std::string advertise = absl::GetFlag(FLAGS_advertise_host);
  if (!advertise.empty()) return advertise;
  if (host != "0.0.0.0" && host != "::" && host != "[::]" && !host.empty()) return host;
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0') return name;
  return "127.0.0.1";
}

v1::KvLayout Layout(const ModelConfig& c, int world_size, int block_size, int interleave,
                    const std::string& device) {
  v1::KvLayout l;
  l.set_world_size(world_size);
  l.set_block_size(block_size);
  l.set_interleave(interleave > 0 ? interleave : block_size);
  l.set_num_layers(static_cast<int32_t>(c.num_hidden_layers));
  l.set_num_kv_heads(static_cast<int32_t>(c.num_key_value_heads));
  l.set_head_dim(static_cast<int32_t>(c.head_dim));
  l.set_dtype(device == "cpu" ? "float32" : "bfloat16");
  return l;
}

int RunPool(PoolRole role) {
  const std::string role_name = role == PoolRole::kPrefill ? "prefill" : "decode";
  const std::string prog = "cpserve " + role_name;
  service::InitLogging(("cpserve-" + role_name).c_str(), absl::GetFlag(FLAGS_verbosity));
  service::InstallShutdownSignalHandlers();
  const int rank = absl::GetFlag(FLAGS_rank);
  const int world_size = absl::GetFlag(FLAGS_world_size);
  const std::string host = absl::GetFlag(FLAGS_host);
  std::string pool = absl::GetFlag(FLAGS_pool);
  if (pool.empty()) pool = role_name + "-0";
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    std::cerr << prog << ": need 0 <= --rank < --world_size (got rank " << rank << ", world_size "
              << world_size << ")\n";
    return 2;
  }
  if (rank > 0 && absl::GetFlag(FLAGS_leader).empty()) {
    std::cerr << prog << ": --leader (rank 0's host:port) is required on rank " << rank << "\n";
    return 2;
  }
  const std::string who = absl::StrCat(prog, " [pool ", pool, " rank ", rank, "/", world_size, "]");

  absl::StatusOr<std::string> model_dir = ResolveModelDir(absl::GetFlag(FLAGS_model));
  if (!model_dir.ok()) {
    std::cerr << who << ": cannot load the model: " << model_dir.status() << "\n";
    return 1;
  }
  const uint64_t epoch = (static_cast<uint64_t>(std::random_device{}()) << 32) ^
                         std::random_device{}() ^ static_cast<uint64_t>(getpid());

  // Internal mTLS: this rank's server requires certificates of the internal CA (the
  // router's calls), and the registrar presents the pool's certificate to the router.
  const service::TlsFiles mtls_files{.cert = absl::GetFlag(FLAGS_mtls_cert),
                                     .key = absl::GetFlag(FLAGS_mtls_key),
                                     .ca = absl::GetFlag(FLAGS_mtls_ca),
                                     .cert_flag = "mtls_cert",
                                     .key_flag = "mtls_key",
                                     .ca_flag = "mtls_ca"};
  const bool mtls = !mtls_files.empty();
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> server_creds =
      service::ServerCredentialsOrInsecure(mtls_files, service::ClientCertPolicy::kRequire);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> router_creds =
      service::ChannelCredentialsOrInsecure(mtls_files);
  for (const absl::Status& s : {server_creds.status(), router_creds.status()}) {
    if (!s.ok()) {
      std::cerr << who << ": " << s << "\n";
      return 2;
    }
  }
  // The rendezvous client of the ranks does not speak TLS yet: with mTLS, rank 0 serves
  // the store on a separate plaintext port.
  int rendezvous_port = absl::GetFlag(FLAGS_rendezvous_port);
  if (mtls && world_size > 1 && rank == 0 && rendezvous_port < 0) {
    std::cerr << who << ": --rendezvous_port is required with --mtls_* on a pool of " << world_size
              << " ranks (the rendezvous store does not speak TLS yet)\n";
    return 2;
  }
  std::vector<std::string> unprotected;
  if (!mtls) unprotected.push_back("pool API and router registration: plaintext (no --mtls_*)");
  if (world_size > 1 && (rendezvous_port >= 0 || !mtls)) {
    unprotected.push_back("the pool's rendezvous store: plaintext, unauthenticated");
  }
  if (rank == 0) service::WarnInsecure(who, unprotected);

  // The shared server: health, reflection, graceful stop, /metrics.
  service::GrpcServer server({.host = host,
                              .port = absl::GetFlag(FLAGS_port),
                              .metrics_port = absl::GetFlag(FLAGS_metrics_port),
                              .name = absl::StrCat(role_name, " pool ", pool, " rank ", rank),
                              .credentials = *server_creds,
                              .max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes)});
  PoolMetrics metrics(server.metrics().registry(), pool, role_name, rank);
  PoolCore core(&metrics, epoch);
  std::unique_ptr<comm::RendezvousService> rendezvous;
  std::unique_ptr<comm::RendezvousServer> rendezvous_server;  // with --rendezvous_port
  std::unique_ptr<grpc::Service> api;
  std::vector<std::string> service_names;
  if (rank == 0) {
    if (rendezvous_port >= 0) {
      absl::StatusOr<std::unique_ptr<comm::RendezvousServer>> rs =
          comm::RendezvousServer::Start(HostPort(host, rendezvous_port));
      if (!rs.ok()) {
        std::cerr << who << ": rendezvous store: " << rs.status() << "\n";
        return 1;
      }
      rendezvous_server = *std::move(rs);
      rendezvous_port = rendezvous_server->port();
    } else {
      rendezvous = std::make_unique<comm::RendezvousService>();
      server.AddService(rendezvous.get(), v1::Rendezvous::service_full_name());
    }
    if (role == PoolRole::kDecode) {
      api = std::make_unique<DecodePoolService>(&core);
      service_names.push_back(v1::DecodePool::service_full_name());
    } else {
      api = std::make_unique<PrefillPoolService>(&core);
      service_names.push_back(v1::PrefillPool::service_full_name());
    }
    server.AddService(api.get(), service_names.back());
  }
  server.OnDrain([&core] { core.StopAdmitting("pool is shutting down"); });
  if (absl::Status s = server.Start(); !s.ok()) {
    std::cerr << who << ": " << s << "\n";
    return 1;
  }
  // Not ready until the engine is: Start() reported SERVING.
  SetServing(*server.server(), service_names, false);
  const std::string advertise = AdvertiseHost(host);
  const std::string address = HostPort(advertise, server.port());
  std::cout << who << ": listening on " << HostPort(host, server.port()) << " (advertised "
            << address << "), metrics port " << server.metrics().port()
            << (mtls ? ", mTLS" : ", plaintext") << std::endl;
  if (rendezvous_server) {
    std::cout << who << ": rendezvous store on " << HostPort(host, rendezvous_port)
              << " (plaintext)" << std::endl;
  }

  PoolEngineOptions eo;
  eo.role = role;
  eo.pool = pool;
  eo.rank = rank;
  eo.world_size = world_size;
  eo.leader_address = rank != 0           ? absl::GetFlag(FLAGS_leader)
                      : rendezvous_server ? HostPort(advertise, rendezvous_port)
                                          : address;
  eo.listen_host = advertise;
  eo.model_dir = *model_dir;
  eo.device = absl::GetFlag(FLAGS_device);
  eo.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  eo.kv_direct = absl::GetFlag(FLAGS_kv_direct);
  eo.block_size = absl::GetFlag(FLAGS_block_size);
  eo.interleave = absl::GetFlag(FLAGS_interleave);
  eo.num_kv_blocks = static_cast<int32_t>(absl::GetFlag(FLAGS_num_kv_blocks));
  eo.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  eo.max_running = absl::GetFlag(FLAGS_max_running_requests);
  eo.collective_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_collective_timeout_ms));
  absl::StatusOr<std::unique_ptr<GenerationEngine>> engine = CreatePoolEngine(eo);
  if (!engine.ok()) {
    std::cerr << who << ": the pool engine failed to start: " << engine.status() << std::endl;
    if (rendezvous) rendezvous->Shutdown();
    rendezvous_server.reset();
    server.Shutdown(absl::Milliseconds(500));
    return 1;
  }
  core.SetEngine(engine->get());

  std::unique_ptr<Registrar> registrar;
  if (rank == 0 && !absl::GetFlag(FLAGS_router).empty()) {
    RegistrarOptions ro;
    ro.router = absl::GetFlag(FLAGS_router);
    if (mtls) ro.credentials = *router_creds;
    ro.interval = absl::Milliseconds(std::max(50, absl::GetFlag(FLAGS_heartbeat_interval_ms)));
    ro.registration.set_pool(pool);
    ro.registration.set_role(role == PoolRole::kPrefill ? v1::POOL_ROLE_PREFILL
                                                        : v1::POOL_ROLE_DECODE);
    ro.registration.set_address(address);
    ro.registration.set_world_size(world_size);
    *ro.registration.mutable_kv_layout() =
        Layout((*engine)->config(), world_size, eo.block_size, eo.interleave, eo.device);
    ro.registration.set_epoch(epoch);
    GenerationEngine* e = engine->get();
    registrar = std::make_unique<Registrar>(std::move(ro), [e, &core] {
      const EngineStats st = e->Stats();
      v1::PoolLoad load;
      load.set_queued_requests(static_cast<int32_t>(st.waiting));
      load.set_running_requests(static_cast<int32_t>(std::max(st.running, core.num_live())));
      load.set_free_kv_blocks(st.free_kv_blocks);
      load.set_total_kv_blocks(st.total_kv_blocks);
      return load;
    });
    // Report SERVING once the router knows the pool (bounded: a router that comes later
    // still gets the registration), so "healthy" means "reachable through the router".
    if (!registrar->WaitRegistered(absl::Seconds(10))) {
      LOG(WARNING) << who << ": not registered with router " << absl::GetFlag(FLAGS_router)
                   << " yet; serving anyway and registering in the background";
    }
  }
  SetServing(*server.server(), service_names, true);
  std::cout << who << ": serving (model " << *model_dir << ", device " << eo.device << ")"
            << std::endl;

  int exit_code = 0;
  while (!service::ShutdownRequested()) {
    metrics.SetLoad((*engine)->Stats(), core.num_live());
    if (!(*engine)->healthy()) {
      std::cerr << who << ": the pool engine became unhealthy; exiting so that the pool is "
                << "restarted" << std::endl;
      exit_code = 1;
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }

  // Stop admitting (health NOT_SERVING), drain (only on a clean stop), end what is
  // left with UNAVAILABLE (the router may retry elsewhere), stop.
  LOG(INFO) << who << ": shutting down";
  server.BeginDrain();
  if (exit_code != 0) core.StopAdmitting("pool engine is unhealthy");
  registrar.reset();
  if (exit_code == 0 && core.num_live() > 0) {
    const absl::Duration grace = absl::Milliseconds(absl::GetFlag(FLAGS_drain_timeout_ms));
    LOG(INFO) << who << ": draining " << core.num_live() << " requests (up to " << grace << ")";
    if (!core.WaitIdle(grace)) LOG(WARNING) << who << ": drain timed out";
  }
  core.AbortAll(absl::UnavailableError(absl::StrCat("pool ", pool, " is shutting down")));
  if (rendezvous) rendezvous->Shutdown();
  rendezvous_server.reset();
  // Every call is finished or aborted by now. The grace only bounds the wait for idle
  // clients to close their connections after GOAWAY (a client that is not polling
  // notices it only on its 5 s backup poll); after it, gRPC drops them.
  server.Shutdown(absl::Milliseconds(500));
  VLOG(1) << who << ": stopping the engine";
  engine->reset();  // after the server: no reactor can reach it any more
  std::cout << who << ": stopped" << std::endl;
  return exit_code;
}

}  // namespace
}  // namespace services

namespace cli {
namespace {
int RunRole(PoolRole role, const std::vector<std::string>& args) {
  if (!args.empty()) {
    std::cerr << "cpserve: unexpected argument '" << args.front() << "'\n";
    return 2;
  }
  return services::RunPool(role);
}
}  // namespace

int RunPrefill(const std::vector<std::string>& args) { return RunRole(PoolRole::kPrefill, args); }
int RunDecode(const std::vector<std::string>& args) { return RunRole(PoolRole::kDecode, args); }
}  // namespace cli
}  // namespace cpserve
