#include "worker/tokenizer/bpe_trainer.h"

#include <algorithm>
#include <map>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/tokenizer/byte_level.h"

namespace cpserve::tokenizer {

absl::StatusOr<BpeTrainingResult> TrainByteLevelBpe(const std::vector<std::string>& words,
                                                    int vocab_size,
                                                    const std::vector<int32_t>& reserved_ids) {
  const absl::flat_hash_set<int32_t> reserved(reserved_ids.begin(), reserved_ids.end());
  for (int32_t id : reserved_ids) {
    if (id < 256 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("reserved id ", id, " must be in [256, vocab_size)"));
    }
  }
  // Largest vocabulary the byte-pair filler can always reach.
  if (vocab_size > 65536) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size ", vocab_size, " exceeds 65536"));
  }
  BpeTrainingResult result;
  result.tokens.resize(vocab_size);
  absl::flat_hash_map<std::string, int32_t> ids;
  for (int b = 0; b < 256; ++b) {
    result.tokens[b] = BytesToByteLevel(std::string(1, static_cast<char>(b)));
    ids[result.tokens[b]] = b;
  }
  int32_t next_id = 256;
  auto advance = [&] {
    while (next_id < vocab_size && reserved.contains(next_id)) ++next_id;
  };
  advance();

  // Distinct words with counts, as id sequences; std::map keeps the order fixed.
  std::map<std::string, int64_t> counts;
  for (const std::string& w : words) ++counts[w];
  std::vector<std::pair<std::vector<int32_t>, int64_t>> corpus;
  for (const auto& [w, c] : counts) {
    std::vector<int32_t> seq;
    for (unsigned char b : w) seq.push_back(b);
    corpus.emplace_back(std::move(seq), c);
  }

  auto add_merge = [&](int32_t a, int32_t b) -> int32_t {
    result.merges.emplace_back(result.tokens[a], result.tokens[b]);
    std::string merged = result.tokens[a] + result.tokens[b];
    auto it = ids.find(merged);
    if (it != ids.end()) return it->second;  // Same string reached by another path.
    const int32_t id = next_id++;
    result.tokens[id] = merged;
    ids.emplace(std::move(merged), id);
    advance();
    return id;
  };

  while (next_id < vocab_size) {
    std::map<std::pair<int32_t, int32_t>, int64_t> pairs;
    for (const auto& [seq, c] : corpus) {
      for (size_t i = 0; i + 1 < seq.size(); ++i) pairs[{seq[i], seq[i + 1]}] += c;
    }
    if (pairs.empty()) break;
    auto best = pairs.begin();
    for (auto it = pairs.begin(); it != pairs.end(); ++it) {
      if (it->second > best->second) {
        best = it;
      } else if (it->second == best->second) {
        const auto key = [&](const auto& p) {
          return std::pair(result.tokens[p.first.first], result.tokens[p.first.second]);
        };
        if (key(*it) < key(*best)) best = it;
      }
    }
    const auto [a, b] = best->first;
    const int32_t merged = add_merge(a, b);
    for (auto& [seq, c] : corpus) {
      std::vector<int32_t> out;
      out.reserve(seq.size());
      for (size_t i = 0; i < seq.size(); ++i) {
        if (i + 1 < seq.size() && seq[i] == a && seq[i + 1] == b) {
          out.push_back(merged);
          ++i;
        } else {
          out.push_back(seq[i]);
        }
      }
      seq = std::move(out);
    }
  }
  for (int a = 0; a < 256 && next_id < vocab_size; ++a) {
    for (int b = 0; b < 256 && next_id < vocab_size; ++b) {
      if (!ids.contains(result.tokens[a] + result.tokens[b])) add_merge(a, b);
    }
  }
  if (next_id < vocab_size) return absl::InternalError("BPE trainer could not fill the vocabulary");
  return result;
}

}  // namespace cpserve::tokenizer
