// Pre-tokenization as Hugging Face `tokenizers` does it for byte-level BPE: split the
// text into pieces with regexes (Split, or ByteLevel's built-in GPT-2 regex), then map
// each piece into the byte-level alphabet. Supported JSON forms:
//   {"type": "ByteLevel", "add_prefix_space": b, "use_regex": b, ...}
//   {"type": "Split", "pattern": {"Regex": r} | {"String": s}, "behavior": B, "invert": false}
//   {"type": "Sequence", "pretokenizers": [...]}   (e.g. Llama-3 / Qwen2: Split + ByteLevel)
// B is one of Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous.
#pragma once

#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizer/pcre2_regex.h"

namespace cpserve::tokenizer {

// GPT-2's split pattern, used by ByteLevel when use_regex is true.
inline constexpr absl::string_view kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Llama-3's split pattern (Split step of its Sequence pre-tokenizer).
inline constexpr absl::string_view kLlama3SplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };

class PreTokenizer {
 public:
  // Parses the "pre_tokenizer" value of tokenizer.json (null gives no steps).
  // InvalidArgument for malformed values, Unimplemented for unsupported types
  // (Metaspace, Whitespace, Digits, ...) or options (invert: true).
  static absl::StatusOr<PreTokenizer> FromJson(const nlohmann::json& value);

  // Splits valid UTF-8 `text` into pieces (byte-level mapped when a ByteLevel step ran).
  absl::StatusOr<std::vector<std::string>> Split(absl::string_view text) const;

  // True when some step maps pieces into the byte-level alphabet.
  bool has_byte_level() const;

 private:
  struct SplitStep {
    Pcre2Regex regex;
    SplitBehavior behavior;
  };
  struct ByteLevelStep {
    bool add_prefix_space = false;
    bool use_regex = true;
  };
  using Step = std::variant<SplitStep, ByteLevelStep>;

  static absl::Status AddSteps(const nlohmann::json& value, const std::string& where,
                               std::vector<Step>* steps);

  std::vector<Step> steps_;
};

// Splits `text` with `regex` under `behavior`, appending non-empty pieces to `out`.
absl::Status SplitWithRegex(const Pcre2Regex& regex, SplitBehavior behavior, absl::string_view text,
                            std::vector<std::string>* out);

}  // namespace cpserve::tokenizer
