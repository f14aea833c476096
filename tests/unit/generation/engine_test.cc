// The single-rank engine end to end on the CPU backend: greedy tokens equal the
// float64 reference's, batching / chunking / preemption change no request's tokens,
// seeded sampling is reproducible, cancellation frees every KV block.
#include "worker/engine/engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/reference/forward_ref.h"
#include "tests/unit/generation/test_model.h"

namespace cpserve {
namespace {

std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (int& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    SyntheticModelOptions o;
    o.eos_token_id = 2;
    weights_ = new ModelWeights(testing::WriteAndLoad(o));
    backend_ = MakeCpuBackend().release();
  }
  static void TearDownTestSuite() {
    delete backend_;
    delete weights_;
  }
  std::unique_ptr<Engine> MakeEngine(EngineOptions options = {}) {
    absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Create(*weights_, *backend_, options);
    EXPECT_TRUE(e.ok()) << e.status();
    return *std::move(e);
  }
  static GenerationParams Greedy(int max_tokens) {
    GenerationParams p;
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    return p;
  }

  static ModelWeights* weights_;
  static Backend* backend_;
};
ModelWeights* EngineTest::weights_ = nullptr;
Backend* EngineTest::backend_ = nullptr;

TEST_F(EngineTest, GreedyTokensMatchFloat64Reference) {
  auto engine = MakeEngine();
  std::vector<int32_t> prompt = RandomTokens(23, weights_->config.vocab_size, 1);
  absl::StatusOr<std::vector<int32_t>> got = engine->Generate(prompt, Greedy(12));
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 12u);
  std::vector<int32_t> seq = prompt;
  for (int i = 0; i < 12; ++i) {
    const auto logits = reference::ForwardLogits(*weights_, seq);
    const auto& last = logits.back();
    const int32_t want =
        static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
    ASSERT_EQ((*got)[i], want) << "token " << i;
    seq.push_back(want);
  }
  // Deterministic: a second run gives the same tokens.
  EXPECT_EQ(*engine->Generate(prompt, Greedy(12)), *got);
}

// Each of 8 mixed-length requests alone, then all 8 at once in engines that force
// chunked prefill and preemption: every request's tokens are unchanged.
TEST_F(EngineTest, BatchingChunkingAndPreemptionChangeNoTokens) {
  const int vocab = weights_->config.vocab_size;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<GenerationParams> params;
  for (int i = 0; i < 8; ++i) {
    prompts.push_back(RandomTokens(1 + (i * 37) % 90, vocab, 100 + i));
    GenerationParams p = Greedy(6 + i % 5);
    if (i % 2 == 1) {  // seeded sampling must be batch-independent too
      p.sampling.temperature = 0.8f;
      p.sampling.top_k = 50;
      p.sampling.top_p = 0.9f;
      p.sampling.seed = 1000 + i;
    }
    params.push_back(p);
  }
  std::vector<std::vector<int32_t>> alone;
  {
    auto engine = MakeEngine();
    for (int i = 0; i < 8; ++i) alone.push_back(*engine->Generate(prompts[i], params[i]));
  }
  EngineOptions tight;
  tight.max_batch_tokens = 24;  // chunked prefill
  tight.num_kv_blocks = 28;     // preemption under pressure (8 requests need ~100)
  tight.block_size = 4;
  tight.max_running = 8;
  for (const EngineOptions& options : {EngineOptions{}, tight}) {
    auto engine = MakeEngine(options);
    std::vector<std::vector<int32_t>> together(8);
    std::vector<absl::Notification> done(8);
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(engine
                      ->Submit(absl::StrCat("r", i), prompts[i], params[i],
                               [&, i](const TokenEvent& e) {
                                 EXPECT_TRUE(e.status.ok()) << e.status;
                                 if (e.token >= 0) together[i].push_back(e.token);
                                 if (e.finished) done[i].Notify();
                               })
                      .ok());
    }
    for (auto& d : done) d.WaitForNotification();
    for (int i = 0; i < 8; ++i) EXPECT_EQ(together[i], alone[i]) << "request " << i;
    EXPECT_EQ(engine->Stats().free_kv_blocks, options.num_kv_blocks);
    if (options.num_kv_blocks == tight.num_kv_blocks) {
      EXPECT_GT(engine->Stats().preemptions, 0);  // the tight engine really preempted
    }
  }
}

TEST_F(EngineTest, StopTokenEndsGenerationAndIsIncluded) {
  auto engine = MakeEngine();
  const std::vector<int32_t> prompt = RandomTokens(9, weights_->config.vocab_size, 3);
  const std::vector<int32_t> free_run = *engine->Generate(prompt, Greedy(8));
  GenerationParams p = Greedy(8);
  p.stop_token_ids = {free_run[3]};
  const std::vector<int32_t> stopped = *engine->Generate(prompt, p);
  const size_t first = std::find(free_run.begin(), free_run.end(), free_run[3]) - free_run.begin();
  EXPECT_EQ(stopped, std::vector<int32_t>(free_run.begin(), free_run.begin() + first + 1));
}

TEST_F(EngineTest, CancelEndsTheStreamAndFreesKv) {
  EngineOptions options;
  options.num_kv_blocks = 64;
  auto engine = MakeEngine(options);
  std::atomic<int> tokens{0};
  absl::Notification done;
  absl::Status final_status;
  ASSERT_TRUE(engine
                  ->Submit("long", RandomTokens(50, weights_->config.vocab_size, 4), Greedy(150),
                           [&](const TokenEvent& e) {
                             if (e.token >= 0) ++tokens;
                             if (e.finished) {
                               final_status = e.status;
                               done.Notify();
                             }
                           })
                  .ok());
  while (tokens.load() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  engine->Cancel("long");
  done.WaitForNotification();
  EXPECT_EQ(final_status.code(), absl::StatusCode::kCancelled);
  EXPECT_LT(tokens.load(), 150);
  EXPECT_EQ(engine->Stats().free_kv_blocks, 64);
}

TEST_F(EngineTest, BadRequestsAreRefusedWithClearErrors) {
  EngineOptions options;
  options.num_kv_blocks = 8;
  options.block_size = 4;
  auto engine = MakeEngine(options);
  // Token outside the vocabulary: refused synchronously.
  absl::Status s = engine->Submit("bad", {1, 99999}, Greedy(4), [](const TokenEvent&) {});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("99999"), std::string::npos) << s;
  GenerationParams bad_p = Greedy(4);
  bad_p.sampling.top_p = 0;
  EXPECT_EQ(engine->Generate({1, 2}, bad_p).status().code(), absl::StatusCode::kInvalidArgument);
  // Can never fit in 8 blocks of 4 tokens: refused as an error event.
  absl::StatusOr<std::vector<int32_t>> r = engine->Generate(RandomTokens(40, 512, 5), Greedy(4));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  // Empty prompt.
  EXPECT_EQ(engine->Generate({}, Greedy(4)).status().code(), absl::StatusCode::kInvalidArgument);
  // The engine still serves.
  EXPECT_TRUE(engine->Generate({5, 6, 7}, Greedy(3)).ok());
}

}  // namespace
}  // namespace cpserve
