// `cpserve bench` end to end: a real `cpserve up` cluster (router, PCP=2 prefill pool,
// DCP=2 decode pool) driven closed loop and open loop through the router, and straight to
// the decode pool's DecodePool/Decode. Checks the JSON report: every measured request
// accounted for and OK, exact output lengths (ignore_eos), the prompt lengths the router
// saw, ordered percentiles.
#include <fstream>
#include <regex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/bench/stats.h"
#include "tests/common/subprocess.h"
#include "worker/builtin/builtin_model.h"

namespace cpserve {
namespace {

using namespace std::chrono_literals;
using testing::BinaryPath;
using testing::RunCommand;
using testing::Subprocess;

struct Cluster {
  Subprocess up;
  std::string router;
  std::string decode;  // the decode pool leader's gRPC address
};

bool StartCluster(Cluster& c, const std::string& model) {
  if (!c.up.Start({BinaryPath("cpserve"), "up", "--prefill_ranks=2", "--decode_ranks=2",
                   "--long_prompt_tokens=64", "--model=" + model,
                   "--cluster_log_dir=" + ::testing::TempDir() + "/cpserve-bench-it"})) {
    return false;
  }
  const std::regex router(R"(router listening on ([0-9.]+:[0-9]+))");
  const std::regex decode(R"(decode-0/rank0 +([0-9.]+:[0-9]+))");
  const auto deadline = std::chrono::steady_clock::now() + 180s;
  while (std::chrono::steady_clock::now() < deadline && c.up.Running()) {
    const std::string out = c.up.Output();
    std::smatch m, d;
    if (std::regex_search(out, m, router) && std::regex_search(out, d, decode)) {
      c.router = m[1];
      c.decode = d[1];
      return true;
    }
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

// Runs `cpserve bench` with `flags` and returns its JSON report.
nlohmann::json Bench(const std::vector<std::string>& flags, const std::string& name) {
  const std::string path = ::testing::TempDir() + "/bench-" + name + ".json";
  std::vector<std::string> argv = {BinaryPath("cpserve"), "bench", "--json_out=" + path};
  argv.insert(argv.end(), flags.begin(), flags.end());
  const testing::RunResult r = RunCommand(argv, 120s);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(path);
  if (!in) {
    ADD_FAILURE() << "no report at " << path << "\n" << r.output;
    return {};
  }
  return nlohmann::json::parse(in);
}

void ExpectOrdered(const nlohmann::json& s, const std::string& what) {
  const double min = s["min"], p50 = s["p50"], p90 = s["p90"], p99 = s["p99"], max = s["max"];
  EXPECT_GE(min, 0) << what;
  EXPECT_LE(min, p50) << what;
  EXPECT_LE(p50, p90) << what;
  EXPECT_LE(p90, p99) << what;
  EXPECT_LE(p99, max) << what;
}

// Everything a report of `n` OK requests must satisfy.
void CheckReport(const nlohmann::json& j, int n, bool router) {
  ASSERT_FALSE(j.is_null());
  EXPECT_EQ(j["requests"], n);
  EXPECT_EQ(j["ok"], n);
  EXPECT_EQ(j["by_status"], nlohmann::json({{"OK", n}}));
  EXPECT_EQ(j["output_length_mismatches"], 0);
  EXPECT_EQ(j["prompt_length_mismatches"], 0);
  EXPECT_GT(j["duration_s"].get<double>(), 0);
  EXPECT_GT(j["requests_per_s"].get<double>(), 0);
  EXPECT_EQ(j["ttft_ms"]["count"], n);
  EXPECT_EQ(j["e2e_ms"]["count"], n);
  ExpectOrdered(j["ttft_ms"], "ttft");
  ExpectOrdered(j["itl_ms"], "itl");
  ExpectOrdered(j["e2e_ms"], "e2e");
  EXPECT_LE(j["ttft_ms"]["max"].get<double>(), j["e2e_ms"]["max"].get<double>());
  EXPECT_EQ(j["goodput"]["met"], n);  // no objective given
  ASSERT_EQ(j["request_records"].size(), static_cast<size_t>(n));
  int64_t out_tokens = 0, itl_count = 0;
  std::vector<bool> seen(n, false);
  for (const auto& r : j["request_records"]) {
    const int index = r["index"];
    ASSERT_GE(index, 0);
    ASSERT_LT(index, n);
    EXPECT_FALSE(seen[index]) << index;
    seen[index] = true;
    EXPECT_EQ(r["status"], "OK");
    EXPECT_EQ(r["output_tokens"], r["max_tokens"]) << r.dump();
    EXPECT_LE(r["ttft_ms"].get<double>(), r["e2e_ms"].get<double>());
    if (router) {
      EXPECT_EQ(r["server_prompt_tokens"], r["prompt_tokens"]) << r.dump();
    }
    out_tokens += r["output_tokens"].get<int64_t>();
    itl_count += r["output_tokens"].get<int64_t>() - 1;
  }
  EXPECT_EQ(j["output_tokens"], out_tokens);
  EXPECT_EQ(j["itl_ms"]["count"], itl_count);
}

TEST(BenchIntegrationTest, RouterClosedAndOpenLoopAndDecodePoolDirect) {
  absl::StatusOr<std::string> model = EnsureBuiltinModel();
  ASSERT_TRUE(model.ok()) << model.status();
  Cluster c;
  ASSERT_TRUE(StartCluster(c, *model)) << c.up.Output();

  // Closed loop, mixed lengths; a quarter of the prompts take the PCP path (>= 64 tokens).
  const nlohmann::json closed =
      Bench({"--address=" + c.router, "--num_requests=12", "--concurrency=4", "--warmup_requests=2",
             "--prompt_tokens=8-40@3,100@1", "--output_tokens=2-6", "--workload_seed=5"},
            "closed");
  CheckReport(closed, 12, /*router=*/true);
  EXPECT_EQ(closed["config"]["mode"], "closed");
  EXPECT_LE(closed["peak_in_flight"].get<int>(), 4);
  int long_prompts = 0;
  for (const auto& r : closed["request_records"]) long_prompts += r["prompt_tokens"] == 100;
  EXPECT_GT(long_prompts, 0);

  // Open loop (Poisson arrivals), text prompts fitted to an exact length.
  const nlohmann::json open =
      Bench({"--address=" + c.router, "--num_requests=10", "--request_rate=20",
             "--warmup_requests=0", "--prompt_kind=text", "--prompt_tokens=24", "--output_tokens=4",
             "--slo_ttft_ms=600000", "--slo_itl_ms=600000"},
            "open");
  CheckReport(open, 10, /*router=*/true);
  EXPECT_EQ(open["config"]["mode"], "open");
  EXPECT_EQ(open["config"]["prompt_kind"], "text");
  // Never sent before its Poisson arrival time (seed = --workload_seed, default 0).
  const std::vector<double> arrivals = bench::PoissonArrivals(10, 20, 0);
  for (const auto& r : open["request_records"]) {
    EXPECT_EQ(r["server_prompt_tokens"], 24);
    EXPECT_GE(r["start_s"].get<double>(), arrivals[r["index"].get<int>()]) << r.dump();
  }

  // Straight to the decode pool leader: the same requests without the router.
  const nlohmann::json pool =
      Bench({"--target=pool", "--address=" + c.decode, "--vocab_size=256", "--num_requests=8",
             "--concurrency=4", "--prompt_tokens=8-40", "--output_tokens=3"},
            "pool");
  CheckReport(pool, 8, /*router=*/false);
  EXPECT_EQ(pool["config"]["target"], "pool");

  // Bad flags fail before sending anything.
  EXPECT_EQ(
      RunCommand({BinaryPath("cpserve"), "bench", "--address=" + c.router, "--prompt_tokens=5-3"})
          .exit_code,
      2);
  EXPECT_EQ(RunCommand({BinaryPath("cpserve"), "bench", "--target=pool", "--address=" + c.decode})
                .exit_code,
            2);
}

}  // namespace
}  // namespace cpserve
