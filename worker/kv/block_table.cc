#include "worker/kv/block_table.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace cpserve {

BlockTable::BlockTable(const CpLayout& layout, int rank) : layout_(layout), rank_(rank) {
  CHECK(layout.Validate().ok()) << layout.Validate();
  CHECK(rank >= 0 && rank < layout.world_size) << "rank " << rank;
}

int64_t BlockTable::BlocksNeeded(int64_t new_total_len) const {
  return std::max<int64_t>(
      0, layout_.LocalBlocks(new_total_len, rank_) - static_cast<int64_t>(blocks_.size()));
}

absl::Status BlockTable::EnsureCapacity(int64_t new_total_len, BlockPool& pool) {
  if (new_total_len < 0) {
    return absl::InvalidArgumentError(absl::StrCat("negative sequence length ", new_total_len));
  }
  if (new_total_len <= capacity_) return absl::OkStatus();
  absl::StatusOr<std::vector<int32_t>> fresh = pool.Allocate(BlocksNeeded(new_total_len));
  if (!fresh.ok()) return fresh.status();
  blocks_.insert(blocks_.end(), fresh->begin(), fresh->end());
  capacity_ = new_total_len;
  return absl::OkStatus();
}

int64_t BlockTable::Slot(int64_t p) const {
  CHECK(p >= 0 && p < capacity_) << "position " << p << " outside [0, " << capacity_ << ")";
  if (layout_.Owner(p) != rank_) return -1;
  const int64_t l = layout_.LocalIndex(p);
  return static_cast<int64_t>(blocks_[l / layout_.block_size]) * layout_.block_size +
         l % layout_.block_size;
}

absl::Status BlockTable::AppendSlotMapping(int64_t start, int64_t end,
                                           std::vector<int64_t>* out) const {
  if (start < 0 || start > end || end > capacity_) {
    return absl::OutOfRangeError(absl::StrCat("positions [", start, ", ", end,
                                              ") outside the table's [0, ", capacity_, ")"));
  }
  out->reserve(out->size() + (end - start));
  for (int64_t p = start; p < end; ++p) out->push_back(Slot(p));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> BlockTable::SlotMapping(int64_t start, int64_t end) const {
  std::vector<int64_t> out;
  if (absl::Status s = AppendSlotMapping(start, end, &out); !s.ok()) return s;
  return out;
}

absl::Status BlockTable::Free(BlockPool& pool) {
  if (absl::Status s = pool.Release(blocks_); !s.ok()) return s;
  blocks_.clear();
  capacity_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<BlockManager> BlockManager::Create(const CpLayout& layout, int rank,
                                                  int32_t num_blocks) {
  if (absl::Status s = layout.Validate(); !s.ok()) return s;
  if (rank < 0 || rank >= layout.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " outside [0, ", layout.world_size, ")"));
  }
  if (num_blocks < 0) {
    return absl::InvalidArgumentError(absl::StrCat("negative block count ", num_blocks));
  }
  return BlockManager(layout, rank, num_blocks);
}

int64_t BlockManager::MaxLengthForBlocks(int64_t n) const {
  // Rank r's (n·B)-th local token (0-based) is the first that would not fit; every owned
  // position before it has a smaller local index.
  return layout_.GlobalPosition(rank_, n * layout_.block_size);
}

int64_t BlockManager::BlocksToGrow(const std::string& id, int64_t new_len) const {
  const BlockTable* table = Find(id);
  return table == nullptr ? BlocksForLength(new_len) : table->BlocksNeeded(new_len);
}

absl::Status BlockManager::Reserve(const std::string& id, int64_t len) {
  if (Contains(id)) {
    return absl::AlreadyExistsError(absl::StrCat("request ", id, " already holds KV blocks"));
  }
  return Grow(id, len);
}

absl::Status BlockManager::Grow(const std::string& id, int64_t new_len) {
  auto it = tables_.find(id);
  if (it == tables_.end()) {
    BlockTable table(layout_, rank_);
    if (absl::Status s = table.EnsureCapacity(new_len, pool_); !s.ok()) return s;
    tables_.emplace(id, std::move(table));
    return absl::OkStatus();
  }
  return it->second.EnsureCapacity(new_len, pool_);
}

absl::Status BlockManager::Free(const std::string& id) {
  auto it = tables_.find(id);
  if (it == tables_.end()) {
    return absl::NotFoundError(absl::StrCat("request ", id, " holds no KV blocks"));
  }
  absl::Status s = it->second.Free(pool_);
  tables_.erase(it);
  return s;
}

const BlockTable* BlockManager::Find(const std::string& id) const {
  auto it = tables_.find(id);
  return it == tables_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::vector<int64_t>> BlockManager::SlotMapping(const std::string& id, int64_t start,
                                                               int64_t end) const {
  const BlockTable* table = Find(id);
  if (table == nullptr) {
    return absl::NotFoundError(absl::StrCat("request ", id, " holds no KV blocks"));
  }
  return table->SlotMapping(start, end);
}

}  // namespace cpserve
