// Placement of a sequence's KV cache across a context-parallel group (DESIGN §3).
//
// N = ranks in the group, I = interleave size (tokens), B = block size (tokens),
// I divides B. Token p is stored only by its owner, ⌊p / I⌋ mod N, at local index
// ℓ(p) = ⌊p / (I·N)⌋·I + (p mod I), i.e. local block ⌊ℓ / B⌋, offset ℓ mod B.
// Pure functions: no state, no I/O.
#pragma once

#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"

namespace cpserve {

struct CpLayout {
  int world_size = 1;   // N >= 1
  int interleave = 16;  // I >= 1, divides block_size
  int block_size = 16;  // B >= 1

  absl::Status Validate() const;

  int Owner(int64_t p) const { return static_cast<int>((p / interleave) % world_size); }

  int64_t LocalIndex(int64_t p) const {
    return p / (static_cast<int64_t>(interleave) * world_size) * interleave + p % interleave;
  }

  // Inverse of (Owner, LocalIndex): the global position of local index l on rank r.
  int64_t GlobalPosition(int rank, int64_t l) const {
    return l / interleave * interleave * world_size + static_cast<int64_t>(rank) * interleave +
           l % interleave;
  }

  // Tokens rank r stores for a sequence of length len.
  int64_t LocalLength(int64_t len, int rank) const {
    const int64_t stride = static_cast<int64_t>(interleave) * world_size;
    const int64_t base = len / stride * interleave;
    const int64_t rest = len - base * world_size - static_cast<int64_t>(rank) * interleave;
    return base + std::clamp<int64_t>(rest, 0, interleave);
  }

  // KV blocks rank r needs for a sequence of length len.
  int64_t LocalBlocks(int64_t len, int rank) const {
    return (LocalLength(len, rank) + block_size - 1) / block_size;
  }

  // Largest number of blocks any rank needs for length len (rank 0 holds the most).
  int64_t MaxLocalBlocks(int64_t len) const { return LocalBlocks(len, 0); }
};

}  // namespace cpserve
