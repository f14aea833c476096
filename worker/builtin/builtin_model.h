// The built-in model: the synthetic "tiny" Llama (worker/model/synthetic_model.h)
// with the synthetic byte-level BPE tokenizer (worker/tokenizer), written once in
// Hugging Face format and reused. It is what `--model=""` means everywhere.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "worker/model/synthetic_model.h"
#include "worker/model/synthetic_weights.h"

namespace cpserve {

inline constexpr char kBuiltinModelName[] = "cpserve-tiny-v1";

// The tiny preset with the synthetic tokenizer's vocabulary and special ids
// (bos 256, eos 257), the tokenizer.json and a tokenizer_config.json filled in.
absl::StatusOr<SyntheticModelOptions> BuiltinModelOptions(uint64_t seed = 0);

// Writes the built-in model to `dir` (make-model).
absl::Status WriteBuiltinModel(const std::string& dir, uint64_t seed = 0);

// The directory of the built-in model under $XDG_CACHE_HOME/cpserve (or
// ~/.cache/cpserve, or /tmp/cpserve-cache), written there on first use. Safe
// against concurrent first uses by several processes (write to a temporary
// directory, then rename).
absl::StatusOr<std::string> EnsureBuiltinModel();

// A synthetic model's directory (worker/model/synthetic_weights.h): config.json, the
// built-in tokenizer (ids 0..511; bos 256, eos 257) and the marker naming the spec —
// no weight files; loaders generate the weights on the rank's backend.
absl::Status WriteSyntheticModelDir(const std::string& dir, const SyntheticSpec& spec);
// The spec's directory in the model cache (written on first use, like the built-in).
absl::StatusOr<std::string> EnsureSyntheticModelDir(const SyntheticSpec& spec);

// The one model selection path: "synthetic:<preset>[,layers=N][,seed=S]" →
// EnsureSyntheticModelDir; another non-empty `flag` is a Hugging Face directory;
// empty → EnsureBuiltinModel().
absl::StatusOr<std::string> ResolveModelDir(const std::string& flag);

}  // namespace cpserve
