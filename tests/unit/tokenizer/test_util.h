// Independent references and generators shared by the tokenizer tests.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace cpserve::tokenizer::testing {

// GPT-2's bytes_to_unicode, written from its Python definition.
std::string RefByteToUtf8(unsigned char b);
std::string RefBytesToByteLevel(const std::string& bytes);

// UTF-8 encoding of a code point (no validity check).
std::string RefEncode(uint32_t cp);

// Well-formedness by decoding each sequence arithmetically (Unicode definition D92).
bool RefIsValidUtf8(const std::string& s);

// Lossy decoding: each maximal subpart of an ill-formed sequence -> one U+FFFD.
std::string RefUtf8Lossy(const std::string& s);

// Random valid UTF-8 text: ASCII words, digits, whitespace runs, combining marks,
// CJK, emoji, contractions and arbitrary scalar values from every plane.
std::string RandomText(std::mt19937& rng, int num_chars);

}  // namespace cpserve::tokenizer::testing
