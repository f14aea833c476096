// Helpers for the CUDA backend tests: random bf16-representable inputs, device
// upload/download, NaN-poisoned outputs and closeness checks against the CPU backend.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/tensor.h"

namespace cpserve::testing {

// Host fp32 tensor of N(0, scale) values rounded to bf16, so both backends see the same inputs.
inline Tensor RandomBf16Values(const Shape& shape, std::mt19937& rng, float scale = 1.0f) {
  Tensor t = Tensor::Zeros(shape, DType::kF32);
  std::normal_distribution<float> dist(0.0f, scale);
  for (float& v : t.span<float>()) v = BF16ToFloat(FloatToBF16(dist(rng)));
  return t;
}

// A device tensor of `dtype` holding host tensor `host` (converted).
inline Tensor Upload(Backend& gpu, const Tensor& host, DType dtype) {
  absl::StatusOr<Tensor> t = gpu.Alloc(host.shape(), dtype);
  EXPECT_TRUE(t.ok()) << t.status();
  absl::Status s = gpu.CopyFromHost(host, *t);
  EXPECT_TRUE(s.ok()) << s;
  return *t;
}

// A host tensor of `dtype` (fp32 by default) holding device tensor `dev`.
inline Tensor Download(Backend& gpu, const Tensor& dev, DType dtype = DType::kF32) {
  Tensor t = Tensor::Zeros(dev.shape(), dtype);
  absl::Status s = gpu.CopyToHost(dev, t);
  EXPECT_TRUE(s.ok()) << s;
  return t;
}

// A device tensor filled with all-ones bytes: NaN in bf16, fp16, fp32 and fp64, -1 in ints.
inline Tensor Poisoned(Backend& gpu, const Shape& shape, DType dtype) {
  absl::StatusOr<Tensor> t = gpu.Alloc(shape, dtype);
  EXPECT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(cudaMemset(t->raw(), 0xff, t->nbytes()), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return *t;
}

// Element-wise |got - want| <= rtol * max(|want|, floor * max|want|), no NaN in `got`
// (a poisoned output left unwritten fails here). Both fp32 host tensors of one shape.
inline void ExpectClose(const Tensor& got, const Tensor& want, double rtol = 2e-2,
                        double floor = 0.05, const std::string& what = "") {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  auto g = got.span<float>();
  auto w = want.span<float>();
  double maxabs = 0.0;
  for (float v : w) {
    if (std::isfinite(v)) maxabs = std::max(maxabs, std::fabs(static_cast<double>(v)));
  }
  int bad = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double gi = g[i], wi = w[i];
    if (std::isinf(wi) && gi == wi) continue;
    const double tol = rtol * std::max(std::fabs(wi), floor * maxabs) + 1e-30;
    if (!(std::fabs(gi - wi) <= tol)) {
      if (++bad <= 5) {
        ADD_FAILURE() << what << " element " << i << ": got " << gi << ", want " << wi << " (tol "
                      << tol << ")";
      }
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << g.size() << " elements out of tolerance";
}

// Bitwise equality of two host tensors of one dtype.
inline void ExpectBitEqual(const Tensor& got, const Tensor& want, const std::string& what = "") {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  EXPECT_EQ(std::memcmp(got.raw(), want.raw(), got.nbytes()), 0) << what;
}

}  // namespace cpserve::testing
