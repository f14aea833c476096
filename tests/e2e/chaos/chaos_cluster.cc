#include "tests/e2e/chaos/chaos_cluster.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "cpserve/v1/generation.grpc.pb.h"
#include "services/up/child_process.h"
#include "services/up/health_probe.h"

namespace cpserve::chaos {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using testing::BinaryPath;

std::string ScrapeMetrics(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval tv{.tv_sec = 5, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[8192];
      for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;) out.append(buf, n);
    }
  }
  ::close(fd);
  return out;
}

double MetricSum(const std::string& text, const std::string& name,
                 const std::vector<std::string>& labels) {
  double sum = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name, 0) != 0 || line.size() <= name.size()) continue;
    if (line[name.size()] != '{' && line[name.size()] != ' ') continue;
    bool all = true;
    for (const std::string& l : labels) all = all && line.find(l) != std::string::npos;
    if (all) sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

std::string LabelValue(const std::string& line, const std::string& label) {
  const std::string key = label + "=\"";
  const size_t at = line.find(key);
  if (at == std::string::npos) return "";
  const size_t begin = at + key.size();
  return line.substr(begin, line.find('"', begin) - begin);
}

bool IsKnownUcxAbort(int exit_code, const std::string& output) {
  return exit_code == 128 + SIGABRT && output.find("ucp_request.c") != std::string::npos &&
         output.find("Assertion `(req->send.wireup.type == UCP_WIREUP_MSG_EP_REMOVED)") !=
             std::string::npos;
}

void ChaosCluster::SaveLog(const std::string& name, testing::Subprocess& process) const {
  std::string file = name;
  std::replace(file.begin(), file.end(), '/', '.');
  std::ofstream(absl::StrCat(options_.log_dir, "/", file, ".log"), std::ios::app)
      << process.Output() << "---- exited with " << process.Wait(0ms).value_or(-1) << "\n";
}

ChaosCluster::ChaosCluster(ClusterOptions options) : options_(std::move(options)) {}

ChaosCluster::~ChaosCluster() {
  std::string ignored;
  Stop(&ignored);
}

std::vector<std::string> ChaosCluster::PoolArgv(const Pool& pool, int rank) const {
  std::vector<std::string> argv = {
      BinaryPath("cpserve"),
      pool.spec.role,
      "--pool=" + pool.spec.name,
      absl::StrCat("--rank=", rank),
      absl::StrCat("--world_size=", pool.spec.ranks),
      "--host=127.0.0.1",
      absl::StrCat("--port=", pool.ranks[rank].port),
      absl::StrCat("--metrics_port=", pool.ranks[rank].metrics_port),
      "--model=" + options_.model_dir,
      absl::StrCat("--num_kv_blocks=", options_.num_kv_blocks),
      absl::StrCat("--collective_timeout_ms=", options_.collective_timeout_ms),
      "--drain_timeout_ms=1000"};
  if (rank == 0) {
    argv.push_back("--router=" + router_address_);
    argv.push_back(absl::StrCat("--heartbeat_interval_ms=", options_.heartbeat_interval_ms));
  } else {
    argv.push_back(absl::StrCat("--leader=127.0.0.1:", pool.ranks[0].port));
  }
  return argv;
}

bool ChaosCluster::StartPool(Pool& pool, std::string* error) {
  for (int r = 0; r < pool.spec.ranks; ++r) {
    Rank& rank = pool.ranks[r];
    rank.process = testing::Subprocess();
    if (!rank.process.Start(PoolArgv(pool, r))) {
      *error = absl::StrCat("cannot start ", pool.spec.name, "/rank", r);
      return false;
    }
    rank.running = true;
  }
  pool.killed.clear();
  pool.restarting = false;
  return true;
}

bool ChaosCluster::Start(std::string* error) {
  auto port = [&](int* out) {
    absl::StatusOr<int> p = up::PickFreePort("127.0.0.1");
    if (p.ok()) *out = *p;
    return p.ok();
  };
  if (!port(&router_port_) || !port(&router_metrics_)) {
    *error = "no free port";
    return false;
  }
  router_address_ = absl::StrCat("127.0.0.1:", router_port_);
  if (!router_.Start({BinaryPath("cpserve"), "router", "--host=127.0.0.1",
                      absl::StrCat("--port=", router_port_),
                      absl::StrCat("--metrics_port=", router_metrics_),
                      "--model=" + options_.model_dir,
                      absl::StrCat("--long_prompt_tokens=", options_.long_prompt_tokens),
                      absl::StrCat("--heartbeat_timeout_ms=", options_.heartbeat_timeout_ms),
                      "--max_queued_requests=1024"})) {
    *error = "cannot start the router";
    return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const PoolSpec& spec : options_.pools) {
    Pool& pool = pools_.emplace_back();
    pool.spec = spec;
    pool.ranks.resize(spec.ranks);
    for (Rank& r : pool.ranks) {
      if (!port(&r.port) || !port(&r.metrics_port)) {
        *error = "no free port";
        return false;
      }
    }
    if (!StartPool(pool, error)) return false;
  }
  supervisor_ = std::thread([this] { Supervise(); });
  return true;
}

bool ChaosCluster::WaitAllPoolsUp(std::chrono::milliseconds timeout) {
  auto stub = v1::Generation::NewStub(
      grpc::CreateChannel(router_address_, grpc::InsecureChannelCredentials()));
  std::vector<std::string> leaders;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Pool& p : pools_) leaders.push_back(absl::StrCat("127.0.0.1:", p.ranks[0].port));
  }
  auto up = [&] {
    if (!AllRanksRunning()) return false;
    for (const std::string& leader : leaders) {
      absl::StatusOr<up::HealthStatus> h = up::CheckHealth(leader, "", absl::Seconds(1));
      if (!h.ok() || *h != up::HealthStatus::kServing) return false;
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 2s);
    v1::ModelInfo info;
    if (!stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok()) return false;
    size_t healthy = 0;
    for (const v1::PoolSummary& p : info.pools()) healthy += p.healthy();
    return healthy == options_.pools.size();
  };
  // Up for longer than a heartbeat timeout in a row: a registration of a dead
  // incarnation (still within its heartbeat timeout) cannot pass for a live pool.
  const auto deadline = Clock::now() + timeout;
  const auto steady = std::chrono::milliseconds(options_.heartbeat_timeout_ms) + 500ms;
  bool was_up = false;
  Clock::time_point up_since = Clock::now();
  while (Clock::now() < deadline) {
    if (!up()) {
      was_up = false;
    } else if (!was_up) {
      was_up = true;
      up_since = Clock::now();
    } else if (Clock::now() - up_since >= steady) {
      return true;
    }
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

std::string ChaosCluster::KillRandomRank(std::mt19937& rng) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Pool*> up;
  for (Pool& p : pools_) {
    bool all = !p.restarting;
    for (Rank& r : p.ranks) all = all && r.running;
    if (all) up.push_back(&p);
  }
  if (up.empty()) return "";
  Pool& pool = *up[rng() % up.size()];
  const int r = static_cast<int>(rng() % pool.ranks.size());
  pool.ranks[r].process.Kill(SIGKILL);
  pool.killed.push_back(r);
  // Broken from now on (the supervisor notices the exit on its next tick).
  pool.restarting = true;
  pool.broken_at = Clock::now();
  ++pool.counters.kills;
  return absl::StrCat(pool.spec.name, "/rank", r);
}

void ChaosCluster::Supervise() {
  while (!stop_.load()) {
    std::this_thread::sleep_for(50ms);
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_.load()) break;
    for (Pool& pool : pools_) {
      int alive = 0;
      for (int r = 0; r < pool.spec.ranks; ++r) {
        Rank& rank = pool.ranks[r];
        if (rank.running && !rank.process.Running()) {
          rank.running = false;
          SaveLog(absl::StrCat(pool.spec.name, "/rank", r), rank.process);
          const bool killed =
              std::find(pool.killed.begin(), pool.killed.end(), r) != pool.killed.end();
          if (!killed) {
            // Not ours: fine only as a survivor of a broken pool that exited by itself.
            const int code = rank.process.Wait(0ms).value_or(-1);
            if (IsKnownUcxAbort(code, rank.process.Output())) {
              ++pool.counters.known_ucx_aborts;
            } else if (!pool.restarting || code >= 128) {
              ++pool.counters.unexpected_exits;
              absl::StrAppend(&pool.counters.unexpected_detail, " rank ", r, " exit ", code,
                              pool.restarting ? " (pool already broken)" : " (pool healthy)");
            }
          }
          if (!pool.restarting) {
            pool.restarting = true;
            pool.broken_at = Clock::now();
          }
        }
        alive += rank.running;
      }
      if (!pool.restarting) continue;
      const auto waited = Clock::now() - pool.broken_at;
      if (alive > 0 && waited > options_.exit_limit) {
        for (int r = 0; r < pool.spec.ranks; ++r) {
          if (!pool.ranks[r].running) continue;
          ++pool.counters.stuck_ranks;
          pool.ranks[r].process.Kill(SIGKILL);
          pool.killed.push_back(r);
        }
        continue;
      }
      if (alive > 0) continue;
      pool.counters.max_exit_seconds =
          std::max(pool.counters.max_exit_seconds, std::chrono::duration<double>(waited).count());
      std::string error;
      if (StartPool(pool, &error)) ++pool.counters.restarts;
    }
  }
}

std::map<std::string, int> ChaosCluster::LeaderMetricsPorts() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, int> out;
  for (const Pool& p : pools_) out[p.spec.name] = p.ranks[0].metrics_port;
  return out;
}

std::map<std::string, PoolCounters> ChaosCluster::Counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, PoolCounters> out;
  for (const Pool& p : pools_) out[p.spec.name] = p.counters;
  return out;
}

bool ChaosCluster::AllRanksRunning() const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Pool& p : pools_) {
    if (p.restarting) return false;
    for (const Rank& r : p.ranks) {
      if (!r.running) return false;
    }
  }
  return true;
}

std::string ChaosCluster::Logs(size_t bytes) const {
  auto tail = [bytes](const std::string& s) {
    return s.size() <= bytes ? s : s.substr(s.size() - bytes);
  };
  std::lock_guard<std::mutex> lock(mu_);
  std::string out = absl::StrCat("==== router\n", tail(router_.Output()));
  for (const Pool& p : pools_) {
    for (size_t r = 0; r < p.ranks.size(); ++r) {
      absl::StrAppend(&out, "==== ", p.spec.name, "/rank", r, "\n",
                      tail(p.ranks[r].process.Output()));
    }
  }
  return out;
}

bool ChaosCluster::Stop(std::string* report) {
  if (supervisor_.joinable()) {
    stop_.store(true);
    supervisor_.join();
  }
  std::lock_guard<std::mutex> lock(mu_);
  bool clean = true;
  // SIGTERM to every rank at once (a follower ends once its leader sends the stop),
  // then wait for each; SIGKILL what does not stop.
  std::vector<std::pair<testing::Subprocess*, std::string>> procs;
  for (Pool& pool : pools_) {
    for (size_t r = 0; r < pool.ranks.size(); ++r) {
      if (pool.ranks[r].process.Running()) {
        procs.emplace_back(&pool.ranks[r].process, absl::StrCat(pool.spec.name, "/rank", r));
      }
      pool.ranks[r].running = false;
    }
  }
  for (auto& [p, name] : procs) p->Kill(SIGTERM);
  for (auto& [p, name] : procs) {
    std::optional<int> code = p->Wait(20s);
    if (!code) {
      p->Kill(SIGKILL);
      p->Wait(5s);
    }
    SaveLog(name, *p);
    if (!code || *code != 0) {
      clean = false;
      absl::StrAppend(report, name, " exited with ", code ? absl::StrCat(*code) : "timeout",
                      " after SIGTERM\n");
    }
  }
  pools_.clear();
  if (router_.Running()) {
    router_.Kill(SIGTERM);
    std::optional<int> code = router_.Wait(20s);
    if (!code) router_.Kill(SIGKILL), router_.Wait(5s);
    SaveLog("router", router_);
    if (!code || *code != 0) {
      clean = false;
      absl::StrAppend(report, "router exited with ", code ? absl::StrCat(*code) : "timeout",
                      " after SIGTERM\n");
    }
  }
  return clean;
}

}  // namespace cpserve::chaos
