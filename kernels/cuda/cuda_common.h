// Host-side helpers of the CUDA backend: CUDA errors as absl::Status and tensor
// checks that turn device tensors into the kernels' views (kernels/cuda/launch.h).
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/launch.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace cpserve::cuda {

// OK for cudaSuccess, else INTERNAL "<what>: <CUDA error name>: <string>".
absl::Status CudaStatus(cudaError_t err, const char* what);

#define CPSERVE_CUDA_RETURN_IF_ERROR(expr, what) \
  CPSERVE_RETURN_IF_ERROR(::cpserve::cuda::CudaStatus((expr), (what)))

ElemType ToElemType(DType d);

// OK iff t is defined, on `device` and of dtype `dtype`.
absl::Status CheckDeviceTensor(const Tensor& t, Device device, DType dtype, const char* what);
// OK iff t has exactly `shape`.
absl::Status CheckShape(const Tensor& t, const Shape& shape, const char* what);

// A device tensor of rank >= 1 (dtype checked) as rows (leading dims collapsed) x last dim.
absl::StatusOr<RowsView> AsRows(const Tensor& t, Device device, DType dtype, const char* what);
// A bf16 device tensor [T, H, D] with unit last stride.
absl::StatusOr<HeadsView> AsHeads(const Tensor& t, Device device, const char* what);
// An fp32 device tensor [T, H] (any strides).
absl::StatusOr<LseView> AsLse(const Tensor& t, Device device, int64_t tokens, int64_t heads,
                              const char* what);
// A rank-1 int32 or int64 device tensor of `n` elements.
absl::Status CheckIndexVector(const Tensor& t, Device device, int64_t n, bool allow_i32,
                              const char* what);

}  // namespace cpserve::cuda
