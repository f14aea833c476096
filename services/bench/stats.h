// Summary statistics of `cpserve bench`: percentiles, latency summaries, goodput.
#pragma once

#include <cstdint>
#include <vector>

namespace cpserve::bench {

// The p-th percentile (p in [0, 100]) of `values` with linear interpolation between the
// closest ranks (NumPy's default "linear" method): rank h = (n - 1) * p / 100, result
// x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)]) over the sorted values.
// Takes the values by value (it sorts them). 0 for an empty input.
double Percentile(std::vector<double> values, double p);

struct Summary {
  int64_t count = 0;
  double mean = 0;
  double min = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double max = 0;
};
// All zeros for an empty input.
Summary Summarize(std::vector<double> values);

// One finished request as goodput sees it.
struct SloSample {
  bool ok = false;         // ended with status OK
  double ttft_ms = 0;      // time to first token
  double mean_itl_ms = 0;  // mean inter-token latency (0 with fewer than two tokens)
};

// Requests meeting a service-level objective: status OK, TTFT <= slo_ttft_ms and mean
// inter-token latency <= slo_itl_ms. A bound <= 0 is not checked.
struct Goodput {
  int64_t met = 0;
  int64_t total = 0;
  double fraction = 0;  // met / total (0 when total is 0)
  double rate = 0;      // met / duration_s, requests per second (0 when duration_s <= 0)
};
Goodput ComputeGoodput(const std::vector<SloSample>& samples, double slo_ttft_ms, double slo_itl_ms,
                       double duration_s);

// Open-loop arrivals: the send times, in seconds from the start, of `n` requests of a
// Poisson process of `rate` requests per second (exponential gaps, drawn as
// -log(1 - u) / rate from a std::mt19937_64 seeded with `seed` feeding
// std::uniform_real_distribution<double>(0, 1)). rate <= 0 or infinite: all at 0.
std::vector<double> PoissonArrivals(int64_t n, double rate, uint64_t seed);

}  // namespace cpserve::bench
