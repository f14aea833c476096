// KV computed by a real PCP prefill, pushed over UCX (tcp on loopback) into a DCP
// decode pool of another shape. Prefill ranks and decode ranks are threads of this
// process, each with its own TransferAgent (own UCX context, worker, endpoints,
// registered cache); the ranks of a pool form a real Gloo group.
//
// Checks, for P, D in {1, 2, 4} and I in {1, B}: the decode ranks' reserved blocks
// hold, byte for byte, the prefill-computed K/V of every position at its DCP slot
// (DESIGN §3), and match what the D-rank pool computes itself within fp32
// tolerance; nothing outside the reserved blocks is written; no reservation,
// block or push is left behind. (A D-rank pool's own computation is not bitwise
// equal to a P-rank pool's: their GEMMs see different batch shapes.)
#include <cmath>
#include <cstdlib>
#include <cstring>
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
#include "worker/transfer/transfer_agent.h"

namespace cpserve {
namespace {

constexpr int kBlock = 16;
constexpr int kBlocksPerRank = 64;

struct Rank {
  Tensor cache;
  KvCacheView view;
  std::vector<int32_t> table;
  std::unique_ptr<transfer::TransferAgent> agent;
};

const ModelWeights& Weights() {
  static const ModelWeights* w = new ModelWeights(testing::WriteAndLoad(SyntheticModelOptions()));
  return *w;
}

transfer::KvPoolLayout PoolLayout(int world, int interleave) {
  const ModelConfig& c = Weights().config;
  transfer::KvPoolLayout l;
  l.cp = CpLayout{world, interleave, kBlock};
  l.geometry = transfer::KvBlockGeometry{kBlock, static_cast<int>(c.num_hidden_layers),
                                         static_cast<int>(c.num_key_value_heads),
                                         static_cast<int>(c.head_dim), 4};
  l.dtype = "float32";
  return l;
}

std::vector<Rank> MakeRanks(int world, int interleave, bool with_agents) {
  const ModelConfig& c = Weights().config;
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  std::vector<Rank> ranks(world);
  for (int r = 0; r < world; ++r) {
    Rank& rk = ranks[r];
    rk.cache = *backend->AllocKvCache(kBlocksPerRank, c.num_hidden_layers, kBlock,
                                      c.num_key_value_heads, c.head_dim);
    rk.view = *KvCacheView::FromTensor(rk.cache);
    if (!with_agents) continue;
    auto agent = transfer::TransferAgent::Create({});
    EXPECT_TRUE(agent.ok()) << agent.status();
    rk.agent = *std::move(agent);
    const uint64_t stride = rk.view.BlockBytes();
    EXPECT_TRUE(rk.agent
                    ->RegisterKvRegion({rk.cache.raw(), rk.cache.nbytes(), kBlocksPerRank, stride,
                                        PoolLayout(world, interleave), r,
                                        transfer::MemoryKind::kHost, nullptr})
                    .ok());
  }
  return ranks;
}

// Every rank of a pool runs one step computing `prompt` (partitioned for PCP).
void Compute(std::vector<Rank>& ranks, int interleave, const std::vector<int32_t>& prompt,
             bool partitioned, uint64_t generation) {
  const int world = static_cast<int>(ranks.size());
  v1::StepCommand c;
  c.set_kind(v1::StepCommand::KIND_STEP);
  v1::StepWork* w = c.add_work();
  w->set_id("req");
  w->set_end(static_cast<int64_t>(prompt.size()));
  w->set_samples(true);
  w->set_top_p(1.0f);
  w->set_partitioned(partitioned);
  w->mutable_tokens()->Add(prompt.begin(), prompt.end());
  for (const Rank& r : ranks) w->add_blocks()->mutable_ids()->Add(r.table.begin(), r.table.end());
  auto server = comm::RendezvousServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok());
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      std::unique_ptr<Backend> backend = MakeCpuBackend();
      std::unique_ptr<comm::CollectiveGroup> group;
      if (world > 1) {
        auto client =
            comm::RendezvousClient::Connect((*server)->address(), std::chrono::seconds(20));
        ASSERT_TRUE(client.ok());
        auto g = comm::CreateGlooGroup(**client, comm::RendezvousPrefix("xfer", generation), r,
                                       world, {"127.0.0.1", std::chrono::seconds(20)});
        ASSERT_TRUE(g.ok()) << g.status();
        group = *std::move(g);
      }
      LlamaModel model(Weights(), *backend);
      StepRunner runner(model, *backend, group.get(), ranks[r].view,
                        CpLayout{world, interleave, kBlock}, r);
      ASSERT_TRUE(runner.Run(c).ok());
    });
  }
  for (auto& t : threads) t.join();
}

class ComputedKvTransferTest : public ::testing::TestWithParam<std::tuple<int, int, int>> {
 protected:
  static void SetUpTestSuite() {
    ::setenv("UCX_TLS", "tcp,self", 1);
    ::setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 1);
  }
};

TEST_P(ComputedKvTransferTest, DecodeCachesHoldThePrefillComputedKvAtTheirSlots) {
  const auto [p, d, interleave] = GetParam();
  const ModelConfig& c = Weights().config;
  std::mt19937 rng(p * 100 + d * 10 + interleave);
  const int64_t n = 1 + rng() % 400;
  std::vector<int32_t> prompt(n);
  for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % c.vocab_size);
  const CpLayout src_layout{p, interleave, kBlock}, dst_layout{d, interleave, kBlock};

  // Decode pool: reserve blocks on every rank; the destinations form the target.
  std::vector<Rank> decode = MakeRanks(d, interleave, true);
  v1::KvTransferTarget target;
  target.set_transfer_id("xfer-1");
  *target.mutable_layout() = PoolLayout(d, interleave).ToProto();
  for (int r = 0; r < d; ++r) {
    // The decode pool's scheduler picks the blocks (shuffled); the agent reserves them.
    std::vector<int32_t> ids(kBlocksPerRank);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    ids.resize(dst_layout.LocalBlocks(n, r));
    auto dest = decode[r].agent->ReserveBlocks("xfer-1", ids, absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(dest.ok()) << dest.status();
    decode[r].table = ids;
    ASSERT_EQ(std::vector<int32_t>(dest->block_ids().begin(), dest->block_ids().end()), ids);
    *target.add_destinations() = *dest;
    if (ids.empty()) continue;  // this rank holds none of a short prompt
    // A block already reserved cannot be reserved again (and nothing else is taken).
    const int64_t free_before = decode[r].agent->counters().free_blocks;
    EXPECT_EQ(decode[r]
                  .agent->ReserveBlocks("other", {ids[0]}, absl::Now() + absl::Seconds(30))
                  .status()
                  .code(),
              absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(decode[r].agent->counters().free_blocks, free_before);
  }
  // Prefill pool: PCP prefill into shuffled blocks, then every rank pushes.
  std::vector<Rank> prefill = MakeRanks(p, interleave, true);
  for (int r = 0; r < p; ++r) {
    std::vector<int32_t> ids(kBlocksPerRank);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    ids.resize(src_layout.LocalBlocks(n, r));
    prefill[r].table = ids;
  }
  Compute(prefill, interleave, prompt, /*partitioned=*/true, 1);
  std::vector<std::future<absl::Status>> pushes;
  for (int r = 0; r < p; ++r) {
    pushes.push_back(prefill[r].agent->PushAsync(
        {target, n, prefill[r].table, absl::Now() + absl::Seconds(30)}));
  }
  for (auto& f : pushes) ASSERT_TRUE(f.get().ok());
  for (int r = 0; r < d; ++r) {
    ASSERT_TRUE(decode[r].agent->WaitReceived("xfer-1", absl::Now() + absl::Seconds(30)).ok());
  }

  // The D-rank pool computing the prompt itself, into the same block ids.
  std::vector<Rank> own = MakeRanks(d, interleave, false);
  for (int r = 0; r < d; ++r) own[r].table = decode[r].table;
  Compute(own, interleave, prompt, /*partitioned=*/false, 2);

  const int64_t row = c.num_key_value_heads * c.head_dim;
  std::vector<int64_t> written(d, 0);
  for (int64_t pos = 0; pos < n; ++pos) {
    const int sr = src_layout.Owner(pos), dr = dst_layout.Owner(pos);
    const int64_t sl = src_layout.LocalIndex(pos), dl = dst_layout.LocalIndex(pos);
    for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
      for (int kv = 0; kv < 2; ++kv) {
        const float* src =
            prefill[sr].view.Ptr<float>(prefill[sr].table[sl / kBlock], layer, kv, sl % kBlock, 0);
        const float* dst =
            decode[dr].view.Ptr<float>(decode[dr].table[dl / kBlock], layer, kv, dl % kBlock, 0);
        const float* self =
            own[dr].view.Ptr<float>(own[dr].table[dl / kBlock], layer, kv, dl % kBlock, 0);
        ASSERT_EQ(std::memcmp(src, dst, row * sizeof(float)), 0)
            << "position " << pos << " layer " << layer << (kv ? " V" : " K");
        float diff = 0, scale = 1e-30f;
        for (int64_t i = 0; i < row; ++i) {
          diff = std::max(diff, std::fabs(dst[i] - self[i]));
          scale = std::max(scale, std::fabs(self[i]));
        }
        ASSERT_LT(diff / scale, 1e-4) << "position " << pos << " layer " << layer;
      }
    }
    ++written[dr];
  }
  // Nothing outside the reserved blocks: every other block of a decode cache is zero.
  for (int r = 0; r < d; ++r) {
    const auto& t = decode[r].table;
    for (int64_t b = 0; b < kBlocksPerRank; ++b) {
      if (std::find(t.begin(), t.end(), b) != t.end()) continue;
      const char* block = static_cast<const char*>(decode[r].view.Address(b, 0, 0, 0, 0));
      const size_t bytes = decode[r].view.BlockBytes();
      ASSERT_TRUE(std::all_of(block, block + bytes, [](char x) { return x == 0; }))
          << "rank " << r << " block " << b << " was written";
    }
    EXPECT_EQ(written[r], dst_layout.LocalLength(n, r));
    ASSERT_TRUE(decode[r].agent->Release("xfer-1").ok());
    const transfer::AgentCounters counters = decode[r].agent->counters();
    EXPECT_EQ(counters.reserved_blocks, 0);
    EXPECT_EQ(counters.receives_live, 0);
  }
  for (int r = 0; r < p; ++r) EXPECT_EQ(prefill[r].agent->counters().pushes_in_flight, 0);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ComputedKvTransferTest,
                         ::testing::Combine(::testing::Values(1, 2, 4), ::testing::Values(1, 2, 4),
                                            ::testing::Values(1, kBlock)));

}  // namespace
}  // namespace cpserve
