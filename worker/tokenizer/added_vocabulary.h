// Added tokens of tokenizer.json ("added_tokens"): matched verbatim in the raw text
// before pre-tokenization, leftmost first and longest first at a position, like
// `tokenizers`' AddedVocabulary. Special tokens can be excluded from matching so that
// user text containing "<|end_of_text|>" is tokenized as plain text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace cpserve::tokenizer {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool single_word = false;  // Match only when not inside a word.
  bool lstrip = false;       // Absorb whitespace on the left.
  bool rstrip = false;       // Absorb whitespace on the right.
};

// A piece of text after added-token matching: either plain text or one added token.
struct TextSegment {
  absl::string_view text;  // Plain text (empty when token_id >= 0).
  int32_t token_id = -1;
};

class AddedVocabulary {
 public:
  // Parses the "added_tokens" array (null or missing gives none).
  static absl::StatusOr<AddedVocabulary> FromJson(const nlohmann::json& value);

  // Splits `text` at added tokens; specials are matched only when `match_special`.
  // Segments borrow from `text`.
  std::vector<TextSegment> Split(absl::string_view text, bool match_special) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  const AddedToken* FindByContent(absl::string_view content) const;

 private:
  std::vector<AddedToken> tokens_;
  // First byte of the content -> indices into tokens_, longest content first.
  absl::flat_hash_map<unsigned char, std::vector<int>> by_first_byte_;
  absl::flat_hash_map<std::string, int> by_content_;
};

}  // namespace cpserve::tokenizer
