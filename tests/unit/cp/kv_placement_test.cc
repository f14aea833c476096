// KV placement after a PCP prefill (DESIGN §3): P ranks (threads with their own
// caches, a real Gloo group over loopback) prefill one prompt split by
// DualChunkSwap; the union of their caches must equal the single-rank cache — every
// token exactly once, on its owner, at the slot the layout names — and the sampled
// first token must equal the single rank's.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/unit/generation/test_model.h"
#include "worker/comm/gloo_group.h"
#include "worker/comm/rendezvous_client.h"
#include "worker/comm/rendezvous_service.h"
#include "worker/engine/step_runner.h"

namespace cpserve {
namespace {

constexpr int kBlock = 16;

struct RankCache {
  Tensor cache;
  KvCacheView view;
  std::vector<int32_t> table;
  int32_t first_token = -1;
};

v1::StepCommand PrefillCommand(const std::vector<int32_t>& prompt,
                               const std::vector<std::vector<int32_t>>& tables) {
  v1::StepCommand c;
  c.set_kind(v1::StepCommand::KIND_STEP);
  v1::StepWork* w = c.add_work();
  w->set_id("req");
  w->set_start(0);
  w->set_end(static_cast<int64_t>(prompt.size()));
  w->set_samples(true);
  w->set_partitioned(true);
  w->set_top_p(1.0f);
  w->mutable_tokens()->Add(prompt.begin(), prompt.end());
  for (const auto& t : tables) w->add_blocks()->mutable_ids()->Add(t.begin(), t.end());
  return c;
}

// Runs a PCP prefill of `prompt` on `world` ranks; returns each rank's cache.
std::vector<RankCache> Prefill(const ModelWeights& w, const std::vector<int32_t>& prompt, int world,
                               int interleave, uint32_t seed) {
  const CpLayout layout{world, interleave, kBlock};
  const ModelConfig& c = w.config;
  const int64_t n = static_cast<int64_t>(prompt.size());
  std::vector<RankCache> ranks(world);
  std::vector<std::vector<int32_t>> tables(world);
  std::mt19937 rng(seed);
  for (int r = 0; r < world; ++r) {
    const int64_t blocks = layout.LocalBlocks(n, r);
    std::vector<int32_t> ids(blocks + 5);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    ids.resize(blocks);
    tables[r] = ids;
  }
  const v1::StepCommand command = PrefillCommand(prompt, tables);
  auto server = comm::RendezvousServer::Start("127.0.0.1:0");
  EXPECT_TRUE(server.ok());
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      std::unique_ptr<Backend> backend = MakeCpuBackend();
      RankCache& rc = ranks[r];
      rc.table = tables[r];
      rc.cache =
          *backend->AllocKvCache(static_cast<int64_t>(rc.table.size()) + 5, c.num_hidden_layers,
                                 kBlock, c.num_key_value_heads, c.head_dim);
      rc.view = *KvCacheView::FromTensor(rc.cache);
      std::unique_ptr<comm::CollectiveGroup> group;
      if (world > 1) {
        auto client =
            comm::RendezvousClient::Connect((*server)->address(), std::chrono::seconds(20));
        ASSERT_TRUE(client.ok());
        auto g = comm::CreateGlooGroup(**client, comm::RendezvousPrefix("kv", seed), r, world,
                                       {"127.0.0.1", std::chrono::seconds(20)});
        ASSERT_TRUE(g.ok()) << g.status();
        group = *std::move(g);
      }
      LlamaModel model(w, *backend);
      StepRunner runner(model, *backend, group.get(), rc.view, layout, r);
      absl::StatusOr<StepOutput> out = runner.Run(command);
      ASSERT_TRUE(out.ok()) << out.status();
      rc.first_token = out->tokens[0];
    });
  }
  for (auto& t : threads) t.join();
  return ranks;
}

class KvPlacementTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(KvPlacementTest, UnionOfRankCachesEqualsSingleRankCache) {
  static const ModelWeights* w = new ModelWeights(testing::WriteAndLoad(SyntheticModelOptions()));
  const auto [world, interleave] = GetParam();
  const ModelConfig& c = w->config;
  const int64_t hkv = c.num_key_value_heads, d = c.head_dim;
  std::mt19937 rng(world * 10 + interleave);
  for (int n : {1, 2 * world - 1, 2 * world, kBlock * world + 1, 413}) {
    std::vector<int32_t> prompt(n);
    for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % c.vocab_size);
    const std::vector<RankCache> ref = Prefill(*w, prompt, 1, kBlock, n);
    const std::vector<RankCache> cp = Prefill(*w, prompt, world, interleave, n + 1);
    const CpLayout layout{world, interleave, kBlock};
    for (const RankCache& rc : cp) EXPECT_EQ(rc.first_token, ref[0].first_token) << "n=" << n;
    // Every rank: owned tokens at their slots match the single-rank K/V.
    std::vector<int64_t> nonzero(world, 0);
    for (int64_t p = 0; p < n; ++p) {
      const int r = layout.Owner(p);
      const int64_t l = layout.LocalIndex(p);
      const RankCache& rc = cp[r];
      for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
        for (int kv = 0; kv < 2; ++kv) {
          for (int64_t h = 0; h < hkv; ++h) {
            const float* got = rc.view.Ptr<float>(rc.table[l / kBlock], layer, kv, l % kBlock, h);
            const float* want =
                ref[0].view.Ptr<float>(ref[0].table[p / kBlock], layer, kv, p % kBlock, h);
            // Same values up to fp32 rounding (later layers inherit the attention
            // differences of earlier ones: whole-model tolerance, 1e-4 of the row).
            float diff = 0, scale = 1e-30f;
            for (int64_t i = 0; i < d; ++i) {
              diff = std::max(diff, std::fabs(got[i] - want[i]));
              scale = std::max(scale, std::fabs(want[i]));
            }
            ASSERT_LT(diff / scale, layer == 0 ? 1e-5 : 1e-4)
                << "n=" << n << " p=" << p << " rank " << r << " layer " << layer;
          }
        }
      }
    }
    // Each token exactly once: a rank's cache holds data only in its owned slots.
    for (int r = 0; r < world; ++r) {
      const RankCache& rc = cp[r];
      for (int64_t b = 0; b < rc.view.num_blocks; ++b) {
        for (int64_t o = 0; o < kBlock; ++o) {
          const float* k = rc.view.Ptr<float>(b, 0, 0, o, 0);
          if (std::any_of(k, k + d, [](float x) { return x != 0.0f; })) ++nonzero[r];
        }
      }
      EXPECT_EQ(nonzero[r], layout.LocalLength(n, r)) << "rank " << r << " n=" << n;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, KvPlacementTest,
                         ::testing::Combine(::testing::Values(2, 3, 4),
                                            ::testing::Values(1, kBlock)));

}  // namespace
}  // namespace cpserve
