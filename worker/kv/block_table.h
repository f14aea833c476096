// Per-request KV block tables of one context-parallel rank (DESIGN §3).
//
// A request's sequence covers global positions [0, len). Rank r stores only the positions it
// owns (CpLayout::Owner(p) == r), packed in local order ℓ = CpLayout::LocalIndex(p) into the
// request's local blocks: local block ⌊ℓ / B⌋ at offset ℓ mod B. The table lists those
// blocks' pool ids in local order, so position p lives in slot
//   blocks[⌊ℓ / B⌋] · B + ℓ mod B
// of the rank's pool ([num_blocks][...][B][...], DESIGN §3). A slot mapping for a range of
// global positions gives that slot for owned positions and -1 for the others: kernels that
// write K/V skip the -1 tokens, which is how a CP rank keeps only its shard.
// Pure logic: no threads, no I/O; not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/kv/block_pool.h"
#include "worker/kv/cp_layout.h"

namespace cpserve {

// The blocks one request holds on one rank. Does not own a pool: every call that allocates
// or releases takes the pool explicitly (BlockManager pairs them).
class BlockTable {
 public:
  // layout must be valid and 0 <= rank < layout.world_size (CHECKed).
  BlockTable(const CpLayout& layout, int rank);

  const CpLayout& layout() const { return layout_; }
  int rank() const { return rank_; }
  // Global positions [0, capacity()) have a slot on their owner. Never shrinks until Free.
  int64_t capacity() const { return capacity_; }
  // Pool block ids in local order; size() == layout().LocalBlocks(capacity(), rank()).
  absl::Span<const int32_t> blocks() const { return blocks_; }

  // Extra blocks EnsureCapacity(new_total_len) would take (0 if already covered).
  int64_t BlocksNeeded(int64_t new_total_len) const;

  // Grows the table to cover global positions [0, new_total_len): takes exactly
  // BlocksNeeded(new_total_len) blocks from pool, all or nothing. A smaller length is a no-op.
  // InvalidArgument for a negative length; ResourceExhausted (nothing taken) if the pool is
  // short.
  absl::Status EnsureCapacity(int64_t new_total_len, BlockPool& pool);

  // Slot of global position p on this rank, or -1 if another rank owns p.
  // Precondition (CHECKed): 0 <= p < capacity().
  int64_t Slot(int64_t p) const;

  // Slots of global positions [start, end), appended to *out (end - start entries; -1 for
  // positions this rank does not own). OutOfRange unless 0 <= start <= end <= capacity().
  absl::Status AppendSlotMapping(int64_t start, int64_t end, std::vector<int64_t>* out) const;
  absl::StatusOr<std::vector<int64_t>> SlotMapping(int64_t start, int64_t end) const;

  // Releases every block back to pool (one reference each) and resets capacity to 0.
  absl::Status Free(BlockPool& pool);

 private:
  CpLayout layout_;
  int rank_;
  int64_t capacity_ = 0;
  std::vector<int32_t> blocks_;
};

// One rank's KV blocks: a BlockPool plus the BlockTable of every request holding blocks,
// keyed by request id. Used by the scheduler (one per rank of the group), the step executor
// (block tables and slot mappings) and the KV transfer (a request's block ids).
class BlockManager {
 public:
  // InvalidArgument for an invalid layout, rank outside [0, world_size) or num_blocks < 0.
  static absl::StatusOr<BlockManager> Create(const CpLayout& layout, int rank, int32_t num_blocks);

  const CpLayout& layout() const { return layout_; }
  int rank() const { return rank_; }
  const BlockPool& pool() const { return pool_; }
  int32_t num_blocks() const { return pool_.num_blocks(); }
  int32_t num_free() const { return pool_.num_free(); }
  int32_t num_used() const { return pool_.num_used(); }
  int64_t num_requests() const { return static_cast<int64_t>(tables_.size()); }

  // Blocks this rank needs for a whole sequence of len tokens: LocalBlocks(len, rank).
  int64_t BlocksForLength(int64_t len) const { return layout_.LocalBlocks(len, rank_); }
  // Longest sequence whose shard fits in n blocks on this rank (n >= 0).
  int64_t MaxLengthForBlocks(int64_t n) const;
  // Extra blocks to cover [0, new_len) for request id (all of them for an unknown id).
  int64_t BlocksToGrow(const std::string& id, int64_t new_len) const;

  // Whether a new request of len tokens fits now while leaving `reserve` blocks free.
  bool CanFit(int64_t len, int64_t reserve = 0) const {
    return BlocksForLength(len) + reserve <= num_free();
  }
  // Whether request id (known or not) can grow to new_len leaving `reserve` blocks free.
  bool CanGrow(const std::string& id, int64_t new_len, int64_t reserve = 0) const {
    return BlocksToGrow(id, new_len) + reserve <= num_free();
  }

  // Creates id's table covering [0, len), all or nothing. AlreadyExists if id holds a table;
  // InvalidArgument for len < 0; ResourceExhausted (nothing taken) if blocks are short.
  absl::Status Reserve(const std::string& id, int64_t len);
  // Grows id's table to cover [0, new_len), all or nothing (creating it if absent).
  // ResourceExhausted (nothing taken) if blocks are short.
  absl::Status Grow(const std::string& id, int64_t new_len);
  // Releases all of id's blocks and forgets it. NotFound if id holds no table.
  absl::Status Free(const std::string& id);

  bool Contains(const std::string& id) const { return tables_.contains(id); }
  // id's table, or nullptr. Invalidated by Reserve/Grow/Free of any request.
  const BlockTable* Find(const std::string& id) const;
  // id's slots for global positions [start, end) (see BlockTable::SlotMapping).
  absl::StatusOr<std::vector<int64_t>> SlotMapping(const std::string& id, int64_t start,
                                                   int64_t end) const;

 private:
  BlockManager(const CpLayout& layout, int rank, int32_t num_blocks)
      : layout_(layout), rank_(rank), pool_(num_blocks) {}

  CpLayout layout_;
  int rank_;
  BlockPool pool_;
  // Looked up only, never iterated: iteration order must not leak into decisions.
  absl::flat_hash_map<std::string, BlockTable> tables_;
};

}  // namespace cpserve
