#include "worker/kv/block_pool.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace cpserve {

BlockPool::BlockPool(int32_t num_blocks) {
  CHECK_GE(num_blocks, 0) << "block pool size";
  num_blocks = std::max<int32_t>(num_blocks, 0);
  ref_counts_.assign(num_blocks, 0);
  free_.resize(num_blocks);
  // Highest id at the bottom, so blocks 0, 1, 2, ... are handed out first.
  for (int32_t i = 0; i < num_blocks; ++i) free_[i] = num_blocks - 1 - i;
}

absl::StatusOr<std::vector<int32_t>> BlockPool::Allocate(int64_t n) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("cannot allocate ", n, " blocks"));
  if (n > num_free()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("need ", n, " KV blocks, ", num_free(), " of ", num_blocks(), " free"));
  }
  std::vector<int32_t> out(free_.rbegin(), free_.rbegin() + n);
  free_.resize(free_.size() - n);
  for (int32_t b : out) ref_counts_[b] = 1;
  return out;
}

absl::Status BlockPool::CheckAllocated(int32_t block) const {
  if (block < 0 || block >= num_blocks()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown KV block ", block, " (pool has ", num_blocks(), ")"));
  }
  if (ref_counts_[block] == 0) {
    return absl::FailedPreconditionError(absl::StrCat("KV block ", block, " is free"));
  }
  return absl::OkStatus();
}

absl::Status BlockPool::AddRef(int32_t block) {
  if (absl::Status s = CheckAllocated(block); !s.ok()) return s;
  ++ref_counts_[block];
  return absl::OkStatus();
}

absl::Status BlockPool::Release(int32_t block) {
  if (absl::Status s = CheckAllocated(block); !s.ok()) return s;
  if (--ref_counts_[block] == 0) free_.push_back(block);
  return absl::OkStatus();
}

absl::Status BlockPool::Release(absl::Span<const int32_t> blocks) {
  absl::flat_hash_map<int32_t, int32_t> drops;
  for (int32_t b : blocks) {
    if (absl::Status s = CheckAllocated(b); !s.ok()) return s;
    if (++drops[b] > ref_counts_[b]) {
      return absl::FailedPreconditionError(absl::StrCat(
          "KV block ", b, " released more times than its ", ref_counts_[b], " references"));
    }
  }
  for (int32_t b : blocks) {
    if (--ref_counts_[b] == 0) free_.push_back(b);
  }
  return absl::OkStatus();
}

int32_t BlockPool::RefCount(int32_t block) const {
  if (block < 0 || block >= num_blocks()) return -1;
  return ref_counts_[block];
}

}  // namespace cpserve
