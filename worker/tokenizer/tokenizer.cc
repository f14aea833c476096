#include "worker/tokenizer/tokenizer.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "worker/tokenizer/byte_level.h"
#include "worker/tokenizer/utf8.h"

namespace cpserve::tokenizer {
namespace {

using json = nlohmann::json;

// Accepts a ByteLevel decoder, possibly inside a Sequence of ByteLevel decoders.
absl::Status CheckDecoder(const json& value, const std::string& where) {
  if (value.is_null()) {
    return absl::UnimplementedError(
        absl::StrCat(where, " is null; byte-level BPE needs a ByteLevel decoder"));
  }
  if (!value.is_object())
    return absl::InvalidArgumentError(absl::StrCat(where, " must be an object"));
  auto type = value.find("type");
  if (type == value.end() || !type->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".type missing or not a string"));
  }
  const std::string& t = type->get_ref<const std::string&>();
  if (t == "ByteLevel") return absl::OkStatus();
  if (t == "Sequence") {
    auto it = value.find("decoders");
    if (it == value.end() || !it->is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".decoders missing or not an array"));
    }
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s = CheckDecoder((*it)[i], absl::StrCat(where, ".decoders[", i, "]"));
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat(where, ": decoder type '", t, "' is not supported"));
}

absl::StatusOr<int32_t> IdOfAddedOrVocab(const std::string& content, const AddedVocabulary& added,
                                         const BpeModel& model, const std::string& where) {
  if (const AddedToken* t = added.FindByContent(content)) return t->id;
  auto it = model.vocab().find(content);
  if (it != model.vocab().end()) return it->second;
  return absl::InvalidArgumentError(absl::StrCat(where, ": unknown token '", content, "'"));
}

// Collects the ids the post-processor puts before and after a single sequence.
absl::Status ParsePostProcessor(const json& value, const std::string& where,
                                const AddedVocabulary& added, const BpeModel& model,
                                std::vector<int32_t>* prefix, std::vector<int32_t>* suffix) {
  if (value.is_null()) return absl::OkStatus();
  if (!value.is_object())
    return absl::InvalidArgumentError(absl::StrCat(where, " must be an object"));
  auto type = value.find("type");
  if (type == value.end() || !type->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".type missing or not a string"));
  }
  const std::string& t = type->get_ref<const std::string&>();
  if (t == "ByteLevel") return absl::OkStatus();  // Offsets only.
  if (t == "Sequence") {
    auto it = value.find("processors");
    if (it == value.end() || !it->is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".processors missing or not an array"));
    }
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s = ParsePostProcessor((*it)[i], absl::StrCat(where, ".processors[", i, "]"),
                                          added, model, prefix, suffix);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (t == "TemplateProcessing") {
    auto single = value.find("single");
    if (single == value.end() || !single->is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".single missing or not an array"));
    }
    const json* specials = nullptr;
    if (auto it = value.find("special_tokens"); it != value.end() && it->is_object()) {
      specials = &*it;
    }
    bool seen_sequence = false;
    for (size_t i = 0; i < single->size(); ++i) {
      const json& piece = (*single)[i];
      const std::string pw = absl::StrCat(where, ".single[", i, "]");
      if (piece.is_object() && piece.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      auto st = piece.is_object() ? piece.find("SpecialToken") : piece.end();
      if (!piece.is_object() || st == piece.end() || !st->is_object() || !st->contains("id") ||
          !(*st)["id"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(pw, " must be {\"Sequence\": ...} or {\"SpecialToken\": {\"id\": ...}}"));
      }
      const std::string name = (*st)["id"].get<std::string>();
      std::vector<int32_t> ids;
      const json* entry =
          specials != nullptr && specials->contains(name) ? &(*specials)[name] : nullptr;
      if (entry != nullptr && entry->is_object() && entry->contains("ids") &&
          (*entry)["ids"].is_array()) {
        for (const json& id : (*entry)["ids"]) {
          if (!id.is_number_integer() || id.get<int64_t>() < 0) {
            return absl::InvalidArgumentError(
                absl::StrCat(where, ".special_tokens['", name, "'].ids must hold integer ids"));
          }
          ids.push_back(id.get<int32_t>());
        }
      } else {
        absl::StatusOr<int32_t> id = IdOfAddedOrVocab(name, added, model, pw);
        if (!id.ok()) return id.status();
        ids.push_back(*id);
      }
      auto& dst = seen_sequence ? *suffix : *prefix;
      dst.insert(dst.end(), ids.begin(), ids.end());
    }
    return absl::OkStatus();
  }
  if (t == "RobertaProcessing" || t == "BertProcessing") {
    for (const char* key : {"cls", "sep"}) {
      auto it = value.find(key);
      if (it == value.end() || !it->is_array() || it->size() != 2 ||
          !(*it)[1].is_number_integer()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " must be [token, id]"));
      }
      (std::string(key) == "cls" ? prefix : suffix)->push_back((*it)[1].get<int32_t>());
    }
    return absl::OkStatus();
  }
  return absl::UnimplementedError(
      absl::StrCat(where, ": post-processor type '", t, "' is not supported"));
}

// The first of `names` that is an added token.
std::optional<int32_t> FirstAdded(const AddedVocabulary& added,
                                  std::initializer_list<absl::string_view> names) {
  for (absl::string_view name : names) {
    if (const AddedToken* t = added.FindByContent(name)) return t->id;
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<Tokenizer> Tokenizer::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open tokenizer file ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read tokenizer file ", path));
  absl::StatusOr<Tokenizer> tok = FromJson(buffer.str());
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(path, ": ", tok.status().message()));
  }
  return tok;
}

absl::StatusOr<Tokenizer> Tokenizer::FromJson(absl::string_view text) {
  const json root = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return absl::InvalidArgumentError("tokenizer.json is not valid JSON");
  if (!root.is_object()) return absl::InvalidArgumentError("tokenizer.json must hold an object");
  try {
    static const json kNull;
    auto field = [&](const char* key) -> const json& {
      auto it = root.find(key);
      return it == root.end() ? kNull : *it;
    };
    if (!root.contains("model")) return absl::InvalidArgumentError("field 'model' is missing");
    absl::StatusOr<BpeModel> model = BpeModel::FromJson(field("model"));
    if (!model.ok()) return model.status();
    absl::StatusOr<AddedVocabulary> added = AddedVocabulary::FromJson(field("added_tokens"));
    if (!added.ok()) return added.status();
    absl::StatusOr<Normalizer> normalizer = Normalizer::FromJson(field("normalizer"));
    if (!normalizer.ok()) return normalizer.status();
    absl::StatusOr<PreTokenizer> pre = PreTokenizer::FromJson(field("pre_tokenizer"));
    if (!pre.ok()) return pre.status();
    if (!pre->has_byte_level()) {
      return absl::UnimplementedError(
          "pre_tokenizer has no ByteLevel step: only byte-level BPE is supported");
    }
    absl::Status s = CheckDecoder(field("decoder"), "decoder");
    if (!s.ok()) return s;

    Tokenizer tok(std::move(*model), std::move(*pre), std::move(*normalizer), std::move(*added));
    s = ParsePostProcessor(field("post_processor"), "post_processor", tok.added_, tok.model_,
                           &tok.prefix_ids_, &tok.suffix_ids_);
    if (!s.ok()) return s;

    int32_t size = 0;
    for (const auto& [token, id] : tok.model_.vocab()) size = std::max(size, id + 1);
    for (const AddedToken& t : tok.added_.tokens()) size = std::max(size, t.id + 1);
    tok.tokens_.resize(size);
    auto set_token = [&](int32_t id, const std::string& token, bool special) {
      TokenInfo& info = tok.tokens_[id];
      info.present = true;
      info.special = special;
      info.token = token;
      info.bytes.clear();
      // As tokenizers' ByteLevel decoder: map the characters back to bytes when they
      // are all in the byte-level alphabet, else keep the token's own UTF-8.
      if (!ByteLevelToBytes(token, &info.bytes)) info.bytes = token;
    };
    for (const auto& [token, id] : tok.model_.vocab()) {
      // Among duplicate ids keep the smallest string so the choice is deterministic.
      if (!tok.tokens_[id].present || token < tok.tokens_[id].token) set_token(id, token, false);
    }
    for (const AddedToken& t : tok.added_.tokens()) set_token(t.id, t.content, t.special);

    for (int32_t id : tok.prefix_ids_) {
      if (id >= size || !tok.tokens_[id].present) {
        return absl::InvalidArgumentError(
            absl::StrCat("post_processor adds id ", id, ", which is not a token"));
      }
    }
    for (int32_t id : tok.suffix_ids_) {
      if (id >= size || !tok.tokens_[id].present) {
        return absl::InvalidArgumentError(
            absl::StrCat("post_processor adds id ", id, ", which is not a token"));
      }
    }
    tok.adds_bos_ = !tok.prefix_ids_.empty();
    tok.bos_id_ =
        tok.adds_bos_
            ? std::optional<int32_t>(tok.prefix_ids_.front())
            : FirstAdded(tok.added_, {"<|begin_of_text|>", "<s>", "<|startoftext|>", "<bos>"});
    tok.eos_id_ = FirstAdded(tok.added_, {"<|end_of_text|>", "<|endoftext|>", "</s>", "<|eot_id|>",
                                          "<|im_end|>", "<eos>"});
    return tok;
  } catch (const json::exception& e) {
    // Every access above checks types; this is a last line of defence.
    return absl::InvalidArgumentError(absl::StrCat("malformed tokenizer.json: ", e.what()));
  }
}

void Tokenizer::EncodePlain(absl::string_view text, std::vector<int32_t>* ids) const {
  std::string normalized;
  if (normalizer_.active()) {
    normalized = normalizer_.Normalize(text);
    text = normalized;
  }
  absl::StatusOr<std::vector<std::string>> pieces = pre_tokenizer_.Split(text);
  // Splitting valid UTF-8 with patterns that compiled can only fail on resource
  // limits inside PCRE2; fall back to encoding the text as one word.
  if (!pieces.ok()) {
    LOG(WARNING) << "pre-tokenization failed: " << pieces.status();
    model_.Encode(BytesToByteLevel(text), ids);
    return;
  }
  for (const std::string& piece : *pieces) model_.Encode(piece, ids);
}

std::vector<int32_t> Tokenizer::Encode(absl::string_view text, bool add_special,
                                       bool parse_special) const {
  std::string sanitized;
  if (!IsValidUtf8(text)) {
    sanitized = Utf8Lossy(text);
    text = sanitized;
  }
  std::vector<int32_t> ids;
  if (add_special) ids = prefix_ids_;
  for (const TextSegment& seg : added_.Split(text, parse_special)) {
    if (seg.token_id >= 0) {
      ids.push_back(seg.token_id);
    } else {
      EncodePlain(seg.text, &ids);
    }
  }
  if (add_special) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

absl::StatusOr<absl::string_view> Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !tokens_[id].present) {
    return absl::OutOfRangeError(
        absl::StrCat("token id ", id, " is not in the vocabulary (size ", vocab_size(), ")"));
  }
  return absl::string_view(tokens_[id].bytes);
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    absl::StatusOr<absl::string_view> b = TokenBytes(id);
    if (!b.ok()) return b.status();
    if (skip_special && tokens_[id].special) continue;
    bytes.append(b->data(), b->size());
  }
  if (IsValidUtf8(bytes)) return bytes;
  return Utf8Lossy(bytes);
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  if (const AddedToken* t = added_.FindByContent(token)) return t->id;
  auto it = model_.vocab().find(token);
  if (it == model_.vocab().end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !tokens_[id].present) return std::nullopt;
  return tokens_[id].token;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && tokens_[id].special;
}

}  // namespace cpserve::tokenizer
