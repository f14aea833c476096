#include "worker/kv/block_pool.h"

#include <cstdint>
#include <functional>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace cpserve {
namespace {

// Brute-force reference: a multiset holds one entry per live reference; free blocks are a
// list ordered by when they were freed (most recent last), initially n-1, ..., 1, 0.
class Model {
 public:
  explicit Model(int32_t n) : n_(n) {
    for (int32_t b = n - 1; b >= 0; --b) free_order_.push_back(b);
  }
  absl::StatusCode Allocate(int64_t k, std::vector<int32_t>* out) {
    if (k < 0) return absl::StatusCode::kInvalidArgument;
    if (k > static_cast<int64_t>(free_order_.size())) return absl::StatusCode::kResourceExhausted;
    for (int64_t i = 0; i < k; ++i) {
      out->push_back(free_order_.back());
      refs_.insert(free_order_.back());
      free_order_.pop_back();
    }
    return absl::StatusCode::kOk;
  }
  absl::StatusCode Check(int32_t b) const {
    if (b < 0 || b >= n_) return absl::StatusCode::kInvalidArgument;
    if (refs_.count(b) == 0) return absl::StatusCode::kFailedPrecondition;
    return absl::StatusCode::kOk;
  }
  absl::StatusCode AddRef(int32_t b) {
    const absl::StatusCode c = Check(b);
    if (c == absl::StatusCode::kOk) refs_.insert(b);
    return c;
  }
  absl::StatusCode Release(const std::vector<int32_t>& bs) {
    std::multiset<int32_t> copy = refs_;
    for (int32_t b : bs) {
      if (b < 0 || b >= n_) return absl::StatusCode::kInvalidArgument;
      auto it = copy.find(b);
      if (it == copy.end()) return absl::StatusCode::kFailedPrecondition;
      copy.erase(it);
    }
    for (int32_t b : bs) {
      refs_.erase(refs_.find(b));
      if (refs_.count(b) == 0) free_order_.push_back(b);
    }
    return absl::StatusCode::kOk;
  }
  int32_t RefCount(int32_t b) const {
    return b < 0 || b >= n_ ? -1 : static_cast<int32_t>(refs_.count(b));
  }
  int32_t num_free() const { return static_cast<int32_t>(free_order_.size()); }

 private:
  int32_t n_;
  std::multiset<int32_t> refs_;
  std::vector<int32_t> free_order_;
};

struct Op {
  int kind;  // 0 Allocate, 1 AddRef, 2 Release(one), 3 Release(span)
  int64_t arg;
  std::vector<int32_t> list;
};

void ApplyAndCompare(const Op& op, BlockPool& pool, Model& model) {
  switch (op.kind) {
    case 0: {
      std::vector<int32_t> want;
      const absl::StatusCode c = model.Allocate(op.arg, &want);
      absl::StatusOr<std::vector<int32_t>> got = pool.Allocate(op.arg);
      ASSERT_EQ(got.status().code(), c) << got.status();
      if (got.ok()) {
        EXPECT_EQ(*got, want);
      }
      break;
    }
    case 1:
      ASSERT_EQ(pool.AddRef(static_cast<int32_t>(op.arg)).code(),
                model.AddRef(static_cast<int32_t>(op.arg)));
      break;
    case 2:
      ASSERT_EQ(pool.Release(static_cast<int32_t>(op.arg)).code(),
                model.Release({static_cast<int32_t>(op.arg)}));
      break;
    case 3:
      ASSERT_EQ(pool.Release(op.list).code(), model.Release(op.list));
      break;
  }
  ASSERT_EQ(pool.num_free(), model.num_free());
  ASSERT_EQ(pool.num_used(), pool.num_blocks() - model.num_free());
  for (int32_t b = -1; b <= pool.num_blocks(); ++b) ASSERT_EQ(pool.RefCount(b), model.RefCount(b));
}

TEST(BlockPoolTest, ExhaustiveShortSequencesMatchModel) {
  int64_t sequences = 0;
  for (int32_t n = 0; n <= 3; ++n) {
    std::vector<Op> ops;
    for (int64_t k = -1; k <= n + 1; ++k) ops.push_back({0, k, {}});
    for (int32_t b = -1; b <= n; ++b) {
      ops.push_back({1, b, {}});
      ops.push_back({2, b, {}});
    }
    ops.push_back({3, 0, {0, 0}});
    ops.push_back({3, 0, {1, 0, 2}});
    const int depth = n <= 2 ? 5 : 4;
    std::vector<int> idx(depth, 0);
    std::function<void(int)> rec = [&](int d) {
      if (d == depth) {
        BlockPool pool(n);
        Model model(n);
        for (int i = 0; i < depth; ++i) {
          ApplyAndCompare(ops[idx[i]], pool, model);
          if (::testing::Test::HasFatalFailure()) return;
        }
        ++sequences;
        return;
      }
      for (size_t o = 0; o < ops.size() && !::testing::Test::HasFatalFailure(); ++o) {
        idx[d] = static_cast<int>(o);
        rec(d + 1);
      }
    };
    rec(0);
  }
  EXPECT_GT(sequences, 100000);
}

TEST(BlockPoolTest, RandomizedOpsMatchModel) {
  std::mt19937_64 rng(7);
  for (int32_t n : {1, 5, 64}) {
    BlockPool pool(n);
    Model model(n);
    std::vector<int32_t> held;  // ids we believe are allocated (to hit valid cases often)
    for (int step = 0; step < 20000; ++step) {
      Op op{static_cast<int>(rng() % 4), 0, {}};
      auto pick = [&]() -> int32_t {
        if (!held.empty() && rng() % 4 != 0) return held[rng() % held.size()];
        return static_cast<int32_t>(rng() % (n + 2)) - 1;
      };
      if (op.kind == 0) op.arg = static_cast<int64_t>(rng() % (n / 4 + 3)) - 1;
      if (op.kind == 1 || op.kind == 2) op.arg = pick();
      if (op.kind == 3) {
        for (int k = static_cast<int>(rng() % 4); k > 0; --k) op.list.push_back(pick());
      }
      ApplyAndCompare(op, pool, model);
      ASSERT_FALSE(HasFatalFailure()) << "step " << step;
      held.clear();
      for (int32_t b = 0; b < n; ++b) {
        if (model.RefCount(b) > 0) held.push_back(b);
      }
    }
  }
}

TEST(BlockPoolTest, AllocationOrderIsLifoAndErrorsHaveMessages) {
  BlockPool pool(4);
  EXPECT_EQ(*pool.Allocate(2), (std::vector<int32_t>{0, 1}));
  ASSERT_TRUE(pool.Release(0).ok());
  EXPECT_EQ(*pool.Allocate(2), (std::vector<int32_t>{0, 2}));
  const absl::Status s = pool.Allocate(2).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("need 2 KV blocks, 1 of 4 free"), absl::string_view::npos) << s;
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_EQ(pool.Release(3).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(pool.Release(4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.AddRef(-1).code(), absl::StatusCode::kInvalidArgument);
  // A span release that fails anywhere changes nothing.
  EXPECT_EQ(pool.Release(std::vector<int32_t>{0, 1, 1}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(pool.RefCount(0), 1);
  EXPECT_EQ(pool.RefCount(1), 1);
  ASSERT_TRUE(pool.AddRef(1).ok());
  ASSERT_TRUE(pool.Release(std::vector<int32_t>{0, 1, 1, 2}).ok());
  EXPECT_EQ(pool.num_free(), 4);
  EXPECT_EQ(pool.num_used(), 0);
  EXPECT_EQ(*pool.Allocate(0), std::vector<int32_t>{});
}

}  // namespace
}  // namespace cpserve
