// The synthetic tokenizer's Encode against a brute-force BPE written from the
// definition: per pre-token, repeatedly merge the lowest-rank adjacent pair (leftmost
// on ties) until no merge applies. O(n^2) per word, independent of the library's
// heap-based merge loop, its JSON loader and its byte-level table.
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/tokenizer/test_util.h"
#include "worker/tokenizer/pre_tokenizer.h"
#include "worker/tokenizer/synthetic_tokenizer.h"
#include "worker/tokenizer/tokenizer.h"

namespace cpserve::tokenizer {
namespace {

class BruteForceBpe {
 public:
  explicit BruteForceBpe(const nlohmann::json& j) {
    for (const auto& [token, id] : j["model"]["vocab"].items()) vocab_[token] = id.get<int>();
    int rank = 0;
    for (const auto& m : j["model"]["merges"]) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      ranks_.emplace(std::pair(s.substr(0, sp), s.substr(sp + 1)), rank++);
    }
    for (const auto& t : j["added_tokens"]) specials_[t["content"].get<std::string>()] = t["id"];
    auto re = Pcre2Regex::Compile(kLlama3SplitPattern);
    EXPECT_TRUE(re.ok());
    regex_ = std::make_unique<Pcre2Regex>(std::move(*re));
  }

  std::vector<int> Encode(const std::string& text) const {
    std::vector<int> ids;
    // Cut at special tokens (the leftmost, then the longest), encode the plain runs.
    size_t pos = 0, plain = 0;
    while (pos <= text.size()) {
      std::string best;
      for (const auto& [content, id] : specials_) {
        if (text.compare(pos, content.size(), content) == 0 && content.size() > best.size()) {
          best = content;
        }
      }
      if (best.empty() && pos < text.size()) {
        ++pos;
        continue;
      }
      EncodePlain(text.substr(plain, pos - plain), &ids);
      if (best.empty()) break;
      ids.push_back(specials_.at(best));
      pos += best.size();
      plain = pos;
    }
    return ids;
  }

 private:
  void EncodePlain(const std::string& text, std::vector<int>* ids) const {
    std::vector<std::string> pieces;
    EXPECT_TRUE(SplitWithRegex(*regex_, SplitBehavior::kIsolated, text, &pieces).ok());
    for (const std::string& piece : pieces) {
      std::vector<std::string> symbols;
      for (unsigned char b : piece) symbols.push_back(testing::RefByteToUtf8(b));
      while (true) {
        int best_rank = -1;
        size_t best_pos = 0;
        for (size_t i = 0; i + 1 < symbols.size(); ++i) {
          auto it = ranks_.find({symbols[i], symbols[i + 1]});
          if (it != ranks_.end() && (best_rank < 0 || it->second < best_rank)) {
            best_rank = it->second;
            best_pos = i;
          }
        }
        if (best_rank < 0) break;
        symbols[best_pos] += symbols[best_pos + 1];
        symbols.erase(symbols.begin() + best_pos + 1);
      }
      for (const std::string& s : symbols) ids->push_back(vocab_.at(s));
    }
  }

  std::map<std::string, int> vocab_;
  std::map<std::pair<std::string, std::string>, int> ranks_;
  std::map<std::string, int> specials_;
  std::unique_ptr<Pcre2Regex> regex_;
};

TEST(BpeReferenceTest, SyntheticEncodeMatchesBruteForce) {
  for (int vocab_size : {300, 512, 1500}) {
    absl::StatusOr<std::string> text = BuildSyntheticTokenizerJson(vocab_size);
    ASSERT_TRUE(text.ok());
    const nlohmann::json j = nlohmann::json::parse(*text);
    absl::StatusOr<Tokenizer> tok = Tokenizer::FromJson(*text);
    ASSERT_TRUE(tok.ok()) << tok.status();
    const BruteForceBpe ref(j);

    const std::string fixed =
        "The miller's daughter counted 3,412 boats in 1887 — they'll say it's true!\n\n"
        "  Servers answer requests;\tmodels predict the next word. <|end_of_text|>";
    std::vector<int> want = ref.Encode(fixed);
    std::vector<int32_t> got = tok->Encode(fixed, /*add_special=*/false);
    ASSERT_EQ(std::vector<int>(got.begin(), got.end()), want) << "vocab " << vocab_size;
    EXPECT_EQ(want.back(), kSyntheticEosId);

    std::vector<int32_t> with_bos = tok->Encode(fixed);
    ASSERT_EQ(with_bos.front(), kSyntheticBosId);
    ASSERT_EQ(with_bos.size(), got.size() + 1);

    const std::string corpus(SyntheticTrainingText());
    got = tok->Encode(corpus, false);
    ASSERT_EQ(std::vector<int>(got.begin(), got.end()), ref.Encode(corpus));

    std::mt19937 rng(vocab_size);
    for (int iter = 0; iter < 100; ++iter) {
      // Slices of the corpus (where merges fire) mixed with random text.
      const size_t start = rng() % corpus.size();
      std::string s = corpus.substr(start, rng() % 120);
      while (!s.empty() && (static_cast<unsigned char>(s[0]) & 0xC0) == 0x80) s.erase(0, 1);
      while (!s.empty() && !testing::RefIsValidUtf8(s)) s.pop_back();
      s += testing::RandomText(rng, 20);
      got = tok->Encode(s, false);
      ASSERT_EQ(std::vector<int>(got.begin(), got.end()), ref.Encode(s)) << s;
    }
  }
}

}  // namespace
}  // namespace cpserve::tokenizer
