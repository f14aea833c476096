// Fuzzes the router's public request path up to dispatch, as GenerateReactor::Begin runs
// it: a serialized v1::GenerateRequest (what a client sends) is parsed, its prompt text
// tokenized with the built-in synthetic tokenizer (or its token ids taken), the sampling
// fields copied into a SamplingSpec and checked by ValidateRequest; an accepted request's
// stop strings then run over the prompt's detokenized text, token by token, through
// StopStringMatcher.
//
// Input layout: 4 bytes of limits (u16 max context - 1 mod 4096, u8 max stop strings
// mod 20, u8 max stop string bytes - 1), then the serialized GenerateRequest.
//
// Checks: a rejection is INVALID_ARGUMENT naming a known field first; an acceptance obeys
// every limit (independently re-checked here) and returns 0 < max_tokens <= context left;
// the matcher's streamed output equals the whole text cut before the stop string that
// ends first (ties: the longer), computed by brute force, and equals one-chunk matching.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cpserve/v1/generation.pb.h"
#include "router/request_validation.h"
#include "router/stop_strings.h"
#include "tests/fuzz/fuzz_check.h"
#include "worker/tokenizer/synthetic_tokenizer.h"
#include "worker/tokenizer/tokenizer.h"

namespace {

using cpserve::router::SamplingSpec;
using cpserve::router::ValidationLimits;
using cpserve::tokenizer::Tokenizer;

const Tokenizer& Tok() {
  static const Tokenizer* tok = [] {
    absl::StatusOr<std::string> json = cpserve::tokenizer::BuildSyntheticTokenizerJson(512);
    FUZZ_CHECK(json.ok(), json.status().ToString());
    absl::StatusOr<Tokenizer> t = Tokenizer::FromJson(*json);
    FUZZ_CHECK(t.ok(), t.status().ToString());
    return new Tokenizer(std::move(*t));
  }();
  return *tok;
}

// Brute force: the text before the stop string occurrence that ends first (ties: longer).
std::string ReferenceCut(const std::string& text, const std::vector<std::string>& stops) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t best = 0;
    for (const std::string& s : stops) {
      if (s.size() <= end && s.size() > best && text.compare(end - s.size(), s.size(), s) == 0) {
        best = s.size();
      }
    }
    if (best > 0) return text.substr(0, end - best);
  }
  return text;
}

bool KnownField(absl::string_view msg) {
  for (absl::string_view f :
       {"prompt: ", "prompt.token_ids: ", "sampling.max_tokens: ", "sampling.temperature: ",
        "sampling.top_k: ", "sampling.top_p: ", "sampling.stop_token_ids: ", "sampling.stop: "}) {
    if (absl::StartsWith(msg, f)) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cpserve::fuzz::ByteReader in(data, size);
  const Tokenizer& tok = Tok();
  ValidationLimits limits;
  limits.vocab_size = tok.vocab_size();
  limits.max_context_tokens = 1 + in.U16() % 4096;
  limits.max_stop_strings = in.U8() % 20;
  limits.max_stop_string_bytes = 1 + in.U8();

  cpserve::v1::GenerateRequest req;
  if (!req.ParseFromArray(in.rest(), static_cast<int>(in.rest_size()))) return 0;

  std::vector<int32_t> prompt;
  switch (req.prompt().kind_case()) {
    case cpserve::v1::Prompt::kText:
      if (!req.prompt().text().empty()) prompt = tok.Encode(req.prompt().text(), true);
      break;
    case cpserve::v1::Prompt::kTokenIds:
      prompt.assign(req.prompt().token_ids().ids().begin(), req.prompt().token_ids().ids().end());
      break;
    default:
      break;
  }
  const cpserve::v1::SamplingParams& sp = req.sampling();
  SamplingSpec spec;
  spec.max_tokens = sp.max_tokens();
  spec.temperature = sp.temperature();
  spec.top_k = sp.top_k();
  spec.top_p = sp.top_p();
  spec.stop_token_ids.assign(sp.stop_token_ids().begin(), sp.stop_token_ids().end());
  spec.stop.assign(sp.stop().begin(), sp.stop().end());

  absl::StatusOr<int32_t> max_tokens = cpserve::router::ValidateRequest(prompt, spec, limits);
  if (!max_tokens.ok()) {
    FUZZ_CHECK(max_tokens.status().code() == absl::StatusCode::kInvalidArgument,
               max_tokens.status().ToString());
    FUZZ_CHECK(KnownField(max_tokens.status().message()), max_tokens.status().ToString());
    return 0;
  }
  // Independent re-check of an accepted request.
  const int64_t n = static_cast<int64_t>(prompt.size());
  FUZZ_CHECK(n > 0 && n < limits.max_context_tokens, "prompt length");
  for (int32_t id : prompt) FUZZ_CHECK(id >= 0 && id < limits.vocab_size, "prompt id");
  for (int32_t id : spec.stop_token_ids) FUZZ_CHECK(id >= 0 && id < limits.vocab_size, "stop id");
  FUZZ_CHECK(*max_tokens > 0 && n + *max_tokens <= limits.max_context_tokens,
             absl::StrCat("max_tokens ", *max_tokens, " for prompt ", n, " in context ",
                          limits.max_context_tokens));
  FUZZ_CHECK(spec.max_tokens == 0 || *max_tokens == spec.max_tokens, "max_tokens changed");
  FUZZ_CHECK(spec.temperature >= 0 && std::isfinite(spec.temperature), "temperature");
  FUZZ_CHECK(spec.top_k >= 0 && spec.top_p >= 0 && spec.top_p <= 1, "top_k / top_p");
  FUZZ_CHECK(static_cast<int64_t>(spec.stop.size()) <= limits.max_stop_strings, "stop count");
  for (const std::string& s : spec.stop) {
    FUZZ_CHECK(!s.empty() && static_cast<int64_t>(s.size()) <= limits.max_stop_string_bytes,
               "stop string size");
  }

  // Stream the prompt's token bytes through the stop string matcher.
  std::string text;
  std::string streamed;
  cpserve::router::StopStringMatcher matcher(spec.stop);
  for (int32_t id : prompt) {
    absl::StatusOr<absl::string_view> bytes = tok.TokenBytes(id);
    FUZZ_CHECK(bytes.ok(), bytes.status().ToString());
    text.append(bytes->data(), bytes->size());
    streamed += matcher.Add(*bytes);
  }
  streamed += matcher.Flush();
  cpserve::router::StopStringMatcher whole(spec.stop);
  std::string at_once = whole.Add(text);
  at_once += whole.Flush();
  const std::string expected = ReferenceCut(text, spec.stop);
  FUZZ_CHECK(streamed == expected, "streamed stop-string cut differs from brute force");
  FUZZ_CHECK(at_once == expected, "one-chunk stop-string cut differs from brute force");
  // Stop strings are non-empty, so a match always cuts something.
  FUZZ_CHECK(matcher.stopped() == (expected.size() != text.size()),
             "stopped() disagrees with brute force");
  return 0;
}
