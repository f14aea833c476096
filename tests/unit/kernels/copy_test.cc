// Alloc and host copies (with bf16 / fp16 conversion and strides).
#include <random>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/unit/kernels/test_util.h"

namespace cpserve {
namespace {

TEST(CopyTest, ConvertsBf16AndF16ToF32) {
  auto be = MakeCpuBackend();
  EXPECT_EQ(be->ComputeDType(), DType::kF32);
  const float values[] = {1.0f, -2.5f, 0.15625f, 3.0e4f, -0.0f, 7.0f};
  for (DType dt : {DType::kBF16, DType::kF16}) {
    Tensor host = Tensor::Zeros({2, 3}, dt);
    for (int i = 0; i < 6; ++i) {
      host.data<uint16_t>()[i] =
          dt == DType::kBF16 ? FloatToBF16(values[i]) : FloatToF16(values[i]);
    }
    Tensor dev = *be->Alloc({2, 3}, DType::kF32);
    ASSERT_TRUE(be->CopyFromHost(host, dev).ok());
    for (int i = 0; i < 6; ++i) {
      const float expect = dt == DType::kBF16 ? BF16ToFloat(host.data<uint16_t>()[i])
                                              : F16ToFloat(host.data<uint16_t>()[i]);
      EXPECT_EQ(dev.data<float>()[i], expect);
    }
    Tensor back = Tensor::Zeros({2, 3}, dt);
    ASSERT_TRUE(be->CopyToHost(dev, back).ok());
    for (int i = 0; i < 6; ++i) EXPECT_EQ(back.data<uint16_t>()[i], host.data<uint16_t>()[i]);
  }
}

TEST(CopyTest, StridedCopiesAndErrors) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(41);
  Tensor src = testutil::RandomTensor({5, 9}, rng);
  Tensor dst = Tensor::Zeros({9, 5}, DType::kF32);
  ASSERT_TRUE(be->Copy(src.Slice(1, 2, 7), dst.Slice(0, 2, 7)).ok());  // [5,5] views
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 5; ++j)
      EXPECT_EQ(dst.data<float>()[(2 + i) * 5 + j], src.data<float>()[i * 9 + 2 + j]);
  }
  EXPECT_EQ(be->Copy(src, dst).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be->Copy(src, Tensor::Zeros({5, 9}, DType::kF64)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be->CopyFromHost(Tensor::Zeros({5, 9}, DType::kI32), src).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpserve
