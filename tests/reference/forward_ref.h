// Float64 naive forward pass of a Llama-family model, for tests only: plain loops,
// no kernels, no KV cache, one sequence at a time with full causal attention.
// It is the independent reference the engine's logits are compared against.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/model/weights.h"

namespace cpserve::reference {

// Logits [tokens.size()][vocab] of every position of one sequence.
std::vector<std::vector<double>> ForwardLogits(const ModelWeights& weights,
                                               const std::vector<int32_t>& tokens);

// RoPE inverse frequencies [head_dim / 2] exactly as Hugging Face computes them
// (default, linear and llama3 scaling), in double.
std::vector<double> RopeInverseFrequencies(const ModelConfig& config);

}  // namespace cpserve::reference
