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

// Splits every segment's keys into chunks (a multiple of 4 x kDecodeTileKeys keys)
// of about equal work per block (keys x 1 KV head), for `slots` blocks resident at
// once: one wave of at least kMinDecodeSplitKeys keys per block when the whole
// batch is small, else blocks of at least kDecodeSplitKeys keys and up to 4 waves
// (load balance); a segment's splits are equal but for the last.
constexpr int kMinDecodeSplitKeys = 8 * kDecodeTileKeys;
constexpr int kDecodeSplitKeys = 32 * kDecodeTileKeys;
constexpr int kDecodeWaves = 4;
DecodePlan MakeDecodePlan(absl::Span<const Segment> segments, int64_t group, int64_t num_kv_heads,
                          int64_t block_size, int64_t slots);

// Decode blocks resident at once on a GPU with num_sms multiprocessors (2 each).
int64_t DecodeSlots(int num_sms);

// Plans for the current device, uploads the plan to stream-ordered scratch and
// launches. `p` and `segments` must have passed RunAttention's validation.
absl::Status RunDecodeAttention(const Problem& p, absl::Span<const Segment> segments, int num_sms,
                                cudaStream_t stream);

}  // namespace cpserve::cuda::attn
