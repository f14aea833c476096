#include "kernels/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace cpserve {

Shape KvCacheView::CacheShape(int64_t num_blocks, int64_t num_layers, int64_t block_size,
                              int64_t num_kv_heads, int64_t head_dim) {
  return Shape{num_blocks, num_layers, 2, block_size, num_kv_heads, head_dim};
}

KvCacheView KvCacheView::Contiguous(void* base, DType dtype, Device device, int64_t num_blocks,
                                    int64_t num_layers, int64_t block_size, int64_t num_kv_heads,
                                    int64_t head_dim) {
  KvCacheView v;
  v.base = base;
  v.dtype = dtype;
  v.device = device;
  v.num_blocks = num_blocks;
  v.num_layers = num_layers;
  v.block_size = block_size;
  v.num_kv_heads = num_kv_heads;
  v.head_dim = head_dim;
  v.head_stride = head_dim;
  v.token_stride = num_kv_heads * head_dim;
  v.kv_stride = block_size * v.token_stride;
  v.layer_stride = 2 * v.kv_stride;
  v.block_stride = num_layers * v.layer_stride;
  return v;
}

absl::StatusOr<KvCacheView> KvCacheView::FromTensor(const Tensor& cache) {
  if (!cache.defined() || cache.rank() != 6 || cache.dim(2) != 2 || cache.stride(5) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache tensor must be [num_blocks, num_layers, 2, block_size, "
                     "num_kv_heads, head_dim] with unit last stride, got ",
                     cache.defined() ? cache.DebugString() : "undefined"));
  }
  KvCacheView v;
  v.base = cache.raw();
  v.dtype = cache.dtype();
  v.device = cache.device();
  v.num_blocks = cache.dim(0);
  v.num_layers = cache.dim(1);
  v.block_size = cache.dim(3);
  v.num_kv_heads = cache.dim(4);
  v.head_dim = cache.dim(5);
  v.block_stride = cache.stride(0);
  v.layer_stride = cache.stride(1);
  v.kv_stride = cache.stride(2);
  v.token_stride = cache.stride(3);
  v.head_stride = cache.stride(4);
  absl::Status s = v.Validate();
  if (!s.ok()) return s;
  return v;
}

absl::Status KvCacheView::CheckBlockTable(absl::Span<const int32_t> table, int64_t len,
                                          absl::string_view op) const {
  const int64_t need = (len + block_size - 1) / block_size;
  if (static_cast<int64_t>(table.size()) < need) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": block table has ", table.size(), " blocks, need ", need));
  }
  for (int64_t b = 0; b < need; ++b) {
    if (table[b] < 0 || table[b] >= num_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": block id ", table[b], " outside [0, ", num_blocks, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status KvCacheView::Validate() const {
  if (base == nullptr) return absl::InvalidArgumentError("KV cache view has no base pointer");
  if (num_blocks <= 0 || num_layers <= 0 || block_size <= 0 || num_kv_heads <= 0 || head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache view sizes must be positive: blocks=", num_blocks, " layers=", num_layers,
        " block_size=", block_size, " kv_heads=", num_kv_heads, " head_dim=", head_dim));
  }
  if (head_stride < 1 || token_stride < 1 || kv_stride < 1 || layer_stride < 1 ||
      block_stride < 1) {
    return absl::InvalidArgumentError("KV cache view strides must be positive");
  }
  return absl::OkStatus();
}

}  // namespace cpserve
