// KV block allocator of one rank (DESIGN §3): a fixed number of equal blocks, ids 0..n-1.
//
// Blocks carry reference counts so that several owners (e.g. requests sharing a prefix later)
// can hold one block; a block returns to the free list when its count drops to 0. The free
// list is LIFO and starts as 0, 1, 2, ... on top, so allocation order is a pure function of
// the call sequence (the scheduler on the pool leader and any replica agree on block ids).
// Pure logic: no threads, no I/O; not thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace cpserve {

class BlockPool {
 public:
  // num_blocks >= 0 (CHECKed: a negative size is a programmer error).
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return static_cast<int32_t>(ref_counts_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_used() const { return num_blocks() - num_free(); }
  bool CanAllocate(int64_t n) const { return n >= 0 && n <= num_free(); }

  // Takes n free blocks (reference count 1 each), all or nothing. The ids come off the top of
  // the free list. InvalidArgument for n < 0; ResourceExhausted (nothing taken) if n > free.
  absl::StatusOr<std::vector<int32_t>> Allocate(int64_t n);

  // Adds one reference to an allocated block. InvalidArgument for an unknown id,
  // FailedPrecondition for a free block.
  absl::Status AddRef(int32_t block);

  // Drops one reference; at 0 the block goes back on top of the free list. Same errors as
  // AddRef; an error changes nothing.
  absl::Status Release(int32_t block);

  // Releases one reference of each listed block (a block may appear k times to drop k
  // references), in order, so the last listed block ends on top of the free list. Validated
  // first: on any error (unknown id, or more releases than references) nothing changes.
  absl::Status Release(absl::Span<const int32_t> blocks);

  // Reference count of a block; 0 when free, -1 for an unknown id.
  int32_t RefCount(int32_t block) const;

 private:
  absl::Status CheckAllocated(int32_t block) const;

  std::vector<int32_t> ref_counts_;  // [num_blocks]
  std::vector<int32_t> free_;        // stack of free ids; back() is allocated next
};

}  // namespace cpserve
