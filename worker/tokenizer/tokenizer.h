// A Hugging Face tokenizer.json byte-level BPE tokenizer (GPT-2, Llama 3, Qwen2):
// added tokens -> normalizer -> pre-tokenizer (PCRE2 split + byte-level mapping) ->
// BPE merges; the post-processor's template adds BOS/EOS-like ids around a sequence.
// Decoding maps tokens back to bytes and replaces ill-formed UTF-8 with U+FFFD.
//
// Immutable after loading; Encode/Decode are thread-safe. Move-only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "worker/tokenizer/added_vocabulary.h"
#include "worker/tokenizer/bpe_model.h"
#include "worker/tokenizer/normalizer.h"
#include "worker/tokenizer/pre_tokenizer.h"

namespace cpserve::tokenizer {

class Tokenizer {
 public:
  // Loads tokenizer.json. NotFound when the file cannot be read, InvalidArgument for
  // malformed JSON or fields (the message names the field), Unimplemented for
  // unsupported features (WordPiece/Unigram models, byte_fallback, Metaspace, ...).
  static absl::StatusOr<Tokenizer> FromFile(const std::string& path);
  static absl::StatusOr<Tokenizer> FromJson(absl::string_view json);

  Tokenizer(Tokenizer&&) noexcept = default;
  Tokenizer& operator=(Tokenizer&&) noexcept = default;

  // Token ids of `text`. add_special: add the post-processor template's ids (e.g.
  // Llama 3's <|begin_of_text|>). parse_special: recognize special tokens written in
  // the text (false treats them as plain text; non-special added tokens always match).
  // Ill-formed UTF-8 in `text` is first replaced with U+FFFD.
  std::vector<int32_t> Encode(absl::string_view text, bool add_special = true,
                              bool parse_special = true) const;

  // Text of `ids` (the concatenated token bytes, ill-formed UTF-8 replaced by U+FFFD).
  // skip_special drops special tokens. OutOfRange for an id that is not a token.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special = false) const;

  // Raw bytes token `id` decodes to (may be part of a UTF-8 sequence); OutOfRange
  // for an id that is not a token.
  absl::StatusOr<absl::string_view> TokenBytes(int32_t id) const;

  // One more than the largest id of the model vocabulary and the added tokens.
  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }

  // BOS: the template's first added id if it adds one, else a well-known added token
  // (<|begin_of_text|>, <s>, <|startoftext|>). EOS: a well-known added token
  // (<|end_of_text|>, <|endoftext|>, </s>, <|eot_id|>, <|im_end|>). Model configs may
  // name others (config.json / generation_config.json); callers can override.
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  void set_bos_id(std::optional<int32_t> id) { bos_id_ = id; }
  void set_eos_id(std::optional<int32_t> id) { eos_id_ = id; }

  // True when Encode(..., add_special = true) prepends a BOS id.
  bool adds_bos() const { return adds_bos_; }
  const std::vector<int32_t>& template_prefix() const { return prefix_ids_; }
  const std::vector<int32_t>& template_suffix() const { return suffix_ids_; }

  // Vocabulary strings (byte-level form for model tokens, content for added tokens).
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  std::optional<std::string> IdToToken(int32_t id) const;
  bool IsSpecial(int32_t id) const;

 private:
  struct TokenInfo {
    bool present = false;
    bool special = false;
    std::string token;  // Vocabulary string.
    std::string bytes;  // Decoded bytes.
  };

  Tokenizer(BpeModel model, PreTokenizer pre_tokenizer, Normalizer normalizer,
            AddedVocabulary added)
      : model_(std::move(model)),
        pre_tokenizer_(std::move(pre_tokenizer)),
        normalizer_(std::move(normalizer)),
        added_(std::move(added)) {}

  void EncodePlain(absl::string_view text, std::vector<int32_t>* ids) const;

  BpeModel model_;
  PreTokenizer pre_tokenizer_;
  Normalizer normalizer_;
  AddedVocabulary added_;
  std::vector<TokenInfo> tokens_;  // Indexed by id.
  std::vector<int32_t> prefix_ids_, suffix_ids_;
  bool adds_bos_ = false;
  std::optional<int32_t> bos_id_, eos_id_;
};

}  // namespace cpserve::tokenizer
