// The BPE model of tokenizer.json ("model": {"type": "BPE", ...}): vocab (token ->
// id) and ranked merges. Encodes one pre-tokenized, byte-level-mapped word: start from
// its characters, repeatedly apply the lowest-rank merge among adjacent pairs (the
// leftmost one on ties) until none applies — exactly what `tokenizers` computes —
// with a bounded cache of recent words.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace cpserve::tokenizer {

class BpeModel {
 public:
  // Parses "model". Merges may be "a b" strings or ["a", "b"] pairs. InvalidArgument
  // for malformed fields (naming them), Unimplemented for non-BPE types, byte_fallback,
  // dropout, continuing_subword_prefix and end_of_word_suffix.
  static absl::StatusOr<BpeModel> FromJson(const nlohmann::json& model);

  BpeModel(BpeModel&&) noexcept;
  BpeModel& operator=(BpeModel&&) noexcept;
  ~BpeModel();

  // Appends the ids of `word` (a byte-level string) to `ids`. Thread-safe.
  void Encode(absl::string_view word, std::vector<int32_t>* ids) const;

  const absl::flat_hash_map<std::string, int32_t>& vocab() const { return vocab_; }
  size_t num_merges() const { return merges_.size(); }

 private:
  struct MergeTarget {
    int32_t rank;
    int32_t id;
  };
  struct Cache;

  BpeModel();
  void EncodeUncached(absl::string_view word, std::vector<int32_t>* ids) const;
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  absl::flat_hash_map<std::string, int32_t> vocab_;
  absl::flat_hash_map<uint64_t, MergeTarget> merges_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::unique_ptr<Cache> cache_;
};

}  // namespace cpserve::tokenizer
