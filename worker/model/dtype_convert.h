// Element-wise conversion between floating dtypes (F32, BF16, F16, F64) of raw buffers and
// tensors. Rounding to BF16/F16 is round-to-nearest-even (kernels/tensor.h converters).
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace cpserve {

// Converts `count` elements from `src` (little-endian, possibly unaligned) of `src_dtype`
// into `dst` (aligned for `dst_dtype`). InvalidArgument for non-floating dtypes.
absl::Status ConvertElements(const void* src, DType src_dtype, void* dst, DType dst_dtype,
                             int64_t count);

// A new contiguous CPU tensor with `src`'s values in `target` dtype (a copy even if equal).
absl::StatusOr<Tensor> ConvertTensor(const Tensor& src, DType target);

bool IsFloatingDType(DType dtype);

}  // namespace cpserve
