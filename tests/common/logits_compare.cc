#include "tests/common/logits_compare.h"

#include <algorithm>
#include <cmath>

namespace cpserve::testing {

double RowError(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, scale = 1e-30;
  for (size_t v = 0; v < want.size(); ++v) {
    diff = std::max(diff, std::fabs(double{got[v]} - want[v]));
    scale = std::max(scale, std::fabs(double{want[v]}));
  }
  return diff / scale;
}

double TopTwoGap(const std::vector<float>& row) {
  double a = -1e30, b = -1e30, scale = 1e-30;
  for (float x : row) {
    if (x > a) {
      b = a;
      a = x;
    } else if (x > b) {
      b = x;
    }
    scale = std::max(scale, std::fabs(double{x}));
  }
  return (a - b) / scale;
}

}  // namespace cpserve::testing
