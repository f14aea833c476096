// Decode steps of one GPU through CUDA graphs (issue #7 B).
//
// A decode step (one new token per sequence) is captured once per batch-size
// bucket and replayed with new metadata. Everything that changes between steps is
// host data staged into pinned memory before the launch; the graph's first nodes
// copy it to fixed device buffers, and every kernel reads it there with a grid
// fixed for the bucket (padded rows: token 0, slot -1, no attention segment):
//   - token ids, positions, logit rows and KV slots: one pinned block -> one copy;
//   - attention metadata (segments, split plan, block tables): DecodeAttentionArena
//     (kernels/cuda/attention_decode_arena.h);
//   - activations and logits: LlamaModel::AllocForward buffers of the bucket,
//     run by LlamaModel::ForwardOn.
// Attention per layer: WriteKvCache of the new token, then paged attention over
// its whole context including itself (kv_len = position + 1). The same work can be
// queued op by op (use_graph = false): results are bit-identical to the replay.
//
// Integration: the engine reaches it through DecodeStepAccelerator
// (cuda_graph_accelerator.h); StepRunner routes steps whose items are all
// single-token, replicated decode items on a one-rank pool here
// (IsAcceleratedDecodeStep), then samples from the returned logits as before.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/backend.h"
#include "kernels/kv_cache.h"
#include "worker/engine/decode_step_accelerator.h"
#include "worker/model/llama_model.h"

namespace cpserve {

struct GraphDecoderOptions {
  std::vector<int64_t> batch_buckets = {1, 2, 4, 8, 16, 32, 64};  // ascending
  int64_t max_context = 4096;  // keys a sequence may attend (position + 1)
};

class CudaGraphDecoder {
 public:
  // `backend` must be the CUDA backend (MakeCudaBackend) the model's weights and
  // `cache` live on; all three must outlive the decoder.
  static absl::StatusOr<std::unique_ptr<CudaGraphDecoder>> Create(
      LlamaModel& model, Backend& backend, const KvCacheView& cache,
      const GraphDecoderOptions& options);
  ~CudaGraphDecoder();
  CudaGraphDecoder(const CudaGraphDecoder&) = delete;
  CudaGraphDecoder& operator=(const CudaGraphDecoder&) = delete;

  // One decode step: stores each token's K/V at its slot and returns logits
  // [B, V] fp32 on the device, a view of the bucket's buffer valid until the next
  // Step of that bucket. With use_graph, the bucket's graph is captured on its
  // first use (after one op-by-op warm-up run) and replayed.
  absl::StatusOr<Tensor> Step(const DecodeBatch& batch, bool use_graph);

  // Buckets whose graph has been captured.
  int graphs_captured() const;

 private:
  struct Bucket;
  CudaGraphDecoder(LlamaModel& model, Backend& backend, const KvCacheView& cache,
                   const GraphDecoderOptions& options, cudaStream_t stream);
  absl::StatusOr<Bucket*> GetBucket(int64_t batch);
  // Queues the bucket's step: input copy, attention metadata upload, forward.
  absl::Status Enqueue(Bucket& b);

  LlamaModel& model_;
  Backend& backend_;
  KvCacheView cache_;
  GraphDecoderOptions options_;
  cudaStream_t stream_;
  std::map<int64_t, std::unique_ptr<Bucket>> buckets_;
};

}  // namespace cpserve
