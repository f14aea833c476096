#include "services/bench/workload.h"

#include <algorithm>

#include "gtest/gtest.h"
#include "worker/tokenizer/synthetic_tokenizer.h"
#include "worker/tokenizer/tokenizer.h"

namespace cpserve::bench {
namespace {

TEST(WorkloadTest, IdRequestsFollowTheSpecsAndAvoidExcludedIds) {
  WorkloadOptions o;
  o.prompt_tokens = *LengthSpec::Parse("5-40@3,100@1");
  o.output_tokens = *LengthSpec::Parse("1-9");
  o.seed = 11;
  o.vocab_size = 20;
  o.excluded_ids = {0, 7, 19};
  const std::vector<PlannedRequest> r = BuildIdRequests(o, 500, 0);
  ASSERT_EQ(r.size(), 500u);
  int long_prompts = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    EXPECT_EQ(r[i].index, static_cast<int64_t>(i));
    EXPECT_TRUE((r[i].prompt_tokens >= 5 && r[i].prompt_tokens <= 40) || r[i].prompt_tokens == 100);
    long_prompts += r[i].prompt_tokens == 100;
    EXPECT_GE(r[i].max_tokens, 1);
    EXPECT_LE(r[i].max_tokens, 9);
    ASSERT_EQ(static_cast<int64_t>(r[i].prompt_ids.size()), r[i].prompt_tokens);
    EXPECT_TRUE(r[i].prompt_text.empty());
    for (int32_t id : r[i].prompt_ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, 20);
      EXPECT_EQ(std::count(o.excluded_ids.begin(), o.excluded_ids.end(), id), 0);
    }
  }
  // About a quarter are 100 tokens long (binomial, sd ~ 9.7).
  EXPECT_GT(long_prompts, 80);
  EXPECT_LT(long_prompts, 170);
}

TEST(WorkloadTest, RequestIDependsOnlyOnTheSeedAndI) {
  WorkloadOptions o;
  o.prompt_tokens = *LengthSpec::Parse("1-64");
  o.output_tokens = *LengthSpec::Parse("1-64");
  o.seed = 3;
  const auto all = BuildIdRequests(o, 20, 0);
  const auto tail = BuildIdRequests(o, 5, 15);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(tail[i].index, all[15 + i].index);
    EXPECT_EQ(tail[i].prompt_ids, all[15 + i].prompt_ids);
    EXPECT_EQ(tail[i].max_tokens, all[15 + i].max_tokens);
  }
  o.seed = 4;
  const auto other = BuildIdRequests(o, 20, 0);
  int same = 0;
  for (int i = 0; i < 20; ++i) same += other[i].prompt_ids == all[i].prompt_ids;
  EXPECT_LT(same, 3);
}

// The real byte-level BPE tokenizer of the built-in model.
Tokenizer RealTokenizer(const tokenizer::Tokenizer& tok) {
  return [&tok](const std::string& text, bool add_bos) -> absl::StatusOr<Tokenized> {
    Tokenized t;
    t.ids = tok.Encode(text, add_bos);
    for (int32_t id : t.ids) {
      absl::StatusOr<std::string> piece = tok.Decode({id});
      if (!piece.ok()) return piece.status();
      t.pieces.push_back(*piece);
    }
    return t;
  };
}

TEST(WorkloadTest, TextPromptsHaveExactlyTheRequestedLength) {
  absl::StatusOr<std::string> json = tokenizer::BuildSyntheticTokenizerJson();
  ASSERT_TRUE(json.ok()) << json.status();
  absl::StatusOr<tokenizer::Tokenizer> tok = tokenizer::Tokenizer::FromJson(*json);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Tokenizer fn = RealTokenizer(*tok);
  std::mt19937_64 rng(8);
  const int64_t first = tok->adds_bos() ? 2 : 1;
  for (int64_t n = first; n <= 80; ++n) {
    absl::StatusOr<TextPrompt> p = FitTextPrompt(n, rng, fn);
    ASSERT_TRUE(p.ok()) << n << ": " << p.status();
    EXPECT_EQ(static_cast<int64_t>(tok->Encode(p->text, true).size()), n) << p->text;
    EXPECT_EQ(p->ids, tok->Encode(p->text, true));
  }
  for (int64_t n : {500, 2000}) {
    absl::StatusOr<TextPrompt> p = FitTextPrompt(n, rng, fn);
    ASSERT_TRUE(p.ok()) << n << ": " << p.status();
    EXPECT_EQ(static_cast<int64_t>(tok->Encode(p->text, true).size()), n);
  }

  WorkloadOptions o;
  o.prompt_tokens = *LengthSpec::Parse("10-60");
  o.output_tokens = LengthSpec::Fixed(4);
  absl::StatusOr<std::vector<PlannedRequest>> reqs = BuildTextRequests(o, 12, 0, fn);
  ASSERT_TRUE(reqs.ok()) << reqs.status();
  for (const PlannedRequest& r : *reqs) {
    EXPECT_FALSE(r.prompt_text.empty());
    EXPECT_EQ(static_cast<int64_t>(tok->Encode(r.prompt_text, true).size()), r.prompt_tokens);
    EXPECT_EQ(r.max_tokens, 4);
  }
}

}  // namespace
}  // namespace cpserve::bench
