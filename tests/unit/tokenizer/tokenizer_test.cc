#include "worker/tokenizer/tokenizer.h"

#include <atomic>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/tokenizer/test_util.h"
#include "worker/tokenizer/synthetic_tokenizer.h"

namespace cpserve::tokenizer {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::RefByteToUtf8;

int Byte(char c) { return static_cast<unsigned char>(c); }

// A small GPT-2-style tokenizer: byte tokens id = byte, merges h+e, l+l, he+ll,
// ll+o (ids 256..259), Ġ+w (260), "Ġworld" (261, reachable by no merge), and added
// tokens <s> = 262, </s> = 263 (special) and <sep> = 264 (not special).
json MiniJson() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[RefByteToUtf8(static_cast<unsigned char>(b))] = b;
  vocab["he"] = 256;
  vocab["ll"] = 257;
  vocab["hell"] = 258;
  vocab["llo"] = 259;
  vocab["Ġw"] = 260;
  vocab["Ġworld"] = 261;
  json j;
  j["version"] = "1.0";
  j["added_tokens"] = json::array({{{"id", 262}, {"content", "<s>"}, {"special", true}},
                                   {{"id", 263}, {"content", "</s>"}, {"special", true}},
                                   {{"id", 264}, {"content", "<sep>"}, {"special", false}}});
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  j["post_processor"] = {{"type", "ByteLevel"}};
  j["decoder"] = {{"type", "ByteLevel"}};
  j["model"] = {{"type", "BPE"},        {"dropout", nullptr},
                {"unk_token", nullptr}, {"byte_fallback", false},
                {"vocab", vocab},       {"merges", {"h e", "l l", "he ll", "ll o", "Ġ w"}}};
  return j;
}

Tokenizer MustLoad(const json& j) {
  absl::StatusOr<Tokenizer> tok = Tokenizer::FromJson(j.dump());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return std::move(tok).value();
}

TEST(TokenizerTest, MergesApplyByRank) {
  const Tokenizer tok = MustLoad(MiniJson());
  EXPECT_EQ(tok.vocab_size(), 265);
  // h e l l o -> he l l o -> he ll o -> hell o ("ll o" ranks after "he ll").
  EXPECT_THAT(tok.Encode("hello"), ElementsAre(258, Byte('o')));
  EXPECT_THAT(tok.Encode("llo"), ElementsAre(259));
  // " world": Ġ w o r l d -> Ġw o r l d; "Ġworld" is in the vocab but no merge makes it.
  EXPECT_THAT(tok.Encode(" world"), ElementsAre(260, Byte('o'), Byte('r'), Byte('l'), Byte('d')));
  absl::StatusOr<std::string> text = tok.Decode(tok.Encode("hello world"));
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "hello world");
}

TEST(TokenizerTest, IgnoreMergesUsesWholeWords) {
  json j = MiniJson();
  j["model"]["ignore_merges"] = true;
  const Tokenizer tok = MustLoad(j);
  EXPECT_THAT(tok.Encode(" world"), ElementsAre(261));
  EXPECT_THAT(tok.Encode("hello"), ElementsAre(258, Byte('o')));
}

TEST(TokenizerTest, PairMergesEqualStringMerges) {
  json j = MiniJson();
  j["model"]["merges"] =
      json::array({json::array({"h", "e"}), json::array({"l", "l"}), json::array({"he", "ll"}),
                   json::array({"ll", "o"}), json::array({"Ġ", "w"})});
  const Tokenizer pairs = MustLoad(j);
  const Tokenizer strings = MustLoad(MiniJson());
  std::mt19937 rng(5);
  for (int i = 0; i < 50; ++i) {
    const std::string text = testing::RandomText(rng, 30) + " hello world";
    ASSERT_EQ(pairs.Encode(text), strings.Encode(text));
  }
}

TEST(TokenizerTest, AddedTokensAndSpecials) {
  const Tokenizer tok = MustLoad(MiniJson());
  EXPECT_THAT(tok.Encode("<s>he</s>"), ElementsAre(262, 256, 263));
  EXPECT_THAT(tok.Encode("he<sep>he"), ElementsAre(256, 264, 256));
  // Specials as plain text when parse_special is false; <sep> is not special.
  EXPECT_THAT(tok.Encode("<s><sep>", true, /*parse_special=*/false),
              ElementsAre(Byte('<'), Byte('s'), Byte('>'), 264));
  EXPECT_TRUE(tok.IsSpecial(262));
  EXPECT_FALSE(tok.IsSpecial(264));
  EXPECT_FALSE(tok.IsSpecial(256));
  EXPECT_EQ(tok.bos_id(), 262);
  EXPECT_EQ(tok.eos_id(), 263);
  EXPECT_FALSE(tok.adds_bos());
  EXPECT_EQ(tok.TokenToId("hell"), 258);
  EXPECT_EQ(tok.TokenToId("</s>"), 263);
  EXPECT_EQ(tok.TokenToId("nope"), std::nullopt);
  EXPECT_EQ(tok.IdToToken(260), "Ġw");
  EXPECT_EQ(tok.IdToToken(264), "<sep>");
  EXPECT_EQ(tok.IdToToken(265), std::nullopt);
  absl::StatusOr<std::string> all = tok.Decode({262, 256, 264, 263});
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, "<s>he<sep></s>");
  absl::StatusOr<std::string> skipped = tok.Decode({262, 256, 264, 263}, /*skip_special=*/true);
  ASSERT_TRUE(skipped.ok());
  EXPECT_EQ(*skipped, "he<sep>");
}

TEST(TokenizerTest, LongestAddedTokenWins) {
  json j = MiniJson();
  j["added_tokens"].push_back({{"id", 265}, {"content", "<s><s>"}, {"special", true}});
  j["added_tokens"].push_back(
      {{"id", 266}, {"content", " <x>"}, {"special", false}, {"lstrip", false}, {"rstrip", true}});
  const Tokenizer tok = MustLoad(j);
  EXPECT_THAT(tok.Encode("<s><s><s>"), ElementsAre(265, 262));
  EXPECT_THAT(tok.Encode("he <x>  he"), ElementsAre(256, 266, 256));
}

TEST(TokenizerTest, TemplateAddsBosAndEos) {
  json j = MiniJson();
  j["post_processor"] = {
      {"type", "Sequence"},
      {"processors",
       {{{"type", "ByteLevel"}},
        {{"type", "TemplateProcessing"},
         {"single",
          {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
           {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
           {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
         {"special_tokens",
          {{"<s>", {{"id", "<s>"}, {"ids", {262}}, {"tokens", {"<s>"}}}},
           {"</s>", {{"id", "</s>"}, {"ids", {263}}, {"tokens", {"</s>"}}}}}}}}}};
  const Tokenizer tok = MustLoad(j);
  EXPECT_TRUE(tok.adds_bos());
  EXPECT_EQ(tok.bos_id(), 262);
  EXPECT_THAT(tok.Encode("he"), ElementsAre(262, 256, 263));
  EXPECT_THAT(tok.Encode("he", /*add_special=*/false), ElementsAre(256));
  EXPECT_THAT(tok.Encode(""), ElementsAre(262, 263));
}

TEST(TokenizerTest, DecodeRejectsUnknownIds) {
  const Tokenizer tok = MustLoad(MiniJson());
  EXPECT_EQ(tok.Decode({1, 265}).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(tok.Decode({-1}).status().code(), absl::StatusCode::kOutOfRange);
  absl::StatusOr<std::string> empty = tok.Decode({});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, "");
  // A lone continuation byte and a truncated sequence decode to U+FFFD.
  absl::StatusOr<std::string> bad = tok.Decode({'a', 0x80, 'b', 0xE2, 0x82});
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(*bad,
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
}

TEST(TokenizerTest, InvalidUtf8InputIsReplaced) {
  const Tokenizer tok = MustLoad(MiniJson());
  absl::StatusOr<std::string> text = tok.Decode(tok.Encode("he\xFFllo"));
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "he\xEF\xBF\xBDllo");
}

TEST(TokenizerTest, RandomUnicodeRoundTrips) {
  absl::StatusOr<std::string> j = BuildSyntheticTokenizerJson(512);
  ASSERT_TRUE(j.ok());
  absl::StatusOr<Tokenizer> synthetic = Tokenizer::FromJson(*j);
  ASSERT_TRUE(synthetic.ok());
  const Tokenizer mini = MustLoad(MiniJson());
  std::mt19937 rng(11);
  for (int iter = 0; iter < 400; ++iter) {
    const std::string text = testing::RandomText(rng, 1 + static_cast<int>(rng() % 60));
    for (const Tokenizer* tok : {static_cast<const Tokenizer*>(&*synthetic), &mini}) {
      absl::StatusOr<std::string> back = tok->Decode(tok->Encode(text, /*add_special=*/false));
      ASSERT_TRUE(back.ok());
      ASSERT_EQ(*back, text);
    }
  }
  const std::string fixed(SyntheticTrainingText());
  absl::StatusOr<std::string> back = synthetic->Decode(synthetic->Encode(fixed, false));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, fixed);
  // Trained merges compress the training text well below one token per byte.
  EXPECT_LT(synthetic->Encode(fixed, false).size(), fixed.size() / 2);
}

TEST(TokenizerTest, LongRunsRoundTrip) {
  absl::StatusOr<std::string> j = BuildSyntheticTokenizerJson(512);
  ASSERT_TRUE(j.ok());
  absl::StatusOr<Tokenizer> tok = Tokenizer::FromJson(*j);
  ASSERT_TRUE(tok.ok());
  // Long whitespace runs exercise the look-ahead's backtracking (and the JIT stack);
  // long words exercise the merge loop beyond the cache's word size.
  for (const std::string& text :
       {std::string(200000, ' ') + "x", std::string(200000, 'a'), std::string(100000, '7'),
        "x" + std::string(100000, '\n') + std::string(100000, ' '),
        std::string(50000, '!') + std::string(50000, ' ')}) {
    const std::vector<int32_t> ids = tok->Encode(text, false);
    ASSERT_FALSE(ids.empty());
    absl::StatusOr<std::string> back = tok->Decode(ids);
    ASSERT_TRUE(back.ok());
    ASSERT_EQ(*back, text);
  }
}

TEST(TokenizerTest, ConcurrentEncodeMatchesSerial) {
  absl::StatusOr<std::string> j = BuildSyntheticTokenizerJson(512);
  ASSERT_TRUE(j.ok());
  absl::StatusOr<Tokenizer> tok = Tokenizer::FromJson(*j);
  ASSERT_TRUE(tok.ok());
  std::mt19937 rng(23);
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i) texts.push_back(testing::RandomText(rng, 40));
  // Serial results from a second instance, so its word cache is not shared.
  absl::StatusOr<Tokenizer> serial = Tokenizer::FromJson(*j);
  ASSERT_TRUE(serial.ok());
  std::vector<std::vector<int32_t>> want;
  for (const std::string& t : texts) want.push_back(serial->Encode(t));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = t; i < texts.size() + t; ++i) {
          const size_t k = i % texts.size();
          if (tok->Encode(texts[k]) != want[k]) ++mismatches;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(TokenizerTest, FromFile) {
  const std::string path = ::testing::TempDir() + "/tokenizer_test_tokenizer.json";
  {
    std::ofstream out(path);
    out << MiniJson().dump(2);
  }
  absl::StatusOr<Tokenizer> tok = Tokenizer::FromFile(path);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->vocab_size(), 265);
  EXPECT_EQ(Tokenizer::FromFile(path + ".missing").status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenizerTest, NfcNormalizer) {
  json j = MiniJson();
  j["normalizer"] = {{"type", "NFC"}};
  absl::StatusOr<Tokenizer> tok = Tokenizer::FromJson(j.dump());
  if (!tok.ok() && tok.status().code() == absl::StatusCode::kUnimplemented) {
    GTEST_SKIP() << "built without ICU: " << tok.status();
  }
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->Encode("caf\x65\xCC\x81"), tok->Encode("caf\xC3\xA9"));  // e + U+0301 = é
}

struct Malformed {
  const char* name;
  std::function<void(json&)> mutate;
  absl::StatusCode code;
  const char* mention;
};

TEST(TokenizerTest, MalformedConfigsGiveErrors) {
  const std::vector<Malformed> cases = {
      {"no model", [](json& j) { j.erase("model"); }, absl::StatusCode::kInvalidArgument, "model"},
      {"model not object", [](json& j) { j["model"] = 3; }, absl::StatusCode::kInvalidArgument,
       "model"},
      {"no vocab", [](json& j) { j["model"].erase("vocab"); }, absl::StatusCode::kInvalidArgument,
       "model.vocab"},
      {"vocab array", [](json& j) { j["model"]["vocab"] = json::array(); },
       absl::StatusCode::kInvalidArgument, "model.vocab"},
      {"string id", [](json& j) { j["model"]["vocab"]["he"] = "256"; },
       absl::StatusCode::kInvalidArgument, "model.vocab['he']"},
      {"negative id", [](json& j) { j["model"]["vocab"]["he"] = -4; },
       absl::StatusCode::kInvalidArgument, "model.vocab['he']"},
      {"no merges", [](json& j) { j["model"].erase("merges"); }, absl::StatusCode::kInvalidArgument,
       "model.merges"},
      {"merge one token", [](json& j) { j["model"]["merges"][0] = "he"; },
       absl::StatusCode::kInvalidArgument, "model.merges[0]"},
      {"merge number", [](json& j) { j["model"]["merges"][1] = 7; },
       absl::StatusCode::kInvalidArgument, "model.merges[1]"},
      {"merge unknown token", [](json& j) { j["model"]["merges"][2] = "q z"; },
       absl::StatusCode::kInvalidArgument, "model.merges[2]"},
      {"added not array", [](json& j) { j["added_tokens"] = json::object(); },
       absl::StatusCode::kInvalidArgument, "added_tokens"},
      {"added no id", [](json& j) { j["added_tokens"][1].erase("id"); },
       absl::StatusCode::kInvalidArgument, "added_tokens[1].id"},
      {"added content", [](json& j) { j["added_tokens"][0]["content"] = 5; },
       absl::StatusCode::kInvalidArgument, "added_tokens[0].content"},
      {"pre no type", [](json& j) { j["pre_tokenizer"].erase("type"); },
       absl::StatusCode::kInvalidArgument, "pre_tokenizer.type"},
      {"unk not in vocab", [](json& j) { j["model"]["unk_token"] = "<unk>"; },
       absl::StatusCode::kInvalidArgument, "unk_token"},
      {"template unknown token",
       [](json& j) {
         j["post_processor"] = {{"type", "TemplateProcessing"},
                                {"single", {{{"SpecialToken", {{"id", "<bos>"}}}}}}};
       },
       absl::StatusCode::kInvalidArgument, "post_processor.single[0]"},
      {"wordpiece", [](json& j) { j["model"]["type"] = "WordPiece"; },
       absl::StatusCode::kUnimplemented, "WordPiece"},
      {"unigram", [](json& j) { j["model"]["type"] = "Unigram"; }, absl::StatusCode::kUnimplemented,
       "Unigram"},
      {"byte fallback", [](json& j) { j["model"]["byte_fallback"] = true; },
       absl::StatusCode::kUnimplemented, "byte_fallback"},
      {"dropout", [](json& j) { j["model"]["dropout"] = 0.1; }, absl::StatusCode::kUnimplemented,
       "dropout"},
      {"metaspace",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}};
       },
       absl::StatusCode::kUnimplemented, "Metaspace"},
      {"no byte level",
       [](json& j) {
         j["pre_tokenizer"] = {
             {"type", "Split"}, {"pattern", {{"Regex", "\\s+"}}}, {"behavior", "Isolated"}};
       },
       absl::StatusCode::kUnimplemented, "ByteLevel"},
      {"decoder",
       [](json& j) {
         j["decoder"] = {{"type", "Metaspace"}};
       },
       absl::StatusCode::kUnimplemented, "Metaspace"},
      {"normalizer",
       [](json& j) {
         j["normalizer"] = {{"type", "Lowercase"}};
       },
       absl::StatusCode::kUnimplemented, "Lowercase"},
      {"post processor",
       [](json& j) {
         j["post_processor"] = {{"type", "Fancy"}};
       },
       absl::StatusCode::kUnimplemented, "Fancy"},
  };
  for (const Malformed& c : cases) {
    json j = MiniJson();
    c.mutate(j);
    const absl::Status s = Tokenizer::FromJson(j.dump()).status();
    EXPECT_EQ(s.code(), c.code) << c.name << ": " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.mention)) << c.name;
  }
  for (const char* text : {"", "not json", "[]", "{\"model\": ", "null", "{}"}) {
    EXPECT_EQ(Tokenizer::FromJson(text).status().code(), absl::StatusCode::kInvalidArgument)
        << text;
  }
}

TEST(TokenizerTest, TruncatedAndCorruptedJsonNeverCrashes) {
  absl::StatusOr<std::string> full = BuildSyntheticTokenizerJson(300);
  ASSERT_TRUE(full.ok());
  std::mt19937 rng(13);
  for (int iter = 0; iter < 60; ++iter) {
    const size_t cut = rng() % full->size();
    EXPECT_EQ(Tokenizer::FromJson(full->substr(0, cut)).status().code(),
              absl::StatusCode::kInvalidArgument);
    std::string corrupted = *full;
    for (int k = 0; k < 3; ++k) corrupted[rng() % corrupted.size()] = "{}[]\",:0a\\ "[rng() % 11];
    // Either loads or reports an error; never crashes.
    absl::StatusOr<Tokenizer> tok = Tokenizer::FromJson(corrupted);
    if (tok.ok()) (void)tok->Encode("hello");
  }
}

}  // namespace
}  // namespace cpserve::tokenizer
