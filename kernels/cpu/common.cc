#include "kernels/cpu/common.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cpserve::cpu {

absl::Status CheckTensor(const Tensor& t, DType dtype, const char* what) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(what, ": undefined tensor"));
  if (!t.device().is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a CPU tensor"));
  }
  if (t.dtype() != dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected dtype ", DTypeName(dtype), ", got ", t.DebugString()));
  }
  return absl::OkStatus();
}

absl::Status CheckShape(const Tensor& t, const Shape& shape, const char* what) {
  if (t.shape() != shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": expected shape [", absl::StrJoin(shape, ","), "], got ", t.DebugString()));
  }
  return absl::OkStatus();
}

absl::StatusOr<Rows> AsRows(const Tensor& t, const char* what) {
  if (absl::Status s = CheckTensor(t, DType::kF32, what); !s.ok()) return s;
  if (t.rank() < 1) return absl::InvalidArgumentError(absl::StrCat(what, ": rank 0 tensor"));
  const int r = t.rank();
  if (t.dim(r - 1) > 1 && t.stride(r - 1) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": last dim must have unit stride"));
  }
  Rows rows;
  rows.data = t.data<float>();
  rows.cols = t.dim(r - 1);
  rows.rows = 1;
  for (int i = 0; i < r - 1; ++i) rows.rows *= t.dim(i);
  rows.stride = r >= 2 ? t.stride(r - 2) : rows.cols;
  // Leading dims must collapse: stride[i] == stride[i+1] * shape[i+1].
  for (int i = 0; i + 2 < r; ++i) {
    if (t.dim(i) > 1 && t.stride(i) != t.stride(i + 1) * t.dim(i + 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": leading dims of ", t.DebugString(), " are not row-strided"));
    }
  }
  return rows;
}

absl::StatusOr<Heads> AsHeads(const Tensor& t, const char* what) {
  if (absl::Status s = CheckTensor(t, DType::kF32, what); !s.ok()) return s;
  if (t.rank() != 3 || (t.dim(2) > 1 && t.stride(2) != 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected [T, H, D] with unit last stride, got ", t.DebugString()));
  }
  Heads h;
  h.data = t.data<float>();
  h.tokens = t.dim(0);
  h.heads = t.dim(1);
  h.dim = t.dim(2);
  h.token_stride = t.stride(0);
  h.head_stride = t.stride(1);
  return h;
}

absl::StatusOr<std::vector<int64_t>> ReadIndices(const Tensor& t, const char* what) {
  if (!t.defined() || !t.device().is_cpu() || t.rank() != 1 ||
      (t.dtype() != DType::kI32 && t.dtype() != DType::kI64)) {
    return absl::InvalidArgumentError(absl::StrCat(what,
                                                   ": expected a CPU int32/int64 vector, got ",
                                                   t.defined() ? t.DebugString() : "undefined"));
  }
  std::vector<int64_t> out(t.dim(0));
  for (int64_t i = 0; i < t.dim(0); ++i) {
    out[i] = t.dtype() == DType::kI32 ? t.data<int32_t>()[i * t.stride(0)]
                                      : t.data<int64_t>()[i * t.stride(0)];
  }
  return out;
}

absl::StatusOr<Rows> AsLse(const Tensor& t, const char* what) {
  if (absl::Status s = CheckTensor(t, DType::kF32, what); !s.ok()) return s;
  if (t.rank() != 2 || (t.dim(1) > 1 && t.stride(1) != 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected [T, H] with unit last stride, got ", t.DebugString()));
  }
  return Rows{t.data<float>(), t.dim(0), t.dim(1), t.stride(0)};
}

}  // namespace cpserve::cpu
