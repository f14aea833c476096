#include "kernels/tensor.h"

#include <cmath>
#include <limits>
#include <random>

#include "gtest/gtest.h"

namespace cpserve {
namespace {

TEST(TensorTest, EmptyIsZeroedContiguousAndViewsShareMemory) {
  Tensor t = Tensor::Zeros({3, 4, 5}, DType::kF32);
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.numel(), 60);
  EXPECT_EQ(t.nbytes(), 240u);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.strides(), (Shape{20, 5, 1}));
  for (float v : t.span<float>()) EXPECT_EQ(v, 0.0f);
  for (int i = 0; i < 60; ++i) t.data<float>()[i] = static_cast<float>(i);

  Tensor row = t.Select(0, 2);  // [4,5] starting at element 40
  EXPECT_EQ(row.shape(), (Shape{4, 5}));
  EXPECT_EQ(row.data<float>()[0], 40.0f);
  Tensor cols = t.Slice(2, 1, 3);  // [3,4,2], non-contiguous
  EXPECT_FALSE(cols.is_contiguous());
  EXPECT_EQ(cols.data<float>()[cols.stride(0) * 1 + cols.stride(1) * 2 + 1], 1 * 20 + 2 * 5 + 2);
  EXPECT_FALSE(cols.Reshape({24}).ok());
  auto flat = t.Reshape({60});
  ASSERT_TRUE(flat.ok());
  EXPECT_EQ(flat->data<float>()[59], 59.0f);
  EXPECT_FALSE(t.Reshape({7, 9}).ok());
  EXPECT_EQ(t.DebugString(), "float32[3,4,5]");
}

TEST(TensorTest, BorrowDoesNotOwn) {
  float buf[6] = {1, 2, 3, 4, 5, 6};
  Tensor t = Tensor::Borrow(buf, {2, 3}, DType::kF32);
  EXPECT_EQ(t.data<float>(), buf);
  EXPECT_EQ(t.dim(-1), 3);
}

TEST(TensorTest, DTypeNamesRoundTrip) {
  for (DType d : {DType::kF32, DType::kF64, DType::kBF16, DType::kF16, DType::kI32, DType::kI64,
                  DType::kU8}) {
    auto parsed = ParseDType(DTypeName(d));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_EQ(*ParseDType("BF16"), DType::kBF16);
  EXPECT_FALSE(ParseDType("float8").ok());
}

TEST(TensorTest, HalfConversionsRoundTripAndRoundToNearestEven) {
  // Every bf16 and fp16 bit pattern survives a trip through float.
  for (uint32_t h = 0; h < 65536; ++h) {
    const float b = BF16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(b)) {
      EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(b))));
    } else {
      EXPECT_EQ(FloatToBF16(b), h);
    }
    const float f = F16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(f))));
    } else {
      EXPECT_EQ(FloatToF16(f), h) << h;
    }
  }
  // Random floats: the conversion picks the nearest representable value.
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-70000.f, 70000.f);
  for (int i = 0; i < 100000; ++i) {
    const float x = dist(rng) * ((i % 3 == 0) ? 1e-6f : 1.0f);
    const float b = BF16ToFloat(FloatToBF16(x));
    EXPECT_LE(std::fabs(b - x), std::fabs(x) * (1.0f / 256.0f));
    if (std::fabs(x) < 65504.f) {
      const float h = F16ToFloat(FloatToF16(x));
      EXPECT_LE(std::fabs(h - x), std::max(std::fabs(x) / 2048.0f, 3e-8f)) << x;
    }
  }
  EXPECT_EQ(F16ToFloat(FloatToF16(1e6f)), std::numeric_limits<float>::infinity());
  EXPECT_EQ(FloatToF16(1.0f), 0x3c00);
  EXPECT_EQ(FloatToBF16(1.0f), 0x3f80);
}

}  // namespace
}  // namespace cpserve
