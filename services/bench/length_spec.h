// Token-length distributions of `cpserve bench` (--prompt_tokens, --output_tokens).
//
// Grammar (no spaces):  SPEC := ITEM (',' ITEM)*     ITEM := RANGE ['@' WEIGHT]
//                       RANGE := N | N '-' N          N := digits ['k' | 'K' | 'm' | 'M']
// A suffix k means ×1024, m ×1048576 (context sizes: "16k" = 16384, "128k" = 131072).
// Each item is picked with probability weight / (sum of weights) (default weight 1), then
// a length uniformly in its inclusive range. Examples: "128", "16k", "100-2000",
// "32-64@3,4k@1" (three quarters short prompts, one quarter 4096 tokens).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cpserve::bench {

class LengthSpec {
 public:
  struct Item {
    int64_t lo = 0;  // inclusive
    int64_t hi = 0;  // inclusive, >= lo
    double weight = 1;
  };

  // Parses SPEC; lengths must be >= 1 and weights > 0 (and finite).
  static absl::StatusOr<LengthSpec> Parse(const std::string& spec);
  // A fixed length.
  static LengthSpec Fixed(int64_t n);

  // Maps u in [0, 1) to a length: the item whose cumulative weight interval holds u, then
  // the value at u's relative position inside that interval. A uniform u gives the
  // distribution described above exactly (up to floating-point rounding at the edges).
  int64_t Quantile(double u) const;
  // Quantile of a uniform draw from `rng`.
  int64_t Sample(std::mt19937_64& rng) const;

  int64_t Min() const;
  int64_t Max() const;
  bool IsFixed() const { return Min() == Max(); }
  const std::vector<Item>& items() const { return items_; }
  // The canonical text of the spec ("16384", "100-2000", "32-64@3,4096@1").
  std::string ToString() const;

 private:
  std::vector<Item> items_;
  std::vector<double> cumulative_;  // cumulative_[i] = (w_0 + ... + w_i) / total
};

}  // namespace cpserve::bench
