#include "router/request_validation.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace cpserve::router {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

}  // namespace

absl::Status CheckPromptTokens(int64_t n, const ValidationLimits& limits) {
  if (limits.max_prompt_tokens > 0 && n > limits.max_prompt_tokens) {
    return Invalid("prompt", absl::StrCat(n, " tokens exceed the limit of ",
                                          limits.max_prompt_tokens, " (max_prompt_tokens)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> ValidateRequest(absl::Span<const int32_t> prompt_ids, const SamplingSpec& s,
                                        const ValidationLimits& limits) {
  if (prompt_ids.empty()) {
    return Invalid("prompt", "is empty (set prompt.text or prompt.token_ids)");
  }
  if (absl::Status s = CheckPromptTokens(static_cast<int64_t>(prompt_ids.size()), limits);
      !s.ok()) {
    return s;
  }
  for (size_t i = 0; i < prompt_ids.size(); ++i) {
    if (prompt_ids[i] < 0 || prompt_ids[i] >= limits.vocab_size) {
      return Invalid("prompt.token_ids", absl::StrCat("id ", prompt_ids[i], " at index ", i,
                                                      " is not in [0, ", limits.vocab_size, ")"));
    }
  }
  const int64_t n = static_cast<int64_t>(prompt_ids.size());
  if (n >= limits.max_context_tokens) {
    return Invalid("prompt", absl::StrCat(n, " tokens leave no room in the model's context of ",
                                          limits.max_context_tokens, " tokens"));
  }
  if (s.max_tokens < 0) {
    return Invalid("sampling.max_tokens", absl::StrCat(s.max_tokens, " is negative"));
  }
  if (s.max_tokens > 0 && n + s.max_tokens > limits.max_context_tokens) {
    return Invalid(
        "sampling.max_tokens",
        absl::StrCat("prompt (", n, " tokens) + max_tokens (", s.max_tokens,
                     ") exceeds the model's context of ", limits.max_context_tokens, " tokens"));
  }
  if (!(s.temperature >= 0) || std::isinf(s.temperature)) {  // also catches NaN
    return Invalid("sampling.temperature", absl::StrCat(s.temperature, " must be >= 0"));
  }
  if (s.top_k < 0) return Invalid("sampling.top_k", absl::StrCat(s.top_k, " must be >= 0"));
  // 0 means 1 (no limit); otherwise in (0, 1].
  if (!(s.top_p >= 0 && s.top_p <= 1)) {
    return Invalid("sampling.top_p", absl::StrCat(s.top_p, " is not in (0, 1]"));
  }
  for (size_t i = 0; i < s.stop_token_ids.size(); ++i) {
    const int32_t id = s.stop_token_ids[i];
    if (id < 0 || id >= limits.vocab_size) {
      return Invalid("sampling.stop_token_ids",
                     absl::StrCat("id ", id, " is not in [0, ", limits.vocab_size, ")"));
    }
  }
  if (static_cast<int64_t>(s.stop.size()) > limits.max_stop_strings) {
    return Invalid("sampling.stop", absl::StrCat(s.stop.size(), " stop strings (at most ",
                                                 limits.max_stop_strings, ")"));
  }
  for (size_t i = 0; i < s.stop.size(); ++i) {
    if (s.stop[i].empty()) return Invalid("sampling.stop", absl::StrCat("string ", i, " is empty"));
    if (static_cast<int64_t>(s.stop[i].size()) > limits.max_stop_string_bytes) {
      return Invalid("sampling.stop",
                     absl::StrCat("string ", i, " has ", s.stop[i].size(), " bytes (at most ",
                                  limits.max_stop_string_bytes, ")"));
    }
  }
  if (s.max_tokens > 0) return s.max_tokens;
  return static_cast<int32_t>(std::min<int64_t>(kDefaultMaxTokens, limits.max_context_tokens - n));
}

}  // namespace cpserve::router
