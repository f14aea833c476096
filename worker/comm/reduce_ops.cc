#include "worker/comm/reduce_ops.h"

#include <algorithm>
#include <cstdint>

#include "glog/logging.h"

namespace cpserve::comm {
namespace {

struct Sum {
  template <typename T>
  static T Apply(T a, T b) {
    return static_cast<T>(a + b);
  }
};
struct Max {
  template <typename T>
  static T Apply(T a, T b) {
    return std::max(a, b);
  }
};

template <typename T, typename Op>
void Reduce(void* out, const void* a, const void* b, size_t n) {
  auto* o = static_cast<T*>(out);
  const auto* x = static_cast<const T*>(a);
  const auto* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = Op::Apply(x[i], y[i]);
}

template <float (*ToF)(uint16_t), uint16_t (*FromF)(float), typename Op>
void ReduceHalf(void* out, const void* a, const void* b, size_t n) {
  auto* o = static_cast<uint16_t*>(out);
  const auto* x = static_cast<const uint16_t*>(a);
  const auto* y = static_cast<const uint16_t*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = FromF(Op::Apply(ToF(x[i]), ToF(y[i])));
}

template <typename Op>
ReduceFn ForOp(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return &Reduce<float, Op>;
    case DType::kF64:
      return &Reduce<double, Op>;
    case DType::kBF16:
      return &ReduceHalf<BF16ToFloat, FloatToBF16, Op>;
    case DType::kF16:
      return &ReduceHalf<F16ToFloat, FloatToF16, Op>;
    case DType::kI32:
      return &Reduce<int32_t, Op>;
    case DType::kI64:
      return &Reduce<int64_t, Op>;
    case DType::kU8:
      return &Reduce<uint8_t, Op>;
  }
  LOG(FATAL) << "unknown dtype";
  return nullptr;
}

}  // namespace

ReduceFn GetReduceFn(DType dtype, ReduceOp op) {
  return op == ReduceOp::kSum ? ForOp<Sum>(dtype) : ForOp<Max>(dtype);
}

}  // namespace cpserve::comm
