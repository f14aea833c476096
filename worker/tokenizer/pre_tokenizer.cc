#include "worker/tokenizer/pre_tokenizer.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/tokenizer/byte_level.h"

namespace cpserve::tokenizer {
namespace {

using json = nlohmann::json;

absl::StatusOr<bool> OptionalBool(const json& obj, const char* key, bool def,
                                  const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return def;
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " must be a boolean"));
  }
  return it->get<bool>();
}

absl::StatusOr<SplitBehavior> ParseBehavior(const json& obj, const std::string& where) {
  auto it = obj.find("behavior");
  if (it == obj.end() || !it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".behavior missing or not a string"));
  }
  const std::string& b = it->get_ref<const std::string&>();
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return absl::InvalidArgumentError(absl::StrCat(where, ".behavior '", b, "' is unknown"));
}

}  // namespace

absl::Status SplitWithRegex(const Pcre2Regex& regex, SplitBehavior behavior, absl::string_view text,
                            std::vector<std::string>* out) {
  absl::StatusOr<std::vector<std::pair<size_t, size_t>>> matches = regex.FindAll(text);
  if (!matches.ok()) return matches.status();
  // Intervals covering the text in order, each flagged as a match or a gap.
  struct Interval {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Interval> intervals;
  size_t pos = 0;
  for (const auto& [b, e] : *matches) {
    if (b > pos) intervals.push_back({pos, b, false});
    intervals.push_back({b, e, true});
    pos = e;
  }
  if (pos < text.size()) intervals.push_back({pos, text.size(), false});

  // Same merging rules as tokenizers' SplitDelimiterBehavior.
  std::vector<Interval> pieces;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      pieces = std::move(intervals);
      break;
    case SplitBehavior::kRemoved:
      for (const Interval& iv : intervals) {
        if (!iv.is_match) pieces.push_back(iv);
      }
      break;
    case SplitBehavior::kContiguous:
      for (const Interval& iv : intervals) {
        if (iv.is_match && !pieces.empty() && pieces.back().is_match) {
          pieces.back().end = iv.end;
        } else {
          pieces.push_back(iv);
        }
      }
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Interval& iv : intervals) {
        if (iv.is_match && !previous_match && !pieces.empty()) {
          pieces.back().end = iv.end;
        } else {
          pieces.push_back(iv);
        }
        previous_match = iv.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = intervals.rbegin(); it != intervals.rend(); ++it) {
        if (it->is_match && !previous_match && !pieces.empty()) {
          pieces.back().begin = it->begin;
        } else {
          pieces.push_back(*it);
        }
        previous_match = it->is_match;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    }
  }
  for (const Interval& iv : pieces) {
    if (iv.end > iv.begin) out->emplace_back(text.substr(iv.begin, iv.end - iv.begin));
  }
  return absl::OkStatus();
}

absl::Status PreTokenizer::AddSteps(const json& value, const std::string& where,
                                    std::vector<Step>* steps) {
  if (!value.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, " must be an object or null"));
  }
  auto type_it = value.find("type");
  if (type_it == value.end() || !type_it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".type missing or not a string"));
  }
  const std::string& type = type_it->get_ref<const std::string&>();
  if (type == "Sequence") {
    auto it = value.find("pretokenizers");
    if (it == value.end() || !it->is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".pretokenizers missing or not an array"));
    }
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s = AddSteps((*it)[i], absl::StrCat(where, ".pretokenizers[", i, "]"), steps);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    ByteLevelStep step;
    absl::StatusOr<bool> prefix = OptionalBool(value, "add_prefix_space", true, where);
    if (!prefix.ok()) return prefix.status();
    absl::StatusOr<bool> use_regex = OptionalBool(value, "use_regex", true, where);
    if (!use_regex.ok()) return use_regex.status();
    step.add_prefix_space = *prefix;
    step.use_regex = *use_regex;
    steps->emplace_back(std::in_place_type<ByteLevelStep>, step);
    return absl::OkStatus();
  }
  if (type == "Split") {
    absl::StatusOr<bool> invert = OptionalBool(value, "invert", false, where);
    if (!invert.ok()) return invert.status();
    if (*invert) {
      return absl::UnimplementedError(absl::StrCat(where, ": Split with invert: true"));
    }
    auto pat = value.find("pattern");
    if (pat == value.end() || !pat->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".pattern missing or not an object"));
    }
    bool literal;
    std::string pattern;
    if (auto r = pat->find("Regex"); r != pat->end() && r->is_string()) {
      literal = false;
      pattern = r->get<std::string>();
    } else if (auto s = pat->find("String"); s != pat->end() && s->is_string()) {
      literal = true;
      pattern = s->get<std::string>();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".pattern needs a string field 'Regex' or 'String'"));
    }
    absl::StatusOr<SplitBehavior> behavior = ParseBehavior(value, where);
    if (!behavior.ok()) return behavior.status();
    absl::StatusOr<Pcre2Regex> regex = Pcre2Regex::Compile(pattern, literal);
    if (!regex.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".pattern: ", regex.status().message()));
    }
    steps->emplace_back(SplitStep{std::move(*regex), *behavior});
    return absl::OkStatus();
  }
  if (type == "Metaspace") {
    return absl::UnimplementedError(absl::StrCat(
        where, ": pre-tokenizer 'Metaspace' (SentencePiece-style BPE) is not supported"));
  }
  return absl::UnimplementedError(
      absl::StrCat(where, ": pre-tokenizer type '", type, "' is not supported"));
}

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const json& value) {
  PreTokenizer pt;
  if (value.is_null()) return pt;
  absl::Status s = AddSteps(value, "pre_tokenizer", &pt.steps_);
  if (!s.ok()) return s;
  return pt;
}

bool PreTokenizer::has_byte_level() const {
  for (const Step& step : steps_) {
    if (std::holds_alternative<ByteLevelStep>(step)) return true;
  }
  return false;
}

absl::StatusOr<std::vector<std::string>> PreTokenizer::Split(absl::string_view text) const {
  std::vector<std::string> pieces;
  if (!text.empty()) pieces.emplace_back(text);
  for (const Step& step : steps_) {
    std::vector<std::string> next;
    if (const auto* split = std::get_if<SplitStep>(&step)) {
      for (const std::string& piece : pieces) {
        absl::Status s = SplitWithRegex(split->regex, split->behavior, piece, &next);
        if (!s.ok()) return s;
      }
    } else {
      const auto& bl = std::get<ByteLevelStep>(step);
      static const absl::StatusOr<Pcre2Regex>* const gpt2 =
          new absl::StatusOr<Pcre2Regex>(Pcre2Regex::Compile(kGpt2SplitPattern));
      if (!gpt2->ok()) return gpt2->status();
      for (std::string& piece : pieces) {
        if (bl.add_prefix_space && piece[0] != ' ') piece.insert(0, 1, ' ');
        std::vector<std::string> parts;
        if (bl.use_regex) {
          absl::Status s = SplitWithRegex(**gpt2, SplitBehavior::kIsolated, piece, &parts);
          if (!s.ok()) return s;
        } else {
          parts.push_back(std::move(piece));
        }
        for (const std::string& part : parts) next.push_back(BytesToByteLevel(part));
      }
    }
    pieces = std::move(next);
  }
  return pieces;
}

}  // namespace cpserve::tokenizer
