// Host side of the paged decode attention kernel (attention_decode.h): when it
// applies, its work plan (key splits sized to fill the GPU several times over),
// the metadata upload and the launch. RunAttention (attention_launch.cc) routes
// validated paged problems here.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/cuda/attention_decode.h"
#include "kernels/cuda/attention_launch.h"

namespace cpserve::cuda::attn {

// True for paged problems (cached keys only, no mask) whose every segment has at
// most kDecodeRows rows per KV head (q_len * Hq / Hkv).
bool UseDecodeKernel(const Problem& p, absl::Span<const Segment> segments);

struct DecodePlan {
  std::vector<DecodeSeg> segs;    // segments with q_len > 0, in order
  std::vector<DecodeItem> items;  // longest key range first
  std::vector<int> split_segs;    // indices into segs with num_splits > 1
  std::vector<int> tables;        // concatenated block tables (ceil(kv_len / B) each)
  int64_t part_rows = 0;          // partial rows of the split segments
};

// Splits every segment's keys into chunks of a multiple of 4 x kDecodeTileKeys keys
// (at least kMinDecodeSplitKeys) so that about `target_blocks` blocks of
// equal work exist in total (all segments' keys x Hkv).
constexpr int kMinDecodeSplitKeys = 8 * kDecodeTileKeys;
DecodePlan MakeDecodePlan(absl::Span<const Segment> segments, int64_t group, int64_t num_kv_heads,
                          int64_t block_size, int64_t target_blocks);

// Blocks the planner aims for on a GPU with num_sms multiprocessors (2 resident
// per multiprocessor, 4 waves to keep the tail short).
int64_t DecodeTargetBlocks(int num_sms);

// Plans for the current device, uploads the plan to stream-ordered scratch and
// launches. `p` and `segments` must have passed RunAttention's validation.
absl::Status RunDecodeAttention(const Problem& p, absl::Span<const Segment> segments, int num_sms,
                                cudaStream_t stream);

}  // namespace cpserve::cuda::attn
