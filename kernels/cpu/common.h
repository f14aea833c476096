// Shape and dtype checks shared by the CPU kernels.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace cpserve::cpu {

// A tensor seen as a matrix: rows x cols with unit column stride.
struct Rows {
  float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;  // elements between rows
  float* row(int64_t r) const { return data + r * stride; }
};

// A [T, H, D] tensor with unit last stride.
struct Heads {
  float* data = nullptr;
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t dim = 0;
  int64_t token_stride = 0;
  int64_t head_stride = 0;
  float* at(int64_t t, int64_t h) const { return data + t * token_stride + h * head_stride; }
};

// OK iff t is defined, on the CPU and of dtype `dtype`.
absl::Status CheckTensor(const Tensor& t, DType dtype, const char* what);
// OK iff t has exactly `shape`.
absl::Status CheckShape(const Tensor& t, const Shape& shape, const char* what);

// An fp32 CPU tensor of rank >= 1 as rows (leading dims collapsed) x last dim.
absl::StatusOr<Rows> AsRows(const Tensor& t, const char* what);
// An fp32 CPU tensor of rank 3 [T, H, D] with unit last stride.
absl::StatusOr<Heads> AsHeads(const Tensor& t, const char* what);
// An int32/int64 CPU tensor of rank 1 read as int64 values.
absl::StatusOr<std::vector<int64_t>> ReadIndices(const Tensor& t, const char* what);
// An fp32 CPU tensor of rank 2 [T, H] (any strides).
absl::StatusOr<Rows> AsLse(const Tensor& t, const char* what);

}  // namespace cpserve::cpu
