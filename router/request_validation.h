// Validation of a Generate request once its prompt is tokenized. Every error is
// INVALID_ARGUMENT and its message starts with the offending field's name
// (e.g. "sampling.top_p: 1.5 is not in (0, 1]").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace cpserve::router {

inline constexpr int32_t kDefaultMaxTokens = 16;

struct ValidationLimits {
  int64_t vocab_size = 0;          // token ids must be in [0, vocab_size)
  int64_t max_context_tokens = 0;  // prompt + output
  int32_t max_stop_strings = 16;
  int32_t max_stop_string_bytes = 256;
  int64_t max_prompt_tokens = 0;  // the operator's limit on prompt tokens; 0: none
};

// The sampling fields as the public API carries them (SamplingParams).
struct SamplingSpec {
  int32_t max_tokens = 0;  // 0: the default
  float temperature = 0;
  int32_t top_k = 0;
  float top_p = 0;  // 0: 1
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;
};

// The operator's prompt limit alone: INVALID_ARGUMENT "prompt: N tokens exceed the limit
// of M (max_prompt_tokens)" when limits.max_prompt_tokens > 0 and n is above it.
absl::Status CheckPromptTokens(int64_t n, const ValidationLimits& limits);

// Checks the prompt (CheckPromptTokens included) and sampling; returns the effective max_tokens:
// the given value, or for 0, min(kDefaultMaxTokens, context left after the prompt).
absl::StatusOr<int32_t> ValidateRequest(absl::Span<const int32_t> prompt_ids,
                                        const SamplingSpec& sampling,
                                        const ValidationLimits& limits);

}  // namespace cpserve::router
