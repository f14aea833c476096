// Greedy and temperature / top-k / top-p sampling (kernels/sampling.h).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/common.h"
#include "kernels/cpu/cpu_backend.h"

namespace cpserve {
namespace {

int32_t Argmax(const float* z, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (z[i] > z[best]) best = i;  // strict: ties keep the lowest id
  }
  return static_cast<int32_t>(best);
}

int32_t SampleRow(const float* z, int64_t n, const SamplingParams& sp, std::vector<double>* prob,
                  std::vector<int32_t>* order) {
  if (sp.temperature <= 0.0f) return Argmax(z, n);
  const double inv_t = 1.0 / static_cast<double>(sp.temperature);
  double mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(z[i]) * inv_t);
  prob->resize(n);
  for (int64_t i = 0; i < n; ++i) (*prob)[i] = std::exp(static_cast<double>(z[i]) * inv_t - mx);
  order->resize(n);
  std::iota(order->begin(), order->end(), 0);
  const auto by_prob = [&](int32_t a, int32_t b) {
    const double pa = (*prob)[a], pb = (*prob)[b];
    return pa > pb || (pa == pb && a < b);
  };
  int64_t kept = n;
  if (sp.top_k > 0 && sp.top_k < n) {
    kept = sp.top_k;
    std::partial_sort(order->begin(), order->begin() + kept, order->end(), by_prob);
  } else {
    std::sort(order->begin(), order->end(), by_prob);
  }
  double mass = 0.0;
  for (int64_t i = 0; i < kept; ++i) mass += (*prob)[(*order)[i]];
  if (sp.top_p < 1.0f) {
    const double target = static_cast<double>(sp.top_p) * mass;
    double cum = 0.0;
    int64_t i = 0;
    while (i < kept) {
      cum += (*prob)[(*order)[i++]];
      if (cum >= target) break;
    }
    kept = i;
    mass = cum;
  }
  const double u = SamplingUniform(sp.seed, sp.step) * mass;
  double cum = 0.0;
  for (int64_t i = 0; i < kept; ++i) {
    cum += (*prob)[(*order)[i]];
    if (cum > u) return (*order)[i];
  }
  return (*order)[kept - 1];
}

}  // namespace

absl::Status CpuBackend::Sample(const Tensor& logits, absl::Span<const SamplingParams> params,
                                const Tensor& ids) {
  CPSERVE_ASSIGN_OR_RETURN(auto lg, cpu::AsRows(logits, "Sample logits"));
  if (absl::Status s = cpu::CheckTensor(ids, DType::kI32, "Sample ids"); !s.ok()) return s;
  if (logits.rank() != 2 || ids.rank() != 1 || ids.dim(0) != lg.rows ||
      static_cast<int64_t>(params.size()) != lg.rows || lg.cols == 0) {
    return absl::InvalidArgumentError(absl::StrCat("Sample: logits ", logits.DebugString(),
                                                   ", ids ", ids.DebugString(), ", ", params.size(),
                                                   " params (want [S, V>0], [S], S)"));
  }
  for (const SamplingParams& sp : params) {
    if (!(sp.temperature >= 0.0f) || sp.top_k < 0 || !(sp.top_p > 0.0f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Sample: bad params temperature=", sp.temperature, " top_k=", sp.top_k,
                       " top_p=", sp.top_p));
    }
  }
  std::vector<double> prob;
  std::vector<int32_t> order;
  for (int64_t r = 0; r < lg.rows; ++r) {
    ids.data<int32_t>()[r * ids.stride(0)] =
        SampleRow(lg.row(r), lg.cols, params[r], &prob, &order);
  }
  return absl::OkStatus();
}

}  // namespace cpserve
