// Transfer plan: which bytes of one prefill rank's KV cache go where in the
// decode pool's caches (DESIGN §3, §5). Pure functions: no UCX, no threads.
//
// Both pools store KV as blocks shaped [num_layers][2 (K,V)][B][num_kv_heads][head_dim];
// block k of a rank's cache starts at block_id(k) * block_stride_bytes from the
// region base. Token offset o, layer l, k/v c of a block sits at
// ((l*2 + c)*B + o) * token_bytes from the block start.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/kv/cp_layout.h"

namespace cpserve::transfer {

// Shape of one block, shared by both pools (they must agree on all of it).
struct KvBlockGeometry {
  int block_size = 16;  // B, tokens
  int num_layers = 1;
  int num_kv_heads = 1;
  int head_dim = 1;
  int elem_bytes = 4;  // bytes per element of K / V

  absl::Status Validate() const;
  // Bytes of one token's K (or V) in one layer: num_kv_heads * head_dim * elem_bytes.
  uint64_t TokenBytes() const {
    return static_cast<uint64_t>(num_kv_heads) * head_dim * elem_bytes;
  }
  // Bytes of one whole block: num_layers * 2 * B * TokenBytes().
  uint64_t BlockBytes() const {
    return static_cast<uint64_t>(num_layers) * 2 * block_size * TokenBytes();
  }
  // Offset of (layer, kv, token offset) inside a block.
  uint64_t OffsetInBlock(int layer, int kv, int offset) const {
    return ((static_cast<uint64_t>(layer) * 2 + kv) * block_size + offset) * TokenBytes();
  }
};

// One contiguous copy: bytes [src_offset, +bytes) of the src rank's region to
// [dst_offset, +bytes) of the dst rank's region (offsets from the region bases).
struct TransferRun {
  int src_rank = 0;
  uint64_t src_offset = 0;
  int dst_rank = 0;
  uint64_t dst_offset = 0;
  uint64_t bytes = 0;

  bool operator==(const TransferRun&) const = default;
};

// One side (prefill or decode) of a transfer.
struct TransferSide {
  CpLayout layout;  // world_size, interleave, block_size (= geometry.block_size)
  // Per rank: the request's block ids on that rank, in local block order. A rank
  // needs at least layout.LocalBlocks(prompt_len, rank) ids; extra ids are allowed.
  std::vector<std::vector<int32_t>> block_ids;
  uint64_t block_stride_bytes = 0;  // >= geometry.BlockBytes()
  // Per rank: size of the rank's KV region; every run must stay inside it and
  // inside the listed blocks. Empty = unchecked (the src side when not known).
  std::vector<uint64_t> region_bytes;
};

struct TransferPlanInput {
  KvBlockGeometry geometry;
  int64_t prompt_len = 0;
  TransferSide src;  // prefill pool: P ranks, interleave I_p
  TransferSide dst;  // decode pool: D ranks, interleave I_d
};

// Checks the input: layouts valid, both block sizes equal geometry.block_size,
// strides >= block bytes, enough non-negative, distinct block ids per rank that
// fit in the region. Any mismatch is InvalidArgument. For the src side only
// `src_rank`'s ids are checked (other ranks' lists may be empty).
absl::Status ValidatePlanInput(const TransferPlanInput& in, int src_rank);

// The runs src_rank must write: every (position it owns, layer, K/V) exactly once,
// coalesced into maximal runs contiguous on both sides. Runs are ordered by
// src local index. With I_p = I_d = B and full blocks, one run per block (all
// layers); consecutive physical blocks on both sides merge further.
absl::StatusOr<std::vector<TransferRun>> PlanTransfer(const TransferPlanInput& in, int src_rank);

// Total bytes of `runs` sent to each dst rank (size = dst world size).
std::vector<uint64_t> BytesPerDstRank(absl::Span<const TransferRun> runs, int dst_world_size);

}  // namespace cpserve::transfer
