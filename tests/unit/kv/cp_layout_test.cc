#include "worker/kv/cp_layout.h"

#include <map>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace cpserve {
namespace {

// Brute force: walk positions 0..len-1 in order, hand each I-sized group to ranks
// round-robin, and let every rank append the tokens it receives.
struct Placement {
  std::vector<int> owner;
  std::vector<int64_t> local;
  std::vector<int64_t> local_len;
};

Placement BruteForce(int n, int i, int64_t len) {
  Placement pl;
  pl.local_len.assign(n, 0);
  for (int64_t p = 0; p < len; ++p) {
    const int r = static_cast<int>((p / i) % n);
    pl.owner.push_back(r);
    pl.local.push_back(pl.local_len[r]++);
  }
  return pl;
}

TEST(CpLayoutTest, MatchesBruteForceExhaustively) {
  for (int b : {1, 2, 4, 16}) {
    for (int i : {1, 2, b}) {
      if (b % i != 0) continue;
      for (int n = 1; n <= 8; ++n) {
        const CpLayout layout{n, i, b};
        ASSERT_TRUE(layout.Validate().ok());
        for (int64_t len = 0; len <= 300; ++len) {
          const Placement pl = BruteForce(n, i, len);
          for (int r = 0; r < n; ++r) {
            ASSERT_EQ(layout.LocalLength(len, r), pl.local_len[r])
                << "N=" << n << " I=" << i << " B=" << b << " len=" << len << " r=" << r;
            ASSERT_EQ(layout.LocalBlocks(len, r), (pl.local_len[r] + b - 1) / b);
            ASSERT_LE(layout.LocalBlocks(len, r), layout.MaxLocalBlocks(len));
          }
          if (len == 300) {
            for (int64_t p = 0; p < len; ++p) {
              ASSERT_EQ(layout.Owner(p), pl.owner[p]);
              ASSERT_EQ(layout.LocalIndex(p), pl.local[p]);
              ASSERT_EQ(layout.GlobalPosition(pl.owner[p], pl.local[p]), p);
            }
          }
        }
      }
    }
  }
}

TEST(CpLayoutTest, EveryTokenHasExactlyOneSlot) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 1 + rng() % 8;
    const int b = 1 << (rng() % 6);
    const int i = (rng() % 2) ? b : 1;
    const int64_t len = rng() % 5000;
    const CpLayout layout{n, i, b};
    std::map<std::pair<int, int64_t>, int64_t> slots;
    for (int64_t p = 0; p < len; ++p) {
      const auto key = std::make_pair(layout.Owner(p), layout.LocalIndex(p));
      ASSERT_TRUE(slots.emplace(key, p).second) << "slot reused by p=" << p;
      ASSERT_LT(key.second, layout.LocalLength(len, key.first));
    }
    int64_t total = 0;
    for (int r = 0; r < n; ++r) total += layout.LocalLength(len, r);
    ASSERT_EQ(total, len);
  }
}

TEST(CpLayoutTest, ValidateRejectsBadLayouts) {
  EXPECT_FALSE((CpLayout{0, 16, 16}.Validate().ok()));
  EXPECT_FALSE((CpLayout{2, 3, 16}.Validate().ok()));
  EXPECT_FALSE((CpLayout{2, 0, 16}.Validate().ok()));
  EXPECT_FALSE((CpLayout{2, 16, 0}.Validate().ok()));
  EXPECT_EQ(CpLayout({2, 32, 16}).Validate().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpserve
