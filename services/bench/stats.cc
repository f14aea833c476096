#include "services/bench/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace cpserve::bench {

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double h = static_cast<double>(values.size() - 1) * std::clamp(p, 0.0, 100.0) / 100.0;
  const size_t lo = static_cast<size_t>(std::floor(h));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (h - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

Summary Summarize(std::vector<double> values) {
  Summary s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.count = static_cast<int64_t>(values.size());
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(s.count);
  s.min = values.front();
  s.max = values.back();
  s.p50 = Percentile(values, 50);
  s.p90 = Percentile(values, 90);
  s.p99 = Percentile(values, 99);
  return s;
}

Goodput ComputeGoodput(const std::vector<SloSample>& samples, double slo_ttft_ms, double slo_itl_ms,
                       double duration_s) {
  Goodput g;
  g.total = static_cast<int64_t>(samples.size());
  g.met = std::count_if(samples.begin(), samples.end(), [&](const SloSample& s) {
    return s.ok && (slo_ttft_ms <= 0 || s.ttft_ms <= slo_ttft_ms) &&
           (slo_itl_ms <= 0 || s.mean_itl_ms <= slo_itl_ms);
  });
  g.fraction = g.total > 0 ? static_cast<double>(g.met) / static_cast<double>(g.total) : 0;
  g.rate = duration_s > 0 ? static_cast<double>(g.met) / duration_s : 0;
  return g;
}

std::vector<double> PoissonArrivals(int64_t n, double rate, uint64_t seed) {
  std::vector<double> times(static_cast<size_t>(std::max<int64_t>(n, 0)), 0.0);
  if (!(rate > 0) || std::isinf(rate)) return times;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  double t = 0;
  for (double& x : times) {
    t += -std::log1p(-uniform(rng)) / rate;
    x = t;
  }
  return times;
}

}  // namespace cpserve::bench
