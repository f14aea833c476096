// Paged decode attention that can be captured in a CUDA graph and replayed with a
// new batch (issue #7 B): the step's host metadata (segments, work items, block
// tables) is planned into a pinned staging buffer (Stage, on the host), copied
// with one fixed-size cudaMemcpyAsync to a fixed device buffer (Upload, on the
// stream), and every layer's kernels read it there with fixed grids sized for the
// arena's capacity (Launch, on the stream); surplus blocks exit at once. Upload
// and Launch enqueue only capturable work at fixed addresses, so a graph captured
// once (Upload, then Launch per layer) replays any batch staged later.
//
//   arena.Stage(segments, cache);             // host, before each replay
//   cudaStreamBeginCapture(s); arena.Upload(s); for each layer: arena.Launch(..., s);
//   cudaStreamEndCapture(s, &graph); ... cudaGraphLaunch(exec, s);
//
// Stage waits until the previous Upload (direct or replayed) has read the staging
// buffer, so steps may be queued back to back. Results are bit-identical to
// PagedAttentionCuda (kernels/cuda/attention_cuda.h) on the same inputs: the same
// planner and kernels run. Not thread-safe; one arena per stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/attention.h"
#include "kernels/cuda/attention_decode.h"
#include "kernels/kv_cache.h"
#include "kernels/tensor.h"

namespace cpserve::cuda {

struct DecodeArenaConfig {
  int64_t max_seqs = 0;            // segments per step (padded batch)
  int64_t max_tokens = 0;          // rows of q / o / lse a launch sees
  int64_t max_q_len = 1;           // queries per segment; max_q_len * Hq / Hkv <= 16
  int64_t max_blocks_per_seq = 0;  // longest block table (kv_len <= this * block_size)
  int64_t num_q_heads = 0, num_kv_heads = 0, head_dim = 0;  // head dim 32, 64 or 128
  int64_t block_size = 16;
};

class DecodeAttentionArena {
 public:
  // Allocates the pinned staging and device buffers on the current device.
  // InvalidArgument for a bad config; Internal / ResourceExhausted on CUDA errors.
  static absl::StatusOr<std::unique_ptr<DecodeAttentionArena>> Create(
      const DecodeArenaConfig& config);
  ~DecodeAttentionArena();
  DecodeAttentionArena(const DecodeAttentionArena&) = delete;
  DecodeAttentionArena& operator=(const DecodeAttentionArena&) = delete;

  const DecodeArenaConfig& config() const { return config_; }

  // Plans `segments` (PagedSegment semantics; q_len <= max_q_len, at most
  // max_seqs segments within max_tokens rows, block tables checked
  // against `cache`) into the staging buffer. On error nothing is staged and the
  // previous staging stays.
  absl::Status Stage(absl::Span<const PagedSegment> segments, const KvCacheView& cache);

  // Copies the staging buffer to the device buffer on `stream` (capturable).
  absl::Status Upload(cudaStream_t stream);

  // Attention of `layer` for the uploaded batch on `stream` (capturable): q, o
  // bf16 [T, Hq, D] (T >= max_tokens), lse fp32 [T, Hq]; the cache must have the
  // config's geometry. Rows no staged segment covers are left untouched.
  absl::Status Launch(const Tensor& q, const KvCacheView& cache, int64_t layer,
                      const AttentionOptions& options, const Tensor& o, const Tensor& lse,
                      cudaStream_t stream);

 private:
  explicit DecodeAttentionArena(const DecodeArenaConfig& config) : config_(config) {}
  absl::Status Init();

  DecodeArenaConfig config_;
  int num_sms_ = 0;
  int64_t max_items_ = 0, max_part_rows_ = 0;
  // Byte offsets of counts | segs | items | split segs | tables (staged), then
  // partial lse | partial O (device only).
  size_t off_segs_ = 0, off_items_ = 0, off_split_ = 0, off_tables_ = 0, meta_bytes_ = 0;
  size_t off_part_lse_ = 0, off_part_o_ = 0, device_bytes_ = 0;
  char* staging_ = nullptr;  // pinned host
  char* device_ = nullptr;
  cudaEvent_t uploaded_ = nullptr;  // recorded after each Upload's copy
};

}  // namespace cpserve::cuda
