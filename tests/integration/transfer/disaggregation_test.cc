// Disaggregated serving inside one process: a prefill pool (PCP over P ranks) and a
// decode pool (DCP over D ranks), every rank a thread with its own backend, KV cache
// and UCX transfer agent, each pool a real Gloo group. The decode pool reserves KV,
// the prefill pool computes the prompt, samples the first token and pushes its KV,
// the decode pool continues: the tokens must equal the single-rank engine's, and
// every KV block must be free afterwards on both pools. Also: an unclaimed
// reservation expires, and a push to a mismatched target fails cleanly.
#include <cstdlib>
#include <future>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/unit/generation/test_model.h"
#include "worker/comm/gloo_group.h"
#include "worker/comm/rendezvous_client.h"
#include "worker/comm/rendezvous_service.h"
#include "worker/engine/engine.h"

namespace cpserve {
namespace {

constexpr int kBlocks = 256;

const ModelWeights& Weights() {
  static const ModelWeights* w = new ModelWeights(testing::WriteAndLoad(SyntheticModelOptions()));
  return *w;
}

// A pool of `world` ranks: rank 0's Engine here, the others following on threads.
class Pool {
 public:
  Pool(const std::string& name, int world, bool prefill, const std::string& rdzv) {
    options_.enable_transfer = true;
    options_.partition_prefill = prefill;
    options_.num_kv_blocks = kBlocks;
    options_.interleave = prefill ? 16 : 1;  // different layouts on the two sides
    for (int r = 0; r < world; ++r) backends_.push_back(MakeCpuBackend());
    std::vector<std::unique_ptr<comm::CollectiveGroup>> groups(world);
    std::vector<std::thread> joins;
    for (int r = 0; r < world && world > 1; ++r) {
      joins.emplace_back([&, r] {
        auto client = comm::RendezvousClient::Connect(rdzv, std::chrono::seconds(20));
        ASSERT_TRUE(client.ok());
        auto g = comm::CreateGlooGroup(**client, comm::RendezvousPrefix(name, 0), r, world,
                                       {"127.0.0.1", std::chrono::seconds(20)});
        ASSERT_TRUE(g.ok()) << g.status();
        groups[r] = *std::move(g);
      });
    }
    for (auto& t : joins) t.join();
    groups_ = std::move(groups);
    for (int r = 1; r < world; ++r) {
      followers_.emplace_back([this, r] {
        const absl::Status s = RunFollower(Weights(), *backends_[r], options_, *groups_[r]);
        EXPECT_TRUE(s.ok()) << s;
      });
    }
    auto engine = Engine::Create(Weights(), *backends_[0], options_, groups_[0].get());
    EXPECT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }
  ~Pool() {
    engine_.reset();  // tells the followers to stop
    for (auto& t : followers_) t.join();
  }
  Engine& engine() { return *engine_; }

 private:
  EngineOptions options_;
  std::vector<std::unique_ptr<Backend>> backends_;
  std::vector<std::unique_ptr<comm::CollectiveGroup>> groups_;
  std::vector<std::thread> followers_;
  std::unique_ptr<Engine> engine_;
};

GenerationParams Greedy(int n) {
  GenerationParams p;
  p.max_tokens = n;
  p.ignore_eos = true;
  return p;
}

void WaitForFreeBlocks(Engine& e) {
  for (int i = 0; i < 2000 && e.Stats().free_kv_blocks != kBlocks; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(e.Stats().free_kv_blocks, kBlocks);
}

class DisaggregationTest : public ::testing::TestWithParam<std::tuple<int, int>> {
 protected:
  static void SetUpTestSuite() {
    ::setenv("UCX_TLS", "tcp,self", 1);
    ::setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 1);
  }
};

TEST_P(DisaggregationTest, TokensEqualTheSingleRankEngineAndKvIsFreed) {
  const auto [p, d] = GetParam();
  auto server = comm::RendezvousServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok());
  Pool decode("decode", d, false, (*server)->address());
  Pool prefill("prefill", p, true, (*server)->address());
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  EngineOptions single;
  single.num_kv_blocks = kBlocks;
  auto reference = *Engine::Create(Weights(), *backend, single);

  std::mt19937 rng(p * 10 + d);
  const int vocab = static_cast<int>(Weights().config.vocab_size);
  for (int n : {1, 2 * p - 1 + 1, 17, 300}) {
    std::vector<int32_t> prompt(n);
    for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % vocab);
    const std::string id = absl::StrCat("req-", n);
    const std::vector<int32_t> want = *reference->Generate(prompt, Greedy(12));

    auto target = decode.engine().Reserve(id, n, 12, absl::Seconds(30));
    ASSERT_TRUE(target.ok()) << target.status();
    std::promise<PrefillResult> prefilled;
    ASSERT_TRUE(prefill.engine()
                    .SubmitPrefill(id, prompt, Greedy(12), *target, absl::Now() + absl::Seconds(30),
                                   [&](const PrefillResult& r) { prefilled.set_value(r); })
                    .ok());
    const PrefillResult r = prefilled.get_future().get();
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.first_token, want[0]);
    EXPECT_GT(r.transfer_bytes, 0);

    std::vector<int32_t> got = {r.first_token};
    absl::Notification done;
    absl::Status final_status;
    ASSERT_TRUE(decode.engine()
                    .SubmitPrefilled(id, prompt, r.first_token, Greedy(12),
                                     [&](const TokenEvent& e) {
                                       if (e.token >= 0) got.push_back(e.token);
                                       if (e.finished) {
                                         final_status = e.status;
                                         done.Notify();
                                       }
                                     })
                    .ok());
    done.WaitForNotification();
    ASSERT_TRUE(final_status.ok()) << final_status;
    EXPECT_EQ(got, want) << "prompt of " << n << " tokens, P=" << p << " D=" << d;
  }
  WaitForFreeBlocks(decode.engine());
  WaitForFreeBlocks(prefill.engine());
}

INSTANTIATE_TEST_SUITE_P(Pools, DisaggregationTest,
                         ::testing::Values(std::make_tuple(1, 1), std::make_tuple(2, 2),
                                           std::make_tuple(2, 1), std::make_tuple(1, 2)));

TEST(DisaggregationFailureTest, UnclaimedReservationExpiresAndBadTargetFails) {
  ::setenv("UCX_TLS", "tcp,self", 1);
  auto server = comm::RendezvousServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok());
  Pool decode("decode-f", 2, false, (*server)->address());
  Pool prefill("prefill-f", 2, true, (*server)->address());
  // Expiry: nobody claims it; the blocks come back.
  auto target = decode.engine().Reserve("lost", 40, 8, absl::Milliseconds(200));
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_LT(decode.engine().Stats().free_kv_blocks, kBlocks);
  WaitForFreeBlocks(decode.engine());

  // A target whose layout disagrees (head_dim): INVALID_ARGUMENT, nothing held.
  auto good = decode.engine().Reserve("bad", 40, 8, absl::Seconds(30));
  ASSERT_TRUE(good.ok());
  v1::KvTransferTarget bad = *good;
  bad.mutable_layout()->set_head_dim(bad.layout().head_dim() + 1);
  std::promise<PrefillResult> result;
  ASSERT_TRUE(prefill.engine()
                  .SubmitPrefill("bad", std::vector<int32_t>(40, 7), Greedy(8), bad,
                                 absl::Now() + absl::Seconds(30),
                                 [&](const PrefillResult& r) { result.set_value(r); })
                  .ok());
  const PrefillResult r = result.get_future().get();
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument) << r.status;
  WaitForFreeBlocks(prefill.engine());
  decode.engine().Cancel("bad");
  WaitForFreeBlocks(decode.engine());
}

}  // namespace
}  // namespace cpserve
