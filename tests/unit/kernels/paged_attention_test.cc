// PagedAttention equals dense attention over the same keys.
#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "tests/unit/kernels/attention_test_util.h"

namespace cpserve {
namespace {

using testutil::AllClose;
using testutil::Poison;
using testutil::RandomTensor;
using testutil::RowsOf;
using testutil::ToDouble;

TEST(PagedAttentionTest, EqualsDenseAttentionOverTheSameKeys) {
  struct Case {
    int64_t hq, hkv, d, block_size;
  };
  for (Case c : {Case{8, 2, 32, 16}, Case{4, 4, 17, 1}, Case{6, 2, 128, 5}, Case{8, 1, 64, 32}}) {
    SCOPED_TRACE(testing::Message() << c.hq << "/" << c.hkv << "/" << c.d << " B=" << c.block_size);
    auto be = MakeCpuBackend();
    std::mt19937_64 rng(200 + c.d + c.block_size);
    const std::vector<int64_t> kv_lens = {1, 17, 0, 37, 100, 16};
    const std::vector<int64_t> q_lens = {1, 1, 2, 3, 1, 1};
    testutil::FilledCache fc =
        testutil::MakeFilledCache(*be, rng, kv_lens, 3, 2, c.block_size, c.hkv, c.d);
    int64_t tq = 0;
    for (int64_t n : q_lens) tq += n;
    Tensor q = RandomTensor({tq, c.hq, c.d}, rng, -3, 3);
    reference::AttentionResult want;
    want.o.assign(tq * c.hq * c.d, 0.0);
    want.lse.assign(tq * c.hq, 0.0);
    std::vector<PagedSegment> segs;
    int64_t q_start = 0;
    for (size_t i = 0; i < kv_lens.size(); ++i) {
      segs.push_back({q_start, q_lens[i], kv_lens[i], fc.tables[i]});
      auto r = reference::Attention(RowsOf(q, q_start, q_lens[i]), ToDouble(fc.dense_k[i]),
                                    ToDouble(fc.dense_v[i]), q_lens[i], c.hq, c.hkv, c.d,
                                    reference::VisibleKeys(q_lens[i], kv_lens[i], false),
                                    1.0 / std::sqrt(static_cast<double>(c.d)));
      testutil::Place(r, q_start, c.hq, c.d, &want);
      q_start += q_lens[i];
    }
    Tensor o = Tensor::Zeros({tq, c.hq, c.d}, DType::kF32);
    Tensor lse = Tensor::Zeros({tq, c.hq}, DType::kF32);
    Poison(o);
    Poison(lse);
    ASSERT_TRUE(be->PagedAttention(q, segs, fc.view, 2, {}, o, lse).ok());
    EXPECT_TRUE(AllClose(o, want.o, 1e-5));
    EXPECT_TRUE(AllClose(lse, want.lse, 1e-5));
    // The empty segment (kv_len 0): lse -inf and O = 0.
    for (int64_t h = 0; h < c.hq; ++h) {
      EXPECT_EQ(lse.data<float>()[2 * c.hq + h], -INFINITY);
      for (int64_t e = 0; e < c.d; ++e) EXPECT_EQ(o.data<float>()[(2 * c.hq + h) * c.d + e], 0.0f);
    }
    // Same as non-causal prefill attention over the gathered keys of segment 3.
    Tensor o2 = Tensor::Zeros({3, c.hq, c.d}, DType::kF32),
           lse2 = Tensor::Zeros({3, c.hq}, DType::kF32);
    const PrefillSegment ps{0, 3, 0, 37, 0, {}};
    AttentionOptions nc;
    nc.causal = false;
    ASSERT_TRUE(be->PrefillAttention(q.Slice(0, 4, 7), fc.dense_k[3], fc.dense_v[3], {&ps, 1},
                                     nullptr, 0, nc, o2, lse2)
                    .ok());
    EXPECT_TRUE(AllClose(o2, ToDouble(o.Slice(0, 4, 7)), 1e-6));
  }
}

TEST(PagedAttentionTest, RejectsBadInputs) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(5);
  Tensor cache_t = *be->AllocKvCache(3, 1, 4, 2, 8);
  const KvCacheView cache = *KvCacheView::FromTensor(cache_t);
  Tensor q = RandomTensor({2, 4, 8}, rng);
  Tensor o = Tensor::Zeros({2, 4, 8}, DType::kF32), lse = Tensor::Zeros({2, 4}, DType::kF32);
  const std::vector<int32_t> table = {2, 0};
  const PagedSegment ok{0, 2, 8, table};
  EXPECT_TRUE(be->PagedAttention(q, {&ok, 1}, cache, 0, {}, o, lse).ok());
  const auto kBad = absl::StatusCode::kInvalidArgument;
  const PagedSegment too_long{0, 2, 9, table};
  EXPECT_EQ(be->PagedAttention(q, {&too_long, 1}, cache, 0, {}, o, lse).code(), kBad);
  const PagedSegment too_many_q{1, 2, 8, table};
  EXPECT_EQ(be->PagedAttention(q, {&too_many_q, 1}, cache, 0, {}, o, lse).code(), kBad);
  EXPECT_EQ(be->PagedAttention(q, {&ok, 1}, cache, 1, {}, o, lse).code(), kBad);
  EXPECT_EQ(
      be->PagedAttention(RandomTensor({2, 3, 8}, rng), {&ok, 1}, cache, 0, {},
                         Tensor::Zeros({2, 3, 8}, DType::kF32), Tensor::Zeros({2, 3}, DType::kF32))
          .code(),
      kBad);
  EXPECT_EQ(be->PagedAttention(q, {&ok, 1}, cache, 0, {}, o, Tensor::Zeros({2, 4, 1}, DType::kF32))
                .code(),
            kBad);
}

}  // namespace
}  // namespace cpserve
