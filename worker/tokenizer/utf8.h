// UTF-8 helpers for the tokenizer: lossy decoding with the Unicode "maximal subpart"
// replacement rule (what Rust's String::from_utf8_lossy and Hugging Face decoders do),
// usable incrementally for streaming detokenization.
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace cpserve::tokenizer {

// U+FFFD REPLACEMENT CHARACTER in UTF-8.
inline constexpr absl::string_view kReplacementChar = "\xEF\xBF\xBD";

// Appends `bytes` to `out` as valid UTF-8: each well-formed sequence is copied, each
// maximal ill-formed subpart becomes one U+FFFD. With final = false, a trailing
// truncated-but-so-far-valid sequence is left unconsumed (more bytes may complete
// it); with final = true it becomes one U+FFFD. Returns the number of bytes consumed.
// The split is prefix-stable: decoding a byte stream in pieces (carrying the
// unconsumed tail forward) gives exactly the same text as decoding it at once.
size_t AppendUtf8Lossy(absl::string_view bytes, bool final, std::string* out);

// Whole-string form of AppendUtf8Lossy(bytes, /*final=*/true, ...).
std::string Utf8Lossy(absl::string_view bytes);

// True when `bytes` is well-formed UTF-8 (no surrogates, no overlongs, <= U+10FFFF).
bool IsValidUtf8(absl::string_view bytes);

// Appends the UTF-8 encoding of code point `cp` (must be a Unicode scalar value).
void AppendCodePoint(char32_t cp, std::string* out);

}  // namespace cpserve::tokenizer
