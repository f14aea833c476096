// A tiny deterministic byte-level BPE trainer, used to build the synthetic tokenizer.
// Starts from the 256 byte tokens (id b = byte b), counts adjacent pairs over the
// pre-tokenized corpus and repeatedly merges the most frequent pair (ties: smallest
// pair of byte-level strings) until the vocabulary is large enough. When the corpus
// runs out of pairs, byte pairs in numeric order fill the rest (valid merges that
// simply never fire on the corpus), so any size can be reached.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cpserve::tokenizer {

struct BpeTrainingResult {
  // Byte-level strings by id; ids listed in `reserved_ids` hold empty strings.
  std::vector<std::string> tokens;
  // Merges in rank order, as byte-level strings.
  std::vector<std::pair<std::string, std::string>> merges;
};

// Trains until `vocab_size` ids exist (ids 0..255 bytes, `reserved_ids` skipped for
// special tokens, the rest merges). `words` are pre-tokenized raw-byte pieces.
absl::StatusOr<BpeTrainingResult> TrainByteLevelBpe(const std::vector<std::string>& words,
                                                    int vocab_size,
                                                    const std::vector<int32_t>& reserved_ids);

}  // namespace cpserve::tokenizer
