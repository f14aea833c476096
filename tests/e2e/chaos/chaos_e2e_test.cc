// Chaos run (issue #10): a local cluster of real processes — router, a PCP=2 prefill
// pool and DCP=2 decode pools — under many concurrent streaming requests (short
// prompts take the local path, long ones the disaggregated one; mixed output
// lengths, random client cancels and deadlines), while a rank of a random pool is
// killed with SIGKILL every few seconds and the broken pool is restarted. Nothing
// may be lost: every request ends with its tokens or a gRPC status within its
// deadline; every streamed token equals the single-rank greedy reference; every
// pool's KV blocks return to their starting count; the router's per-status counts
// agree with the client's; the broken pools' other ranks exit on their own.
//
// Environment (defaults: the short CI run):
//   CPSERVE_CHAOS_REQUESTS=300 CPSERVE_CHAOS_CONCURRENCY=16 CPSERVE_CHAOS_KILL_INTERVAL_MS=3000
//   CPSERVE_CHAOS_SEED=1 CPSERVE_CHAOS_DECODE_POOLS=2 CPSERVE_CHAOS_GRACE_MS=2000
//   CPSERVE_CHAOS_STRICT_UCX=0 (1: also fail on UCX 1.13's known wireup abort, see
//   chaos_cluster.h; it is counted and printed either way)
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cpserve/v1/generation.grpc.pb.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "services/common/grpc_status.h"
#include "tests/e2e/chaos/chaos_cluster.h"
#include "tests/e2e/chaos/chaos_load.h"
#include "worker/builtin/builtin_model.h"
#include "worker/engine/engine.h"
#include "worker/model/weights.h"

namespace cpserve::chaos {
namespace {

using namespace std::chrono_literals;

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

constexpr int kLongPromptTokens = 64;
constexpr int kNumKvBlocks = 512;

// Distinct prompts of byte tokens: half short (local path), half long (PCP + transfer).
std::vector<std::vector<int32_t>> MakePrompts(int n, uint32_t seed) {
  std::mt19937 rng(seed ^ 0x5eed);
  std::vector<std::vector<int32_t>> prompts(n);
  for (int i = 0; i < n; ++i) {
    const int len = i % 2 == 0 ? 3 + static_cast<int>(rng() % (kLongPromptTokens - 3))
                               : kLongPromptTokens + static_cast<int>(rng() % 240);
    prompts[i].resize(len);
    for (int32_t& t : prompts[i]) t = static_cast<int32_t>(rng() % 256);
  }
  return prompts;
}

// Greedy tokens of the in-process single-rank engine, `max_tokens` long (or to EOS).
std::vector<std::vector<int32_t>> References(Engine& engine,
                                             const std::vector<std::vector<int32_t>>& prompts,
                                             int max_tokens) {
  std::vector<std::vector<int32_t>> refs(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] {
      GenerationParams p;
      p.max_tokens = max_tokens;
      absl::StatusOr<std::vector<int32_t>> r = engine.Generate(prompts[i], p);
      if (r.ok()) refs[i] = *std::move(r);
    });
  }
  for (std::thread& t : threads) t.join();
  return refs;
}

// cpserve_router_requests_total by code name.
std::map<std::string, double> RouterCounts(int port) {
  std::map<std::string, double> out;
  std::istringstream in(ScrapeMetrics(port));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("cpserve_router_requests_total{", 0) != 0) continue;
    out[LabelValue(line, "code")] += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return out;
}

std::string CodeName(grpc::StatusCode code) { return service::GrpcCodeName(code); }

bool WaitFor(std::chrono::milliseconds limit, const std::function<bool()>& done) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return done();
}

TEST(ChaosE2eTest, NothingIsLostWhileRanksAreKilledAndPoolsRestarted) {
  LoadOptions load;
  load.requests = EnvInt("CPSERVE_CHAOS_REQUESTS", 300);
  load.concurrency = EnvInt("CPSERVE_CHAOS_CONCURRENCY", 16);
  load.seed = static_cast<uint32_t>(EnvInt("CPSERVE_CHAOS_SEED", 1));
  const auto kill_interval =
      std::chrono::milliseconds(EnvInt("CPSERVE_CHAOS_KILL_INTERVAL_MS", 3000));
  const int decode_pools = EnvInt("CPSERVE_CHAOS_DECODE_POOLS", 2);
  const auto grace = std::chrono::milliseconds(EnvInt("CPSERVE_CHAOS_GRACE_MS", 2000));
  std::cout << "chaos: " << load.requests << " requests, " << load.concurrency
            << " clients, a kill every ~" << kill_interval.count() << " ms, seed " << load.seed
            << ", 1 prefill pool (PCP=2), " << decode_pools << " decode pool(s) (DCP=2)"
            << std::endl;

  absl::StatusOr<std::string> dir = EnsureBuiltinModel();
  ASSERT_TRUE(dir.ok()) << dir.status();
  absl::StatusOr<ModelWeights> weights = LoadModel(*dir, DType::kF32);
  ASSERT_TRUE(weights.ok()) << weights.status();
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(*weights, *backend, EngineOptions{});
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::vector<std::vector<int32_t>> prompts = MakePrompts(48, load.seed);
  const std::vector<std::vector<int32_t>> refs = References(**engine, prompts, load.max_tokens);
  for (size_t i = 0; i < refs.size(); ++i) ASSERT_FALSE(refs[i].empty()) << "prompt " << i;
  engine->reset();

  ClusterOptions co;
  co.model_dir = *dir;
  co.log_dir = ::testing::TempDir() + "/cpserve-chaos";
  std::filesystem::remove_all(co.log_dir);
  std::filesystem::create_directories(co.log_dir);
  std::cout << "chaos: logs in " << co.log_dir << std::endl;
  co.long_prompt_tokens = kLongPromptTokens;
  co.num_kv_blocks = kNumKvBlocks;
  co.pools.push_back({"prefill-0", "prefill", 2});
  for (int d = 0; d < decode_pools; ++d)
    co.pools.push_back({absl::StrCat("decode-", d), "decode", 2});
  ChaosCluster cluster(co);
  std::string error;
  ASSERT_TRUE(cluster.Start(&error)) << error;
  ASSERT_TRUE(cluster.WaitAllPoolsUp(180s)) << cluster.Logs();
  const std::map<std::string, double> router_before = RouterCounts(cluster.router_metrics_port());

  // The chaos thread: a SIGKILL every kill_interval (x0.5 .. x1.5) while the load runs.
  std::atomic<bool> load_done{false};
  std::vector<std::string> kills;
  std::thread chaos([&] {
    std::mt19937 rng(load.seed * 7919u + 1);
    const auto t0 = Clock::now();
    while (!load_done.load()) {
      const auto wait =
          kill_interval / 2 + std::chrono::milliseconds(rng() % (kill_interval.count() + 1));
      const auto until = Clock::now() + wait;
      while (!load_done.load() && Clock::now() < until) std::this_thread::sleep_for(20ms);
      if (load_done.load()) break;
      const std::string killed = cluster.KillRandomRank(rng);
      if (!killed.empty()) {
        kills.push_back(absl::StrCat(
            killed, "@",
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count(),
            "ms"));
      }
    }
  });
  // This process's own scheduling lag (a 10 ms sleep that overslept): on a starved
  // machine a client's deadline fires late by as much, through no fault of the cluster.
  std::atomic<int64_t> max_lag_us{0};
  std::thread lag_probe([&] {
    while (!load_done.load()) {
      const auto before = Clock::now();
      std::this_thread::sleep_for(10ms);
      const int64_t lag =
          std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - before - 10ms)
              .count();
      if (lag > max_lag_us.load()) max_lag_us.store(lag);
    }
  });
  const std::vector<RequestSpec> specs = MakeRequests(load, static_cast<int>(prompts.size()));
  const auto load_start = Clock::now();
  const std::vector<RequestResult> results =
      RunLoad(cluster.router_address(), prompts, specs, load.concurrency);
  const double load_seconds = std::chrono::duration<double>(Clock::now() - load_start).count();
  load_done.store(true);
  chaos.join();
  lag_probe.join();
  const auto lag = std::chrono::microseconds(max_lag_us.load());

  // ---- every request ended with a sane status, in time, with the reference tokens ----
  const std::set<grpc::StatusCode> allowed = {
      grpc::StatusCode::OK, grpc::StatusCode::CANCELLED, grpc::StatusCode::DEADLINE_EXCEEDED,
      grpc::StatusCode::UNAVAILABLE, grpc::StatusCode::RESOURCE_EXHAUSTED};
  std::map<std::string, int> client_counts, paths;
  std::map<std::string, std::string> example_message;
  int wrong_tokens = 0, late = 0, bad_status = 0, client_ended = 0, maybe_unseen = 0;
  Clock::duration most_late = Clock::duration::zero();
  int64_t tokens_streamed = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const RequestResult& r = results[i];
    const RequestSpec& s = specs[i];
    const std::string code = CodeName(r.code);
    ++client_counts[code];
    if (!example_message.contains(code)) example_message[code] = r.message;
    tokens_streamed += static_cast<int64_t>(r.tokens.size());
    const std::vector<int32_t>& ref = refs[s.prompt];
    const size_t want = std::min<size_t>(s.max_tokens, ref.size());
    const bool prefix =
        r.tokens.size() <= want && std::equal(r.tokens.begin(), r.tokens.end(), ref.begin());
    const bool ended_by_client =
        r.client_cancelled || r.end >= r.deadline - std::chrono::milliseconds(5);
    client_ended += ended_by_client && r.code != grpc::StatusCode::OK;
    // Ended by this client before any answer: the router may never have seen it.
    maybe_unseen += ended_by_client && r.code != grpc::StatusCode::OK && r.tokens.empty();
    if (!prefix || (r.code == grpc::StatusCode::OK && (r.tokens.size() != want || !r.finished))) {
      ++wrong_tokens;
      ADD_FAILURE() << "request " << s.id << " (" << code << ", prompt " << s.prompt << " of "
                    << prompts[s.prompt].size() << " tokens, max_tokens " << s.max_tokens
                    << ", path " << r.path << "): got " << r.tokens.size() << " tokens "
                    << absl::StrJoin(r.tokens, ",") << "; want " << absl::StrJoin(ref, ",");
    }
    most_late = std::max(most_late, r.end - r.deadline);
    if (r.end > r.deadline + grace + lag) {
      ++late;
      ADD_FAILURE()
          << "request " << s.id << " ended "
          << std::chrono::duration_cast<std::chrono::milliseconds>(r.end - r.deadline).count()
          << " ms after its deadline (" << code << ", deadline " << s.deadline.count()
          << " ms, cancel mode " << static_cast<int>(s.cancel) << ", " << r.tokens.size()
          << " tokens; this process lagged up to " << lag.count() / 1000 << " ms)";
    }
    // CANCELLED only when this client cancelled; DEADLINE_EXCEEDED only once it passed.
    const bool status_ok = allowed.contains(r.code) &&
                           (r.code != grpc::StatusCode::CANCELLED || r.client_cancelled) &&
                           (r.code != grpc::StatusCode::DEADLINE_EXCEEDED ||
                            r.end >= r.deadline - std::chrono::milliseconds(5));
    if (!status_ok) {
      ++bad_status;
      ADD_FAILURE()
          << "request " << s.id << ": unexpected " << code << " (" << r.message
          << "), client cancelled " << r.client_cancelled << ", "
          << std::chrono::duration_cast<std::chrono::milliseconds>(r.deadline - r.end).count()
          << " ms before its deadline";
    }
    if (r.code == grpc::StatusCode::OK) ++paths[r.path];
  }

  // ---- the cluster heals: every pool back, KV blocks free, nothing in flight ----
  const bool healed = cluster.WaitAllPoolsUp(180s);
  EXPECT_TRUE(healed) << cluster.Logs();
  std::map<std::string, std::string> kv_report;
  for (const auto& [pool, port] : cluster.LeaderMetricsPorts()) {
    double used = -1, free = -1, live = -1;
    const bool back = WaitFor(30s, [&, port = port] {
      const std::string text = ScrapeMetrics(port);
      if (text.empty()) return false;
      used = MetricSum(text, "cpserve_pool_kv_blocks", {"state=\"used\""});
      free = MetricSum(text, "cpserve_pool_kv_blocks", {"state=\"free\""});
      live = MetricSum(text, "cpserve_pool_load", {});
      return used == 0 && free == kNumKvBlocks && live == 0;
    });
    kv_report[pool] = absl::StrCat("free ", free, "/", kNumKvBlocks, ", leaked ", used,
                                   ", queued+running+rpcs ", live);
    EXPECT_TRUE(back) << pool << ": " << kv_report[pool];
  }
  double router_queue = -1;
  EXPECT_TRUE(WaitFor(10s,
                      [&] {
                        router_queue = MetricSum(ScrapeMetrics(cluster.router_metrics_port()),
                                                 "cpserve_router_queue_depth");
                        return router_queue == 0;
                      }))
      << "router queue depth " << router_queue;

  // ---- the router's counts agree with the client's ----
  // A request this client cancelled or let expire may have been decided otherwise by
  // the router a moment before (e.g. OK whose status had not arrived): those few may
  // move between codes; every other request must be counted under the code the client saw.
  std::map<std::string, double> router_counts;
  WaitFor(5s, [&] {
    router_counts.clear();
    double total = 0;
    for (const auto& [code, n] : RouterCounts(cluster.router_metrics_port())) {
      const double before = router_before.contains(code) ? router_before.at(code) : 0;
      if (n - before > 0) router_counts[code] = n - before;
      total += n - before;
    }
    return total >= static_cast<double>(results.size() - maybe_unseen);
  });
  double router_total = 0;
  int disagreement = 0;
  std::set<std::string> codes;
  for (const auto& [c, n] : client_counts) codes.insert(c);
  for (const auto& [c, n] : router_counts) codes.insert(c), router_total += n;
  for (const std::string& c : codes) {
    const double rn = router_counts.contains(c) ? router_counts[c] : 0;
    const int cn = client_counts.contains(c) ? client_counts[c] : 0;
    disagreement += static_cast<int>(std::abs(rn - cn));
  }
  // Every request the router answered is counted once; only requests this client
  // gave up on before any answer may be missing (their call may never have reached it).
  EXPECT_LE(router_total, static_cast<double>(results.size()));
  EXPECT_GE(router_total, static_cast<double>(results.size() - maybe_unseen));
  EXPECT_LE(disagreement / 2, client_ended)
      << "router and client disagree on more requests than the client ended itself";
  for (const std::string& c : codes) {
    if (c == "CANCELLED" || c == "DEADLINE_EXCEEDED") continue;
    const double rn = router_counts.contains(c) ? router_counts[c] : 0;
    EXPECT_GE(rn, client_counts[c]) << "router counted fewer " << c << " than the client saw";
  }

  // ---- the supervisor's view: survivors exited on their own, nothing crashed ----
  const std::map<std::string, PoolCounters> counters = cluster.Counters();
  int total_kills = 0, total_restarts = 0;
  for (const auto& [pool, c] : counters) {
    total_kills += c.kills;
    total_restarts += c.restarts;
    EXPECT_EQ(c.stuck_ranks, 0) << pool << ": ranks that did not exit after their pool broke";
    if (EnvInt("CPSERVE_CHAOS_STRICT_UCX", 0) != 0) {
      EXPECT_EQ(c.known_ucx_aborts, 0) << pool << ": ranks aborted by UCX's wireup assertion";
    }
    EXPECT_EQ(c.unexpected_exits, 0)
        << pool << ": ranks that died without a kill:" << c.unexpected_detail << "\n"
        << cluster.Logs();
  }

  // ---- after the chaos the cluster serves correctly again ----
  std::vector<RequestSpec> calm(16);
  for (size_t i = 0; i < calm.size(); ++i) {
    calm[i].prompt = static_cast<int>(i % prompts.size());
    calm[i].max_tokens = load.max_tokens;
    calm[i].deadline = 120s;
  }
  const std::vector<RequestResult> after = RunLoad(cluster.router_address(), prompts, calm, 8);
  int after_ok = 0;
  for (size_t i = 0; i < after.size(); ++i) {
    after_ok += after[i].code == grpc::StatusCode::OK;
    EXPECT_EQ(after[i].code, grpc::StatusCode::OK) << after[i].message;
    EXPECT_EQ(after[i].tokens, refs[calm[i].prompt]) << "calm request " << i;
  }

  // ---- summary ----
  std::ostringstream out;
  out << "==== chaos summary ====\n"
      << "requests " << results.size() << " from " << load.concurrency << " clients in "
      << load_seconds << " s (seed " << load.seed << "), " << tokens_streamed
      << " tokens streamed\n";
  out << "statuses (client / router):\n";
  for (const std::string& c : codes) {
    out << "  " << c << ": " << (client_counts.contains(c) ? client_counts[c] : 0) << " / "
        << (router_counts.contains(c) ? router_counts[c] : 0)
        << (example_message.contains(c) && !example_message[c].empty()
                ? "  e.g. \"" + example_message[c] + "\""
                : "")
        << "\n";
  }
  out << "  router total " << router_total << " (client " << results.size() << "; " << maybe_unseen
      << " given up by the client before any answer)\n";
  out << "  ended by this client (cancel or deadline): " << client_ended
      << "; router/client disagreements: " << disagreement / 2 << "\n";
  out << "OK by path:";
  for (const auto& [p, n] : paths) out << " " << p << "=" << n;
  out << "\nwrong tokens " << wrong_tokens << ", past deadline+" << grace.count() << "ms " << late
      << " (latest end after a deadline: "
      << std::chrono::duration_cast<std::chrono::milliseconds>(most_late).count()
      << " ms; this process's own scheduling lag up to " << lag.count() / 1000
      << " ms), unexpected statuses " << bad_status << "\n";
  out << "kills " << total_kills << ", pool restarts " << total_restarts << "\n";
  for (const auto& [pool, c] : counters) {
    out << "  " << pool << ": kills " << c.kills << ", restarts " << c.restarts
        << ", slowest break-to-all-exited " << c.max_exit_seconds << " s, stuck ranks "
        << c.stuck_ranks << ", unexpected exits " << c.unexpected_exits
        << ", known UCX 1.13 aborts " << c.known_ucx_aborts << "\n";
  }
  out << "KV at the end:\n";
  for (const auto& [pool, s] : kv_report) out << "  " << pool << ": " << s << "\n";
  out << "router queue depth at the end " << router_queue << "\n";
  out << "after the chaos: " << after_ok << "/" << after.size() << " requests OK\n";
  out << "kills: " << absl::StrJoin(kills, " ") << "\n";
  std::cout << out.str() << std::flush;

  std::string stop_report;
  EXPECT_TRUE(cluster.Stop(&stop_report)) << stop_report;
}

}  // namespace
}  // namespace cpserve::chaos
