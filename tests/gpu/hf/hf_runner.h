// What `cpserve_hf_dump` computes for the Hugging Face reference check
// (scripts/gpu/hf_check.py): for each prompt, the logits of every prompt position
// (one dense causal forward pass through LlamaModel, the same kernels the engine uses)
// and the engine's greedy continuation with the logits row of every generated token.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "worker/model/weights.h"

namespace cpserve::hfcheck {

struct PromptResult {
  std::vector<int32_t> prompt;
  std::vector<float> prefill_logits;  // [prompt.size(), vocab], row t = logits after token t
  std::vector<int32_t> tokens;        // greedy tokens from the engine
  std::vector<float> step_logits;     // [tokens.size(), vocab], the row tokens[k] came from
  std::string finish;                 // "length", "stop", or the error
};

struct RunOptions {
  int64_t steps = 32;               // greedy tokens per prompt (EOS ignored)
  int64_t max_batch_tokens = 2048;  // engine prefill chunk budget
  bool prefill_logits = true;       // also run the dense forward pass
};

// `weights` must live on `backend`'s device in its compute dtype. All prompts are
// submitted to one engine at once (continuous batching), greedy (temperature 0).
absl::StatusOr<std::vector<PromptResult>> RunPrompts(
    const ModelWeights& weights, Backend& backend, const std::vector<std::vector<int32_t>>& prompts,
    const RunOptions& options);

// Logits [T, V] of every position of `prompt` (fp32, on the host), computed by
// LlamaModel::Forward with one causal PrefillAttention segment and no KV cache.
absl::StatusOr<std::vector<float>> PromptLogits(const ModelWeights& weights, Backend& backend,
                                                const std::vector<int32_t>& prompt);

}  // namespace cpserve::hfcheck
