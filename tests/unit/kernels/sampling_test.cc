// Sample: greedy, top-k, top-p, determinism and the sampled distribution.
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/reference/reference.h"
#include "tests/unit/kernels/test_util.h"

namespace cpserve {
namespace {

using testutil::RandomTensor;
using testutil::ToDouble;

std::vector<int32_t> SampleAll(Backend& be, const Tensor& logits,
                               const std::vector<SamplingParams>& params) {
  Tensor ids = Tensor::Zeros({logits.dim(0)}, DType::kI32);
  for (int32_t& x : ids.span<int32_t>()) x = -7;
  EXPECT_TRUE(be.Sample(logits, params, ids).ok());
  return {ids.span<int32_t>().begin(), ids.span<int32_t>().end()};
}

int32_t SampleOne(Backend& be, const Tensor& row, const SamplingParams& p) {
  return SampleAll(be, row.Reshape({1, row.dim(0)}).value(), {p})[0];
}

TEST(SampleTest, GreedyIsArgmaxWithLowestIdOnTies) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(1);
  Tensor logits = RandomTensor({17, 1000}, rng, -10, 10);
  logits.data<float>()[3 * 1000 + 500] = 20.0f;  // row 3: tie between ids 500 and 700
  logits.data<float>()[3 * 1000 + 700] = 20.0f;
  const auto got = SampleAll(*be, logits, std::vector<SamplingParams>(17));
  for (int r = 0; r < 17; ++r) {
    std::vector<double> row = ToDouble(logits.Select(0, r));
    int best = 0;
    for (int i = 1; i < 1000; ++i) best = row[i] > row[best] ? i : best;
    EXPECT_EQ(got[r], best);
  }
  EXPECT_EQ(got[3], 500);
  // top_k = 1 at any temperature is greedy too.
  std::vector<SamplingParams> topk1(17);
  for (size_t i = 0; i < topk1.size(); ++i) topk1[i] = {1.5f, 1, 1.0f, 1234 + i, 9};
  EXPECT_EQ(SampleAll(*be, logits, topk1), got);
}

TEST(SampleTest, DeterministicForSeedAndStepRegardlessOfBatch) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(2);
  Tensor logits = RandomTensor({9, 37}, rng, -2, 2);
  std::vector<SamplingParams> params(9);
  for (int i = 0; i < 9; ++i)
    params[i] = {0.8f, i % 3 == 0 ? 0 : 5, i % 2 ? 0.9f : 1.0f, static_cast<uint64_t>(100 + i), 4};
  const auto batch = SampleAll(*be, logits, params);
  EXPECT_EQ(SampleAll(*be, logits, params), batch);
  for (int i = 0; i < 9; ++i) EXPECT_EQ(SampleOne(*be, logits.Select(0, i), params[i]), batch[i]);
  // A different step changes the draw for at least some rows.
  for (auto& p : params) p.step = 5;
  EXPECT_NE(SampleAll(*be, logits, params), batch);
}

TEST(SampleTest, EmpiricalDistributionMatchesReferenceProbabilities) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(3);
  const int64_t v = 12;
  Tensor row = RandomTensor({v}, rng, -2, 2);
  struct Setting {
    float temperature;
    int32_t top_k;
    float top_p;
  };
  for (Setting s : {Setting{1.0f, 0, 1.0f}, Setting{0.7f, 6, 1.0f}, Setting{1.3f, 0, 0.8f},
                    Setting{0.9f, 8, 0.6f}}) {
    const auto probs =
        reference::SamplingProbs(ToDouble(row), {s.temperature, s.top_k, s.top_p, 0, 0});
    const int n = 20000;
    std::vector<double> freq(v, 0.0);
    for (int i = 0; i < n; ++i) {
      // Vary seeds for some draws and steps for others.
      const SamplingParams p{s.temperature, s.top_k, s.top_p, static_cast<uint64_t>(i / 2),
                             static_cast<uint64_t>(i % 2)};
      freq[SampleOne(*be, row, p)] += 1.0 / n;
    }
    for (int64_t i = 0; i < v; ++i) {
      if (probs[i] == 0.0) {
        EXPECT_EQ(freq[i], 0.0) << "token " << i << " is outside the support";
      } else {
        // Standard deviation <= 0.0036 at n = 20000; 0.02 is over 5 sigma.
        EXPECT_NEAR(freq[i], probs[i], 0.02) << "token " << i;
      }
    }
  }
}

TEST(SampleTest, TopPRestrictsTheSupportExactly) {
  auto be = MakeCpuBackend();
  // Probabilities 1/2, 1/4, 1/8, ... (shuffled ids): the 0.7 nucleus is the top two.
  const int ids[] = {4, 0, 6, 2, 5, 1, 3};
  Tensor row = Tensor::Zeros({7}, DType::kF32);
  for (int rank = 0; rank < 7; ++rank) row.data<float>()[ids[rank]] = -rank * std::log(2.0f);
  std::set<int32_t> seen;
  std::map<int32_t, int> count;
  for (uint64_t seed = 0; seed < 3000; ++seed) {
    const int32_t id = SampleOne(*be, row, {1.0f, 0, 0.7f, seed, 0});
    seen.insert(id);
    ++count[id];
  }
  EXPECT_EQ(seen, (std::set<int32_t>{4, 0}));
  EXPECT_NEAR(count[4] / 3000.0, 2.0 / 3.0, 0.05);
  // top_k = 3 then top_p = 0.95 of that mass: 1/2+1/4 = 0.857 < 0.95 -> all three.
  seen.clear();
  for (uint64_t seed = 0; seed < 3000; ++seed)
    seen.insert(SampleOne(*be, row, {1.0f, 3, 0.95f, seed, 1}));
  EXPECT_EQ(seen, (std::set<int32_t>{4, 0, 6}));
  const auto probs = reference::SamplingProbs(ToDouble(row), {1.0f, 0, 0.7f, 0, 0});
  EXPECT_NEAR(probs[4], 2.0 / 3.0, 1e-6);
  EXPECT_EQ(probs[6], 0.0);
}

TEST(SampleTest, UniformsAreInRangeAndWellSpread) {
  double sum = 0;
  std::set<double> distinct;
  for (uint64_t s = 0; s < 1000; ++s) {
    const double u = SamplingUniform(s, 7);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    distinct.insert(u);
    EXPECT_NE(SamplingUniform(7, s), SamplingUniform(7, s + 1));
  }
  EXPECT_EQ(distinct.size(), 1000u);
  EXPECT_NEAR(sum / 1000, 0.5, 0.05);
}

TEST(SampleTest, RejectsBadInputs) {
  auto be = MakeCpuBackend();
  Tensor logits = Tensor::Zeros({2, 5}, DType::kF32);
  Tensor ids = Tensor::Zeros({2}, DType::kI32);
  const auto kBad = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(be->Sample(logits, std::vector<SamplingParams>(1), ids).code(), kBad);
  EXPECT_EQ(
      be->Sample(logits, std::vector<SamplingParams>(2), Tensor::Zeros({2}, DType::kI64)).code(),
      kBad);
  std::vector<SamplingParams> bad(2);
  bad[1].temperature = -1.0f;
  EXPECT_EQ(be->Sample(logits, bad, ids).code(), kBad);
  bad[1] = {1.0f, 0, 0.0f, 0, 0};
  EXPECT_EQ(be->Sample(logits, bad, ids).code(), kBad);
  EXPECT_TRUE(be->Sample(logits, std::vector<SamplingParams>(2), ids).ok());
}

}  // namespace
}  // namespace cpserve
