// A faster path for decode steps (issue #7): StepRunner hands steps whose items are
// all single-token, replicated, sampling items of a one-rank pool to a
// DecodeStepAccelerator instead of LlamaModel::Forward + CpAttention, then samples
// from the logits it returns exactly as on the normal path. The engine stays
// CUDA-free: the only implementation today, CUDA graphs per batch bucket
// (cuda_graph_accelerator.h, library cpserve_cuda_graph_decoder), reaches the
// engine as a factory in EngineOptions::decode_accelerator.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/kv_cache.h"
#include "kernels/tensor.h"

namespace cpserve {

class Backend;
class LlamaModel;
namespace v1 {
class StepCommand;
}  // namespace v1

struct DecodeBatch {
  std::vector<int32_t> tokens;     // [B] the new token of each sequence
  std::vector<int64_t> positions;  // [B] its position (= tokens already cached)
  std::vector<int64_t> slots;      // [B] cache slot for its K/V (block * B + offset)
  std::vector<absl::Span<const int32_t>> block_tables;  // [B], >= ceil((position + 1) / B) ids
};

class DecodeStepAccelerator {
 public:
  virtual ~DecodeStepAccelerator() = default;
  // One decode step: stores each token's K/V at its slot and returns logits [B, V]
  // fp32 on the backend's device, valid until the next Decode.
  virtual absl::StatusOr<Tensor> Decode(const DecodeBatch& batch) = 0;
  // Limits of the steps it takes: sequences per step, keys per sequence (position + 1).
  virtual int64_t max_batch() const = 0;
  virtual int64_t max_context() const = 0;
  // CUDA graphs captured so far (tests, logs).
  virtual int graphs_captured() const = 0;
};

// Makes the accelerator of a one-rank engine's model, backend and KV cache (all
// outlive it). nullptr (OK) where it does not apply, e.g. a CPU backend.
using DecodeAcceleratorFactory =
    std::function<absl::StatusOr<std::unique_ptr<DecodeStepAccelerator>>(
        LlamaModel& model, Backend& backend, const KvCacheView& cache)>;

// The routing predicate: whether StepRunner sends `command` to an accelerator with
// these limits on a pool of `world_size` ranks. True iff world_size == 1 and the
// step has 1..max_batch items, each computing exactly one token (end = start + 1)
// that it samples, not partitioned, with start + 1 <= max_context.
bool IsAcceleratedDecodeStep(const v1::StepCommand& command, int world_size, int64_t max_batch,
                             int64_t max_context);

}  // namespace cpserve
