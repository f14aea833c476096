#include "worker/tokenizer/utf8.h"

#include <cstdint>

namespace cpserve::tokenizer {
namespace {

// For a lead byte, the number of continuation bytes and the allowed range of the
// first continuation byte (Unicode Table 3-7, well-formed UTF-8 byte sequences).
// Returns false for bytes that can never start a sequence.
bool LeadByteInfo(uint8_t b, int* need, uint8_t* lo, uint8_t* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    *need = 1;
  } else if (b == 0xE0) {
    *need = 2;
    *lo = 0xA0;
  } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
    *need = 2;
  } else if (b == 0xED) {
    *need = 2;
    *hi = 0x9F;
  } else if (b == 0xF0) {
    *need = 3;
    *lo = 0x90;
  } else if (b >= 0xF1 && b <= 0xF3) {
    *need = 3;
  } else if (b == 0xF4) {
    *need = 3;
    *hi = 0x8F;
  } else {
    return false;
  }
  return true;
}

}  // namespace

size_t AppendUtf8Lossy(absl::string_view bytes, bool final, std::string* out) {
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t b = static_cast<uint8_t>(bytes[i]);
    if (b < 0x80) {
      out->push_back(static_cast<char>(b));
      ++i;
      continue;
    }
    int need = 0;
    uint8_t lo = 0, hi = 0;
    if (!LeadByteInfo(b, &need, &lo, &hi)) {
      out->append(kReplacementChar.data(), kReplacementChar.size());
      ++i;
      continue;
    }
    size_t j = i + 1;
    bool ill_formed = false;
    for (int k = 0; k < need; ++k, ++j) {
      if (j >= n) {
        if (!final) return i;  // Truncated: wait for more bytes.
        ill_formed = true;
        break;
      }
      const uint8_t c = static_cast<uint8_t>(bytes[j]);
      const uint8_t l = k == 0 ? lo : 0x80;
      const uint8_t h = k == 0 ? hi : 0xBF;
      if (c < l || c > h) {
        ill_formed = true;
        break;
      }
    }
    if (ill_formed) {
      // bytes[i, j) is the maximal subpart: one replacement, resume at j.
      out->append(kReplacementChar.data(), kReplacementChar.size());
      i = j;
    } else {
      out->append(bytes.data() + i, j - i);
      i = j;
    }
  }
  return n;
}

std::string Utf8Lossy(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  AppendUtf8Lossy(bytes, /*final=*/true, &out);
  return out;
}

bool IsValidUtf8(absl::string_view bytes) {
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t b = static_cast<uint8_t>(bytes[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    int need = 0;
    uint8_t lo = 0, hi = 0;
    if (!LeadByteInfo(b, &need, &lo, &hi)) return false;
    if (i + static_cast<size_t>(need) >= n) return false;  // Truncated.
    for (int k = 0; k < need; ++k) {
      const uint8_t c = static_cast<uint8_t>(bytes[i + 1 + k]);
      if (c < (k == 0 ? lo : 0x80) || c > (k == 0 ? hi : 0xBF)) return false;
    }
    i += 1 + need;
  }
  return true;
}

void AppendCodePoint(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace cpserve::tokenizer
