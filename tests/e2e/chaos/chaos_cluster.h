// A local cluster for chaos runs, started and supervised by the test itself (not by
// `cpserve up`, which stops everything when one child dies): one router and several
// pools, each rank a real `cpserve` process on loopback with fixed ports. A killed
// rank breaks its pool; the supervisor waits for the pool's other ranks to exit on
// their own (they must: a pool whose collective group broke cannot serve), records
// how long that took, and restarts the whole pool on the same ports.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/subprocess.h"

namespace cpserve::chaos {

// GET /metrics from 127.0.0.1:port ("" on failure).
std::string ScrapeMetrics(int port);
// Sum of a metric's samples (name exact, before '{' or ' ') whose label text contains
// every string of `labels` (e.g. {"state=\"used\""}).
double MetricSum(const std::string& text, const std::string& name,
                 const std::vector<std::string>& labels = {});
// Value of one label (e.g. code) of a sample line, "" if absent.
std::string LabelValue(const std::string& line, const std::string& label);

struct PoolSpec {
  std::string name;  // e.g. "decode-0"
  std::string role;  // "prefill" | "decode"
  int ranks = 2;
};

struct ClusterOptions {
  std::string model_dir;
  std::string log_dir;
  int long_prompt_tokens = 64;
  int num_kv_blocks = 512;
  int heartbeat_interval_ms = 100;
  int heartbeat_timeout_ms = 1000;
  // Below the pools' default (30 s) but above the few seconds a surviving rank's UCX 1.13
  // agent can take to give up on a killed peer of the other pool (a decode rank stalled
  // ~6 s after a prefill rank died mid-transfer; at 5 s that broke the decode pool).
  int collective_timeout_ms = 15000;
  // A broken pool's surviving ranks must exit within this; else they are killed and
  // the pool counts a "stuck" rank.
  std::chrono::milliseconds exit_limit{20000};
  std::vector<PoolSpec> pools;
};

struct PoolCounters {
  int kills = 0;        // ranks this harness SIGKILLed
  int restarts = 0;     // times the whole pool was started again
  int stuck_ranks = 0;  // survivors that did not exit within exit_limit
  // Ranks that died without a kill (or crashed after their pool broke), other than:
  int unexpected_exits = 0;
  std::string unexpected_detail;  // per unexpected exit: rank, exit code, ms after start
  // UCX 1.13's over-strict assertion when a peer dies during wireup (SIGABRT in
  // ucp_request_send_state_ff, "got REP message"; removed upstream in openucx/ucx#8175).
  int known_ucx_aborts = 0;
  double max_exit_seconds = 0;  // slowest survivor exit after a break
};

// A rank's exit is UCX 1.13's known wireup assertion (see PoolCounters).
bool IsKnownUcxAbort(int exit_code, const std::string& output);

class ChaosCluster {
 public:
  explicit ChaosCluster(ClusterOptions options);
  ~ChaosCluster();  // stops the supervisor and every process

  // Starts the router and every pool, then the supervisor thread. False (with
  // `error`) when a process cannot start.
  bool Start(std::string* error);
  // True once every pool is registered and healthy at the router (GetModelInfo).
  bool WaitAllPoolsUp(std::chrono::milliseconds timeout);

  // Kills (SIGKILL) one random rank of a random pool that is fully up; returns a
  // description ("decode-0/rank1"), or "" when no pool is fully up.
  std::string KillRandomRank(std::mt19937& rng);

  const std::string& router_address() const { return router_address_; }
  int router_metrics_port() const { return router_metrics_; }
  // Metrics port of each pool's leader (fixed across restarts).
  std::map<std::string, int> LeaderMetricsPorts() const;
  std::map<std::string, PoolCounters> Counters() const;
  // Every rank of every pool running and not being restarted.
  bool AllRanksRunning() const;
  // Ranks' and router's logs (for failure messages), last `bytes` of each.
  std::string Logs(size_t bytes = 4000) const;
  // Stops every process (SIGTERM, then SIGKILL); true when all exited cleanly (0).
  bool Stop(std::string* report);

 private:
  struct Rank {
    int port = 0;
    int metrics_port = 0;
    testing::Subprocess process;
    bool running = false;
  };
  struct Pool {
    PoolSpec spec;
    std::vector<Rank> ranks;
    bool restarting = false;
    std::chrono::steady_clock::time_point broken_at;
    std::vector<int> killed;  // ranks killed by KillRandomRank since the last restart
    PoolCounters counters;
  };

  bool StartPool(Pool& pool, std::string* error);  // mu_ held
  void Supervise();
  // Appends a process's output to <log_dir>/<name with '/' as '.'>.log (every
  // incarnation's output is kept there).
  void SaveLog(const std::string& name, testing::Subprocess& process) const;
  std::vector<std::string> PoolArgv(const Pool& pool, int rank) const;

  ClusterOptions options_;
  std::string router_address_;
  int router_port_ = 0;
  int router_metrics_ = 0;
  testing::Subprocess router_;

  mutable std::mutex mu_;
  std::vector<Pool> pools_;
  std::atomic<bool> stop_{false};
  std::thread supervisor_;
};

}  // namespace cpserve::chaos
