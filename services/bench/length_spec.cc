#include "services/bench/length_spec.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace cpserve::bench {
namespace {

absl::StatusOr<int64_t> ParseCount(absl::string_view text, absl::string_view spec) {
  int64_t scale = 1;
  if (!text.empty() && (text.back() == 'k' || text.back() == 'K')) {
    scale = int64_t{1} << 10;
    text.remove_suffix(1);
  } else if (!text.empty() && (text.back() == 'm' || text.back() == 'M')) {
    scale = int64_t{1} << 20;
    text.remove_suffix(1);
  }
  int64_t n = 0;
  if (text.empty() ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(text, &n) || n > std::numeric_limits<int32_t>::max() / scale) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad length '", text, "' in '", spec, "' (want N, Nk, or N-M)"));
  }
  if (n * scale < 1) {
    return absl::InvalidArgumentError(absl::StrCat("lengths must be >= 1 in '", spec, "'"));
  }
  return n * scale;
}

}  // namespace

absl::StatusOr<LengthSpec> LengthSpec::Parse(const std::string& spec) {
  LengthSpec out;
  if (spec.empty()) return absl::InvalidArgumentError("empty length spec");
  for (absl::string_view item_text : absl::StrSplit(spec, ',')) {
    Item item;
    const size_t at = item_text.find('@');
    if (at != absl::string_view::npos) {
      const absl::string_view w = item_text.substr(at + 1);
      if (!absl::SimpleAtod(w, &item.weight) || !std::isfinite(item.weight) || !(item.weight > 0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad weight '", w, "' in '", spec, "' (want a number > 0)"));
      }
      item_text = item_text.substr(0, at);
    }
    const size_t dash = item_text.find('-');
    absl::StatusOr<int64_t> lo = ParseCount(item_text.substr(0, dash), spec);
    if (!lo.ok()) return lo.status();
    item.lo = item.hi = *lo;
    if (dash != absl::string_view::npos) {
      absl::StatusOr<int64_t> hi = ParseCount(item_text.substr(dash + 1), spec);
      if (!hi.ok()) return hi.status();
      if (*hi < *lo) {
        return absl::InvalidArgumentError(
            absl::StrCat("range '", item_text, "' in '", spec, "' ends before it starts"));
      }
      item.hi = *hi;
    }
    out.items_.push_back(item);
  }
  double total = 0;
  for (const Item& item : out.items_) total += item.weight;
  double acc = 0;
  for (const Item& item : out.items_) {
    acc += item.weight;
    out.cumulative_.push_back(acc / total);
  }
  out.cumulative_.back() = 1.0;
  return out;
}

LengthSpec LengthSpec::Fixed(int64_t n) {
  LengthSpec out;
  out.items_.push_back(Item{n, n, 1});
  out.cumulative_.push_back(1.0);
  return out;
}

int64_t LengthSpec::Quantile(double u) const {
  u = std::clamp(u, 0.0, std::nextafter(1.0, 0.0));
  const size_t i =
      std::upper_bound(cumulative_.begin(), cumulative_.end(), u) - cumulative_.begin();
  const size_t k = std::min(i, items_.size() - 1);
  const double lo_cum = k == 0 ? 0.0 : cumulative_[k - 1];
  const double width = cumulative_[k] - lo_cum;
  const double rel = width > 0 ? std::clamp((u - lo_cum) / width, 0.0, 1.0) : 0.0;
  const Item& item = items_[k];
  const int64_t span = item.hi - item.lo + 1;
  const int64_t offset =
      std::min<int64_t>(static_cast<int64_t>(rel * static_cast<double>(span)), span - 1);
  return item.lo + offset;
}

int64_t LengthSpec::Sample(std::mt19937_64& rng) const {
  return Quantile(std::uniform_real_distribution<double>(0.0, 1.0)(rng));
}

int64_t LengthSpec::Min() const {
  int64_t m = items_.front().lo;
  for (const Item& item : items_) m = std::min(m, item.lo);
  return m;
}

int64_t LengthSpec::Max() const {
  int64_t m = items_.front().hi;
  for (const Item& item : items_) m = std::max(m, item.hi);
  return m;
}

std::string LengthSpec::ToString() const {
  std::string out;
  for (const Item& item : items_) {
    if (!out.empty()) out += ",";
    absl::StrAppend(&out, item.lo);
    if (item.hi != item.lo) absl::StrAppend(&out, "-", item.hi);
    if (items_.size() > 1) absl::StrAppend(&out, "@", item.weight);
  }
  return out;
}

}  // namespace cpserve::bench
