#include "worker/tokenizer/utf8.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/tokenizer/test_util.h"

namespace cpserve::tokenizer {
namespace {

using testing::RefIsValidUtf8;
using testing::RefUtf8Lossy;

const std::string kFffd = "\xEF\xBF\xBD";

// Decodes in two pieces, carrying the unconsumed tail, as the streaming path does.
std::string SplitDecode(const std::string& s, size_t cut) {
  std::string out;
  std::string pending = s.substr(0, cut);
  pending.erase(0, AppendUtf8Lossy(pending, /*final=*/false, &out));
  pending += s.substr(cut);
  AppendUtf8Lossy(pending, /*final=*/true, &out);
  return out;
}

void CheckAgainstReference(const std::string& s) {
  const std::string expected = RefUtf8Lossy(s);
  ASSERT_EQ(Utf8Lossy(s), expected) << ::testing::PrintToString(s);
  ASSERT_EQ(IsValidUtf8(s), RefIsValidUtf8(s)) << ::testing::PrintToString(s);
  ASSERT_EQ(IsValidUtf8(s), expected == s && RefIsValidUtf8(s));
  for (size_t cut = 0; cut <= s.size(); ++cut) {
    ASSERT_EQ(SplitDecode(s, cut), expected) << ::testing::PrintToString(s) << " cut " << cut;
  }
}

TEST(Utf8Test, UnicodeStandardExample) {
  // Unicode 15, §3.9 "U+FFFD Substitution of Maximal Subparts", Table 3-8.
  const std::string in = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
  const std::string want = "a" + kFffd + kFffd + kFffd + "b" + kFffd + "c" + kFffd + kFffd + "d";
  EXPECT_EQ(Utf8Lossy(in), want);
  EXPECT_EQ(RefUtf8Lossy(in), want);
  // Surrogates, overlongs and out-of-range sequences: one U+FFFD per byte.
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), kFffd + kFffd + kFffd);
  EXPECT_EQ(Utf8Lossy("\xC0\xAF"), kFffd + kFffd);
  EXPECT_EQ(Utf8Lossy("\xF4\x90\x80\x80"), kFffd + kFffd + kFffd + kFffd);
  EXPECT_EQ(Utf8Lossy("\xE2\x82"), kFffd);  // Truncated at the end: one.
}

TEST(Utf8Test, AllOneAndTwoByteStrings) {
  for (int a = 0; a < 256; ++a) {
    CheckAgainstReference(std::string(1, static_cast<char>(a)));
    for (int b = 0; b < 256; ++b) {
      CheckAgainstReference(std::string{static_cast<char>(a), static_cast<char>(b)});
    }
  }
}

TEST(Utf8Test, FourByteStringsOverBoundaryBytes) {
  const std::vector<unsigned char> bytes = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0,
                                            0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC,
                                            0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF};
  for (unsigned char a : bytes) {
    for (unsigned char b : bytes) {
      for (unsigned char c : bytes) {
        for (unsigned char d : bytes) {
          const std::string s{static_cast<char>(a), static_cast<char>(b), static_cast<char>(c),
                              static_cast<char>(d)};
          ASSERT_EQ(Utf8Lossy(s), RefUtf8Lossy(s)) << ::testing::PrintToString(s);
          ASSERT_EQ(IsValidUtf8(s), RefIsValidUtf8(s)) << ::testing::PrintToString(s);
        }
      }
    }
  }
}

TEST(Utf8Test, RandomBytesAndTextAgainstReference) {
  std::mt19937 rng(7);
  for (int iter = 0; iter < 300; ++iter) {
    std::string s;
    const int len = static_cast<int>(rng() % 24);
    for (int i = 0; i < len; ++i) s += static_cast<char>(rng() % 2 ? 0x80 + rng() % 0x80 : rng());
    CheckAgainstReference(s);
    const std::string text = testing::RandomText(rng, 12);
    ASSERT_TRUE(IsValidUtf8(text));
    ASSERT_EQ(Utf8Lossy(text), text);
  }
}

TEST(Utf8Test, AppendCodePointMatchesReference) {
  for (uint32_t cp :
       {0x0u, 0x7Fu, 0x80u, 0x7FFu, 0x800u, 0xFFFDu, 0xFFFFu, 0x10000u, 0x1F600u, 0x10FFFFu}) {
    std::string s;
    AppendCodePoint(cp, &s);
    EXPECT_EQ(s, testing::RefEncode(cp));
    EXPECT_TRUE(IsValidUtf8(s));
  }
}

}  // namespace
}  // namespace cpserve::tokenizer
