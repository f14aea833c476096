#include "worker/tokenizer/synthetic_tokenizer.h"

#include <set>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/tokenizer/test_util.h"
#include "worker/tokenizer/tokenizer.h"

namespace cpserve::tokenizer {
namespace {

TEST(SyntheticTokenizerTest, VocabIsExactlyZeroToSizeMinusOne) {
  for (int vocab_size : {259, 260, 300, 512, 1024, 4096}) {
    absl::StatusOr<std::string> text = BuildSyntheticTokenizerJson(vocab_size);
    ASSERT_TRUE(text.ok()) << text.status();
    const nlohmann::json j = nlohmann::json::parse(*text);
    std::set<int> ids;
    for (const auto& [token, id] : j["model"]["vocab"].items()) {
      ASSERT_TRUE(ids.insert(id.get<int>()).second) << "duplicate id " << id;
    }
    for (const auto& t : j["added_tokens"]) {
      ASSERT_TRUE(ids.insert(t["id"].get<int>()).second);
      EXPECT_TRUE(t["special"].get<bool>());
    }
    ASSERT_EQ(static_cast<int>(ids.size()), vocab_size);
    EXPECT_EQ(*ids.begin(), 0);
    EXPECT_EQ(*ids.rbegin(), vocab_size - 1);
    // Byte tokens first, in byte order, in byte-level form.
    for (int b = 0; b < 256; ++b) {
      EXPECT_EQ(j["model"]["vocab"][testing::RefByteToUtf8(static_cast<unsigned char>(b))], b);
    }
    EXPECT_EQ(j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"],
              std::string(kLlama3SplitPattern));

    absl::StatusOr<Tokenizer> tok = Tokenizer::FromJson(*text);
    ASSERT_TRUE(tok.ok()) << tok.status();
    EXPECT_EQ(tok->vocab_size(), vocab_size);
    for (int id = 0; id < vocab_size; ++id) ASSERT_TRUE(tok->IdToToken(id).has_value()) << id;
    EXPECT_EQ(tok->bos_id(), kSyntheticBosId);
    EXPECT_EQ(tok->eos_id(), kSyntheticEosId);
    EXPECT_EQ(tok->TokenToId(kSyntheticPadToken), kSyntheticPadId);
    EXPECT_TRUE(tok->adds_bos());
    EXPECT_EQ(tok->Encode("").size(), 1u);
  }
}

TEST(SyntheticTokenizerTest, Deterministic) {
  absl::StatusOr<std::string> a = BuildSyntheticTokenizerJson(700);
  absl::StatusOr<std::string> b = BuildSyntheticTokenizerJson(700);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  // A smaller vocabulary's merges are a prefix of a larger one's.
  absl::StatusOr<std::string> c = BuildSyntheticTokenizerJson(400);
  ASSERT_TRUE(c.ok());
  const auto small = nlohmann::json::parse(*c)["model"]["merges"];
  const auto large = nlohmann::json::parse(*a)["model"]["merges"];
  ASSERT_LT(small.size(), large.size());
  for (size_t i = 0; i < small.size(); ++i) ASSERT_EQ(small[i], large[i]);
}

TEST(SyntheticTokenizerTest, LearnsCommonWords) {
  absl::StatusOr<std::string> text = BuildSyntheticTokenizerJson(512);
  ASSERT_TRUE(text.ok());
  absl::StatusOr<Tokenizer> tok = Tokenizer::FromJson(*text);
  ASSERT_TRUE(tok.ok());
  // " the" is the most frequent word of the corpus: a single token.
  EXPECT_TRUE(tok->TokenToId("Ġthe").has_value());
  EXPECT_EQ(tok->Encode(" the", false).size(), 1u);
}

TEST(SyntheticTokenizerTest, RejectsBadSizes) {
  EXPECT_EQ(BuildSyntheticTokenizerJson(258).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildSyntheticTokenizerJson(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildSyntheticTokenizerJson(kSyntheticMaxVocabSize + 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The synthetic benchmark models (vocab 128256) use the built-in tokenizer padded to
// their vocabulary: every id decodes, encoding is unchanged.
TEST(SyntheticTokenizerTest, PaddedVocabularyDecodesEveryIdAndEncodesAsBefore) {
  absl::StatusOr<std::string> base_json = BuildSyntheticTokenizerJson(512);
  ASSERT_TRUE(base_json.ok()) << base_json.status();
  absl::StatusOr<std::string> padded_json = PadTokenizerVocab(*base_json, 128256);
  ASSERT_TRUE(padded_json.ok()) << padded_json.status();
  absl::StatusOr<Tokenizer> base = Tokenizer::FromJson(*base_json);
  absl::StatusOr<Tokenizer> padded = Tokenizer::FromJson(*padded_json);
  ASSERT_TRUE(base.ok() && padded.ok());
  EXPECT_EQ(padded->vocab_size(), 128256);
  for (const char* text : {"The quick brown fox.", "<|id_700|> and <|id_5|>", "  spaces\n\t"}) {
    EXPECT_EQ(padded->Encode(text), base->Encode(text)) << text;
  }
  for (int32_t id : {0, 255, 511}) EXPECT_EQ(*padded->Decode({id}), *base->Decode({id}));
  EXPECT_EQ(*padded->Decode({512}), "<|id_512|>");
  EXPECT_EQ(*padded->Decode({73691, 128255}), "<|id_73691|><|id_128255|>");
  EXPECT_FALSE(padded->Decode({128256}).ok());
  // Already large enough: the same text.
  EXPECT_EQ(*PadTokenizerVocab(*base_json, 512), *base_json);
  EXPECT_EQ(*PadTokenizerVocab(*base_json, 300), *base_json);
  // Not a BPE tokenizer, or out of range.
  EXPECT_EQ(PadTokenizerVocab("{}", 1000).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PadTokenizerVocab("not json", 1000).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PadTokenizerVocab(*base_json, -1).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpserve::tokenizer
