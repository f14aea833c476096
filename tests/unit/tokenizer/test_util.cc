#include "tests/unit/tokenizer/test_util.h"

#include <algorithm>

namespace cpserve::tokenizer::testing {

std::string RefEncode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

std::string RefByteToUtf8(unsigned char b) {
  // bs = list(range(ord("!"), ord("~")+1)) + list(range(ord("¡"), ord("¬")+1))
  //      + list(range(ord("®"), ord("ÿ")+1)); others get 256 + n in byte order.
  std::vector<int> bs;
  for (int i = '!'; i <= '~'; ++i) bs.push_back(i);
  for (int i = 0xA1; i <= 0xAC; ++i) bs.push_back(i);
  for (int i = 0xAE; i <= 0xFF; ++i) bs.push_back(i);
  std::vector<int> cs = bs;
  int n = 0;
  for (int i = 0; i < 256; ++i) {
    if (std::find(bs.begin(), bs.end(), i) == bs.end()) {
      bs.push_back(i);
      cs.push_back(256 + n++);
    }
  }
  for (size_t i = 0; i < bs.size(); ++i) {
    if (bs[i] == b) return RefEncode(cs[i]);
  }
  return "";
}

std::string RefBytesToByteLevel(const std::string& bytes) {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t;
    for (int b = 0; b < 256; ++b) t.push_back(RefByteToUtf8(static_cast<unsigned char>(b)));
    return t;
  }();
  std::string out;
  for (unsigned char b : bytes) out += table[b];
  return out;
}

namespace {

// Sequence length announced by a lead byte by its bit pattern, or 0.
int PatternLength(unsigned char b) {
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 0;
}

bool IsScalarOfLength(uint32_t cp, int len) {
  static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  static const uint32_t kMax[] = {0, 0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
  return cp >= kMin[len] && cp <= kMax[len] && !(cp >= 0xD800 && cp <= 0xDFFF);
}

// True when s[i, i+k) is a prefix of the encoding of some scalar value: pad with the
// smallest / largest continuation bytes and check the reachable code point range.
bool IsValidPrefix(const std::string& s, size_t i, int k) {
  const int len = PatternLength(static_cast<unsigned char>(s[i]));
  if (len == 0 || k > len) return false;
  for (int j = 1; j < k; ++j) {
    if ((static_cast<unsigned char>(s[i + j]) & 0xC0) != 0x80) return false;
  }
  auto decode = [&](unsigned char pad) {
    static const unsigned char kMask[] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    uint32_t cp = static_cast<unsigned char>(s[i]) & kMask[len];
    for (int j = 1; j < len; ++j) {
      cp = (cp << 6) | ((j < k ? static_cast<unsigned char>(s[i + j]) : pad) & 0x3F);
    }
    return cp;
  };
  const uint32_t lo = decode(0x80), hi = decode(0xBF);
  // Any scalar of this length in [lo, hi]? The invalid parts are contiguous ranges.
  for (uint32_t probe : {lo, hi, uint32_t{0xD7FF}, uint32_t{0xE000}, uint32_t{0x80},
                         uint32_t{0x800}, uint32_t{0x10000}, uint32_t{0x10FFFF}}) {
    if (probe >= lo && probe <= hi && IsScalarOfLength(probe, len)) return true;
  }
  return false;
}

}  // namespace

bool RefIsValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const int len = PatternLength(static_cast<unsigned char>(s[i]));
    if (len == 0 || i + len > s.size() || !IsValidPrefix(s, i, len)) return false;
    i += len;
  }
  return true;
}

std::string RefUtf8Lossy(const std::string& s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    const int len = PatternLength(static_cast<unsigned char>(s[i]));
    int k = 0;
    while (k < 4 && i + k < s.size() && IsValidPrefix(s, i, k + 1)) ++k;
    if (len > 0 && k == len) {
      out.append(s, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      i += std::max(k, 1);
    }
  }
  return out;
}

std::string RandomText(std::mt19937& rng, int num_chars) {
  static const char* const kWords[] = {"the",
                                       "The",
                                       "don't",
                                       "I'm",
                                       "we'll",
                                       "HELLO",
                                       "x",
                                       "café",
                                       "naïve",
                                       "<|end_of_text|>",
                                       "<|begin_of_text|>",
                                       "<|pad|>",
                                       "<|",
                                       "|>",
                                       "river",
                                       "1887",
                                       "3,412"};
  std::string s;
  auto pick = [&](int n) { return static_cast<int>(rng() % n); };
  for (int c = 0; c < num_chars; ++c) {
    switch (pick(10)) {
      case 0:
        s += kWords[pick(std::size(kWords))];
        break;
      case 1:
        s += static_cast<char>('a' + pick(26));
        break;
      case 2:
        s += static_cast<char>('0' + pick(10));
        break;
      case 3: {  // Whitespace runs.
        static const char* const kSpaces[] = {" ",    "  ",       "\n",           "\n\n", "\t",
                                              "\r\n", "\xC2\xA0", "\xE3\x80\x80", " \n "};
        for (int k = 1 + pick(3); k > 0; --k) s += kSpaces[pick(std::size(kSpaces))];
        break;
      }
      case 4:  // Combining marks.
        s += RefEncode(0x300 + pick(0x70));
        break;
      case 5:  // CJK.
        s += RefEncode(0x4E00 + pick(0x5000));
        break;
      case 6:  // Emoji, with skin tones and joiners now and then.
        s += RefEncode(0x1F300 + pick(0x300));
        if (pick(4) == 0) s += RefEncode(0x1F3FB + pick(5));
        if (pick(6) == 0) s += RefEncode(0x200D);
        break;
      case 7:
        s += static_cast<char>(" !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"[pick(33)]);
        break;
      default: {  // Any scalar value from any plane, including control characters.
        uint32_t cp;
        do {
          cp = pick(4) == 0 ? rng() % 0x110000 : rng() % 0x3000;
        } while (cp >= 0xD800 && cp <= 0xDFFF);
        s += RefEncode(cp);
      }
    }
  }
  return s;
}

}  // namespace cpserve::tokenizer::testing
