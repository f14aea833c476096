// RoPE (default, linear, llama3 scaling) vs the float64 reference.
#include <random>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/reference/reference.h"
#include "tests/unit/kernels/test_util.h"

namespace cpserve {
namespace {

using testutil::AllClose;
using testutil::IntTensor;
using testutil::RandomTensor;
using testutil::ToDouble;

RopeConfig Llama31() {
  RopeConfig c;
  c.theta = 500000.0;
  c.scaling = RopeScaling::kLlama3;
  c.factor = 8.0;
  c.low_freq_factor = 1.0;
  c.high_freq_factor = 4.0;
  c.original_max_position_embeddings = 8192;
  return c;
}

TEST(RopeInvFreqTest, MatchesIndependentTranscriptionOfTransformers) {
  RopeConfig linear;
  linear.theta = 1e6;
  linear.scaling = RopeScaling::kLinear;
  linear.factor = 4.0;
  for (const RopeConfig& c : {RopeConfig{}, linear, Llama31()}) {
    for (int64_t d : {2, 34, 64, 128}) {
      const auto got = ComputeRopeInvFreq(c, d);
      const auto ref = reference::RopeInvFreq(c, d);
      ASSERT_EQ(got.size(), ref.size());
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], ref[i], 1e-15 * ref[i]);
    }
  }
  // Llama 3.1, D = 128: the highest frequencies are untouched, the lowest divided by 8,
  // and some lie in between (wavelength in [2048, 8192]).
  const auto f = ComputeRopeInvFreq(Llama31(), 128);
  const auto plain = ComputeRopeInvFreq(RopeConfig{.theta = 500000.0}, 128);
  EXPECT_EQ(f[0], plain[0]);
  EXPECT_DOUBLE_EQ(f[63], plain[63] / 8);
  int medium = 0;
  for (int i = 0; i < 64; ++i) medium += (f[i] != plain[i] && f[i] != plain[i] / 8);
  EXPECT_GT(medium, 0);
}

TEST(RopeInvFreqTest, ParsesRopeTypes) {
  EXPECT_EQ(*ParseRopeScaling("default"), RopeScaling::kNone);
  EXPECT_EQ(*ParseRopeScaling(""), RopeScaling::kNone);
  EXPECT_EQ(*ParseRopeScaling("linear"), RopeScaling::kLinear);
  EXPECT_EQ(*ParseRopeScaling("llama3"), RopeScaling::kLlama3);
  EXPECT_EQ(ParseRopeScaling("yarn").status().code(), absl::StatusCode::kUnimplemented);
}

TEST(RopeTest, RotatesQAndKLikeTheReference) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(21);
  RopeConfig linear;
  linear.scaling = RopeScaling::kLinear;
  linear.factor = 2.0;
  int case_index = 0;
  for (const RopeConfig& c : {RopeConfig{}, linear, Llama31()}) {
    for (int64_t d : {34, 128}) {
      for (DType pos_type : {DType::kI32, DType::kI64}) {
        const int64_t t = 17, hq = 6, hkv = 2;
        std::vector<int64_t> pos(t);
        std::uniform_int_distribution<int64_t> pd(0, 131071);
        for (auto& p : pos) p = pd(rng);
        pos[0] = 0;
        Tensor q = RandomTensor({t, hq, d}, rng), k = RandomTensor({t, hkv, d}, rng);
        const auto qref = reference::Rope(ToDouble(q), pos, hq, d, c);
        const auto kref = reference::Rope(ToDouble(k), pos, hkv, d, c);
        ASSERT_TRUE(be->Rope(q, k, IntTensor(pos, pos_type), c).ok());
        EXPECT_TRUE(AllClose(q, qref, 1e-5)) << "case " << case_index;
        EXPECT_TRUE(AllClose(k, kref, 1e-5)) << "case " << case_index;
        ++case_index;
      }
    }
  }
}

TEST(RopeTest, WorksOnStridedQkvViewsAndWithoutK) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(22);
  // A fused qkv projection [T, (Hq + 2 Hkv) * D] viewed as heads: q is heads 0..3.
  const int64_t t = 5, d = 8;
  Tensor qkv = RandomTensor({t, 8, d}, rng);
  Tensor q = qkv.Slice(1, 0, 4), k = qkv.Slice(1, 4, 6);
  const std::vector<int64_t> pos = {3, 4, 5, 6, 7};
  const auto qref = reference::Rope(ToDouble(q), pos, 4, d, RopeConfig{});
  const auto vbefore = ToDouble(qkv.Slice(1, 6, 8));
  ASSERT_TRUE(be->Rope(q, Tensor(), IntTensor(pos, DType::kI64), RopeConfig{}).ok());
  EXPECT_TRUE(AllClose(q, qref, 1e-5));
  EXPECT_EQ(ToDouble(qkv.Slice(1, 6, 8)), vbefore);
  EXPECT_EQ(be->Rope(q, k, IntTensor({1, 2}, DType::kI64), RopeConfig{}).code(),
            absl::StatusCode::kInvalidArgument);
  Tensor odd = RandomTensor({t, 2, 7}, rng);
  EXPECT_EQ(be->Rope(odd, Tensor(), IntTensor(pos, DType::kI64), RopeConfig{}).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpserve
