#include "services/bench/workload.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"

namespace cpserve::bench {
namespace {

constexpr const char* kWords[] = {
    "the",   "of",    "and",    "to",     "in",     "is",    "that",  "for",   "it",
    "as",    "was",   "with",   "be",     "by",     "on",    "not",   "he",    "this",
    "are",   "or",    "his",    "from",   "at",     "which", "but",   "have",  "an",
    "had",   "they",  "you",    "were",   "their",  "one",   "all",   "we",    "can",
    "her",   "has",   "there",  "been",   "if",     "more",  "when",  "will",  "would",
    "who",   "so",    "no",     "river",  "stone",  "light", "house", "water", "time",
    "model", "token", "server", "garden", "window", "cloud", "north", "paper", "green"};
constexpr size_t kNumWords = sizeof(kWords) / sizeof(kWords[0]);

// Per-request streams derived from the run's seed, so request i is the same whatever
// the number of requests before it.
std::mt19937_64 RequestRng(uint64_t seed, int64_t index, uint64_t stream) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                    static_cast<uint32_t>(stream)};
  return std::mt19937_64(seq);
}

void DrawLengths(const WorkloadOptions& o, int64_t index, PlannedRequest& r) {
  std::mt19937_64 rng = RequestRng(o.seed, index, 0);
  r.index = index;
  r.prompt_tokens = o.prompt_tokens.Sample(rng);
  r.max_tokens = o.output_tokens.Sample(rng);
}

}  // namespace

std::vector<PlannedRequest> BuildIdRequests(const WorkloadOptions& o, int64_t n,
                                            int64_t first_index) {
  std::vector<int32_t> allowed;
  for (int32_t id = 0; id < o.vocab_size; ++id) {
    if (std::find(o.excluded_ids.begin(), o.excluded_ids.end(), id) == o.excluded_ids.end()) {
      allowed.push_back(id);
    }
  }
  if (allowed.empty()) allowed.push_back(0);
  std::vector<PlannedRequest> out(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) {
    PlannedRequest& r = out[i];
    DrawLengths(o, first_index + i, r);
    std::mt19937_64 rng = RequestRng(o.seed, first_index + i, 1);
    std::uniform_int_distribution<size_t> pick(0, allowed.size() - 1);
    r.prompt_ids.resize(r.prompt_tokens);
    for (int32_t& id : r.prompt_ids) id = allowed[pick(rng)];
  }
  return out;
}

absl::StatusOr<TextPrompt> FitTextPrompt(int64_t tokens, std::mt19937_64& rng,
                                         const Tokenizer& tokenize) {
  std::uniform_int_distribution<size_t> pick(0, kNumWords - 1);
  // Tokens the server adds around the text (BOS): the difference with and without.
  absl::StatusOr<Tokenized> with = tokenize("a", true);
  absl::StatusOr<Tokenized> without = tokenize("a", false);
  if (!with.ok()) return with.status();
  if (!without.ok()) return without.status();
  const int64_t extra = static_cast<int64_t>(with->ids.size() - without->ids.size());
  const int64_t body = tokens - extra;
  if (body < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a text prompt needs more than ", extra, " tokens (the BOS token)"));
  }
  // Enough words: each word is at least one token.
  std::string text;
  for (int64_t w = 0; w < body; ++w) absl::StrAppend(&text, w == 0 ? "" : " ", kWords[pick(rng)]);
  absl::StatusOr<Tokenized> all = tokenize(text, false);
  if (!all.ok()) return all.status();
  if (static_cast<int64_t>(all->pieces.size()) < body) {
    return absl::InternalError("the tokenizer returned fewer tokens than words");
  }
  // Cut after `k` tokens, then correct k by the length the cut text actually has.
  int64_t k = body;
  for (int attempt = 0; attempt < 8 && k >= 1 && k <= static_cast<int64_t>(all->pieces.size());
       ++attempt) {
    std::string cut;
    for (int64_t i = 0; i < k; ++i) cut += all->pieces[i];
    absl::StatusOr<Tokenized> got = tokenize(cut, true);
    if (!got.ok()) return got.status();
    const int64_t n = static_cast<int64_t>(got->ids.size());
    if (n == tokens) return TextPrompt{std::move(cut), std::move(got->ids)};
    k += tokens - n;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("could not fit random text to exactly ", tokens, " tokens; use token ids"));
}

absl::StatusOr<std::vector<PlannedRequest>> BuildTextRequests(const WorkloadOptions& o, int64_t n,
                                                              int64_t first_index,
                                                              const Tokenizer& tokenize) {
  std::vector<PlannedRequest> out(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) {
    PlannedRequest& r = out[i];
    DrawLengths(o, first_index + i, r);
    std::mt19937_64 rng = RequestRng(o.seed, first_index + i, 2);
    absl::StatusOr<TextPrompt> fitted = FitTextPrompt(r.prompt_tokens, rng, tokenize);
    if (!fitted.ok()) return fitted.status();
    r.prompt_ids = std::move(fitted->ids);
    r.prompt_text = std::move(fitted->text);
  }
  return out;
}

}  // namespace cpserve::bench
