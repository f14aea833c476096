#include "worker/model/dtype_convert.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace cpserve {
namespace {

// Loads element i of a buffer as double (exact for every supported source dtype).
double Load(const uint8_t* p, DType t, int64_t i) {
  switch (t) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, p + 4 * i, 4);
      return f;
    }
    case DType::kF64: {
      double d;
      std::memcpy(&d, p + 8 * i, 8);
      return d;
    }
    case DType::kBF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return BF16ToFloat(h);
    }
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return F16ToFloat(h);
    }
    default:
      return 0;
  }
}

}  // namespace

bool IsFloatingDType(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF64 || dtype == DType::kBF16 ||
         dtype == DType::kF16;
}

absl::Status ConvertElements(const void* src, DType src_dtype, void* dst, DType dst_dtype,
                             int64_t count) {
  if (!IsFloatingDType(src_dtype) || !IsFloatingDType(dst_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot convert ", DTypeName(src_dtype), " to ",
                                                   DTypeName(dst_dtype),
                                                   ": only float32/float64/bfloat16/float16"));
  }
  const auto* s = static_cast<const uint8_t*>(src);
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, static_cast<size_t>(count) * DTypeSize(src_dtype));
    return absl::OkStatus();
  }
  // Fast paths for the common loads (fp32 engine from bf16/fp16 storage).
  if (dst_dtype == DType::kF32 && src_dtype == DType::kBF16) {
    float* d = static_cast<float*>(dst);
    for (int64_t i = 0; i < count; ++i) {
      uint16_t h;
      std::memcpy(&h, s + 2 * i, 2);
      d[i] = BF16ToFloat(h);
    }
    return absl::OkStatus();
  }
  for (int64_t i = 0; i < count; ++i) {
    // Via double: F32->BF16/F16 of a float is exact in double first, so rounding is single.
    // F64->BF16 goes double->float->bf16 (double rounding; acceptable for weights).
    const double v = Load(s, src_dtype, i);
    switch (dst_dtype) {
      case DType::kF32:
        static_cast<float*>(dst)[i] = static_cast<float>(v);
        break;
      case DType::kF64:
        static_cast<double*>(dst)[i] = v;
        break;
      case DType::kBF16:
        static_cast<uint16_t*>(dst)[i] = FloatToBF16(static_cast<float>(v));
        break;
      case DType::kF16:
        static_cast<uint16_t*>(dst)[i] = FloatToF16(static_cast<float>(v));
        break;
      default:
        break;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Tensor> ConvertTensor(const Tensor& src, DType target) {
  if (!src.defined() || !src.device().is_cpu() || !src.is_contiguous()) {
    return absl::InvalidArgumentError("ConvertTensor needs a defined contiguous CPU tensor");
  }
  auto out = Tensor::Empty(src.shape(), target);
  if (!out.ok()) return out.status();
  absl::Status s = ConvertElements(src.raw(), src.dtype(), out->raw(), target, src.numel());
  if (!s.ok()) return s;
  return out;
}

}  // namespace cpserve
