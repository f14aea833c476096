#include "kernels/cpu/cpu_backend.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/common.h"

namespace cpserve {
namespace {

bool IsFloating(DType d) {
  return d == DType::kF32 || d == DType::kF64 || d == DType::kBF16 || d == DType::kF16;
}

double LoadAsDouble(const void* p, DType d) {
  switch (d) {
    case DType::kF32:
      return *static_cast<const float*>(p);
    case DType::kF64:
      return *static_cast<const double*>(p);
    case DType::kBF16:
      return BF16ToFloat(*static_cast<const uint16_t*>(p));
    case DType::kF16:
      return F16ToFloat(*static_cast<const uint16_t*>(p));
    default:
      return 0.0;
  }
}

void StoreFromDouble(double v, void* p, DType d) {
  switch (d) {
    case DType::kF32:
      *static_cast<float*>(p) = static_cast<float>(v);
      break;
    case DType::kF64:
      *static_cast<double*>(p) = v;
      break;
    case DType::kBF16:
      *static_cast<uint16_t*>(p) = FloatToBF16(static_cast<float>(v));
      break;
    case DType::kF16:
      *static_cast<uint16_t*>(p) = FloatToF16(static_cast<float>(v));
      break;
    default:
      break;
  }
}

// Copies src into dst (same shape, any strides), converting floating dtypes.
absl::Status StridedCopy(const Tensor& src, const Tensor& dst) {
  if (!src.defined() || !dst.defined()) {
    return absl::InvalidArgumentError("Copy: undefined tensor");
  }
  if (!src.device().is_cpu() || !dst.device().is_cpu()) {
    return absl::InvalidArgumentError("Copy: the CPU backend only copies CPU tensors");
  }
  if (src.shape() != dst.shape()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Copy: shape mismatch ", src.DebugString(), " vs ", dst.DebugString()));
  }
  const bool same = src.dtype() == dst.dtype();
  if (!same && !(IsFloating(src.dtype()) && IsFloating(dst.dtype()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("Copy: cannot convert ", src.DebugString(), " to ", dst.DebugString()));
  }
  const int64_t n = src.numel();
  if (n == 0) return absl::OkStatus();
  if (same && src.is_contiguous() && dst.is_contiguous()) {
    std::memmove(dst.raw(), src.raw(), src.nbytes());
    return absl::OkStatus();
  }
  const int rank = src.rank();
  const int64_t ssize = static_cast<int64_t>(DTypeSize(src.dtype()));
  const int64_t dsize = static_cast<int64_t>(DTypeSize(dst.dtype()));
  std::vector<int64_t> idx(rank, 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t so = 0, dofs = 0;
    for (int d = 0; d < rank; ++d) {
      so += idx[d] * src.stride(d);
      dofs += idx[d] * dst.stride(d);
    }
    const char* sp = static_cast<const char*>(src.raw()) + so * ssize;
    char* dp = static_cast<char*>(dst.raw()) + dofs * dsize;
    if (same) {
      std::memcpy(dp, sp, ssize);
    } else {
      StoreFromDouble(LoadAsDouble(sp, src.dtype()), dp, dst.dtype());
    }
    for (int d = rank - 1; d >= 0; --d) {
      if (++idx[d] < src.dim(d)) break;
      idx[d] = 0;
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend() { return std::make_unique<CpuBackend>(); }

absl::StatusOr<Tensor> CpuBackend::Alloc(const Shape& shape, DType dtype) {
  return Tensor::Empty(shape, dtype, Device::CPU());
}

absl::StatusOr<Tensor> CpuBackend::AllocKvCache(int64_t num_blocks, int64_t num_layers,
                                                int64_t block_size, int64_t num_kv_heads,
                                                int64_t head_dim) {
  if (num_blocks <= 0 || num_layers <= 0 || block_size <= 0 || num_kv_heads <= 0 || head_dim <= 0) {
    return absl::InvalidArgumentError("AllocKvCache: sizes must be positive");
  }
  return Tensor::Empty(
      KvCacheView::CacheShape(num_blocks, num_layers, block_size, num_kv_heads, head_dim),
      DType::kF32, Device::CPU());
}

absl::Status CpuBackend::CopyFromHost(const Tensor& src, const Tensor& dst) {
  return StridedCopy(src, dst);
}
absl::Status CpuBackend::CopyToHost(const Tensor& src, const Tensor& dst) {
  return StridedCopy(src, dst);
}
absl::Status CpuBackend::Copy(const Tensor& src, const Tensor& dst) {
  if (src.defined() && dst.defined() && src.dtype() != dst.dtype()) {
    return absl::InvalidArgumentError("Copy: dtypes differ");
  }
  return StridedCopy(src, dst);
}

}  // namespace cpserve
