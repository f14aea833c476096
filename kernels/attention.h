// Attention batch descriptions shared by every backend (DESIGN §4).
//
// Tensors: q [Tq, Hq, D], new k/v [Tk, Hkv, D], outputs O [Tq, Hq, D] and
// LSE [Tq, Hq] (fp32 on CPU). Scores are s = scale * q·k with scale defaulting to
// 1/sqrt(D); LSE is the natural log of sum(exp(s)) over the keys a query sees
// (-inf when it sees none, and then its O row is 0). GQA: query head h reads KV
// head h / (Hq / Hkv). Query rows that no segment covers are left untouched.
//
// Segment metadata lives in host memory; a device backend uploads it.
#pragma once

#include <cstdint>

#include "absl/types/span.h"

namespace cpserve {

struct AttentionOptions {
  float scale = 0.0f;  // 0 -> 1/sqrt(head_dim)
  bool causal = true;  // PrefillAttention only; PagedAttention never masks
};

// One segment of a ragged prefill batch. Its keys, in order, are ctx_len cached
// tokens (read through block_table: cached key c sits in block block_table[c / B]
// at offset c % B) followed by k_len new keys k/v[k_start, k_start + k_len).
// With L = ctx_len + k_len total keys and causal masking ("bottom-right aligned",
// as flash-attn varlen): query j in [0, q_len) sees keys 0 .. L - q_len + j
// (none if that is negative); without it, every query sees all L keys.
// Segments may overlap in k (e.g. two query chunks of one sequence sharing one
// all-gathered K/V buffer); they should not overlap in q.
struct PrefillSegment {
  int64_t q_start = 0;  // first row of q / O / LSE
  int64_t q_len = 0;
  int64_t k_start = 0;  // first row of k / v
  int64_t k_len = 0;
  int64_t ctx_len = 0;                    // cached context keys before the new keys
  absl::Span<const int32_t> block_table;  // >= ceil(ctx_len / B) block ids if ctx_len > 0
};

// One segment of a paged (decode / context-shard) batch: q_len queries
// q[q_start, q_start + q_len) each see all kv_len keys read from the cache
// through block_table (no mask). kv_len may be 0 (then LSE = -inf, O = 0).
struct PagedSegment {
  int64_t q_start = 0;
  int64_t q_len = 1;
  int64_t kv_len = 0;
  absl::Span<const int32_t> block_table;  // >= ceil(kv_len / B) block ids
};

}  // namespace cpserve
