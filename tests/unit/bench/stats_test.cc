#include "services/bench/stats.h"

#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace cpserve::bench {
namespace {

// The k-th smallest value (0-based) by counting, without sorting.
double KthByCounting(const std::vector<double>& x, size_t k) {
  for (double v : x) {
    size_t less = 0, less_equal = 0;
    for (double w : x) {
      less += w < v;
      less_equal += w <= v;
    }
    if (less <= k && k < less_equal) return v;
  }
  return NAN;
}

double ReferencePercentile(const std::vector<double>& x, double p) {
  if (x.empty()) return 0;
  const long double h = static_cast<long double>(x.size() - 1) * p / 100;
  const size_t lo = static_cast<size_t>(std::floor(h));
  const size_t hi = std::min(lo + 1, x.size() - 1);
  const long double a = KthByCounting(x, lo), b = KthByCounting(x, hi);
  return static_cast<double>(a + (h - lo) * (b - a));
}

TEST(PercentileTest, KnownNumpyValues) {
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4}, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 90), 9.1);
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 99), 9.91);
  EXPECT_DOUBLE_EQ(Percentile({10, 1, 5}, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile({10, 1, 5}, 100), 10);
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);
}

TEST(PercentileTest, ExhaustiveSmallInputsMatchTheReference) {
  // Every array of length 1..5 over {0, 1, 2, 5} at a set of percentiles.
  const double values[] = {0, 1, 2, 5};
  for (int n = 1; n <= 5; ++n) {
    int combos = 1;
    for (int i = 0; i < n; ++i) combos *= 4;
    for (int c = 0; c < combos; ++c) {
      std::vector<double> x;
      for (int i = 0, k = c; i < n; ++i, k /= 4) x.push_back(values[k % 4]);
      for (double p : {0.0, 1.0, 10.0, 25.0, 33.3, 50.0, 90.0, 99.0, 100.0}) {
        EXPECT_NEAR(Percentile(x, p), ReferencePercentile(x, p), 1e-12) << "n=" << n << " p=" << p;
      }
    }
  }
}

TEST(PercentileTest, RandomInputsMatchTheReference) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> value(-1000, 1000), pct(0, 100);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<double> x(1 + rng() % 200);
    for (double& v : x) v = (rng() % 4 == 0) ? std::round(value(rng)) : value(rng);
    const double p = pct(rng);
    EXPECT_NEAR(Percentile(x, p), ReferencePercentile(x, p), 1e-9);
  }
}

TEST(SummarizeTest, MatchesReferences) {
  std::mt19937_64 rng(4);
  std::uniform_real_distribution<double> value(0, 50);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<double> x(1 + rng() % 300);
    long double sum = 0;
    for (double& v : x) sum += (v = value(rng));
    const Summary s = Summarize(x);
    EXPECT_EQ(s.count, static_cast<int64_t>(x.size()));
    EXPECT_NEAR(s.mean, static_cast<double>(sum / x.size()), 1e-9);
    EXPECT_EQ(s.min, KthByCounting(x, 0));
    EXPECT_EQ(s.max, KthByCounting(x, x.size() - 1));
    EXPECT_NEAR(s.p50, ReferencePercentile(x, 50), 1e-9);
    EXPECT_NEAR(s.p90, ReferencePercentile(x, 90), 1e-9);
    EXPECT_NEAR(s.p99, ReferencePercentile(x, 99), 1e-9);
    EXPECT_LE(s.min, s.p50);
    EXPECT_LE(s.p50, s.p90);
    EXPECT_LE(s.p90, s.p99);
    EXPECT_LE(s.p99, s.max);
  }
  const Summary empty = Summarize({});
  EXPECT_EQ(empty.count, 0);
  EXPECT_EQ(empty.mean, 0);
  EXPECT_EQ(empty.p99, 0);
}

TEST(GoodputTest, MatchesABruteForceCountIncludingBoundaries) {
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<SloSample> s(rng() % 60);
    for (auto& x : s) {
      x.ok = rng() % 5 != 0;
      x.ttft_ms = static_cast<double>(rng() % 20);  // integers: boundaries are hit
      x.mean_itl_ms = static_cast<double>(rng() % 10);
    }
    const double slo_ttft = static_cast<double>(rng() % 22) - 1;  // -1 and 0 mean unchecked
    const double slo_itl = static_cast<double>(rng() % 12) - 1;
    const double duration = (rng() % 4) * 0.5;
    int64_t met = 0;
    for (const auto& x : s) {
      bool good = x.ok;
      if (slo_ttft > 0 && x.ttft_ms > slo_ttft) good = false;
      if (slo_itl > 0 && x.mean_itl_ms > slo_itl) good = false;
      met += good;
    }
    const Goodput g = ComputeGoodput(s, slo_ttft, slo_itl, duration);
    EXPECT_EQ(g.met, met);
    EXPECT_EQ(g.total, static_cast<int64_t>(s.size()));
    EXPECT_DOUBLE_EQ(g.fraction, s.empty() ? 0.0 : static_cast<double>(met) / s.size());
    EXPECT_DOUBLE_EQ(g.rate, duration > 0 ? met / duration : 0.0);
  }
}

TEST(PoissonArrivalsTest, MatchesTheDocumentedConstruction) {
  const double rate = 7.5;
  const std::vector<double> t = PoissonArrivals(1000, rate, 42);
  ASSERT_EQ(t.size(), 1000u);
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  long double acc = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    acc += -std::log(1.0L - uniform(rng)) / rate;
    EXPECT_NEAR(t[i], static_cast<double>(acc), 1e-9 * (1 + t[i]));
    if (i > 0) {
      EXPECT_GE(t[i], t[i - 1]);
    }
  }
  EXPECT_EQ(PoissonArrivals(1000, rate, 42), t);
  EXPECT_NE(PoissonArrivals(1000, rate, 43), t);
}

TEST(PoissonArrivalsTest, MeanGapIsOneOverTheRate) {
  // 200k exponential gaps: the mean's relative standard deviation is 0.22%.
  const double rate = 40;
  const std::vector<double> t = PoissonArrivals(200000, rate, 9);
  EXPECT_NEAR(t.back() / t.size(), 1 / rate, 0.02 / rate);
}

TEST(PoissonArrivalsTest, ZeroOrInfiniteRateSendsEverythingAtOnce) {
  EXPECT_EQ(PoissonArrivals(3, 0, 1), std::vector<double>(3, 0.0));
  EXPECT_EQ(PoissonArrivals(3, INFINITY, 1), std::vector<double>(3, 0.0));
  EXPECT_TRUE(PoissonArrivals(0, 5, 1).empty());
}

}  // namespace
}  // namespace cpserve::bench
