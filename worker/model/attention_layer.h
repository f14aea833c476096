// The seam between the model code and context parallelism (DESIGN §4): the model
// computes Q, K, V of this step's tokens and hands them to an AttentionLayer,
// which stores the KV the rank owns and returns the attention output. A single
// rank, a PCP prefill rank and a DCP decode rank are different AttentionLayers;
// the model code is the same for all of them.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/tensor.h"

namespace cpserve {

class AttentionLayer {
 public:
  virtual ~AttentionLayer() = default;

  // q [T, Hq, D], k and v [T, Hkv, D]: this step's tokens of this rank, after
  // RoPE, in the order of the step's token list. Writes out [T, Hq, D].
  // Called once per layer, layers in order.
  virtual absl::Status Forward(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v,
                               const Tensor& out) = 0;
};

}  // namespace cpserve
