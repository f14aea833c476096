#include "router/stop_strings.h"

#include <algorithm>

namespace cpserve::router {

std::string StopStringMatcher::Add(absl::string_view chunk) {
  if (stopped_) return "";
  text_.append(chunk.data(), chunk.size());
  // A new match must end inside the new chunk, so it starts at most (longest - 1) bytes
  // before it; searching from the first unreturned byte covers that (held-back bytes are
  // shorter than the longest stop string).
  // The match that completes first wins (ties: the longer one), so the cut does not
  // depend on how the text was chunked.
  size_t best_end = std::string::npos, best_pos = std::string::npos;
  for (const std::string& s : stops_) {
    const size_t pos = text_.find(s, emitted_);
    if (pos == std::string::npos) continue;
    const size_t end = pos + s.size();
    if (end < best_end || (end == best_end && pos < best_pos)) {
      best_end = end;
      best_pos = pos;
    }
  }
  if (best_pos != std::string::npos) {
    stopped_ = true;
    std::string out = text_.substr(emitted_, best_pos - emitted_);
    emitted_ = best_pos;
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_) {
    const size_t max_len = std::min(s.size() - 1, text_.size() - emitted_);
    for (size_t len = max_len; len > hold; --len) {
      if (absl::string_view(text_).substr(text_.size() - len) ==
          absl::string_view(s).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  const size_t end = text_.size() - hold;
  std::string out = text_.substr(emitted_, end - emitted_);
  emitted_ = end;
  return out;
}

std::string StopStringMatcher::Flush() {
  if (stopped_) return "";
  std::string out = text_.substr(emitted_);
  emitted_ = text_.size();
  return out;
}

}  // namespace cpserve::router
