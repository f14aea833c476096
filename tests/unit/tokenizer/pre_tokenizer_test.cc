#include "worker/tokenizer/pre_tokenizer.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/tokenizer/test_util.h"

namespace cpserve::tokenizer {
namespace {

using ::testing::ElementsAre;
using Pieces = std::vector<std::string>;

Pieces RegexSplit(absl::string_view pattern, const std::string& text,
                  SplitBehavior behavior = SplitBehavior::kIsolated, bool literal = false) {
  absl::StatusOr<Pcre2Regex> re = Pcre2Regex::Compile(pattern, literal);
  EXPECT_TRUE(re.ok()) << re.status();
  Pieces out;
  EXPECT_TRUE(SplitWithRegex(*re, behavior, text, &out).ok());
  return out;
}

// Expected splits below were derived by hand from the patterns' alternation order
// and backtracking (e.g. `\s+(?!\S)` leaves the last space for the next word).
TEST(PreTokenizerTest, Gpt2PatternSplits) {
  auto split = [](const std::string& s) { return RegexSplit(kGpt2SplitPattern, s); };
  EXPECT_THAT(split("Hello  world\n\n  x"), ElementsAre("Hello", " ", " world", "\n\n ", " x"));
  EXPECT_THAT(split("I'm"), ElementsAre("I", "'m"));
  EXPECT_THAT(split("don't"), ElementsAre("don", "'t"));
  EXPECT_THAT(split("123abc"), ElementsAre("123", "abc"));
  EXPECT_THAT(split("12345"), ElementsAre("12345"));
  EXPECT_THAT(split("hi  "), ElementsAre("hi", "  "));
  EXPECT_THAT(split("Hello world!!! 42"), ElementsAre("Hello", " world", "!!!", " 42"));
  EXPECT_THAT(split("IT'S"), ElementsAre("IT", "'", "S"));  // GPT-2 is case-sensitive.
  EXPECT_THAT(split("a,b"), ElementsAre("a", ",", "b"));
  EXPECT_THAT(split("   "), ElementsAre("   "));
  EXPECT_THAT(split("naïve café"), ElementsAre("naïve", " café"));
  EXPECT_THAT(split("x\t\ty"), ElementsAre("x", "\t", "\t", "y"));  // " ?" is a space only.
  EXPECT_THAT(split("مرحبا بالعالم"), ElementsAre("مرحبا", " بالعالم"));
}

TEST(PreTokenizerTest, Llama3PatternSplits) {
  auto split = [](const std::string& s) { return RegexSplit(kLlama3SplitPattern, s); };
  EXPECT_THAT(split("Hello  world\n\n  x"), ElementsAre("Hello", " ", " world", "\n\n", " ", " x"));
  EXPECT_THAT(split("I'm"), ElementsAre("I", "'m"));
  EXPECT_THAT(split("don't"), ElementsAre("don", "'t"));
  EXPECT_THAT(split("123abc"), ElementsAre("123", "abc"));
  EXPECT_THAT(split("12345"), ElementsAre("123", "45"));
  EXPECT_THAT(split("hi  "), ElementsAre("hi", "  "));
  EXPECT_THAT(split("Hello world!!! 42"), ElementsAre("Hello", " world", "!!!", " ", "42"));
  EXPECT_THAT(split("IT'S"), ElementsAre("IT", "'S"));  // (?i:...) contractions.
  EXPECT_THAT(split("a,b"), ElementsAre("a", ",b"));
  EXPECT_THAT(split("x.\n\ny"), ElementsAre("x", ".\n\n", "y"));
  EXPECT_THAT(split("  \n  y"), ElementsAre("  \n", " ", " y"));
  EXPECT_THAT(split("naïve café"), ElementsAre("naïve", " café"));
}

TEST(PreTokenizerTest, SplitBehaviors) {
  // Same cases as tokenizers' own tests of SplitDelimiterBehavior.
  const std::string text = "The-final--countdown";
  auto split = [&](SplitBehavior b) { return RegexSplit("-", text, b, /*literal=*/true); };
  EXPECT_THAT(split(SplitBehavior::kIsolated),
              ElementsAre("The", "-", "final", "-", "-", "countdown"));
  EXPECT_THAT(split(SplitBehavior::kRemoved), ElementsAre("The", "final", "countdown"));
  EXPECT_THAT(split(SplitBehavior::kMergedWithPrevious),
              ElementsAre("The-", "final-", "-", "countdown"));
  EXPECT_THAT(split(SplitBehavior::kMergedWithNext),
              ElementsAre("The", "-final", "-", "-countdown"));
  EXPECT_THAT(split(SplitBehavior::kContiguous),
              ElementsAre("The", "-", "final", "--", "countdown"));
  // A literal pattern is not a regex.
  EXPECT_THAT(RegexSplit(".", "a.b", SplitBehavior::kIsolated, true), ElementsAre("a", ".", "b"));
}

TEST(PreTokenizerTest, PiecesCoverTheText) {
  std::mt19937 rng(3);
  for (int iter = 0; iter < 200; ++iter) {
    const std::string text = testing::RandomText(rng, 40);
    for (absl::string_view pattern : {kGpt2SplitPattern, kLlama3SplitPattern}) {
      std::string joined;
      for (const std::string& p : RegexSplit(pattern, text)) {
        ASSERT_FALSE(p.empty());
        joined += p;
      }
      ASSERT_EQ(joined, text);
    }
  }
}

TEST(PreTokenizerTest, ByteLevelMapsAndAddsPrefixSpace) {
  absl::StatusOr<PreTokenizer> pt = PreTokenizer::FromJson(nlohmann::json::parse(
      R"({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true})"));
  ASSERT_TRUE(pt.ok()) << pt.status();
  absl::StatusOr<Pieces> pieces = pt->Split("Hello world\n");
  ASSERT_TRUE(pieces.ok());
  EXPECT_THAT(*pieces, ElementsAre("ĠHello", "Ġworld", "Ċ"));

  absl::StatusOr<PreTokenizer> seq = PreTokenizer::FromJson(nlohmann::json::parse(
      R"({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": " "}, "behavior": "MergedWithNext", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})"));
  ASSERT_TRUE(seq.ok()) << seq.status();
  pieces = seq->Split("a b\xC3\xA9");
  ASSERT_TRUE(pieces.ok());
  EXPECT_THAT(*pieces, ElementsAre("a", testing::RefBytesToByteLevel(" b\xC3\xA9")));
}

TEST(PreTokenizerTest, RejectsBadConfigs) {
  auto parse = [](const char* j) {
    return PreTokenizer::FromJson(nlohmann::json::parse(j)).status();
  };
  EXPECT_EQ(parse(R"({"type": "Metaspace", "replacement": "▁"})").code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(parse(R"({"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Isolated",
                      "invert": true})")
                .code(),
            absl::StatusCode::kUnimplemented);
  const absl::Status bad = parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "(ab"}, "behavior": "Isolated"}]})");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.message()), ::testing::HasSubstr("pretokenizers[0].pattern"));
  EXPECT_EQ(parse(R"({"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways"})").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(parse(R"({"type": "Split", "pattern": 3, "behavior": "Isolated"})").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(parse(R"({"kind": "ByteLevel"})").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(parse(R"({"type": "ByteLevel", "add_prefix_space": "yes"})").code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpserve::tokenizer
