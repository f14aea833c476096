#include "worker/tokenizer/byte_level.h"

#include <array>
#include <cstdint>

#include "worker/tokenizer/utf8.h"

namespace cpserve::tokenizer {
namespace {

// Highest code point used by the table: 256 + 67 (68 remapped bytes).
constexpr int kMaxCodePoint = 256 + 68;

struct Tables {
  std::array<char32_t, 256> byte_to_cp{};
  std::array<std::string, 256> byte_to_utf8;
  std::array<int16_t, kMaxCodePoint> cp_to_byte{};

  Tables() {
    cp_to_byte.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t cp =
          printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      byte_to_cp[b] = cp;
      cp_to_byte[cp] = static_cast<int16_t>(b);
      AppendCodePoint(cp, &byte_to_utf8[b]);
    }
  }
};

const Tables& GetTables() {
  static const Tables* const tables = new Tables();
  return *tables;
}

}  // namespace

char32_t ByteToCodePoint(unsigned char b) { return GetTables().byte_to_cp[b]; }

int CodePointToByte(char32_t cp) {
  return cp < static_cast<char32_t>(kMaxCodePoint) ? GetTables().cp_to_byte[cp] : -1;
}

std::string BytesToByteLevel(absl::string_view bytes) {
  const Tables& t = GetTables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out += t.byte_to_utf8[b];
  return out;
}

bool ByteLevelToBytes(absl::string_view text, std::string* out) {
  // Byte-level characters are U+0021..U+0143: one or two UTF-8 bytes.
  const size_t start = out->size();
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    char32_t cp;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < text.size()) {
      cp =
          (static_cast<char32_t>(c & 0x1F) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3F);
      i += 2;
    } else {
      out->resize(start);
      return false;
    }
    const int b = CodePointToByte(cp);
    if (b < 0) {
      out->resize(start);
      return false;
    }
    out->push_back(static_cast<char>(b));
  }
  return true;
}

}  // namespace cpserve::tokenizer
