// The requests of a `cpserve bench` run: prompt and output lengths drawn from length
// specs, prompts made of random token ids or of random text fitted to an exact length.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/bench/length_spec.h"

namespace cpserve::bench {

struct PlannedRequest {
  int64_t index = 0;
  std::vector<int32_t> prompt_ids;  // set for token-id prompts (and text ones once tokenized)
  std::string prompt_text;          // set for text prompts
  int64_t prompt_tokens = 0;        // exact length the server will see
  int64_t max_tokens = 0;
};

struct WorkloadOptions {
  LengthSpec prompt_tokens = LengthSpec::Fixed(128);
  LengthSpec output_tokens = LengthSpec::Fixed(128);
  uint64_t seed = 0;
  // Token-id prompts draw ids uniformly from [0, vocab_size) minus `excluded_ids`
  // (special tokens such as BOS/EOS).
  int32_t vocab_size = 256;
  std::vector<int32_t> excluded_ids;
};

// `n` requests with indices first_index.. (the same options and seed give the same
// requests, whatever the target). Lengths come from one stream, prompt ids from another.
std::vector<PlannedRequest> BuildIdRequests(const WorkloadOptions& options, int64_t n,
                                            int64_t first_index);

// Tokenizes text as the server will for a text prompt (special tokens included); returns
// the ids and each token's text.
struct Tokenized {
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
};
using Tokenizer = std::function<absl::StatusOr<Tokenized>(const std::string& text, bool add_bos)>;

struct TextPrompt {
  std::string text;
  std::vector<int32_t> ids;  // its tokens as the server sees them (BOS included)
};

// Random text of exactly `tokens` tokens under `tokenize` (with BOS when the server adds
// one), made of common English words chosen with `rng`. Fails when no text of that length
// is found in a few tries (a tokenizer that merges across the cut).
absl::StatusOr<TextPrompt> FitTextPrompt(int64_t tokens, std::mt19937_64& rng,
                                         const Tokenizer& tokenize);

// Like BuildIdRequests, with text prompts fitted by FitTextPrompt (prompt_ids holds the
// ids of the fitted text).
absl::StatusOr<std::vector<PlannedRequest>> BuildTextRequests(const WorkloadOptions& options,
                                                              int64_t n, int64_t first_index,
                                                              const Tokenizer& tokenize);

}  // namespace cpserve::bench
