// The synthetic tokenizer of the built-in model: a byte-level BPE tokenizer.json in
// Hugging Face's format with Llama-3's pre-tokenizer (Split regex + ByteLevel),
// trained deterministically on a small embedded English text.
//
// Ids: 0..255 are the byte tokens (id b = byte b, in byte-level form: ' ' is "Ġ"),
// 256 <|begin_of_text|> (BOS, added by the template), 257 <|end_of_text|> (EOS),
// 258 <|pad|>, and 259..vocab_size-1 learned merges. Every id in [0, vocab_size) is a
// token.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cpserve::tokenizer {

inline constexpr int32_t kSyntheticBosId = 256;
inline constexpr int32_t kSyntheticEosId = 257;
inline constexpr int32_t kSyntheticPadId = 258;
inline constexpr absl::string_view kSyntheticBosToken = "<|begin_of_text|>";
inline constexpr absl::string_view kSyntheticEosToken = "<|end_of_text|>";
inline constexpr absl::string_view kSyntheticPadToken = "<|pad|>";
// Smallest and largest supported vocab_size.
inline constexpr int kSyntheticMinVocabSize = 259;
inline constexpr int kSyntheticMaxVocabSize = 65536;

// tokenizer.json text for a vocabulary of exactly `vocab_size` ids. Deterministic:
// the same size always gives the same bytes. InvalidArgument outside
// [kSyntheticMinVocabSize, kSyntheticMaxVocabSize].
absl::StatusOr<std::string> BuildSyntheticTokenizerJson(int vocab_size = 512);

// `tokenizer_json` (a BPE tokenizer.json) with its vocabulary padded to `vocab_size`
// ids: every id from one past the largest model or added id up to vocab_size - 1
// gets the model token "<|id_N|>" (no merge produces it, so encoding is unchanged;
// decoding id N gives that text). For the synthetic benchmark models, whose
// embedding is larger than the built-in tokenizer. Unchanged when already that
// large; InvalidArgument for JSON that is not a BPE tokenizer or a vocab_size above
// 2^24.
absl::StatusOr<std::string> PadTokenizerVocab(absl::string_view tokenizer_json, int vocab_size);

// The embedded English training text.
absl::string_view SyntheticTrainingText();

}  // namespace cpserve::tokenizer
