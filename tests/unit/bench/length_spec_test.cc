#include "services/bench/length_spec.h"

#include <map>
#include <random>

#include "gtest/gtest.h"

namespace cpserve::bench {
namespace {

TEST(LengthSpecTest, ParsesFixedRangesSuffixesAndWeights) {
  auto a = LengthSpec::Parse("128");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->IsFixed());
  EXPECT_EQ(a->Min(), 128);
  auto b = LengthSpec::Parse("16k");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->Min(), 16384);
  EXPECT_EQ(b->Max(), 16384);
  auto c = LengthSpec::Parse("100-2000");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->Min(), 100);
  EXPECT_EQ(c->Max(), 2000);
  EXPECT_FALSE(c->IsFixed());
  auto d = LengthSpec::Parse("32-64@3,4K@1");
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->items().size(), 2u);
  EXPECT_EQ(d->items()[0].lo, 32);
  EXPECT_EQ(d->items()[0].hi, 64);
  EXPECT_EQ(d->items()[0].weight, 3);
  EXPECT_EQ(d->items()[1].lo, 4096);
  EXPECT_EQ(d->items()[1].weight, 1);
  EXPECT_EQ(d->ToString(), "32-64@3,4096@1");
  auto e = LengthSpec::Parse("1m");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->Min(), 1 << 20);
  auto f = LengthSpec::Parse("1k-2k");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->Min(), 1024);
  EXPECT_EQ(f->Max(), 2048);
}

TEST(LengthSpecTest, RejectsMalformedSpecs) {
  for (const char* bad :
       {"", "0", "abc", "5-3", "10@0", "10@-1", "1-", "-5", "10@x", "k", "1,", ",1", "1.5",
        "99999999999", "3000000k", "3@inf", "3@nan", "1 - 2", "+3"}) {
    EXPECT_FALSE(LengthSpec::Parse(bad).ok()) << "'" << bad << "'";
  }
}

TEST(LengthSpecTest, FixedIsOneValue) {
  const LengthSpec s = LengthSpec::Fixed(7);
  for (double u : {0.0, 0.3, 0.999999, 1.0}) EXPECT_EQ(s.Quantile(u), 7);
  EXPECT_EQ(s.ToString(), "7");
}

// Brute force: the exact probability of each value, then the share of a fine uniform grid
// of u that Quantile maps to it. Each value is reached from at most one interval per item,
// so the grid count is within (items containing it) of probability * grid size.
void CheckDistribution(const LengthSpec& spec) {
  std::map<int64_t, double> exact;
  std::map<int64_t, int> containing;
  double total = 0;
  for (const auto& item : spec.items()) total += item.weight;
  for (const auto& item : spec.items()) {
    for (int64_t v = item.lo; v <= item.hi; ++v) {
      exact[v] += item.weight / total / static_cast<double>(item.hi - item.lo + 1);
      ++containing[v];
    }
  }
  constexpr int kGrid = 200000;
  std::map<int64_t, int> counts;
  for (int j = 0; j < kGrid; ++j) ++counts[spec.Quantile((j + 0.5) / kGrid)];
  for (const auto& [v, n] : counts) {
    ASSERT_TRUE(exact.count(v)) << spec.ToString() << " produced " << v;
  }
  for (const auto& [v, p] : exact) {
    EXPECT_NEAR(counts[v], p * kGrid, containing[v] + 1) << spec.ToString() << " value " << v;
  }
}

TEST(LengthSpecTest, QuantileGivesTheExactDistributionOfHandPickedSpecs) {
  for (const char* text : {"5", "1-10", "3-4", "1-3@1,10@2", "2-6@0.5,4-9@1.5,20@1", "1-1000"}) {
    auto spec = LengthSpec::Parse(text);
    ASSERT_TRUE(spec.ok()) << text;
    CheckDistribution(*spec);
  }
}

TEST(LengthSpecTest, QuantileGivesTheExactDistributionOfRandomSpecs) {
  std::mt19937_64 rng(17);
  for (int trial = 0; trial < 30; ++trial) {
    std::string text;
    const int items = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < items; ++i) {
      const int lo = 1 + static_cast<int>(rng() % 40);
      const int hi = lo + static_cast<int>(rng() % 25);
      const int weight = 1 + static_cast<int>(rng() % 5);
      text += (i ? "," : "") + std::to_string(lo) + "-" + std::to_string(hi) + "@" +
              std::to_string(weight);
    }
    auto spec = LengthSpec::Parse(text);
    ASSERT_TRUE(spec.ok()) << text;
    CheckDistribution(*spec);
    // The canonical text parses back to the same items and relative weights (a single
    // item is written without its weight).
    auto again = LengthSpec::Parse(spec->ToString());
    ASSERT_TRUE(again.ok());
    ASSERT_EQ(again->items().size(), spec->items().size());
    double total = 0, again_total = 0;
    for (size_t i = 0; i < spec->items().size(); ++i) {
      total += spec->items()[i].weight;
      again_total += again->items()[i].weight;
    }
    for (size_t i = 0; i < spec->items().size(); ++i) {
      EXPECT_EQ(again->items()[i].lo, spec->items()[i].lo);
      EXPECT_EQ(again->items()[i].hi, spec->items()[i].hi);
      EXPECT_DOUBLE_EQ(again->items()[i].weight / again_total, spec->items()[i].weight / total);
    }
  }
}

TEST(LengthSpecTest, SampleIsQuantileOfAUniformDraw) {
  auto spec = LengthSpec::Parse("10-500@2,2k@1");
  ASSERT_TRUE(spec.ok());
  std::mt19937_64 a(5), b(5);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(spec->Sample(a), spec->Quantile(uniform(b)));
}

}  // namespace
}  // namespace cpserve::bench
