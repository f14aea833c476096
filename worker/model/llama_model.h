// Llama-family decoder forward pass (Llama 2/3, Qwen2 with qkv bias, Mistral),
// written once against the Backend ops (kernels/backend.h). Context parallelism
// lives entirely in the AttentionLayer passed to Forward.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/rope.h"
#include "kernels/tensor.h"
#include "worker/model/attention_layer.h"
#include "worker/model/weights.h"

namespace cpserve {

// One step's tokens on this rank. Host-side vectors; the model uploads them.
struct ForwardInput {
  std::vector<int32_t> tokens;      // [T] token ids
  std::vector<int64_t> positions;   // [T] global positions in their sequences
  std::vector<int64_t> logit_rows;  // rows of [0, T) whose logits are wanted, in output order
};

// Device buffers of one forward pass over T tokens with S logit rows: the inputs
// (ids i32 [T], positions i64 [T], logit rows i64 [S]), every activation and the
// logits (fp32 [S, V]). Kept across calls, they let a caller run ForwardOn at
// fixed addresses (e.g. to capture it in a CUDA graph and replay it).
struct ForwardBuffers {
  Tensor ids, positions, logit_rows;
  Tensor h, x, q, k, v, attn, proj, gate, up, picked;
  Tensor logits;
};

class LlamaModel {
 public:
  // `weights` must already live on the backend's device in its compute dtype
  // (CPU: LoadModel(dir, DType::kF32)). Both must outlive the model.
  LlamaModel(const ModelWeights& weights, Backend& backend);

  const ModelConfig& config() const { return weights_.config; }
  const RopeConfig& rope() const { return rope_; }

  // Runs every layer over input.tokens and returns logits [logit_rows.size(), V]
  // (fp32, on the backend's device). An empty logit_rows returns an empty tensor.
  absl::StatusOr<Tensor> Forward(const ForwardInput& input, AttentionLayer& attention);

  // Buffers for ForwardOn over `tokens` >= 1 tokens and `logit_rows` >= 0 rows.
  absl::StatusOr<ForwardBuffers> AllocForward(int64_t tokens, int64_t logit_rows);
  // Forward over inputs already on the device in b.ids / b.positions / b.logit_rows
  // (rows in [0, T), unchecked), logits into b.logits. Queues only the backend ops
  // of the layers and the attention layer: no allocation, upload or host sync of its
  // own. Forward is AllocForward + input upload + ForwardOn.
  absl::Status ForwardOn(const ForwardBuffers& b, AttentionLayer& attention);

 private:
  const ModelWeights& weights_;
  Backend& backend_;
  RopeConfig rope_;
};

// The RoPE configuration of a model config.
RopeConfig RopeConfigOf(const ModelConfig& config);

}  // namespace cpserve
