// Greedy generation of several prompts through one Engine with staggered arrivals, for
// tests that compare two engines step for step (CUDA graphs on / off, accelerator on /
// off): prompt i + 1 is submitted once prompt i has `gap` tokens (or ended), so the
// decode batch grows and shrinks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "worker/engine/engine.h"

namespace cpserve::testing {

struct Stream {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;  // one row per token
  absl::Status status;
  bool done = false;
};

// max_tokens per prompt, ignore_eos, logits returned; waits for every stream to end.
std::vector<Stream> RunStaggered(Engine& e, const std::vector<std::vector<int32_t>>& prompts,
                                 int max_tokens, size_t gap);

}  // namespace cpserve::testing
