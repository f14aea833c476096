// The default local cluster under load, all real processes: `cpserve up` with a PCP=2
// prefill pool and a DCP=2 decode pool. 32 concurrent streams of mixed lengths (long
// prompts take the disaggregated path) all end with the single-rank engine's tokens;
// a client cancel mid-stream and a deadline expiring during prefill each leave every
// pool's KV blocks back at their baseline (read from the pools' /metrics).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <random>
#include <regex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cpserve/v1/generation.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/common/subprocess.h"
#include "worker/builtin/builtin_model.h"
#include "worker/engine/engine.h"
#include "worker/model/weights.h"

namespace cpserve {
namespace {

using namespace std::chrono_literals;
using testing::BinaryPath;
using testing::Subprocess;

// GET /metrics from 127.0.0.1:port ("" on failure).
std::string Scrape(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    (void)!::write(fd, req.data(), req.size());
    char buf[8192];
    for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;) out.append(buf, n);
  }
  ::close(fd);
  return out;
}

// Sum of a metric's samples whose label set contains `label` (e.g. state="used").
double Metric(const std::string& text, const std::string& name, const std::string& label) {
  double sum = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name, 0) != 0 || line.find(label) == std::string::npos) continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

struct Cluster {
  Subprocess up;
  std::string address;
  std::map<std::string, int> metrics;  // "prefill" / "decode" leader -> metrics port
};

bool StartCluster(Cluster& c, const std::string& model) {
  if (!c.up.Start({BinaryPath("cpserve"), "up", "--prefill_ranks=2", "--decode_ranks=2",
                   "--long_prompt_tokens=64", "--metrics_port=0", "--model=" + model,
                   "--cluster_log_dir=" + ::testing::TempDir() + "/cpserve-load-e2e"})) {
    return false;
  }
  const std::regex router(R"(router listening on ([0-9.]+:[0-9]+))");
  const std::regex pool(R"((prefill|decode)-0/rank0 +[0-9.:]+ +metrics :([0-9]+))");
  const auto deadline = std::chrono::steady_clock::now() + 180s;
  while (std::chrono::steady_clock::now() < deadline && c.up.Running()) {
    const std::string out = c.up.Output();
    std::smatch m;
    if (std::regex_search(out, m, router)) {
      c.address = m[1];
      for (auto it = std::sregex_iterator(out.begin(), out.end(), pool);
           it != std::sregex_iterator(); ++it) {
        c.metrics[(*it)[1]] = std::stoi((*it)[2]);
      }
      return c.metrics.size() == 2;
    }
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

// Waits until the pool leader reports no used KV blocks (heartbeat-updated gauge).
bool KvBackToBaseline(int port) {
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string text = Scrape(port);
    if (!text.empty() && Metric(text, "cpserve_pool_kv_blocks", "state=\"used\"") == 0 &&
        Metric(text, "cpserve_pool_kv_blocks", "state=\"free\"") > 0) {
      return true;
    }
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

struct StreamResult {
  grpc::Status status;
  std::vector<int32_t> tokens;
  std::string path;
};

StreamResult Generate(v1::Generation::Stub& stub, const std::vector<int32_t>& prompt,
                      int max_tokens, std::chrono::milliseconds deadline, int cancel_after = -1) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  v1::GenerateRequest req;
  for (int32_t t : prompt) req.mutable_prompt()->mutable_token_ids()->add_ids(t);
  req.mutable_sampling()->set_max_tokens(max_tokens);
  StreamResult r;
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
    r.tokens.insert(r.tokens.end(), resp.token_ids().begin(), resp.token_ids().end());
    if (resp.has_timings()) r.path = resp.timings().path();
    if (cancel_after >= 0 && static_cast<int>(r.tokens.size()) >= cancel_after) ctx.TryCancel();
  }
  r.status = reader->Finish();
  return r;
}

TEST(ClusterLoadE2eTest, ConcurrentStreamsCancelAndDeadlineOnPcp2Dcp2) {
  absl::StatusOr<std::string> dir = EnsureBuiltinModel();
  ASSERT_TRUE(dir.ok()) << dir.status();
  absl::StatusOr<ModelWeights> weights = LoadModel(*dir, DType::kF32);
  ASSERT_TRUE(weights.ok());
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto engine = *Engine::Create(*weights, *backend, EngineOptions{});

  Cluster c;
  ASSERT_TRUE(StartCluster(c, *dir)) << c.up.Output();
  ASSERT_TRUE(KvBackToBaseline(c.metrics["prefill"]));
  ASSERT_TRUE(KvBackToBaseline(c.metrics["decode"]));
  auto stub =
      v1::Generation::NewStub(grpc::CreateChannel(c.address, grpc::InsecureChannelCredentials()));

  // 32 concurrent streams, prompts of 3..300 tokens (about half take the PCP path).
  std::mt19937 rng(2026);
  constexpr int kStreams = 32;
  std::vector<std::vector<int32_t>> prompts(kStreams);
  std::vector<int> max_tokens(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    prompts[i].resize(3 + rng() % 298);
    for (int32_t& t : prompts[i]) t = static_cast<int32_t>(rng() % 256);  // byte tokens
    max_tokens[i] = 4 + static_cast<int>(rng() % 20);
  }
  std::vector<StreamResult> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { results[i] = Generate(*stub, prompts[i], max_tokens[i], 120s); });
  }
  for (auto& t : threads) t.join();
  int disaggregated = 0;
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(results[i].status.ok()) << i << ": " << results[i].status.error_message();
    GenerationParams p;
    p.max_tokens = max_tokens[i];
    EXPECT_EQ(results[i].tokens, *engine->Generate(prompts[i], p)) << "stream " << i;
    EXPECT_EQ(results[i].path, prompts[i].size() >= 64 ? "disaggregated" : "local") << i;
    disaggregated += results[i].path == "disaggregated";
  }
  EXPECT_GT(disaggregated, 4);
  EXPECT_TRUE(KvBackToBaseline(c.metrics["prefill"]));
  EXPECT_TRUE(KvBackToBaseline(c.metrics["decode"]));

  // A client cancel mid-stream (decode running on the DCP pool after a PCP prefill).
  std::vector<int32_t> long_prompt(400);
  for (int32_t& t : long_prompt) t = static_cast<int32_t>(rng() % 256);
  const StreamResult cancelled = Generate(*stub, long_prompt, 3000, 120s, /*cancel_after=*/3);
  EXPECT_EQ(cancelled.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(cancelled.tokens.size(), 3000u);
  // Its KV went over UCX from host memory, and the pool says so.
  EXPECT_GT(Metric(Scrape(c.metrics["prefill"]), "cpserve_pool_transfer_bytes_total",
                   "transport=\"ucx-host\""),
            0);
  EXPECT_TRUE(KvBackToBaseline(c.metrics["prefill"]));
  EXPECT_TRUE(KvBackToBaseline(c.metrics["decode"]));

  // A deadline that expires during the prefill of a long prompt.
  const double prefills_before =
      Metric(Scrape(c.metrics["prefill"]), "cpserve_pool_requests_total", "rpc=\"Prefill\"");
  std::vector<int32_t> longer(1800);
  for (int32_t& t : longer) t = static_cast<int32_t>(rng() % 256);
  const StreamResult late = Generate(*stub, longer, 8, 40ms);
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(late.tokens.empty());
  EXPECT_TRUE(KvBackToBaseline(c.metrics["prefill"]));
  EXPECT_TRUE(KvBackToBaseline(c.metrics["decode"]));
  // The prefill pool did see (and end) that request.
  const auto seen_deadline = std::chrono::steady_clock::now() + 10s;
  double prefills_after = prefills_before;
  while (prefills_after == prefills_before && std::chrono::steady_clock::now() < seen_deadline) {
    std::this_thread::sleep_for(100ms);
    prefills_after =
        Metric(Scrape(c.metrics["prefill"]), "cpserve_pool_requests_total", "rpc=\"Prefill\"");
  }
  EXPECT_GT(prefills_after, prefills_before);

  c.up.Kill(SIGTERM);
  const std::optional<int> code = c.up.Wait(60s);
  ASSERT_TRUE(code.has_value()) << c.up.Output();
  EXPECT_EQ(*code, 0) << c.up.Output();
}

}  // namespace
}  // namespace cpserve
