// Comparisons of logits rows for tests that check one engine against another within
// a dtype tolerance (bf16 GPU runs, CP pools against one rank).
#pragma once

#include <vector>

namespace cpserve::testing {

// max |got − want| / max |want| of one logits row (want's length).
double RowError(const std::vector<float>& got, const std::vector<float>& want);

// (largest − second largest) / max |row|: how close greedy sampling was to a tie, so
// that a token difference at a near-tie is not a failure.
double TopTwoGap(const std::vector<float>& row);

}  // namespace cpserve::testing
