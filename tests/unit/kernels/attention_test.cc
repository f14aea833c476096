// PrefillAttention vs the float64 reference: GQA, causal or not, cached context,
// overlapping segments, and the context-parallel chunk layout of DESIGN §4.
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

struct SegSpec {
  int64_t q_len, k_start, k_len, ctx_len;
};

struct Heads {
  int64_t hq, hkv, d;
};

// Runs PrefillAttention on consecutive query rows for `specs` and compares with
// the reference; returns the computed o for further checks.
void CheckPrefill(const std::vector<SegSpec>& specs, int64_t tk, Heads h, bool causal,
                  int64_t block_size, uint64_t seed, float scale = 0.0f) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(seed);
  int64_t tq = 0;
  std::vector<int64_t> ctx_lens;
  for (const SegSpec& s : specs) {
    tq += s.q_len;
    ctx_lens.push_back(s.ctx_len);
  }
  const int64_t layers = 2, layer = 1;
  testutil::FilledCache fc =
      testutil::MakeFilledCache(*be, rng, ctx_lens, layers, layer, block_size, h.hkv, h.d);
  Tensor q = RandomTensor({tq, h.hq, h.d}, rng, -2, 2);
  Tensor k = RandomTensor({tk, h.hkv, h.d}, rng, -2, 2), v = RandomTensor({tk, h.hkv, h.d}, rng);
  std::vector<PrefillSegment> segs;
  reference::AttentionResult want;
  want.o.assign(tq * h.hq * h.d, 0.0);
  want.lse.assign(tq * h.hq, 0.0);
  const double sc = scale != 0.0f ? scale : 1.0 / std::sqrt(static_cast<double>(h.d));
  int64_t q_start = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const SegSpec& s = specs[i];
    segs.push_back({q_start, s.q_len, s.k_start, s.k_len, s.ctx_len, fc.tables[i]});
    std::vector<double> keys = ToDouble(fc.dense_k[i]), vals = ToDouble(fc.dense_v[i]);
    const auto nk = RowsOf(k, s.k_start, s.k_len), nv = RowsOf(v, s.k_start, s.k_len);
    keys.insert(keys.end(), nk.begin(), nk.end());
    vals.insert(vals.end(), nv.begin(), nv.end());
    const int64_t total = s.ctx_len + s.k_len;
    auto r = reference::Attention(RowsOf(q, q_start, s.q_len), keys, vals, s.q_len, h.hq, h.hkv,
                                  h.d, reference::VisibleKeys(s.q_len, total, causal), sc);
    testutil::Place(r, q_start, h.hq, h.d, &want);
    q_start += s.q_len;
  }
  Tensor o = Tensor::Zeros({tq, h.hq, h.d}, DType::kF32),
         lse = Tensor::Zeros({tq, h.hq}, DType::kF32);
  Poison(o);
  Poison(lse);
  AttentionOptions opt;
  opt.causal = causal;
  opt.scale = scale;
  ASSERT_TRUE(be->PrefillAttention(q, k, v, segs, &fc.view, layer, opt, o, lse).ok());
  EXPECT_TRUE(AllClose(o, want.o, 1e-5));
  EXPECT_TRUE(AllClose(lse, want.lse, 1e-5));
}

TEST(PrefillAttentionTest, SingleSegmentCausalAndNotAcrossHeadLayouts) {
  for (Heads h : {Heads{8, 2, 32}, Heads{3, 3, 17}, Heads{6, 1, 128}, Heads{4, 2, 37}}) {
    for (bool causal : {true, false}) {
      for (int64_t n : {1, 17, 200}) {
        SCOPED_TRACE(testing::Message()
                     << h.hq << "/" << h.hkv << "/" << h.d << " causal=" << causal << " n=" << n);
        CheckPrefill({{n, 0, n, 0}}, n, h, causal, 16, 100 + n);
      }
    }
  }
}

TEST(PrefillAttentionTest, RaggedBatchWithBottomRightCausalMask) {
  // q_len < k_len (suffix queries), q_len > k_len (leading queries see nothing).
  const std::vector<SegSpec> specs = {{5, 0, 17, 0}, {37, 17, 37, 0}, {9, 54, 4, 0}, {1, 58, 1, 0}};
  for (bool causal : {true, false}) CheckPrefill(specs, 59, {8, 2, 32}, causal, 16, 7);
}

TEST(PrefillAttentionTest, CachedContextComesBeforeNewKeys) {
  // Chunked prefill: ctx in the paged cache (block sizes that do and do not divide it).
  const std::vector<SegSpec> specs = {
      {17, 0, 17, 37}, {3, 17, 3, 5}, {20, 20, 20, 0}, {1, 40, 1, 100}};
  for (int64_t bs : {1, 4, 16}) {
    for (bool causal : {true, false}) CheckPrefill(specs, 41, {6, 2, 64}, causal, bs, 11 + bs);
  }
}

TEST(PrefillAttentionTest, OverlappingSegmentsShareOneKeyBuffer) {
  // Two query chunks of one sequence over one all-gathered K/V buffer, plus a custom scale.
  const std::vector<SegSpec> specs = {{10, 0, 10, 0}, {9, 0, 37, 0}, {18, 0, 28, 0}};
  CheckPrefill(specs, 37, {4, 2, 32}, true, 16, 13, 0.3f);
}

TEST(PrefillAttentionTest, DualChunkSwapRanksReproduceFullCausalAttention) {
  // DESIGN §4 with P = 2, n = 37: chunks of 10, 9, 9, 9; rank 0 holds chunks 0 and 3,
  // rank 1 chunks 1 and 2. Each rank attends its queries to the gathered K [0, b).
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(17);
  const int64_t n = 37, hq = 8, hkv = 2, d = 32;
  Tensor q = RandomTensor({n, hq, d}, rng), k = RandomTensor({n, hkv, d}, rng),
         v = RandomTensor({n, hkv, d}, rng);
  Tensor o_full = Tensor::Zeros({n, hq, d}, DType::kF32),
         lse_full = Tensor::Zeros({n, hq}, DType::kF32);
  const PrefillSegment full{0, n, 0, n, 0, {}};
  ASSERT_TRUE(be->PrefillAttention(q, k, v, {&full, 1}, nullptr, 0, {}, o_full, lse_full).ok());
  const int64_t bounds[] = {0, 10, 19, 28, 37};
  for (int rank = 0; rank < 2; ++rank) {
    const int chunks[] = {rank, 3 - rank};
    // This rank's queries: its two chunks, concatenated.
    const int64_t len0 = bounds[chunks[0] + 1] - bounds[chunks[0]];
    const int64_t len1 = bounds[chunks[1] + 1] - bounds[chunks[1]];
    Tensor q_local = Tensor::Zeros({len0 + len1, hq, d}, DType::kF32);
    ASSERT_TRUE(
        be->Copy(q.Slice(0, bounds[chunks[0]], bounds[chunks[0] + 1]), q_local.Slice(0, 0, len0))
            .ok());
    ASSERT_TRUE(be->Copy(q.Slice(0, bounds[chunks[1]], bounds[chunks[1] + 1]),
                         q_local.Slice(0, len0, len0 + len1))
                    .ok());
    const PrefillSegment segs[] = {{0, len0, 0, bounds[chunks[0] + 1], 0, {}},
                                   {len0, len1, 0, bounds[chunks[1] + 1], 0, {}}};
    Tensor o = Tensor::Zeros({len0 + len1, hq, d}, DType::kF32),
           lse = Tensor::Zeros({len0 + len1, hq}, DType::kF32);
    Poison(o);
    Poison(lse);
    ASSERT_TRUE(be->PrefillAttention(q_local, k, v, segs, nullptr, 0, {}, o, lse).ok());
    for (int c = 0; c < 2; ++c) {
      const int64_t lo = bounds[chunks[c]], hi = bounds[chunks[c] + 1];
      const int64_t at = c == 0 ? 0 : len0;
      EXPECT_TRUE(AllClose(o.Slice(0, at, at + hi - lo), ToDouble(o_full.Slice(0, lo, hi)), 1e-6));
      EXPECT_TRUE(
          AllClose(lse.Slice(0, at, at + hi - lo), ToDouble(lse_full.Slice(0, lo, hi)), 1e-6));
    }
  }
}

TEST(PrefillAttentionTest, RejectsBadShapesAndSegments) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(19);
  Tensor q = RandomTensor({5, 6, 8}, rng), k = RandomTensor({5, 2, 8}, rng),
         v = RandomTensor({5, 2, 8}, rng);
  Tensor o = Tensor::Zeros({5, 6, 8}, DType::kF32), lse = Tensor::Zeros({5, 6}, DType::kF32);
  const PrefillSegment ok{0, 5, 0, 5, 0, {}};
  EXPECT_TRUE(be->PrefillAttention(q, k, v, {&ok, 1}, nullptr, 0, {}, o, lse).ok());
  const auto code = [&](const Tensor& q_, const Tensor& k_, const Tensor& v_, PrefillSegment s,
                        const Tensor& o_, const Tensor& lse_) {
    return be->PrefillAttention(q_, k_, v_, {&s, 1}, nullptr, 0, {}, o_, lse_).code();
  };
  const auto kBad = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(code(q, RandomTensor({5, 4, 8}, rng), RandomTensor({5, 4, 8}, rng), ok, o, lse), kBad);
  EXPECT_EQ(code(q, k, RandomTensor({5, 2, 7}, rng), ok, o, lse), kBad);
  EXPECT_EQ(code(q, k, v, ok, Tensor::Zeros({5, 6, 7}, DType::kF32), lse), kBad);
  EXPECT_EQ(code(q, k, v, ok, o, Tensor::Zeros({5, 5}, DType::kF32)), kBad);
  EXPECT_EQ(code(q, k, v, {0, 6, 0, 5, 0, {}}, o, lse), kBad);
  EXPECT_EQ(code(q, k, v, {0, 5, 1, 5, 0, {}}, o, lse), kBad);
  EXPECT_EQ(code(q, k, v, {0, 5, 0, 5, 3, {}}, o, lse), kBad);  // context without a cache
  Tensor cache_t = *be->AllocKvCache(2, 1, 4, 2, 8);
  const KvCacheView cache = *KvCacheView::FromTensor(cache_t);
  const std::vector<int32_t> bad_table = {0, 2};
  const PrefillSegment s{0, 5, 0, 5, 6, bad_table};
  EXPECT_EQ(be->PrefillAttention(q, k, v, {&s, 1}, &cache, 0, {}, o, lse).code(), kBad);
  const std::vector<int32_t> short_table = {0};
  const PrefillSegment s2{0, 5, 0, 5, 6, short_table};
  EXPECT_EQ(be->PrefillAttention(q, k, v, {&s2, 1}, &cache, 0, {}, o, lse).code(), kBad);
  const std::vector<int32_t> table = {1, 0};
  const PrefillSegment s3{0, 5, 0, 5, 6, table};
  EXPECT_TRUE(be->PrefillAttention(q, k, v, {&s3, 1}, &cache, 0, {}, o, lse).ok());
  EXPECT_EQ(be->PrefillAttention(q, k, v, {&s3, 1}, &cache, 1, {}, o, lse).code(), kBad);
}

}  // namespace
}  // namespace cpserve
