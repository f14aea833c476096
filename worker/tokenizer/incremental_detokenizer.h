// Streaming detokenization: feed generated token ids one at a time and get the text
// that became final. A token may end inside a UTF-8 sequence (byte tokens of an
// emoji, say), so incomplete trailing bytes are held back until later tokens complete
// them. Ill-formed sequences become U+FFFD as soon as they are known to be ill-formed;
// every returned chunk is valid UTF-8, and the concatenation of all chunks plus
// Flush() equals Tokenizer::Decode() of the whole sequence.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "worker/tokenizer/tokenizer.h"

namespace cpserve::tokenizer {

class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object.
  explicit IncrementalDetokenizer(const Tokenizer* tokenizer, bool skip_special = false)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}

  // Appends token `id`; returns the newly completed text (possibly empty).
  // OutOfRange for an id that is not a token (the state is then unchanged).
  absl::StatusOr<std::string> Add(int32_t id);

  // Ends the stream: returns what is held back, an incomplete trailing sequence
  // becoming U+FFFD. The detokenizer can then be reused for a new stream.
  std::string Flush();

  // Bytes held back waiting for the rest of a UTF-8 sequence (at most 3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace cpserve::tokenizer
