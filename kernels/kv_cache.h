// A view of one worker's paged KV cache (DESIGN §3).
//
// Recommended layout, one pool per worker:
//   [num_blocks][num_layers][2 (0 = K, 1 = V)][block_size][num_kv_heads][head_dim]
// so one block of a request (all layers, K and V) is one contiguous region of
// BlockBytes() bytes, which the transfer agent moves in one put. Kernels only use
// the strides, so other layouts with a unit head_dim stride also work.
//
// A token at position `offset` of block `block` ("slot" = block * block_size +
// offset) has, for each layer and KV head, a K row and a V row of head_dim
// elements.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kernels/tensor.h"

namespace cpserve {

struct KvCacheView {
  void* base = nullptr;  // element (0,0,0,0,0,0); owned elsewhere
  DType dtype = DType::kF32;
  Device device;
  int64_t num_blocks = 0;
  int64_t num_layers = 0;
  int64_t block_size = 0;  // tokens per block (B)
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  // Strides in elements; the head_dim stride is 1.
  int64_t block_stride = 0;
  int64_t layer_stride = 0;
  int64_t kv_stride = 0;  // K -> V
  int64_t token_stride = 0;
  int64_t head_stride = 0;

  // Shape of a cache tensor in the recommended layout.
  static Shape CacheShape(int64_t num_blocks, int64_t num_layers, int64_t block_size,
                          int64_t num_kv_heads, int64_t head_dim);
  // View over `base` in the recommended (contiguous) layout.
  static KvCacheView Contiguous(void* base, DType dtype, Device device, int64_t num_blocks,
                                int64_t num_layers, int64_t block_size, int64_t num_kv_heads,
                                int64_t head_dim);
  // View over a rank-6 tensor [num_blocks, num_layers, 2, B, Hkv, D] (any strides
  // with a unit last stride). The tensor must outlive the view.
  static absl::StatusOr<KvCacheView> FromTensor(const Tensor& cache);

  // InvalidArgument unless sizes are positive, base is set and strides are sane.
  absl::Status Validate() const;
  // InvalidArgument ("<op>: ...") unless `table` holds at least ceil(len / B) block
  // ids, each in [0, num_blocks): the blocks a sequence of len tokens reads.
  absl::Status CheckBlockTable(absl::Span<const int32_t> table, int64_t len,
                               absl::string_view op) const;

  size_t element_size() const { return DTypeSize(dtype); }
  // Bytes of one block (all layers, K and V) in the contiguous layout.
  size_t BlockBytes() const {
    return static_cast<size_t>(num_layers * 2 * block_size * num_kv_heads * head_dim) *
           element_size();
  }
  int64_t num_slots() const { return num_blocks * block_size; }

  // Element offset of the first head_dim element of (block, layer, kv, offset, head).
  int64_t ElementOffset(int64_t block, int64_t layer, int kv, int64_t offset, int64_t head) const {
    return block * block_stride + layer * layer_stride + kv * kv_stride + offset * token_stride +
           head * head_stride;
  }
  // Address of that element (base + ElementOffset * element_size).
  void* Address(int64_t block, int64_t layer, int kv, int64_t offset, int64_t head) const {
    return static_cast<char*>(base) +
           ElementOffset(block, layer, kv, offset, head) * static_cast<int64_t>(element_size());
  }
  template <typename T>
  T* Ptr(int64_t block, int64_t layer, int kv, int64_t offset, int64_t head) const {
    return static_cast<T*>(base) + ElementOffset(block, layer, kv, offset, head);
  }
};

}  // namespace cpserve
