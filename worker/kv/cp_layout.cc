#include "worker/kv/cp_layout.h"

#include "absl/strings/str_cat.h"

namespace cpserve {

absl::Status CpLayout::Validate() const {
  if (world_size < 1)
    return absl::InvalidArgumentError(absl::StrCat("CP world size ", world_size, " < 1"));
  if (block_size < 1)
    return absl::InvalidArgumentError(absl::StrCat("block size ", block_size, " < 1"));
  if (interleave < 1 || block_size % interleave != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "interleave ", interleave, " must be >= 1 and divide block size ", block_size));
  }
  return absl::OkStatus();
}

}  // namespace cpserve
