// Text normalization before pre-tokenization. Byte-level BPE tokenizers use none
// (GPT-2, Llama 3) or Unicode NFC (Qwen2). NFC needs ICU; without ICU at build time
// an NFC normalizer is rejected as Unimplemented rather than silently skipped.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace cpserve::tokenizer {

class Normalizer {
 public:
  // Parses the "normalizer" value of tokenizer.json: null, {"type": "NFC"}, or a
  // Sequence of those. Other types are Unimplemented.
  static absl::StatusOr<Normalizer> FromJson(const nlohmann::json& value);

  // True when Normalize() may change text.
  bool active() const { return nfc_; }

  // Normalizes valid UTF-8 `text`.
  std::string Normalize(absl::string_view text) const;

 private:
  bool nfc_ = false;
};

}  // namespace cpserve::tokenizer
