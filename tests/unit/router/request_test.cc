// Request validation and stop strings (router/): every rejected field, and stop-string
// cutting against a brute-force reference on random chunkings.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "router/request_validation.h"
#include "router/stop_strings.h"

namespace cpserve::router {
namespace {

const ValidationLimits kLimits = {/*vocab_size=*/100, /*max_context_tokens=*/32,
                                  /*max_stop_strings=*/3, /*max_stop_string_bytes=*/8};

void ExpectInvalid(const std::vector<int32_t>& prompt, const SamplingSpec& s,
                   const std::string& field) {
  auto r = ValidateRequest(prompt, s, kLimits);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << field;
  EXPECT_EQ(r.status().message().substr(0, field.size() + 1), field + ":") << r.status();
}

TEST(ValidationTest, AcceptsGoodRequestsAndAppliesDefaultMaxTokens) {
  const std::vector<int32_t> p = {0, 5, 99};
  EXPECT_EQ(*ValidateRequest(p, {}, kLimits), kDefaultMaxTokens);
  SamplingSpec s;
  s.max_tokens = 29;  // 3 + 29 = 32: exactly the context
  s.temperature = 0.7f;
  s.top_k = 5;
  s.top_p = 1.0f;
  s.stop_token_ids = {0, 99};
  s.stop = {"a", "12345678", "xy"};
  EXPECT_EQ(*ValidateRequest(p, s, kLimits), 29);
  // Default max_tokens is clamped to what the context leaves.
  for (int n = 1; n < 32; ++n) {
    const std::vector<int32_t> prompt(n, 1);
    EXPECT_EQ(*ValidateRequest(prompt, {}, kLimits), std::min(16, 32 - n)) << n;
  }
}

TEST(ValidationTest, RejectsEachBadFieldWithItsName) {
  const std::vector<int32_t> p = {1, 2};
  ExpectInvalid({}, {}, "prompt");
  ExpectInvalid({1, 100}, {}, "prompt.token_ids");
  ExpectInvalid({-1}, {}, "prompt.token_ids");
  ExpectInvalid(std::vector<int32_t>(32, 1), {}, "prompt");
  SamplingSpec s;
  s.max_tokens = -1;
  ExpectInvalid(p, s, "sampling.max_tokens");
  s.max_tokens = 31;  // 2 + 31 > 32
  ExpectInvalid(p, s, "sampling.max_tokens");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (float t : {-0.1f, nan, inf}) {
    s = {};
    s.temperature = t;
    ExpectInvalid(p, s, "sampling.temperature");
  }
  s = {};
  s.top_k = -1;
  ExpectInvalid(p, s, "sampling.top_k");
  for (float tp : {-0.5f, 1.01f, nan}) {
    s = {};
    s.top_p = tp;
    ExpectInvalid(p, s, "sampling.top_p");
  }
  s = {};
  s.stop_token_ids = {3, 100};
  ExpectInvalid(p, s, "sampling.stop_token_ids");
  s = {};
  s.stop = {"a", "b", "c", "d"};
  ExpectInvalid(p, s, "sampling.stop");
  s.stop = {"a", ""};
  ExpectInvalid(p, s, "sampling.stop");
  s.stop = {"123456789"};
  ExpectInvalid(p, s, "sampling.stop");
}

// Reference: scan end positions left to right; the first end at which some stop string
// occurs (longest such string on ties) cuts the text before that occurrence.
std::string CutReference(const std::string& text, const std::vector<std::string>& stops,
                         bool* stopped) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t best_len = 0;
    for (const auto& s : stops) {
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0) {
        best_len = std::max(best_len, s.size());
      }
    }
    if (best_len > 0) {
      *stopped = true;
      return text.substr(0, end - best_len);
    }
  }
  *stopped = false;
  return text;
}

TEST(StopStringsTest, SimpleCases) {
  StopStringMatcher m({"END", "\n\n"});
  EXPECT_EQ(m.Add("Hello E"), "Hello ");  // "E" might start "END"
  EXPECT_EQ(m.Add("N"), "");
  EXPECT_EQ(m.Add("Dx"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.Add("more"), "");
  EXPECT_EQ(m.Flush(), "");

  StopStringMatcher n({"END"});
  EXPECT_EQ(n.Add("EN"), "");
  EXPECT_EQ(n.Add("d"), "ENd");
  EXPECT_EQ(n.Add("E"), "");
  EXPECT_EQ(n.Flush(), "E");
  EXPECT_FALSE(n.stopped());

  StopStringMatcher none({});
  EXPECT_EQ(none.Add("abc"), "abc");
  EXPECT_EQ(none.Flush(), "");
}

TEST(StopStringsTest, RandomChunkingsMatchReference) {
  std::mt19937 rng(7);
  const std::string alphabet = "abc";
  for (int iter = 0; iter < 20000; ++iter) {
    std::vector<std::string> stops(rng() % 3);
    size_t longest = 0;
    for (auto& s : stops) {
      s.resize(1 + rng() % 3);
      for (char& c : s) c = alphabet[rng() % 3];
      longest = std::max(longest, s.size());
    }
    std::string text(rng() % 12, 'a');
    for (char& c : text) c = alphabet[rng() % 3];
    StopStringMatcher m(stops);
    std::string out;
    size_t fed = 0;
    while (fed < text.size() && !m.stopped()) {
      const size_t len = std::min<size_t>(text.size() - fed, rng() % 4);
      out += m.Add(text.substr(fed, len));
      fed += len;
      if (!m.stopped()) {
        // Liveness: at most longest-1 bytes are held back.
        EXPECT_GE(out.size() + (longest ? longest - 1 : 0), fed) << text;
      }
    }
    out += m.Flush();
    bool stopped = false;
    EXPECT_EQ(out, CutReference(text, stops, &stopped)) << text;
    EXPECT_EQ(m.stopped(), stopped) << text;
  }
}

}  // namespace
}  // namespace cpserve::router
