#include "worker/cp/dual_chunk_swap.h"

#include <numeric>
#include <random>
#include <set>

#include "gtest/gtest.h"

namespace cpserve {
namespace {

TEST(DualChunkSwapTest, ChunksTileAndBalanceExhaustively) {
  for (int p = 1; p <= 8; ++p) {
    for (int64_t n = 0; n <= 300; ++n) {
      const auto chunks = DualChunks(n, p);
      ASSERT_EQ(chunks.size(), 2u * p);
      int64_t next = 0;
      for (size_t i = 0; i < chunks.size(); ++i) {
        ASSERT_EQ(chunks[i].begin, next);
        // Sizes ⌊n/2P⌋ + [i < n mod 2P].
        ASSERT_EQ(chunks[i].size(), n / (2 * p) + (static_cast<int64_t>(i) < n % (2 * p)));
        next = chunks[i].end;
      }
      ASSERT_EQ(next, n);
      // Every token on exactly one rank; the two chunks are r and 2P-1-r.
      std::vector<int> owner(n, -1);
      for (int r = 0; r < p; ++r) {
        const ChunkPair pair = RankChunks(n, p, r);
        EXPECT_EQ(pair.early, chunks[r]);
        EXPECT_EQ(pair.late, chunks[2 * p - 1 - r]);
        for (const TokenRange& c : {pair.early, pair.late}) {
          for (int64_t t = c.begin; t < c.end; ++t) {
            ASSERT_EQ(owner[t], -1);
            owner[t] = r;
          }
        }
        // Balanced: shares differ by at most 2 tokens.
        EXPECT_LE(std::abs(pair.size() - RankChunks(n, p, 0).size()), 2);
      }
      for (int64_t t = 0; t < n; ++t) ASSERT_NE(owner[t], -1);
      if (n > 0) {
        EXPECT_EQ(owner[n - 1], RankOfLastToken(n, p)) << "n=" << n << " p=" << p;
      }
      if (n >= 2 * p) {
        EXPECT_EQ(RankOfLastToken(n, p), 0);
      }
    }
  }
}

TEST(DualChunkSwapTest, CausalWorkIsBalanced) {
  // Attention work of a rank ~ Σ over its tokens of (position + 1); DualChunkSwap
  // keeps every rank within a few percent of the mean for large n.
  for (int p : {2, 4, 8}) {
    const int64_t n = 4096 * p;
    std::vector<double> work(p, 0);
    for (int r = 0; r < p; ++r) {
      const ChunkPair pair = RankChunks(n, p, r);
      for (const TokenRange& c : {pair.early, pair.late}) {
        for (int64_t t = c.begin; t < c.end; ++t) work[r] += t + 1;
      }
    }
    const double mean = std::accumulate(work.begin(), work.end(), 0.0) / p;
    for (double w : work) EXPECT_NEAR(w / mean, 1.0, 0.01);
  }
}

TEST(DualChunkSwapTest, GatherIndexRestoresGlobalOrderForRandomBatches) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 500; ++trial) {
    const int p = 1 + rng() % 6;
    std::vector<int64_t> lengths(1 + rng() % 5);
    for (int64_t& n : lengths) n = rng() % (trial % 2 ? 40 : 3000);
    const int64_t total = std::accumulate(lengths.begin(), lengths.end(), int64_t{0});
    const int64_t padded = PaddedShare(lengths, p);
    // Simulate the all-gather: rank r's rows hold the global ids of its tokens,
    // padded with -1.
    std::vector<int64_t> gathered(p * padded, -1);
    for (int r = 0; r < p; ++r) {
      const auto order = RankTokenOrder(lengths, p, r);
      ASSERT_EQ(static_cast<int64_t>(order.size()), RankTokens(lengths, p, r));
      ASSERT_LE(static_cast<int64_t>(order.size()), padded);
      for (size_t i = 0; i < order.size(); ++i) gathered[r * padded + i] = order[i];
    }
    const auto index = GatherIndex(lengths, p);
    ASSERT_EQ(static_cast<int64_t>(index.size()), total);
    for (int64_t g = 0; g < total; ++g) ASSERT_EQ(gathered[index[g]], g);
  }
}

}  // namespace
}  // namespace cpserve
