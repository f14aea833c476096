#include "worker/kv/block_table.h"

#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace cpserve {
namespace {

struct Combo {
  int n, i, b;
};

std::vector<Combo> Combos() {
  std::vector<Combo> out;
  for (int b : {1, 2, 4, 16}) {
    for (int i : {1, 2, b}) {
      if (b % i != 0) continue;
      for (int n = 1; n <= 8; ++n) out.push_back({n, i, b});
    }
  }
  return out;
}

// Brute force: walk positions in order; rank r's k-th owned token (k counted here, not by
// CpLayout::LocalIndex) must sit at local slot k: block k / B, offset k % B of its table.
void ExpectSlotsMatchBruteForce(const CpLayout& layout, const BlockTable& t, int64_t len,
                                std::set<int64_t>* all_slots) {
  const int r = t.rank();
  std::vector<int64_t> got = *t.SlotMapping(0, len);
  ASSERT_EQ(static_cast<int64_t>(got.size()), len);
  int64_t k = 0;
  for (int64_t p = 0; p < len; ++p) {
    if ((p / layout.interleave) % layout.world_size != r) {
      ASSERT_EQ(got[p], -1) << "p=" << p;
      continue;
    }
    ASSERT_EQ(layout.LocalIndex(p), k);
    const int64_t want =
        static_cast<int64_t>(t.blocks()[k / layout.block_size]) * layout.block_size +
        k % layout.block_size;
    ASSERT_EQ(got[p], want) << "p=" << p;
    ASSERT_EQ(t.Slot(p), want);
    ASSERT_TRUE(all_slots->insert(got[p]).second) << "slot " << got[p] << " reused";
    ++k;
  }
  ASSERT_EQ(static_cast<int64_t>(t.blocks().size()),
            (k + layout.block_size - 1) / layout.block_size);
}

TEST(BlockTableTest, SlotMappingsMatchBruteForceForAllLayoutsAndLengths) {
  for (const Combo& c : Combos()) {
    const CpLayout layout{c.n, c.i, c.b};
    ASSERT_TRUE(layout.Validate().ok());
    for (int r = 0; r < c.n; ++r) {
      // Two requests grow in lockstep from one pool, so block ids interleave.
      BlockPool pool(2 * 300 / c.b + 4);
      BlockTable a(layout, r), b(layout, r);
      for (int64_t len = 0; len <= 300; ++len) {
        const int64_t need = a.BlocksNeeded(len);
        ASSERT_EQ(need, layout.LocalBlocks(len, r) - static_cast<int64_t>(a.blocks().size()));
        const int32_t free_before = pool.num_free();
        ASSERT_TRUE(a.EnsureCapacity(len, pool).ok());
        ASSERT_EQ(pool.num_free(), free_before - need);
        ASSERT_TRUE(b.EnsureCapacity(len, pool).ok());
        ASSERT_EQ(a.capacity(), len);
        ASSERT_EQ(static_cast<int64_t>(a.blocks().size()), layout.LocalBlocks(len, r));
        if (len % 37 == 0 || len == 300) {  // full check at a sample of lengths
          std::set<int64_t> slots;
          ExpectSlotsMatchBruteForce(layout, a, len, &slots);
          ExpectSlotsMatchBruteForce(layout, b, len, &slots);
          ASSERT_FALSE(HasFatalFailure())
              << "N=" << c.n << " I=" << c.i << " B=" << c.b << " r=" << r << " len=" << len;
        }
      }
      ASSERT_TRUE(a.Free(pool).ok());
      ASSERT_TRUE(b.Free(pool).ok());
      EXPECT_EQ(pool.num_used(), 0);
      EXPECT_EQ(a.capacity(), 0);
      EXPECT_TRUE(a.blocks().empty());
    }
  }
}

TEST(BlockTableTest, EveryLengthFromScratchAndRandomGrowth) {
  std::mt19937_64 rng(11);
  for (const Combo& c : Combos()) {
    const CpLayout layout{c.n, c.i, c.b};
    for (int64_t len = 0; len <= 300; ++len) {
      const int r = static_cast<int>(rng() % c.n);
      BlockPool pool(300 / c.b + 2);
      BlockTable t(layout, r);
      // Grow in random steps (including no-op shrinks) up to len, then check everything.
      int64_t cur = 0;
      while (cur < len) {
        const int64_t next = std::min<int64_t>(len, cur + static_cast<int64_t>(rng() % 40));
        ASSERT_TRUE(t.EnsureCapacity(next, pool).ok());
        ASSERT_TRUE(t.EnsureCapacity(next / 2, pool).ok());  // smaller: no-op
        cur = next;
      }
      std::set<int64_t> slots;
      ExpectSlotsMatchBruteForce(layout, t, len, &slots);
      ASSERT_FALSE(HasFatalFailure()) << "N=" << c.n << " I=" << c.i << " B=" << c.b;
      ASSERT_EQ(pool.num_used(), static_cast<int32_t>(t.blocks().size()));
      // A sub-range mapping is the slice of the whole mapping.
      const int64_t s = len == 0 ? 0 : static_cast<int64_t>(rng() % (len + 1));
      const int64_t e = s + static_cast<int64_t>(rng() % (len - s + 1));
      std::vector<int64_t> whole = *t.SlotMapping(0, len);
      std::vector<int64_t> part = *t.SlotMapping(s, e);
      ASSERT_EQ(part, std::vector<int64_t>(whole.begin() + s, whole.begin() + e));
    }
  }
}

TEST(BlockTableTest, ErrorsLeaveTableUnchanged) {
  const CpLayout layout{2, 4, 4};
  BlockPool pool(3);
  BlockTable t(layout, 0);
  EXPECT_EQ(t.EnsureCapacity(-1, pool).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(t.EnsureCapacity(16, pool).ok());  // rank 0 owns 0..3, 8..11: 2 blocks
  EXPECT_EQ(t.blocks().size(), 2u);
  EXPECT_EQ(t.BlocksNeeded(40), 3);  // 0-3 8-11 16-19 24-27 32-35: 20 tokens, 5 blocks
  EXPECT_EQ(t.EnsureCapacity(40, pool).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(t.capacity(), 16);
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_EQ(t.SlotMapping(0, 17).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(t.SlotMapping(5, 4).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(t.SlotMapping(-1, 4).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(*t.SlotMapping(2, 10), (std::vector<int64_t>{2, 3, -1, -1, -1, -1, 4, 5}));
}

TEST(BlockManagerTest, ReserveGrowFreeAndMaxLength) {
  for (const Combo& c : Combos()) {
    const CpLayout layout{c.n, c.i, c.b};
    for (int r = 0; r < c.n; ++r) {
      BlockManager m = *BlockManager::Create(layout, r, 10);
      // MaxLengthForBlocks(n) is the largest L with LocalBlocks(L, r) <= n (linear scan).
      for (int64_t n = 0; n <= 6; ++n) {
        int64_t want = 0;
        while (layout.LocalBlocks(want + 1, r) <= n) ++want;
        ASSERT_EQ(m.MaxLengthForBlocks(n), want) << "N=" << c.n << " I=" << c.i << " B=" << c.b;
      }
    }
  }
  const CpLayout layout{2, 1, 2};
  EXPECT_EQ(BlockManager::Create(layout, 2, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BlockManager::Create(CpLayout{2, 3, 2}, 0, 4).status().code(),
            absl::StatusCode::kInvalidArgument);
  BlockManager m = *BlockManager::Create(layout, 1, 4);
  EXPECT_EQ(m.BlocksForLength(9), 2);  // rank 1 owns 1,3,5,7: 4 tokens
  EXPECT_TRUE(m.CanFit(17));           // owns 1, 3, ..., 15: 4 blocks
  EXPECT_FALSE(m.CanFit(18));
  EXPECT_FALSE(m.CanFit(16, 1));
  ASSERT_TRUE(m.Reserve("a", 5).ok());  // owns 1,3: 1 block
  EXPECT_EQ(m.Reserve("a", 5).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(m.num_used(), 1);
  EXPECT_EQ(m.BlocksToGrow("a", 9), 1);
  EXPECT_EQ(m.BlocksToGrow("new", 9), 2);
  EXPECT_EQ(m.Reserve("b", 14).code(), absl::StatusCode::kResourceExhausted);  // 4 blocks
  EXPECT_FALSE(m.Contains("b"));
  ASSERT_TRUE(m.Reserve("b", 12).ok());  // 3 blocks
  EXPECT_EQ(m.num_free(), 0);
  EXPECT_EQ(m.Grow("a", 6).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(m.Grow("a", 4).ok());  // still within its block
  EXPECT_EQ(*m.SlotMapping("a", 0, 4), (std::vector<int64_t>{-1, 0, -1, 1}));
  EXPECT_EQ(m.SlotMapping("zz", 0, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m.num_requests(), 2);
  ASSERT_TRUE(m.Free("b").ok());
  EXPECT_EQ(m.Free("b").code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(m.Free("a").ok());
  EXPECT_EQ(m.num_free(), 4);
  EXPECT_EQ(m.num_requests(), 0);
}

}  // namespace
}  // namespace cpserve
