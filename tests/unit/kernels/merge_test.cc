// MergeAttentionStates, CombineLse and RescaleAttentionOutput: merging partial
// attentions over disjoint key sets equals attention over their union.
#include <cmath>
#include <cstring>
#include <random>

#include "gtest/gtest.h"
#include "tests/unit/kernels/attention_test_util.h"

namespace cpserve {
namespace {

using testutil::AllClose;
using testutil::Poison;
using testutil::RandomTensor;
using testutil::ToDouble;

constexpr int64_t kT = 7, kHq = 8, kHkv = 2, kD = 37;

struct Partial {
  Tensor o, lse;
};

// Non-causal attention of q over the keys of k/v listed in `keys`.
Partial AttendSubset(Backend& be, const Tensor& q, const Tensor& k, const Tensor& v,
                     const std::vector<int64_t>& keys) {
  const int64_t n = static_cast<int64_t>(keys.size());
  Tensor ks = Tensor::Zeros({n, kHkv, kD}, DType::kF32),
         vs = Tensor::Zeros({n, kHkv, kD}, DType::kF32);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_TRUE(be.Copy(k.Select(0, keys[i]), ks.Select(0, i)).ok());
    EXPECT_TRUE(be.Copy(v.Select(0, keys[i]), vs.Select(0, i)).ok());
  }
  Partial p{Tensor::Zeros({kT, kHq, kD}, DType::kF32), Tensor::Zeros({kT, kHq}, DType::kF32)};
  Poison(p.o);
  Poison(p.lse);
  const PrefillSegment seg{0, kT, 0, n, 0, {}};
  AttentionOptions opt;
  opt.causal = false;
  EXPECT_TRUE(be.PrefillAttention(q, ks, vs, {&seg, 1}, nullptr, 0, opt, p.o, p.lse).ok());
  return p;
}

TEST(MergeAttentionTest, MergeOfDisjointSplitsEqualsAttentionOverUnion) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(301);
  for (int trial = 0; trial < 6; ++trial) {
    const int64_t l = 1 + static_cast<int64_t>(rng() % 300);
    Tensor q = RandomTensor({kT, kHq, kD}, rng, -3, 3), k = RandomTensor({l, kHkv, kD}, rng, -3, 3),
           v = RandomTensor({l, kHkv, kD}, rng);
    // Random 3-way split of the keys; a part may be empty.
    std::vector<std::vector<int64_t>> parts(3);
    for (int64_t i = 0; i < l; ++i) parts[rng() % 3].push_back(i);
    if (trial == 0) {
      for (auto& p : parts) p.clear();
      for (int64_t i = 0; i < l; ++i) parts[1].push_back(i);
    }
    std::vector<Partial> res;
    for (const auto& p : parts) res.push_back(AttendSubset(*be, q, k, v, p));
    const auto want = reference::Attention(ToDouble(q), ToDouble(k), ToDouble(v), kT, kHq, kHkv, kD,
                                           reference::VisibleKeys(kT, l, false),
                                           1.0 / std::sqrt(static_cast<double>(kD)));
    // Pairwise: ((a merge b) merge c), the output aliasing the first input.
    ASSERT_TRUE(
        be->MergeAttentionStates(res[0].o, res[0].lse, res[1].o, res[1].lse, res[0].o, res[0].lse)
            .ok());
    Tensor o = Tensor::Zeros({kT, kHq, kD}, DType::kF32),
           lse = Tensor::Zeros({kT, kHq}, DType::kF32);
    Poison(o);
    Poison(lse);
    ASSERT_TRUE(be->MergeAttentionStates(res[0].o, res[0].lse, res[2].o, res[2].lse, o, lse).ok());
    EXPECT_TRUE(AllClose(o, want.o, 1e-5)) << "trial " << trial;
    EXPECT_TRUE(AllClose(lse, want.lse, 1e-5)) << "trial " << trial;
  }
}

TEST(MergeAttentionTest, DcpTwoCollectiveFormEqualsPairwiseMerge) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(302);
  const int64_t l = 101, ranks = 4;
  Tensor q = RandomTensor({kT, kHq, kD}, rng, -3, 3), k = RandomTensor({l, kHkv, kD}, rng, -3, 3),
         v = RandomTensor({l, kHkv, kD}, rng);
  // Token striping (I = 1) over 4 ranks, except that rank 3 holds nothing.
  std::vector<std::vector<int64_t>> parts(ranks);
  for (int64_t p = 0; p < l; ++p) parts[p % 3].push_back(p);
  std::vector<Partial> res;
  for (const auto& p : parts) res.push_back(AttendSubset(*be, q, k, v, p));
  Tensor lse_parts = Tensor::Zeros({ranks, kT, kHq}, DType::kF32);
  for (int64_t r = 0; r < ranks; ++r)
    ASSERT_TRUE(be->Copy(res[r].lse, lse_parts.Select(0, r)).ok());
  Tensor lse = Tensor::Zeros({kT, kHq}, DType::kF32);
  Poison(lse);
  ASSERT_TRUE(be->CombineLse(lse_parts, lse).ok());
  std::vector<double> sum(kT * kHq * kD, 0.0);
  for (int64_t r = 0; r < ranks; ++r) {
    ASSERT_TRUE(be->RescaleAttentionOutput(res[r].o, res[r].lse, lse).ok());
    const auto o = ToDouble(res[r].o);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += o[i];  // the all-reduce
  }
  const auto want = reference::Attention(ToDouble(q), ToDouble(k), ToDouble(v), kT, kHq, kHkv, kD,
                                         reference::VisibleKeys(kT, l, false),
                                         1.0 / std::sqrt(static_cast<double>(kD)));
  EXPECT_TRUE(AllClose(sum, want.o, 1e-5));
  EXPECT_TRUE(AllClose(lse, want.lse, 1e-5));
}

TEST(MergeAttentionTest, EmptySideReturnsTheOtherExactlyAndEmptyWithEmptyIsZero) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(303);
  Tensor o_a = RandomTensor({kT, kHq, kD}, rng), lse_a = RandomTensor({kT, kHq}, rng, -50, 50);
  Tensor o_e = Tensor::Zeros({kT, kHq, kD}, DType::kF32),
         lse_e = Tensor::Zeros({kT, kHq}, DType::kF32);
  for (float& x : lse_e.span<float>()) x = -INFINITY;
  for (int order = 0; order < 2; ++order) {
    Tensor o = Tensor::Zeros({kT, kHq, kD}, DType::kF32),
           lse = Tensor::Zeros({kT, kHq}, DType::kF32);
    Poison(o);
    Poison(lse);
    const absl::Status s = order == 0 ? be->MergeAttentionStates(o_a, lse_a, o_e, lse_e, o, lse)
                                      : be->MergeAttentionStates(o_e, lse_e, o_a, lse_a, o, lse);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(std::memcmp(o.raw(), o_a.raw(), o.nbytes()), 0);
    EXPECT_EQ(std::memcmp(lse.raw(), lse_a.raw(), lse.nbytes()), 0);
  }
  Tensor o = Tensor::Zeros({kT, kHq, kD}, DType::kF32), lse = Tensor::Zeros({kT, kHq}, DType::kF32);
  Poison(o);
  Poison(lse);
  ASSERT_TRUE(be->MergeAttentionStates(o_e, lse_e, o_e, lse_e, o, lse).ok());
  for (float x : o.span<float>()) ASSERT_EQ(x, 0.0f);
  for (float x : lse.span<float>()) ASSERT_EQ(x, -INFINITY);
  // CombineLse / Rescale of all-empty parts: -inf and zeros, no NaN.
  Tensor parts = Tensor::Zeros({2, kT, kHq}, DType::kF32);
  for (float& x : parts.span<float>()) x = -INFINITY;
  ASSERT_TRUE(be->CombineLse(parts, lse).ok());
  for (float x : lse.span<float>()) ASSERT_EQ(x, -INFINITY);
  Poison(o);
  ASSERT_TRUE(be->RescaleAttentionOutput(o, lse_e, lse).ok());
  for (float x : o.span<float>()) ASSERT_EQ(x, 0.0f);
}

TEST(MergeAttentionTest, RejectsMismatchedShapes) {
  auto be = MakeCpuBackend();
  Tensor o = Tensor::Zeros({kT, kHq, kD}, DType::kF32), lse = Tensor::Zeros({kT, kHq}, DType::kF32);
  Tensor o_small = Tensor::Zeros({kT, kHq, kD - 1}, DType::kF32);
  const auto kBad = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(be->MergeAttentionStates(o, lse, o_small, lse, o, lse).code(), kBad);
  EXPECT_EQ(
      be->MergeAttentionStates(o, lse, o, Tensor::Zeros({kT, kHq - 1}, DType::kF32), o, lse).code(),
      kBad);
  EXPECT_EQ(be->CombineLse(Tensor::Zeros({2, kT, kHq + 1}, DType::kF32), lse).code(), kBad);
  EXPECT_EQ(be->RescaleAttentionOutput(o, lse, Tensor::Zeros({kT + 1, kHq}, DType::kF32)).code(),
            kBad);
}

}  // namespace
}  // namespace cpserve
