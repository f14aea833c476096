// Stop strings over streamed text: text arrives in chunks; what may still turn into a
// stop string is held back, and a match cuts the text before the stop string. Of
// several stop strings, the occurrence that ends first wins (ties: the longer one), so
// the result does not depend on the chunking. Pure logic. Every chunk returned ends on a UTF-8
// boundary when the input chunks do and the stop strings are valid UTF-8 (a held-back suffix starts
// with a stop string's first byte, a lead byte).
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace cpserve::router {

class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Appends `chunk`; returns the text that became final. After a match, stopped() is
  // true, the returned text ends right before the earliest stop string, and later
  // calls return "".
  std::string Add(absl::string_view chunk);
  // End of stream: returns what was held back (nothing after a match).
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string text_;    // all text seen (until a match)
  size_t emitted_ = 0;  // bytes of text_ already returned
  bool stopped_ = false;
};

}  // namespace cpserve::router
