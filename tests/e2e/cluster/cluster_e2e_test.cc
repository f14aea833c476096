// End to end: `cpserve up` starts the router and the pools as real processes;
// `cpserve generate --json` streams through the router; the tokens equal the
// in-process single-rank engine's greedy tokens for the same (router-tokenized)
// prompt. Until the context-parallel engine lands the cluster is a decode pool of
// one rank, so long prompts take the local path too; a multi-rank pool makes `up`
// fail and name the process that failed.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <chrono>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cpserve/v1/generation.grpc.pb.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "nlohmann/json.hpp"
#include "services/up/child_process.h"
#include "tests/common/subprocess.h"
#include "worker/builtin/builtin_model.h"
#include "worker/engine/engine.h"
#include "worker/model/weights.h"
#include "worker/tokenizer/tokenizer.h"

namespace cpserve {
namespace {

using testing::BinaryPath;
using testing::RunCommand;
using testing::Subprocess;
using namespace std::chrono_literals;

struct Generated {
  std::vector<int32_t> tokens;
  std::string finish_reason;
  std::string path;
  int64_t ttft_us = -1;
};

Generated ParseJsonLines(const std::string& output) {
  Generated g;
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    if (line.empty() || line.front() != '{') continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) continue;
    if (j.contains("token_ids")) {
      for (const auto& t : j["token_ids"]) g.tokens.push_back(t.get<int32_t>());
    }
    if (j.contains("finish_reason")) g.finish_reason = j["finish_reason"].get<std::string>();
    if (j.contains("timings")) {
      g.path = j["timings"].value("path", "");
      // proto3 JSON writes int64 as a string.
      const auto& t = j["timings"]["time_to_first_token_us"];
      g.ttft_us = t.is_string() ? std::stoll(t.get<std::string>()) : t.get<int64_t>();
    }
  }
  return g;
}

// Starts `cpserve up` and waits for the router's address; empty on failure.
std::string StartCluster(Subprocess& up, const std::vector<std::string>& flags) {
  std::vector<std::string> argv = {BinaryPath("cpserve"), "up"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  if (!up.Start(argv)) return "";
  const std::regex re(R"(router listening on ([0-9.]+:[0-9]+))");
  const auto deadline = std::chrono::steady_clock::now() + 180s;
  while (std::chrono::steady_clock::now() < deadline && up.Running()) {
    std::smatch m;
    const std::string out = up.Output();
    if (std::regex_search(out, m, re)) return m[1];
    std::this_thread::sleep_for(50ms);
  }
  return "";
}

// {prefill ranks, decode ranks}: a lone decode pool (every prompt local), and the
// default cluster (PCP=2 prefill, DCP=2 decode: long prompts disaggregated).
class ClusterE2eTest : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(ClusterE2eTest, UpRouterPoolsAndGenerateMatchTheSingleRankEngine) {
  const auto [prefill_ranks, decode_ranks] = GetParam();
  absl::StatusOr<std::string> dir = EnsureBuiltinModel();
  ASSERT_TRUE(dir.ok()) << dir.status();
  absl::StatusOr<tokenizer::Tokenizer> tok =
      tokenizer::Tokenizer::FromFile(*dir + "/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  absl::StatusOr<ModelWeights> weights = LoadModel(*dir, DType::kF32);
  ASSERT_TRUE(weights.ok()) << weights.status();
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(*weights, *backend, EngineOptions{});
  ASSERT_TRUE(engine.ok()) << engine.status();

  Subprocess up;
  const std::string address =
      StartCluster(up, {absl::StrCat("--prefill_ranks=", prefill_ranks),
                        absl::StrCat("--decode_ranks=", decode_ranks), "--long_prompt_tokens=64",
                        "--model=" + *dir,
                        absl::StrCat("--cluster_log_dir=", ::testing::TempDir(), "/cpserve-e2e-up-",
                                     prefill_ranks, "-", decode_ranks)});
  ASSERT_FALSE(address.empty()) << up.Output();

  std::string long_prompt;
  for (int i = 0; i < 12; ++i) long_prompt += "The quick brown fox jumps over the lazy dog. ";
  const std::vector<std::string> prompts = {"Hello world", "Tell me a story about a fox.",
                                            long_prompt};
  for (const std::string& prompt : prompts) {
    constexpr int kMaxTokens = 12;
    const auto r =
        RunCommand({BinaryPath("cpserve"), "generate", "--address=" + address, "--prompt=" + prompt,
                    absl::StrCat("--max_tokens=", kMaxTokens), "--json", "--timeout_ms=60000"},
                   120s);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const Generated g = ParseJsonLines(r.output);
    const std::vector<int32_t> ids = tok->Encode(prompt, /*add_special=*/true);
    GenerationParams params;
    params.max_tokens = kMaxTokens;
    absl::StatusOr<std::vector<int32_t>> want = (*engine)->Generate(ids, params);
    ASSERT_TRUE(want.ok()) << want.status();
    EXPECT_EQ(g.tokens, *want) << "prompt of " << ids.size() << " tokens\n" << r.output;
    EXPECT_FALSE(g.finish_reason.empty()) << r.output;
    // Prompts of >= 64 tokens take the PCP path when a prefill pool is up.
    const bool long_prompt = ids.size() >= 64;
    EXPECT_EQ(g.path, long_prompt && prefill_ranks > 0 ? "disaggregated" : "local") << r.output;
    EXPECT_GT(g.ttft_us, 0) << r.output;
  }

  up.Kill(SIGTERM);
  const std::optional<int> code = up.Wait(60s);
  ASSERT_TRUE(code.has_value()) << up.Output();
  EXPECT_EQ(*code, 0) << up.Output();
  EXPECT_NE(up.Output().find("cpserve up: stopped"), std::string::npos) << up.Output();
}

INSTANTIATE_TEST_SUITE_P(Clusters, ClusterE2eTest,
                         ::testing::Values(std::make_pair(0, 1), std::make_pair(2, 2)));

TEST(ClusterE2eFailureTest, UpNamesThePoolThatCannotStart) {
  // An interleave that does not divide the block size stops the pool engine: `up` must
  // say which process failed, show its log, stop the others and exit non-zero.
  absl::StatusOr<std::string> dir = EnsureBuiltinModel();
  ASSERT_TRUE(dir.ok()) << dir.status();
  const auto r = RunCommand({BinaryPath("cpserve"), "up", "--prefill_ranks=0", "--decode_ranks=2",
                             "--model=" + *dir, "--block_size=16", "--interleave=5",
                             "--cluster_log_dir=" + ::testing::TempDir() + "/cpserve-e2e-up2"},
                            180s);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("decode-0/rank"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("pool engine failed to start"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("cpserve up: failed"), std::string::npos) << r.output;
}

// Starts `cpserve router` on a fixed port and waits for its "listening" line.
bool StartRouter(Subprocess& router, int port, const std::string& model) {
  if (!router.Start({BinaryPath("cpserve"), "router", absl::StrCat("--port=", port),
                     "--model=" + model, "--heartbeat_timeout_ms=1000"})) {
    return false;
  }
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline && router.Running()) {
    if (router.Output().find("cpserve router listening on") != std::string::npos) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

// Retries `cpserve generate` until it succeeds (the pool may not be registered yet).
bool GenerateSucceedsWithin(const std::string& address, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto r = RunCommand({BinaryPath("cpserve"), "generate", "--address=" + address,
                               "--prompt=hi", "--max_tokens=2", "--timeout_ms=10000"},
                              30s);
    if (r.exit_code == 0) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

TEST(ClusterE2eOpsTest, PoolRegistersAgainAfterTheRouterRestarts) {
  absl::StatusOr<std::string> dir = EnsureBuiltinModel();
  ASSERT_TRUE(dir.ok()) << dir.status();
  absl::StatusOr<int> port = up::PickFreePort("127.0.0.1");
  ASSERT_TRUE(port.ok()) << port.status();
  const std::string address = absl::StrCat("127.0.0.1:", *port);
  Subprocess router;
  ASSERT_TRUE(StartRouter(router, *port, *dir)) << router.Output();
  Subprocess pool;
  ASSERT_TRUE(pool.Start({BinaryPath("cpserve"), "decode", "--port=0", "--model=" + *dir,
                          "--router=" + address, "--heartbeat_interval_ms=100"}));
  ASSERT_TRUE(GenerateSucceedsWithin(address, 60s)) << router.Output() << pool.Output();

  // A new router knows no pool: the pool's heartbeats fail, then it registers again.
  router.Kill(SIGKILL);
  ASSERT_TRUE(router.Wait(10s).has_value());
  Subprocess restarted;
  ASSERT_TRUE(StartRouter(restarted, *port, *dir)) << restarted.Output();
  EXPECT_TRUE(GenerateSucceedsWithin(address, 60s)) << restarted.Output() << pool.Output();
  const std::string log = pool.Output();
  const size_t first = log.find("registered pool");
  ASSERT_NE(first, std::string::npos) << log;
  EXPECT_NE(log.find("registered pool", first + 1), std::string::npos) << log;

  pool.Kill(SIGTERM);
  const std::optional<int> code = pool.Wait(30s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << pool.Output();
}

TEST(ClusterE2eOpsTest, KilledDecodePoolGivesUnavailableAndARestartedOneServesAgain) {
  absl::StatusOr<std::string> dir = EnsureBuiltinModel();
  ASSERT_TRUE(dir.ok()) << dir.status();
  absl::StatusOr<int> port = up::PickFreePort("127.0.0.1");
  ASSERT_TRUE(port.ok()) << port.status();
  const std::string address = absl::StrCat("127.0.0.1:", *port);
  Subprocess router;
  ASSERT_TRUE(StartRouter(router, *port, *dir)) << router.Output();
  const std::vector<std::string> pool_argv = {
      BinaryPath("cpserve"),        "decode", "--port=0", "--model=" + *dir, "--router=" + address,
      "--heartbeat_interval_ms=100"};
  Subprocess pool;
  ASSERT_TRUE(pool.Start(pool_argv));
  ASSERT_TRUE(GenerateSucceedsWithin(address, 60s)) << router.Output() << pool.Output();

  auto stub =
      v1::Generation::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 60s);  // far beyond "promptly"
  v1::GenerateRequest req;
  req.mutable_prompt()->set_text("Tell me a very long story.");
  req.mutable_sampling()->set_max_tokens(3000);
  req.mutable_sampling()->set_ignore_eos(true);
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse resp;
  int tokens = 0;
  bool killed = false;
  while (reader->Read(&resp)) {
    tokens += resp.token_ids_size();
    if (tokens >= 3 && !killed) {
      pool.Kill(SIGKILL);
      killed = true;
    }
  }
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(killed);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_LT(tokens, 3000);

  Subprocess restarted;
  ASSERT_TRUE(restarted.Start(pool_argv));
  EXPECT_TRUE(GenerateSucceedsWithin(address, 60s)) << router.Output() << restarted.Output();
  restarted.Kill(SIGTERM);
  const std::optional<int> code = restarted.Wait(30s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << restarted.Output();
}

}  // namespace
}  // namespace cpserve
