// GPT-2's byte-level alphabet ("bytes_to_unicode"): every byte maps to one printable
// Unicode character so that BPE vocabularies can be stored as text. Printable Latin-1
// bytes map to themselves; the other 68 bytes map to U+0100.. in byte order
// (so ' ' -> 'Ġ' U+0120, '\n' -> 'Ċ' U+010A).
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace cpserve::tokenizer {

// The code point that byte `b` maps to.
char32_t ByteToCodePoint(unsigned char b);

// The byte that code point `cp` stands for, or -1 when `cp` is not in the alphabet.
int CodePointToByte(char32_t cp);

// The UTF-8 text of the byte-level character of every byte of `bytes`, concatenated.
std::string BytesToByteLevel(absl::string_view bytes);

// Maps a byte-level string (valid UTF-8) back to raw bytes, appending to `out`.
// Returns false and appends nothing when some character is not in the alphabet.
bool ByteLevelToBytes(absl::string_view text, std::string* out);

}  // namespace cpserve::tokenizer
