#include "worker/tokenizer/incremental_detokenizer.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/tokenizer/test_util.h"
#include "worker/tokenizer/synthetic_tokenizer.h"

namespace cpserve::tokenizer {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

Tokenizer Synthetic() {
  absl::StatusOr<std::string> j = BuildSyntheticTokenizerJson(512);
  EXPECT_TRUE(j.ok());
  absl::StatusOr<Tokenizer> tok = Tokenizer::FromJson(*j);
  EXPECT_TRUE(tok.ok());
  return std::move(tok).value();
}

// Streams `ids`, checking every chunk; returns the concatenation.
std::string Stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  IncrementalDetokenizer detok(&tok, skip_special);
  std::string all;
  for (int32_t id : ids) {
    absl::StatusOr<std::string> chunk = detok.Add(id);
    EXPECT_TRUE(chunk.ok()) << chunk.status();
    EXPECT_TRUE(testing::RefIsValidUtf8(*chunk)) << ::testing::PrintToString(*chunk);
    EXPECT_LE(detok.pending_bytes(), 3u);
    all += *chunk;
  }
  const std::string tail = detok.Flush();
  EXPECT_TRUE(testing::RefIsValidUtf8(tail));
  EXPECT_EQ(detok.pending_bytes(), 0u);
  return all + tail;
}

TEST(IncrementalDetokenizerTest, HoldsBackSplitCharacters) {
  const Tokenizer tok = Synthetic();
  IncrementalDetokenizer detok(&tok);
  // U+1F600 as four byte tokens.
  const std::vector<int32_t> emoji = {0xF0, 0x9F, 0x98, 0x80};
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::string> chunk = detok.Add(emoji[i]);
    ASSERT_TRUE(chunk.ok());
    EXPECT_EQ(*chunk, "");
  }
  absl::StatusOr<std::string> last = detok.Add(emoji[3]);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(*last, "\xF0\x9F\x98\x80");
  EXPECT_EQ(detok.Flush(), "");
}

TEST(IncrementalDetokenizerTest, IllFormedBytesBecomeReplacementCharacters) {
  const Tokenizer tok = Synthetic();
  IncrementalDetokenizer detok(&tok);
  EXPECT_EQ(*detok.Add(0xF0), "");
  EXPECT_EQ(*detok.Add('A'), kFffd + "A");  // The lead byte was never completed.
  EXPECT_EQ(*detok.Add(0x80), kFffd);       // Lone continuation byte.
  EXPECT_EQ(*detok.Add(0xE2), "");
  EXPECT_EQ(*detok.Add(0x82), "");
  EXPECT_EQ(detok.Flush(), kFffd);  // Truncated at the end of the stream.
  EXPECT_EQ(detok.Add(100000).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(detok.pending_bytes(), 0u);
}

TEST(IncrementalDetokenizerTest, SkipsSpecialTokens) {
  const Tokenizer tok = Synthetic();
  const std::vector<int32_t> ids = tok.Encode("hi<|end_of_text|>there<|pad|>");
  EXPECT_EQ(Stream(tok, ids, /*skip_special=*/true), "hithere");
  EXPECT_EQ(Stream(tok, ids, /*skip_special=*/false),
            "<|begin_of_text|>hi<|end_of_text|>there<|pad|>");
}

TEST(IncrementalDetokenizerTest, RandomIdsMatchDecode) {
  const Tokenizer tok = Synthetic();
  std::mt19937 rng(17);
  int invalid_sequences = 0;
  for (int iter = 0; iter < 500; ++iter) {
    std::vector<int32_t> ids;
    const int n = static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      // Bias towards high byte tokens, which form (and break) multi-byte sequences.
      ids.push_back(rng() % 2 ? 0x80 + static_cast<int32_t>(rng() % 0x80)
                              : static_cast<int32_t>(rng() % tok.vocab_size()));
    }
    for (bool skip : {false, true}) {
      absl::StatusOr<std::string> whole = tok.Decode(ids, skip);
      ASSERT_TRUE(whole.ok());
      ASSERT_TRUE(testing::RefIsValidUtf8(*whole));
      // Decode replaces ill-formed bytes the same way, so equality holds always.
      ASSERT_EQ(Stream(tok, ids, skip), *whole);
      if (whole->find(kFffd) != std::string::npos) ++invalid_sequences;
    }
  }
  EXPECT_GT(invalid_sequences, 100);  // The random ids did exercise ill-formed UTF-8.
}

TEST(IncrementalDetokenizerTest, EncodedTextStreamsBackExactly) {
  const Tokenizer tok = Synthetic();
  std::mt19937 rng(19);
  for (int iter = 0; iter < 200; ++iter) {
    const std::string text = testing::RandomText(rng, 50);
    ASSERT_EQ(Stream(tok, tok.Encode(text, false), false), text);
  }
}

}  // namespace
}  // namespace cpserve::tokenizer
