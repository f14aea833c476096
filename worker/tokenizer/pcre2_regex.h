// A compiled PCRE2 pattern (UTF + UCP, JIT when available) for pre-tokenization.
// Hugging Face split patterns use look-ahead (`\s+(?!\S)`), which RE2 lacks; PCRE2's
// backtracking semantics match the Oniguruma engine that `tokenizers` uses.
// Copies share the compiled code; matching is thread-safe (per-call match data).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cpserve::tokenizer {

class Pcre2Regex {
 public:
  // Compiles `pattern` (a regex, or literal text when `literal`). InvalidArgument with
  // PCRE2's message and offset when the pattern does not compile.
  static absl::StatusOr<Pcre2Regex> Compile(absl::string_view pattern, bool literal = false);

  // Byte ranges [begin, end) of the successive non-overlapping, non-empty matches in
  // `text`, left to right. `text` must be valid UTF-8 (callers sanitize first).
  absl::StatusOr<std::vector<std::pair<size_t, size_t>>> FindAll(absl::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Code;
  Pcre2Regex(std::shared_ptr<const Code> code, std::string pattern)
      : code_(std::move(code)), pattern_(std::move(pattern)) {}

  std::shared_ptr<const Code> code_;
  std::string pattern_;
};

}  // namespace cpserve::tokenizer
