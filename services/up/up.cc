// `cpserve up`: a whole local cluster on loopback (DESIGN §6) — the router, a
// prefill pool of --prefill_ranks ranks and a decode pool of --decode_ranks ranks,
// each rank a process of this same binary. Waits until every process reports
// healthy, prints the router's address, and on Ctrl-C / SIGTERM stops them all
// (SIGTERM, then SIGKILL after a grace period). The children's output goes to log
// files in one directory, so the terminal shows only `up`'s own lines.
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "services/cli/flags.h"
#include "services/common/grpc_server.h"
#include "services/common/tls.h"
#include "services/up/child_process.h"
#include "services/up/health_probe.h"
#include "worker/builtin/builtin_model.h"

namespace cpserve {
namespace up {
namespace {

constexpr int kTailLines = 25;

struct Member {
  std::unique_ptr<ChildProcess> process;
  std::string address;  // host:port of its gRPC server (health checks)
  std::string role;     // "router", "prefill pool", "decode pool"
  bool healthy = false;
  std::shared_ptr<grpc::ChannelCredentials> probe_credentials;  // null: plaintext
};

// "--name=value" for every non-empty string flag / positive int flag of `names`.
void ForwardFlags(std::vector<std::string>& argv,
                  const std::vector<std::pair<std::string, std::string>>& values) {
  for (const auto& [name, value] : values) {
    if (!value.empty() && value != "0") argv.push_back(absl::StrCat("--", name, "=", value));
  }
}

// --prefill_device / --decode_device, else --device.
std::string PoolDevice(const std::string& role) {
  const std::string own =
      absl::GetFlag(role == "prefill" ? FLAGS_prefill_device : FLAGS_decode_device);
  return own.empty() ? absl::GetFlag(FLAGS_device) : own;
}

absl::StatusOr<std::string> MakeLogDir() {
  std::string dir = absl::GetFlag(FLAGS_cluster_log_dir);
  if (!dir.empty()) {
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::UnavailableError(absl::StrCat("cannot create ", dir));
    }
    return dir;
  }
  const char* tmp = getenv("TMPDIR");
  std::string templ =
      absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/cpserve-up-XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot create a log directory ", templ));
  }
  return templ;
}

void PrintFailure(const Member& m, const std::string& what) {
  std::cerr << "cpserve up: " << m.process->name() << " (" << m.role << ") " << what << "\n"
            << "  command: " << m.process->CommandLine() << "\n"
            << "  log: " << m.process->log_path() << "; its last lines:\n";
  const std::string tail = TailOfFile(m.process->log_path(), kTailLines);
  std::cerr << (tail.empty() ? "  (empty)" : tail) << "\n";
}

// SIGTERM to every child (pools first, so that the router still answers while
// they drain), wait up to `grace`, then SIGKILL what is left.
void StopAll(std::vector<Member>& members, absl::Duration grace) {
  for (auto it = members.rbegin(); it != members.rend(); ++it) it->process->Signal(SIGTERM);
  const absl::Time deadline = absl::Now() + grace;
  for (Member& m : members) {
    const absl::Duration left = std::max(absl::ZeroDuration(), deadline - absl::Now());
    if (!m.process->WaitExit(left)) {
      std::cerr << "cpserve up: " << m.process->name() << " did not stop within " << grace
                << "; killing it\n";
      m.process->Signal(SIGKILL);
      m.process->WaitExit(absl::Seconds(5));
    }
  }
}

int Up() {
  service::InitLogging("cpserve-up", absl::GetFlag(FLAGS_verbosity));
  service::InstallShutdownSignalHandlers();  // a second Ctrl-C exits at once

  const int prefill_ranks = absl::GetFlag(FLAGS_prefill_ranks);
  const int decode_ranks = absl::GetFlag(FLAGS_decode_ranks);
  if (prefill_ranks < 0 || decode_ranks < 1) {
    std::cerr << "cpserve up: need --prefill_ranks >= 0 and --decode_ranks >= 1\n";
    return 2;
  }
  const std::string host = absl::GetFlag(FLAGS_host);
  absl::StatusOr<std::string> model = ResolveModelDir(absl::GetFlag(FLAGS_model));
  if (!model.ok()) {
    std::cerr << "cpserve up: cannot prepare the model: " << model.status() << "\n";
    return 1;
  }
  absl::StatusOr<std::string> log_dir = MakeLogDir();
  if (!log_dir.ok()) {
    std::cerr << "cpserve up: " << log_dir.status() << "\n";
    return 1;
  }

  const bool metrics = absl::GetFlag(FLAGS_metrics_port) >= 0;
  auto port_or_free = [&](int wanted) -> absl::StatusOr<int> {
    if (wanted > 0) return wanted;
    return PickFreePort(host);
  };
  // This same binary; the resolved path reads better in messages than /proc/self/exe.
  std::string exe = "/proc/self/exe";
  {
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (n > 0) exe.assign(buf, static_cast<size_t>(n));
  }
  const std::string verbosity = absl::StrCat("--verbosity=", absl::GetFlag(FLAGS_verbosity));

  // Security: the router's public side (TLS, tokens, limits) and the internal mTLS of
  // every process. `up` checks the children's health over the same credentials.
  const service::TlsFiles public_tls{.cert = absl::GetFlag(FLAGS_tls_cert),
                                     .key = absl::GetFlag(FLAGS_tls_key),
                                     .ca = absl::GetFlag(FLAGS_tls_ca),
                                     .cert_flag = "tls_cert",
                                     .key_flag = "tls_key",
                                     .ca_flag = "tls_ca"};
  const service::TlsFiles mtls_files{.cert = absl::GetFlag(FLAGS_mtls_cert),
                                     .key = absl::GetFlag(FLAGS_mtls_key),
                                     .ca = absl::GetFlag(FLAGS_mtls_ca),
                                     .cert_flag = "mtls_cert",
                                     .key_flag = "mtls_key",
                                     .ca_flag = "mtls_ca"};
  const bool mtls = !mtls_files.empty();
  std::shared_ptr<grpc::ChannelCredentials> router_probe, pool_probe;
  if (!public_tls.empty()) {
    // The router's server side needs cert + key; `up` trusts --tls_ca to probe it.
    absl::Status s =
        service::MakeServerCredentials(public_tls, service::ClientCertPolicy::kNone).status();
    service::TlsFiles trust;  // no client certificate
    trust.ca = public_tls.ca;
    trust.ca_flag = "tls_ca";
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> c =
        service::MakeChannelCredentials(trust);
    if (s.ok() && !c.ok()) s = c.status();
    if (!s.ok()) {
      std::cerr << "cpserve up: " << s << "\n";
      return 2;
    }
    router_probe = *c;
  }
  if (mtls) {
    absl::Status s =
        service::MakeServerCredentials(mtls_files, service::ClientCertPolicy::kRequire).status();
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> c =
        service::MakeChannelCredentials(mtls_files);
    if (s.ok() && !c.ok()) s = c.status();
    if (!s.ok()) {
      std::cerr << "cpserve up: " << s << "\n";
      return 2;
    }
    pool_probe = *c;
  }
  const std::vector<std::pair<std::string, std::string>> mtls_args = {
      {"mtls_cert", mtls_files.cert},
      {"mtls_key", mtls_files.key},
      {"mtls_ca", mtls_files.ca},
      {"max_message_bytes", absl::StrCat(absl::GetFlag(FLAGS_max_message_bytes))}};
  std::vector<Member> members;
  std::vector<std::string> summary;

  absl::StatusOr<int> router_port = port_or_free(absl::GetFlag(FLAGS_port));
  absl::StatusOr<int> router_metrics =
      metrics ? port_or_free(absl::GetFlag(FLAGS_metrics_port)) : absl::StatusOr<int>(-1);
  if (!router_port.ok() || !router_metrics.ok()) {
    std::cerr << "cpserve up: "
              << (router_port.ok() ? router_metrics.status() : router_port.status()) << "\n";
    return 1;
  }
  const std::string router_address = absl::StrCat(host, ":", *router_port);
  // With mTLS the pools register on the router's internal port.
  std::string registry_address = router_address;
  {
    Member m;
    m.role = "router";
    m.address = router_address;
    m.probe_credentials = router_probe;
    std::vector<std::string> argv = {
        exe,
        "router",
        "--model=" + *model,
        "--host=" + host,
        absl::StrCat("--port=", *router_port),
        absl::StrCat("--metrics_port=", *router_metrics),
        absl::StrCat("--long_prompt_tokens=", absl::GetFlag(FLAGS_long_prompt_tokens)),
        verbosity};
    ForwardFlags(
        argv,
        {{"tls_cert", public_tls.cert},
         {"tls_key", public_tls.key},
         {"auth_token_file", absl::GetFlag(FLAGS_auth_token_file)},
         {"max_prompt_tokens", absl::StrCat(absl::GetFlag(FLAGS_max_prompt_tokens))},
         {"max_streams_per_client", absl::StrCat(absl::GetFlag(FLAGS_max_streams_per_client))},
         {"default_deadline_ms", absl::StrCat(absl::GetFlag(FLAGS_default_deadline_ms))}});
    ForwardFlags(argv, mtls_args);
    if (mtls) {
      absl::StatusOr<int> internal_port = PickFreePort(host);
      if (!internal_port.ok()) {
        std::cerr << "cpserve up: " << internal_port.status() << "\n";
        return 1;
      }
      argv.push_back(absl::StrCat("--internal_port=", *internal_port));
      registry_address = absl::StrCat(host, ":", *internal_port);
    }
    m.process = std::make_unique<ChildProcess>("router", std::move(argv), *log_dir + "/router.log");
    summary.push_back(absl::StrCat("  router   ", router_address,
                                   metrics ? absl::StrCat("  metrics :", *router_metrics) : ""));
    members.push_back(std::move(m));
  }
  auto add_pool = [&](const std::string& role, int ranks) -> absl::Status {
    const std::string pool = role + "-0";
    std::string leader;
    for (int r = 0; r < ranks; ++r) {
      absl::StatusOr<int> port = PickFreePort(host);
      if (!port.ok()) return port.status();
      absl::StatusOr<int> mport = metrics ? PickFreePort(host) : absl::StatusOr<int>(-1);
      if (!mport.ok()) return mport.status();
      Member m;
      m.role = role + " pool";
      m.address = absl::StrCat(host, ":", *port);
      m.probe_credentials = pool_probe;
      if (r == 0) leader = m.address;
      // With mTLS, rank 0 serves the (plaintext) rendezvous store on a port of its own.
      std::string rendezvous_flag;
      if (r == 0 && mtls && ranks > 1) {
        absl::StatusOr<int> rport = PickFreePort(host);
        if (!rport.ok()) return rport.status();
        rendezvous_flag = absl::StrCat("--rendezvous_port=", *rport);
        leader = absl::StrCat(host, ":", *rport);
      }
      std::vector<std::string> argv = {
          exe,
          role,
          "--pool=" + pool,
          absl::StrCat("--rank=", r),
          absl::StrCat("--world_size=", ranks),
          "--host=" + host,
          absl::StrCat("--port=", *port),
          absl::StrCat("--metrics_port=", *mport),
          "--model=" + *model,
          "--device=" + PoolDevice(role),
          absl::StrCat("--block_size=", absl::GetFlag(FLAGS_block_size)),
          absl::StrCat("--interleave=", absl::GetFlag(FLAGS_interleave)),
          absl::StrCat("--num_kv_blocks=", absl::GetFlag(FLAGS_num_kv_blocks)),
          absl::StrCat("--max_batch_tokens=", absl::GetFlag(FLAGS_max_batch_tokens)),
          absl::StrCat("--max_running_requests=", absl::GetFlag(FLAGS_max_running_requests)),
          absl::StrCat("--cuda_graphs=", absl::GetFlag(FLAGS_cuda_graphs) ? "true" : "false"),
          absl::StrCat("--kv_direct=", absl::GetFlag(FLAGS_kv_direct) ? "true" : "false"),
          absl::StrCat("--drain_timeout_ms=", absl::GetFlag(FLAGS_drain_timeout_ms)),
          verbosity};
      ForwardFlags(argv, mtls_args);
      if (r == 0) {
        argv.push_back("--router=" + registry_address);
        if (!rendezvous_flag.empty()) argv.push_back(rendezvous_flag);
      } else {
        argv.push_back("--leader=" + leader);
      }
      const std::string name = absl::StrCat(pool, "/rank", r);
      m.process = std::make_unique<ChildProcess>(
          name, std::move(argv), absl::StrCat(*log_dir, "/", pool, ".rank", r, ".log"));
      summary.push_back(absl::StrCat("  ", role, "  ", name, "  ", m.address,
                                     metrics ? absl::StrCat("  metrics :", *mport) : ""));
      members.push_back(std::move(m));
    }
    return absl::OkStatus();
  };
  if (absl::Status s = add_pool("prefill", prefill_ranks); !s.ok()) {
    std::cerr << "cpserve up: " << s << "\n";
    return 1;
  }
  if (absl::Status s = add_pool("decode", decode_ranks); !s.ok()) {
    std::cerr << "cpserve up: " << s << "\n";
    return 1;
  }

  const absl::Duration grace =
      absl::Milliseconds(absl::GetFlag(FLAGS_drain_timeout_ms)) + absl::Seconds(5);
  std::cout << "cpserve up: starting the router, a prefill pool of " << prefill_ranks
            << " ranks and a decode pool of " << decode_ranks << " ranks; logs in " << *log_dir
            << std::endl;
  // NVLink multicast stays off in every child (see FIELD-NOTES).
  const std::vector<std::string> env = {"NCCL_NVLS_ENABLE=0"};
  for (Member& m : members) {
    if (absl::Status s = m.process->Start(env); !s.ok()) {
      std::cerr << "cpserve up: cannot start " << m.process->name() << ": " << s << "\n";
      StopAll(members, grace);
      return 1;
    }
  }

  // Wait for every process to report SERVING.
  const absl::Time deadline =
      absl::Now() + absl::Milliseconds(absl::GetFlag(FLAGS_startup_timeout_ms));
  size_t healthy = 0;
  while (healthy < members.size()) {
    for (Member& m : members) {
      if (m.healthy) continue;
      if (!m.process->Running()) {
        PrintFailure(m, m.process->ExitDescription() + " during startup");
        StopAll(members, grace);
        std::cerr << "cpserve up: failed: " << m.process->name() << " did not start\n";
        return 1;
      }
      absl::StatusOr<HealthStatus> h =
          CheckHealth(m.address, "", absl::Milliseconds(500), m.probe_credentials);
      if (h.ok() && *h == HealthStatus::kServing) {
        m.healthy = true;
        ++healthy;
        std::cout << "cpserve up: " << m.process->name() << " is healthy" << std::endl;
      }
    }
    if (healthy == members.size()) break;
    absl::SleepFor(absl::Milliseconds(200));
    if (service::ShutdownRequested()) {
      std::cout << "cpserve up: interrupted during startup; stopping" << std::endl;
      StopAll(members, grace);
      return 0;
    }
    if (absl::Now() > deadline) {
      for (Member& m : members) {
        if (!m.healthy) PrintFailure(m, "did not become healthy in time");
      }
      StopAll(members, grace);
      std::cerr << "cpserve up: failed: not every process became healthy within "
                << absl::Milliseconds(absl::GetFlag(FLAGS_startup_timeout_ms)) << "\n";
      return 1;
    }
  }

  std::cout << "cpserve up: cluster ready\n";
  for (const std::string& line : summary) std::cout << line << "\n";
  std::cout << "  logs     " << *log_dir << "\n";
  std::cout << "cpserve up: router listening on " << router_address << "\n";
  std::cout << "cpserve up: press Ctrl-C to stop" << std::endl;

  // Run until a signal, or until a child dies (then stop the rest and fail).
  while (!service::ShutdownRequested()) {
    absl::SleepFor(absl::Milliseconds(200));
    for (Member& m : members) {
      if (!m.process->Running()) {
        PrintFailure(m, m.process->ExitDescription() + " unexpectedly");
        StopAll(members, grace);
        std::cerr << "cpserve up: failed: " << m.process->name() << " stopped\n";
        return 1;
      }
    }
  }
  std::cout << "cpserve up: stopping" << std::endl;
  StopAll(members, grace);
  std::cout << "cpserve up: stopped" << std::endl;
  return 0;
}

}  // namespace
}  // namespace up

namespace cli {
int RunUp(const std::vector<std::string>& args) {
  if (!args.empty()) {
    std::cerr << "cpserve up: unexpected argument '" << args.front() << "'\n";
    return 2;
  }
  return up::Up();
}
}  // namespace cli
}  // namespace cpserve
