// Linear (sgemm) vs the float64 reference.
#include <random>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/reference/reference.h"
#include "tests/unit/kernels/test_util.h"

namespace cpserve {
namespace {

using testutil::AllClose;
using testutil::Poison;
using testutil::RandomTensor;
using testutil::ToDouble;

TEST(LinearTest, MatchesReferenceOnOddSizesWithAndWithoutBias) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(11);
  struct Dims {
    int64_t t, k, n;
  };
  for (Dims d : {Dims{1, 17, 37}, Dims{17, 37, 1000}, Dims{37, 1000, 17}, Dims{3, 1, 5}}) {
    for (bool with_bias : {false, true}) {
      Tensor x = RandomTensor({d.t, d.k}, rng);
      Tensor w = RandomTensor({d.n, d.k}, rng);
      Tensor bias = with_bias ? RandomTensor({d.n}, rng) : Tensor();
      Tensor out = Tensor::Zeros({d.t, d.n}, DType::kF32);
      Poison(out);
      ASSERT_TRUE(be->Linear(x, w, bias, out).ok());
      const auto ref =
          reference::Matmul(ToDouble(x), ToDouble(w),
                            with_bias ? ToDouble(bias) : std::vector<double>{}, d.t, d.k, d.n);
      EXPECT_TRUE(AllClose(out, ref, 1e-5)) << d.t << "x" << d.k << "x" << d.n;
    }
  }
}

TEST(LinearTest, AcceptsRowStridedViews) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(12);
  Tensor xbig = RandomTensor({17, 60}, rng);
  Tensor x = xbig.Slice(1, 10, 47);  // [17, 37]
  Tensor wbig = RandomTensor({40, 37}, rng);
  Tensor w = wbig.Slice(0, 3, 22);  // [19, 37] (row slice: contiguous rows)
  Tensor outbig = Tensor::Zeros({17, 30}, DType::kF32);
  Poison(outbig);
  Tensor out = outbig.Slice(1, 5, 24);  // [17, 19]
  ASSERT_TRUE(be->Linear(x, w, Tensor(), out).ok());
  EXPECT_TRUE(AllClose(out, reference::Matmul(ToDouble(x), ToDouble(w), {}, 17, 37, 19), 1e-5));
  // Untouched columns stay poisoned.
  EXPECT_TRUE(std::isnan(outbig.data<float>()[0]));
}

TEST(LinearTest, RejectsBadShapes) {
  auto be = MakeCpuBackend();
  Tensor x = Tensor::Zeros({4, 8}, DType::kF32);
  Tensor w = Tensor::Zeros({5, 8}, DType::kF32);
  Tensor out = Tensor::Zeros({4, 5}, DType::kF32);
  EXPECT_TRUE(be->Linear(x, w, Tensor(), out).ok());
  EXPECT_EQ(be->Linear(x, Tensor::Zeros({5, 7}, DType::kF32), Tensor(), out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be->Linear(x, w, Tensor(), Tensor::Zeros({4, 6}, DType::kF32)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be->Linear(x, w, Tensor::Zeros({4}, DType::kF32), out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be->Linear(x, Tensor::Zeros({5, 8}, DType::kBF16), Tensor(), out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be->Linear(x, w.Slice(1, 0, 8).Slice(0, 0, 5), Tensor(), out).code(),
            absl::StatusCode::kOk);
}

}  // namespace
}  // namespace cpserve
