// KV destination descriptors (protos/cpserve/v1/kv_transfer.proto) and their
// validation before any byte moves (DESIGN §5). Pure: no UCX, no threads.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "cpserve/v1/kv_transfer.pb.h"
#include "worker/kv/cp_layout.h"
#include "worker/transfer/transfer_plan.h"

namespace cpserve::transfer {

// Bytes per element of a KvLayout dtype: float32 4, bfloat16 / float16 2.
absl::StatusOr<int> DTypeBytes(absl::string_view dtype);

// A pool's KV layout: CP placement + block geometry + dtype.
struct KvPoolLayout {
  CpLayout cp;               // world_size, interleave, block_size
  KvBlockGeometry geometry;  // block_size equals cp.block_size
  std::string dtype = "float32";

  absl::Status Validate() const;
  v1::KvLayout ToProto() const;
  static absl::StatusOr<KvPoolLayout> FromProto(const v1::KvLayout& proto);
};

// What the pushing (prefill) rank knows about its own cache for one request.
struct PushSource {
  KvPoolLayout layout;  // the prefill pool's layout (P, I_p, geometry, dtype)
  int rank = 0;
  int64_t prompt_len = 0;
  std::vector<int32_t> block_ids;  // this rank's blocks for the request
  uint64_t block_stride_bytes = 0;
  uint64_t region_bytes = 0;
};

// Checks a decode pool's target against the source: transfer id present, block
// geometry and dtype identical, one well-formed destination per decode rank
// (ordered by rank, address and rkey present, stride and blocks inside the
// region, memory kind usable), then builds the plan input. Every mismatch is
// InvalidArgument.
absl::StatusOr<TransferPlanInput> BuildPlanInput(const v1::KvTransferTarget& target,
                                                 const PushSource& src, bool cuda_memory_supported);

}  // namespace cpserve::transfer
