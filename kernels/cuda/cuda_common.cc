#include "kernels/cuda/cuda_common.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cpserve::cuda {

absl::Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(err), ": ", cudaGetErrorString(err)));
}

ElemType ToElemType(DType d) { return static_cast<ElemType>(static_cast<int>(d)); }
static_assert(static_cast<int>(DType::kF32) == static_cast<int>(ElemType::kF32));
static_assert(static_cast<int>(DType::kF64) == static_cast<int>(ElemType::kF64));
static_assert(static_cast<int>(DType::kBF16) == static_cast<int>(ElemType::kBF16));
static_assert(static_cast<int>(DType::kF16) == static_cast<int>(ElemType::kF16));
static_assert(static_cast<int>(DType::kI32) == static_cast<int>(ElemType::kI32));
static_assert(static_cast<int>(DType::kI64) == static_cast<int>(ElemType::kI64));
static_assert(static_cast<int>(DType::kU8) == static_cast<int>(ElemType::kU8));

absl::Status CheckDeviceTensor(const Tensor& t, Device device, DType dtype, const char* what) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(what, ": undefined tensor"));
  if (!(t.device() == device)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": expected a tensor on cuda:", device.index, ", got ", t.DebugString()));
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

absl::StatusOr<RowsView> AsRows(const Tensor& t, Device device, DType dtype, const char* what) {
  CPSERVE_RETURN_IF_ERROR(CheckDeviceTensor(t, device, dtype, what));
  if (t.rank() < 1) return absl::InvalidArgumentError(absl::StrCat(what, ": rank 0 tensor"));
  const int r = t.rank();
  if (t.dim(r - 1) > 1 && t.stride(r - 1) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": last dim must have unit stride"));
  }
  RowsView v;
  v.data = t.raw();
  v.cols = t.dim(r - 1);
  v.rows = 1;
  for (int i = 0; i < r - 1; ++i) v.rows *= t.dim(i);
  v.stride = r >= 2 ? t.stride(r - 2) : v.cols;
  for (int i = 0; i + 2 < r; ++i) {
    if (t.dim(i) > 1 && t.stride(i) != t.stride(i + 1) * t.dim(i + 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": leading dims of ", t.DebugString(), " are not row-strided"));
    }
  }
  return v;
}

absl::StatusOr<HeadsView> AsHeads(const Tensor& t, Device device, const char* what) {
  CPSERVE_RETURN_IF_ERROR(CheckDeviceTensor(t, device, DType::kBF16, what));
  if (t.rank() != 3 || (t.dim(2) > 1 && t.stride(2) != 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected [T, H, D] with unit last stride, got ", t.DebugString()));
  }
  return HeadsView{t.data<uint16_t>(), t.dim(0), t.dim(1), t.dim(2), t.stride(0), t.stride(1)};
}

absl::StatusOr<LseView> AsLse(const Tensor& t, Device device, int64_t tokens, int64_t heads,
                              const char* what) {
  CPSERVE_RETURN_IF_ERROR(CheckDeviceTensor(t, device, DType::kF32, what));
  if (t.rank() != 2 || t.dim(0) != tokens || t.dim(1) != heads) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected [", tokens, ",", heads, "] fp32, got ", t.DebugString()));
  }
  return LseView{t.data<float>(), t.stride(0), t.stride(1)};
}

absl::Status CheckIndexVector(const Tensor& t, Device device, int64_t n, bool allow_i32,
                              const char* what) {
  if (!t.defined() || !(t.device() == device) || t.rank() != 1 || t.dim(0) != n ||
      !(t.dtype() == DType::kI64 || (allow_i32 && t.dtype() == DType::kI32))) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": expected a device ", allow_i32 ? "int32/int64" : "int64", " vector of ", n,
        " elements, got ", t.defined() ? t.DebugString() : "undefined"));
  }
  return absl::OkStatus();
}

}  // namespace cpserve::cuda
