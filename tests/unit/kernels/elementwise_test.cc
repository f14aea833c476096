// Embedding, RmsNorm, AddRmsNorm, SiluMul, Add, GatherRows vs the float64 reference.
#include <random>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/reference/reference.h"
#include "tests/unit/kernels/test_util.h"

namespace cpserve {
namespace {

using testutil::AllClose;
using testutil::IntTensor;
using testutil::Poison;
using testutil::RandomTensor;
using testutil::ToDouble;

constexpr double kRtol = 1e-5;

TEST(EmbeddingTest, CopiesRowsAndRejectsOutOfRangeIds) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(1);
  Tensor table = RandomTensor({37, 17}, rng);
  Tensor ids = IntTensor({0, 36, 5, 5, 20}, DType::kI32);
  Tensor out = Tensor::Zeros({5, 17}, DType::kF32);
  Poison(out);
  ASSERT_TRUE(be->Embedding(table, ids, out).ok());
  for (int t = 0; t < 5; ++t) {
    for (int i = 0; i < 17; ++i) {
      EXPECT_EQ(out.data<float>()[t * 17 + i],
                table.data<float>()[ids.data<int32_t>()[t] * 17 + i]);
    }
  }
  EXPECT_EQ(be->Embedding(table, IntTensor({1, 37}, DType::kI32), out.Slice(0, 0, 2)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be->Embedding(table, IntTensor({-1}, DType::kI32), out.Slice(0, 0, 1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be->Embedding(table, IntTensor({1, 2}, DType::kI64), out.Slice(0, 0, 2)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be->Embedding(table, ids, Tensor::Zeros({5, 16}, DType::kF32)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RmsNormTest, MatchesReferenceOnOddSizesAndInPlace) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(2);
  for (int64_t h : {1, 17, 37, 1000}) {
    for (int64_t t : {1, 3, 17}) {
      Tensor x = RandomTensor({t, h}, rng, -3, 3);
      Tensor w = RandomTensor({h}, rng, 0.5, 1.5);
      const auto ref = reference::RmsNorm(ToDouble(x), ToDouble(w), t, h, 1e-6);
      Tensor out = Tensor::Zeros({t, h}, DType::kF32);
      Poison(out);
      ASSERT_TRUE(be->RmsNorm(x, w, 1e-6f, out).ok());
      EXPECT_TRUE(AllClose(out, ref, kRtol)) << "t=" << t << " h=" << h;
      ASSERT_TRUE(be->RmsNorm(x, w, 1e-6f, x).ok());  // aliasing
      EXPECT_TRUE(AllClose(x, ref, kRtol));
    }
  }
}

TEST(RmsNormTest, AcceptsRowStridedViewsAndRejectsBadShapes) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(3);
  Tensor big = RandomTensor({17, 50}, rng);
  Tensor x = big.Slice(1, 5, 42);  // [17, 37], row stride 50
  Tensor w = RandomTensor({37}, rng);
  Tensor out = Tensor::Zeros({17, 37}, DType::kF32);
  Poison(out);
  ASSERT_TRUE(be->RmsNorm(x, w, 1e-5f, out).ok());
  EXPECT_TRUE(AllClose(out, reference::RmsNorm(ToDouble(x), ToDouble(w), 17, 37, 1e-5), kRtol));
  EXPECT_EQ(be->RmsNorm(x, RandomTensor({36}, rng), 1e-5f, out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be->RmsNorm(x, w, 1e-5f, Tensor::Zeros({16, 37}, DType::kF32)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be->RmsNorm(Tensor::Zeros({17, 37}, DType::kF64), w, 1e-5f, out).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AddRmsNormTest, UpdatesResidualAndNormalises) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(4);
  const int64_t t = 17, h = 37;
  Tensor res = RandomTensor({t, h}, rng);
  Tensor x = RandomTensor({t, h}, rng);
  Tensor w = RandomTensor({h}, rng);
  std::vector<double> sum = ToDouble(res);
  const std::vector<double> xd = ToDouble(x);
  for (size_t i = 0; i < sum.size(); ++i) sum[i] += xd[i];
  Tensor out = Tensor::Zeros({t, h}, DType::kF32);
  Poison(out);
  ASSERT_TRUE(be->AddRmsNorm(res, x, w, 1e-6f, out).ok());
  EXPECT_TRUE(AllClose(res, sum, 1e-7));
  EXPECT_TRUE(AllClose(out, reference::RmsNorm(sum, ToDouble(w), t, h, 1e-6), kRtol));
}

TEST(SiluMulTest, FusedGateUpSlicesMatchReference) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(5);
  for (int64_t f : {1, 17, 1000}) {
    const int64_t t = 37;
    Tensor gate_up = RandomTensor({t, 2 * f}, rng, -6, 6);
    Tensor gate = gate_up.Slice(1, 0, f), up = gate_up.Slice(1, f, 2 * f);
    Tensor out = Tensor::Zeros({t, f}, DType::kF32);
    Poison(out);
    ASSERT_TRUE(be->SiluMul(gate, up, out).ok());
    EXPECT_TRUE(AllClose(out, reference::SiluMul(ToDouble(gate), ToDouble(up)), kRtol));
  }
  EXPECT_EQ(be->SiluMul(Tensor::Zeros({3, 4}, DType::kF32), Tensor::Zeros({3, 5}, DType::kF32),
                        Tensor::Zeros({3, 4}, DType::kF32))
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AddTest, AddsAndAllowsAliasing) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(6);
  Tensor a = RandomTensor({17, 37}, rng), b = RandomTensor({17, 37}, rng);
  std::vector<double> ref = ToDouble(a);
  const std::vector<double> bd = ToDouble(b);
  for (size_t i = 0; i < ref.size(); ++i) ref[i] += bd[i];
  Tensor out = Tensor::Zeros({17, 37}, DType::kF32);
  Poison(out);
  ASSERT_TRUE(be->Add(a, b, out).ok());
  EXPECT_TRUE(AllClose(out, ref, 1e-7));
  ASSERT_TRUE(be->Add(a, b, a).ok());
  EXPECT_TRUE(AllClose(a, ref, 1e-7));
  EXPECT_EQ(be->Add(a, Tensor::Zeros({17, 36}, DType::kF32), out).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GatherRowsTest, PicksRowsOfAnyRank) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(7);
  Tensor x = RandomTensor({7, 3, 5}, rng);
  for (DType dt : {DType::kI32, DType::kI64}) {
    Tensor idx = IntTensor({6, 0, 0, 3}, dt);
    Tensor out = Tensor::Zeros({4, 3, 5}, DType::kF32);
    Poison(out);
    ASSERT_TRUE(be->GatherRows(x, idx, out).ok());
    const int64_t src[] = {6, 0, 0, 3};
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 15; ++j) {
        EXPECT_EQ(out.data<float>()[i * 15 + j], x.data<float>()[src[i] * 15 + j]);
      }
    }
  }
  Tensor out = Tensor::Zeros({1, 3, 5}, DType::kF32);
  EXPECT_EQ(be->GatherRows(x, IntTensor({7}, DType::kI32), out).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpserve
