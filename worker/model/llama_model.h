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

 private:
  const ModelWeights& weights_;
  Backend& backend_;
  RopeConfig rope_;
};

// The RoPE configuration of a model config.
RopeConfig RopeConfigOf(const ModelConfig& config);

}  // namespace cpserve
