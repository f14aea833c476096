#include "worker/tokenizer/added_vocabulary.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace cpserve::tokenizer {
namespace {

using json = nlohmann::json;

absl::StatusOr<bool> FlagOf(const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return false;
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " must be a boolean"));
  }
  return it->get<bool>();
}

bool IsSpace(char c) { return absl::ascii_isspace(static_cast<unsigned char>(c)); }

// Word characters for single_word: ASCII alphanumerics, '_' and any non-ASCII byte
// (an approximation of Unicode alphanumerics that suffices for boundary checks).
bool IsWordByte(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x80 || absl::ascii_isalnum(u) || u == '_';
}

}  // namespace

absl::StatusOr<AddedVocabulary> AddedVocabulary::FromJson(const json& value) {
  AddedVocabulary av;
  if (value.is_null()) return av;
  if (!value.is_array()) return absl::InvalidArgumentError("added_tokens must be an array");
  for (size_t i = 0; i < value.size(); ++i) {
    const json& t = value[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!t.is_object())
      return absl::InvalidArgumentError(absl::StrCat(where, " must be an object"));
    auto id = t.find("id");
    if (id == t.end() || !id->is_number_integer() || id->get<int64_t>() < 0 ||
        id->get<int64_t>() >= (1 << 24)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".id missing or not an integer in [0, 2^24)"));
    }
    auto content = t.find("content");
    if (content == t.end() || !content->is_string() ||
        content->get_ref<const std::string&>().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".content missing or not a non-empty string"));
    }
    AddedToken tok;
    tok.id = id->get<int32_t>();
    tok.content = content->get<std::string>();
    for (auto [key, field] :
         {std::pair{"special", &tok.special}, std::pair{"single_word", &tok.single_word},
          std::pair{"lstrip", &tok.lstrip}, std::pair{"rstrip", &tok.rstrip}}) {
      absl::StatusOr<bool> flag = FlagOf(t, key, where);
      if (!flag.ok()) return flag.status();
      *field = *flag;
    }
    av.by_content_.emplace(tok.content, static_cast<int>(av.tokens_.size()));
    av.tokens_.push_back(std::move(tok));
  }
  for (int i = 0; i < static_cast<int>(av.tokens_.size()); ++i) {
    av.by_first_byte_[static_cast<unsigned char>(av.tokens_[i].content[0])].push_back(i);
  }
  for (auto& [byte, list] : av.by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [&](int a, int b) {
      return av.tokens_[a].content.size() > av.tokens_[b].content.size();
    });
  }
  return av;
}

const AddedToken* AddedVocabulary::FindByContent(absl::string_view content) const {
  auto it = by_content_.find(content);
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

std::vector<TextSegment> AddedVocabulary::Split(absl::string_view text, bool match_special) const {
  std::vector<TextSegment> out;
  if (by_first_byte_.empty()) {
    if (!text.empty()) out.push_back({text, -1});
    return out;
  }
  size_t plain_begin = 0;  // Start of the pending plain-text segment.
  size_t i = 0;
  while (i < text.size()) {
    auto bucket = by_first_byte_.find(static_cast<unsigned char>(text[i]));
    const AddedToken* match = nullptr;
    if (bucket != by_first_byte_.end()) {
      for (int idx : bucket->second) {
        const AddedToken& tok = tokens_[idx];
        if (tok.special && !match_special) continue;
        if (text.substr(i, tok.content.size()) != tok.content) continue;
        if (tok.single_word) {
          const size_t end = i + tok.content.size();
          if ((i > 0 && IsWordByte(text[i - 1])) || (end < text.size() && IsWordByte(text[end]))) {
            continue;
          }
        }
        match = &tok;
        break;
      }
    }
    if (match == nullptr) {
      ++i;
      continue;
    }
    size_t left = i, right = i + match->content.size();
    if (match->lstrip) {
      while (left > plain_begin && IsSpace(text[left - 1])) --left;
    }
    if (match->rstrip) {
      while (right < text.size() && IsSpace(text[right])) ++right;
    }
    if (left > plain_begin) out.push_back({text.substr(plain_begin, left - plain_begin), -1});
    out.push_back({absl::string_view(), match->id});
    plain_begin = i = right;
  }
  if (plain_begin < text.size()) out.push_back({text.substr(plain_begin), -1});
  return out;
}

}  // namespace cpserve::tokenizer
