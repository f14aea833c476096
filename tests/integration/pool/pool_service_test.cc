// A real `cpserve decode` process (world_size 1, built-in model) serving
// cpserve.v1.DecodePool over gRPC, checked against the in-process single-rank
// Engine: greedy tokens, concurrency, cancellation and deadlines freeing KV (read
// from the pool's Prometheus endpoint), graceful SIGTERM, a killed pool.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cpserve/v1/pool.grpc.pb.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "services/up/health_probe.h"
#include "tests/common/subprocess.h"
#include "worker/builtin/builtin_model.h"
#include "worker/engine/engine.h"
#include "worker/model/weights.h"

namespace cpserve {
namespace {

using testing::BinaryPath;
using testing::Subprocess;
using namespace std::chrono_literals;

constexpr int kNumKvBlocks = 512;

// ---- a pool process ----

struct Pool {
  Subprocess process;
  std::string address;
  int metrics_port = -1;
};

// Starts `cpserve <role>` and waits for its "serving" line.
std::unique_ptr<Pool> StartPool(const std::string& role, const std::string& model,
                                std::vector<std::string> extra = {}) {
  auto pool = std::make_unique<Pool>();
  std::vector<std::string> argv = {BinaryPath("cpserve"),
                                   role,
                                   "--port=0",
                                   "--metrics_port=0",
                                   "--model=" + model,
                                   absl::StrCat("--num_kv_blocks=", kNumKvBlocks),
                                   "--drain_timeout_ms=20000"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  if (!pool->process.Start(argv)) return nullptr;
  const std::regex listening(R"(listening on ([0-9.]+:[0-9]+) .*metrics port ([0-9]+))");
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string out = pool->process.Output();
    std::smatch m;
    if (std::regex_search(out, m, listening) &&
        out.find("]: serving (model") != std::string::npos) {
      pool->address = m[1];
      pool->metrics_port = std::stoi(m[2]);
      return pool;
    }
    if (!pool->process.Running()) break;
    std::this_thread::sleep_for(50ms);
  }
  ADD_FAILURE() << "pool did not start:\n" << pool->process.Output();
  return nullptr;
}

// GET /metrics from the pool, as text ("" on failure).
std::string ScrapeMetrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    (void)!write(fd, req.data(), req.size());
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

// The pool's KV blocks in a state ("used" / "free"), or -1.
int64_t KvBlocks(int port, const std::string& state) {
  const std::string text = ScrapeMetrics(port);
  const std::regex re("cpserve_pool_kv_blocks\\{[^}]*state=\"" + state + "\"[^}]*\\} ([0-9.e+]+)");
  std::smatch m;
  if (!std::regex_search(text, m, re)) return -1;
  return static_cast<int64_t>(std::stod(m[1]));
}

// Polls until `pred(used blocks)` holds (or 30 s); returns the last value.
template <typename Pred>
int64_t WaitKvUsed(int port, Pred pred) {
  int64_t used = -1;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    used = KvBlocks(port, "used");
    if (pred(used)) return used;
    std::this_thread::sleep_for(20ms);
  }
  return used;
}

// ---- requests ----

struct Outcome {
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  std::string message;
  std::vector<int32_t> tokens;
  v1::FinishReason reason = v1::FINISH_REASON_UNSPECIFIED;
};

v1::DecodeRequest MakeRequest(const std::string& id, const std::vector<int32_t>& prompt,
                              int max_tokens, bool ignore_eos = false) {
  v1::DecodeRequest req;
  req.set_request_id(id);
  for (int32_t t : prompt) req.add_prompt_token_ids(t);
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_ignore_eos(ignore_eos);
  return req;
}

// Runs a Decode stream to its end. on_tokens(count) may cancel through ctx.
Outcome RunDecode(v1::DecodePool::Stub& stub, const v1::DecodeRequest& req,
                  grpc::ClientContext* ctx = nullptr,
                  const std::function<void(size_t)>& on_tokens = nullptr) {
  grpc::ClientContext local;
  if (ctx == nullptr) {
    ctx = &local;
    ctx->set_deadline(std::chrono::system_clock::now() + 60s);
  }
  Outcome out;
  auto reader = stub.Decode(ctx, req);
  v1::DecodeResponse resp;
  while (reader->Read(&resp)) {
    out.tokens.insert(out.tokens.end(), resp.token_ids().begin(), resp.token_ids().end());
    if (resp.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) out.reason = resp.finish_reason();
    if (on_tokens) on_tokens(out.tokens.size());
  }
  const grpc::Status s = reader->Finish();
  out.code = s.error_code();
  out.message = s.error_message();
  return out;
}

std::vector<int32_t> RandomPrompt(std::mt19937& rng, int len) {
  std::uniform_int_distribution<int32_t> tok(0, 250);
  std::vector<int32_t> p(len);
  for (auto& t : p) t = tok(rng);
  return p;
}

// ---- the suite: one shared pool process and the in-process reference ----

class DecodePoolTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::string> dir = EnsureBuiltinModel();
    ASSERT_TRUE(dir.ok()) << dir.status();
    model_dir_ = new std::string(*dir);
    absl::StatusOr<ModelWeights> w = LoadModel(*model_dir_, DType::kF32);
    ASSERT_TRUE(w.ok()) << w.status();
    weights_ = new ModelWeights(*std::move(w));
    backend_ = MakeCpuBackend().release();
    EngineOptions eo;
    eo.num_kv_blocks = kNumKvBlocks;
    absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(*weights_, *backend_, eo);
    ASSERT_TRUE(engine.ok()) << engine.status();
    reference_ = engine->release();
    pool_ = StartPool("decode", *model_dir_).release();
    ASSERT_NE(pool_, nullptr);
  }
  static void TearDownTestSuite() {
    delete pool_;
    delete reference_;
    delete backend_;
    delete weights_;
    delete model_dir_;
  }

  static std::unique_ptr<v1::DecodePool::Stub> Stub(const std::string& address) {
    return v1::DecodePool::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }

  static std::vector<int32_t> Reference(const std::vector<int32_t>& prompt, int max_tokens,
                                        bool ignore_eos = false) {
    GenerationParams p;
    p.max_tokens = max_tokens;
    p.ignore_eos = ignore_eos;
    absl::StatusOr<std::vector<int32_t>> tokens = reference_->Generate(prompt, p);
    EXPECT_TRUE(tokens.ok()) << tokens.status();
    return tokens.ok() ? *tokens : std::vector<int32_t>{};
  }

  static std::string* model_dir_;
  static ModelWeights* weights_;
  static Backend* backend_;
  static Engine* reference_;
  static Pool* pool_;
};

std::string* DecodePoolTest::model_dir_ = nullptr;
ModelWeights* DecodePoolTest::weights_ = nullptr;
Backend* DecodePoolTest::backend_ = nullptr;
Engine* DecodePoolTest::reference_ = nullptr;
Pool* DecodePoolTest::pool_ = nullptr;

TEST_F(DecodePoolTest, HealthIsServing) {
  absl::StatusOr<up::HealthStatus> h = up::CheckHealth(pool_->address, "", absl::Seconds(5));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, up::HealthStatus::kServing);
  h = up::CheckHealth(pool_->address, "cpserve.v1.DecodePool", absl::Seconds(5));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, up::HealthStatus::kServing);
}

TEST_F(DecodePoolTest, GreedyTokensEqualTheInProcessEngine) {
  auto stub = Stub(pool_->address);
  std::mt19937 rng(1);
  int i = 0;
  for (int len : {1, 5, 16, 17, 40, 97}) {
    const std::vector<int32_t> prompt = RandomPrompt(rng, len);
    const int max_tokens = 3 + (i % 4) * 5;
    const Outcome got =
        RunDecode(*stub, MakeRequest(absl::StrCat("greedy-", i++), prompt, max_tokens));
    ASSERT_EQ(got.code, grpc::StatusCode::OK) << got.message;
    const std::vector<int32_t> want = Reference(prompt, max_tokens);
    EXPECT_EQ(got.tokens, want) << "prompt length " << len;
    EXPECT_EQ(got.reason, static_cast<int>(want.size()) == max_tokens
                              ? v1::FINISH_REASON_LENGTH
                              : v1::FINISH_REASON_STOP_TOKEN);
  }
}

TEST_F(DecodePoolTest, ThirtyTwoConcurrentStreamsOfMixedLengths) {
  constexpr int kStreams = 32;
  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int> max_tokens;
  for (int i = 0; i < kStreams; ++i) {
    prompts.push_back(RandomPrompt(rng, 1 + static_cast<int>(rng() % 120)));
    max_tokens.push_back(1 + static_cast<int>(rng() % 24));
  }
  std::vector<Outcome> got(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      auto stub = Stub(pool_->address);
      got[i] = RunDecode(*stub, MakeRequest(absl::StrCat("concurrent-", i), prompts[i],
                                            max_tokens[i], /*ignore_eos=*/true));
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_EQ(got[i].code, grpc::StatusCode::OK) << i << ": " << got[i].message;
    EXPECT_EQ(got[i].tokens, Reference(prompts[i], max_tokens[i], true)) << "stream " << i;
    EXPECT_EQ(got[i].reason, v1::FINISH_REASON_LENGTH);
  }
  EXPECT_EQ(WaitKvUsed(pool_->metrics_port, [](int64_t u) { return u == 0; }), 0);
}

TEST_F(DecodePoolTest, ClientCancelMidStreamFreesTheKv) {
  ASSERT_EQ(WaitKvUsed(pool_->metrics_port, [](int64_t u) { return u == 0; }), 0);
  auto stub = Stub(pool_->address);
  std::mt19937 rng(3);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 60s);
  int64_t used_while_running = -1;
  const Outcome got = RunDecode(
      *stub, MakeRequest("cancel-me", RandomPrompt(rng, 200), 3000, true), &ctx, [&](size_t n) {
        if (n >= 4 && used_while_running < 0) {
          used_while_running = WaitKvUsed(pool_->metrics_port, [](int64_t u) { return u > 0; });
          ctx.TryCancel();
        }
      });
  EXPECT_EQ(got.code, grpc::StatusCode::CANCELLED) << got.message;
  EXPECT_GE(used_while_running, 200 / 16);  // the prompt's blocks at least
  EXPECT_LT(got.tokens.size(), 3000u);
  EXPECT_EQ(WaitKvUsed(pool_->metrics_port, [](int64_t u) { return u == 0; }), 0);
  EXPECT_EQ(KvBlocks(pool_->metrics_port, "free"), kNumKvBlocks);
}

TEST_F(DecodePoolTest, ExpiredDeadlineFreesTheKv) {
  ASSERT_EQ(WaitKvUsed(pool_->metrics_port, [](int64_t u) { return u == 0; }), 0);
  auto stub = Stub(pool_->address);
  std::mt19937 rng(4);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 400ms);
  const Outcome got =
      RunDecode(*stub, MakeRequest("deadline", RandomPrompt(rng, 150), 3000, true), &ctx);
  EXPECT_EQ(got.code, grpc::StatusCode::DEADLINE_EXCEEDED) << got.message;
  EXPECT_EQ(WaitKvUsed(pool_->metrics_port, [](int64_t u) { return u == 0; }), 0);
}

TEST_F(DecodePoolTest, BadRequestsAreRefusedWithInvalidArgument) {
  auto stub = Stub(pool_->address);
  EXPECT_EQ(RunDecode(*stub, MakeRequest("empty", {}, 4)).code, grpc::StatusCode::INVALID_ARGUMENT);
  v1::DecodeRequest no_first = MakeRequest("no-first-token", {1, 2, 3}, 4);
  no_first.set_transfer_id("t-1");
  EXPECT_EQ(RunDecode(*stub, no_first).code, grpc::StatusCode::INVALID_ARGUMENT);
  v1::DecodeRequest bad_top_p = MakeRequest("bad-top-p", {1, 2, 3}, 4);
  bad_top_p.mutable_sampling()->set_top_p(1.5f);
  EXPECT_EQ(RunDecode(*stub, bad_top_p).code, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(RunDecode(*stub, MakeRequest("bad-token", {1, 100000}, 4)).code,
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(DecodePoolTest, ReserveReturnsATargetAndCancelReleasesIt) {
  auto stub = Stub(pool_->address);
  v1::ReserveRequest req;
  req.set_request_id("reserve-1");
  req.set_prompt_tokens(64);
  req.set_max_tokens(8);
  req.set_ttl_ms(30000);
  v1::ReserveResponse resp;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    ASSERT_TRUE(stub->Reserve(&ctx, req, &resp).ok());
  }
  // One rank, block size 16: 4 blocks, with the rank's UCX address and key.
  ASSERT_EQ(resp.target().destinations_size(), 1);
  EXPECT_EQ(resp.target().layout().world_size(), 1);
  EXPECT_EQ(resp.target().destinations(0).block_ids_size(), 4);
  EXPECT_FALSE(resp.target().destinations(0).worker_address().empty());
  EXPECT_FALSE(resp.target().destinations(0).rkey().empty());
  EXPECT_FALSE(resp.target().transfer_id().empty());
  // The same id cannot be reserved twice while it lives.
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    v1::ReserveResponse again;
    EXPECT_EQ(stub->Reserve(&ctx, req, &again).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  v1::CancelRequest cancel;
  cancel.set_request_id("reserve-1");
  v1::CancelResponse cancelled;
  ASSERT_TRUE(stub->Cancel(&ctx, cancel, &cancelled).ok());
}

TEST_F(DecodePoolTest, CancelRpcStopsARunningStream) {
  auto stub = Stub(pool_->address);
  std::mt19937 rng(5);
  std::optional<v1::CancelResponse> cancel;
  const Outcome got = RunDecode(*stub, MakeRequest("cancel-rpc", RandomPrompt(rng, 30), 3000, true),
                                nullptr, [&](size_t n) {
                                  if (n >= 2 && !cancel) {
                                    grpc::ClientContext ctx;
                                    v1::CancelRequest req;
                                    req.set_request_id("cancel-rpc");
                                    cancel.emplace();
                                    EXPECT_TRUE(stub->Cancel(&ctx, req, &*cancel).ok());
                                  }
                                });
  ASSERT_TRUE(cancel.has_value());
  EXPECT_TRUE(cancel->found());
  EXPECT_EQ(got.code, grpc::StatusCode::CANCELLED) << got.message;
  EXPECT_EQ(WaitKvUsed(pool_->metrics_port, [](int64_t u) { return u == 0; }), 0);
  grpc::ClientContext ctx;
  v1::CancelRequest req;
  req.set_request_id("never-seen");
  v1::CancelResponse resp;
  ASSERT_TRUE(stub->Cancel(&ctx, req, &resp).ok());
  EXPECT_FALSE(resp.found());
}

TEST_F(DecodePoolTest, SigtermDrainsRunningStreamsAndExitsZero) {
  std::unique_ptr<Pool> pool = StartPool("decode", *model_dir_);
  ASSERT_NE(pool, nullptr);
  auto stub = Stub(pool->address);
  std::mt19937 rng(6);
  constexpr int kStreams = 3;
  constexpr int kMaxTokens = 300;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < kStreams; ++i) prompts.push_back(RandomPrompt(rng, 20 + 10 * i));
  std::vector<Outcome> got(kStreams);
  std::atomic<int> started{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      bool counted = false;
      got[i] =
          RunDecode(*stub, MakeRequest(absl::StrCat("drain-", i), prompts[i], kMaxTokens, true),
                    nullptr, [&](size_t) {
                      if (!counted) started.fetch_add(1);
                      counted = true;
                    });
    });
  }
  const auto start_deadline = std::chrono::steady_clock::now() + 30s;
  while (started.load() < kStreams && std::chrono::steady_clock::now() < start_deadline) {
    std::this_thread::sleep_for(5ms);
  }
  if (started.load() < kStreams) {
    for (auto& t : threads) t.join();
    for (int i = 0; i < kStreams; ++i) {
      ADD_FAILURE() << "stream " << i << ": " << got[i].code << " " << got[i].message << " "
                    << got[i].tokens.size() << " tokens";
    }
    FAIL() << "streams did not start\n" << pool->process.Output();
  }
  pool->process.Kill(SIGTERM);
  // New work is refused while the running streams drain.
  grpc::StatusCode refused = grpc::StatusCode::OK;
  for (int attempt = 0; attempt < 200 && refused != grpc::StatusCode::UNAVAILABLE; ++attempt) {
    refused = RunDecode(*stub, MakeRequest(absl::StrCat("late-", attempt), {1, 2, 3}, 2)).code;
    if (refused != grpc::StatusCode::UNAVAILABLE) std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(refused, grpc::StatusCode::UNAVAILABLE);
  for (auto& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_EQ(got[i].code, grpc::StatusCode::OK) << got[i].message;
    EXPECT_EQ(got[i].tokens.size(), static_cast<size_t>(kMaxTokens));
    EXPECT_EQ(got[i].tokens, Reference(prompts[i], kMaxTokens, true));
  }
  const std::optional<int> code = pool->process.Wait(30s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << pool->process.Output();
}

TEST_F(DecodePoolTest, KilledPoolGivesUnavailable) {
  std::unique_ptr<Pool> pool = StartPool("decode", *model_dir_);
  ASSERT_NE(pool, nullptr);
  auto stub = Stub(pool->address);
  std::mt19937 rng(8);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 60s);  // far beyond "promptly"
  bool killed = false;  // a message may carry several tokens: n can skip values
  const Outcome got = RunDecode(*stub, MakeRequest("killed", RandomPrompt(rng, 20), 3000, true),
                                &ctx, [&](size_t n) {
                                  if (n >= 3 && !killed) pool->process.Kill(SIGKILL);
                                  killed |= n >= 3;
                                });
  EXPECT_EQ(got.code, grpc::StatusCode::UNAVAILABLE) << got.message;
  EXPECT_LT(got.tokens.size(), 3000u);
}

TEST(PoolProcessTest, MissingRankFailsWithinTheTimeoutAndBadFlagsAreRefused) {
  // Rank 1 never comes: rank 0 gives up within --collective_timeout_ms, non-zero.
  absl::StatusOr<std::string> dir = EnsureBuiltinModel();
  ASSERT_TRUE(dir.ok());
  const auto r = testing::RunCommand({BinaryPath("cpserve"), "decode", "--world_size=2", "--port=0",
                                      "--collective_timeout_ms=1500", "--model=" + *dir},
                                     60s);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("pool engine failed to start"), std::string::npos) << r.output;
  const auto bad = testing::RunCommand(
      {BinaryPath("cpserve"), "decode", "--rank=1", "--world_size=2", "--model=" + *dir}, 60s);
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("--leader"), std::string::npos) << bad.output;
}

TEST(PoolProcessTest, PrefillWithoutATargetIsRefused) {
  absl::StatusOr<std::string> dir = EnsureBuiltinModel();
  ASSERT_TRUE(dir.ok());
  std::unique_ptr<Pool> pool = StartPool("prefill", *dir);
  ASSERT_NE(pool, nullptr);
  auto stub = v1::PrefillPool::NewStub(
      grpc::CreateChannel(pool->address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  v1::PrefillRequest req;
  req.set_request_id("prefill-1");
  for (int32_t t : {1, 2, 3, 4}) req.add_prompt_token_ids(t);
  v1::PrefillResponse resp;
  // No KV target: refused before any work (the target names where the KV goes).
  EXPECT_EQ(stub->Prefill(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  pool->process.Kill(SIGTERM);
  const std::optional<int> code = pool->process.Wait(30s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << pool->process.Output();
}

}  // namespace
}  // namespace cpserve
