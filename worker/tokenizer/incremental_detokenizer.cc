#include "worker/tokenizer/incremental_detokenizer.h"

#include "worker/tokenizer/utf8.h"

namespace cpserve::tokenizer {

absl::StatusOr<std::string> IncrementalDetokenizer::Add(int32_t id) {
  absl::StatusOr<absl::string_view> bytes = tokenizer_->TokenBytes(id);
  if (!bytes.ok()) return bytes.status();
  std::string out;
  if (skip_special_ && tokenizer_->IsSpecial(id)) return out;
  pending_.append(bytes->data(), bytes->size());
  const size_t consumed = AppendUtf8Lossy(pending_, /*final=*/false, &out);
  pending_.erase(0, consumed);
  return out;
}

std::string IncrementalDetokenizer::Flush() {
  std::string out = Utf8Lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace cpserve::tokenizer
