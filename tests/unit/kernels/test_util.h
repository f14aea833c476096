// Helpers for kernel tests: random inputs, NaN poisoning, float64 comparison.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/tensor.h"

namespace cpserve::testutil {

// Calls fn(offset) for the element offset of every index of `shape` in row-major order.
template <typename Fn>
void ForEachOffset(const Tensor& t, Fn fn) {
  const int64_t n = t.numel();
  std::vector<int64_t> idx(t.rank(), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (int d = 0; d < t.rank(); ++d) off += idx[d] * t.stride(d);
    fn(off);
    for (int d = t.rank() - 1; d >= 0; --d) {
      if (++idx[d] < t.dim(d)) break;
      idx[d] = 0;
    }
  }
}

// Fills an fp32 tensor (any strides) with uniform values in [lo, hi).
inline void FillRandom(const Tensor& t, std::mt19937_64& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  ForEachOffset(t, [&](int64_t off) { t.data<float>()[off] = dist(rng); });
}

inline Tensor RandomTensor(const Shape& shape, std::mt19937_64& rng, float lo = -1.0f,
                           float hi = 1.0f) {
  Tensor t = Tensor::Zeros(shape, DType::kF32);
  FillRandom(t, rng, lo, hi);
  return t;
}

// Fills an fp32 tensor with NaN so that unwritten outputs are caught.
inline void Poison(const Tensor& t) {
  ForEachOffset(t, [&](int64_t off) { t.data<float>()[off] = std::nanf(""); });
}

// Logical (row-major) contents of an fp32 tensor as doubles.
inline std::vector<double> ToDouble(const Tensor& t) {
  std::vector<double> out;
  out.reserve(t.numel());
  ForEachOffset(t, [&](int64_t off) { out.push_back(t.data<float>()[off]); });
  return out;
}

inline Tensor IntTensor(const std::vector<int64_t>& values, DType dtype) {
  Tensor t = Tensor::Zeros({static_cast<int64_t>(values.size())}, dtype);
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kI32) {
      t.data<int32_t>()[i] = static_cast<int32_t>(values[i]);
    } else {
      t.data<int64_t>()[i] = values[i];
    }
  }
  return t;
}

// Every element satisfies |a - r| <= rtol * (|r| + rms(ref)); no NaN; infinities must
// match exactly. rms(ref) (over finite entries) scales the tolerance of near-zero
// entries that are sums of cancelling terms.
inline ::testing::AssertionResult AllClose(const std::vector<double>& actual,
                                           const std::vector<double>& ref, double rtol) {
  if (actual.size() != ref.size()) {
    return ::testing::AssertionFailure() << "size " << actual.size() << " vs " << ref.size();
  }
  double ss = 0;
  int64_t finite = 0;
  for (double r : ref) {
    if (std::isfinite(r)) {
      ss += r * r;
      ++finite;
    }
  }
  const double rms = finite > 0 ? std::sqrt(ss / finite) : 0.0;
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double a = actual[i], r = ref[i];
    if (std::isnan(a))
      return ::testing::AssertionFailure() << "NaN at " << i << " (ref " << r << ")";
    if (std::isinf(r) || std::isinf(a)) {
      if (a != r) return ::testing::AssertionFailure() << "at " << i << ": " << a << " vs " << r;
      continue;
    }
    const double err = std::abs(a - r) / (std::abs(r) + rms);
    worst = std::max(worst, err);
    if (err > rtol) {
      return ::testing::AssertionFailure()
             << "at " << i << ": " << a << " vs ref " << r << " (scaled error " << err << ")";
    }
  }
  return ::testing::AssertionSuccess() << "worst scaled error " << worst;
}

inline ::testing::AssertionResult AllClose(const Tensor& actual, const std::vector<double>& ref,
                                           double rtol) {
  return AllClose(ToDouble(actual), ref, rtol);
}

}  // namespace cpserve::testutil
