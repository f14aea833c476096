#include "worker/tokenizer/bpe_model.h"

#include <queue>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace cpserve::tokenizer {
namespace {

using json = nlohmann::json;

// Words longer than this are not cached (they are rare and would bloat the cache).
constexpr size_t kMaxCachedWordBytes = 256;
// The cache is cleared when it reaches this many words.
constexpr size_t kMaxCachedWords = 1 << 16;

absl::Status CheckNullOrEmpty(const json& model, const char* key) {
  auto it = model.find(key);
  if (it == model.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string() && it->get_ref<const std::string&>().empty()) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrCat("BPE model option '", key, "' is not supported"));
}

// Length in bytes of the UTF-8 character starting with byte `c`.
size_t CharLen(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

}  // namespace

struct BpeModel::Cache {
  absl::Mutex mu;
  absl::flat_hash_map<std::string, std::vector<int32_t>> words ABSL_GUARDED_BY(mu);
};

BpeModel::BpeModel() : cache_(std::make_unique<Cache>()) {}
BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;
BpeModel::~BpeModel() = default;

absl::StatusOr<BpeModel> BpeModel::FromJson(const json& model) {
  if (!model.is_object()) return absl::InvalidArgumentError("model missing or not an object");
  auto type_it = model.find("type");
  // Old files omit "type" for BPE; anything else must say BPE.
  if (type_it != model.end() && !type_it->is_null()) {
    if (!type_it->is_string()) return absl::InvalidArgumentError("model.type must be a string");
    const std::string& type = type_it->get_ref<const std::string&>();
    if (type != "BPE") {
      return absl::UnimplementedError(
          absl::StrCat("model type '", type, "' is not supported (only byte-level BPE)"));
    }
  }
  if (auto it = model.find("byte_fallback");
      it != model.end() && it->is_boolean() && it->get<bool>()) {
    return absl::UnimplementedError(
        "BPE byte_fallback (SentencePiece-style BPE, e.g. Llama 2 / Mistral) is not supported");
  }
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0) {
      return absl::UnimplementedError("BPE dropout is not supported");
    }
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    absl::Status s = CheckNullOrEmpty(model, key);
    if (!s.ok()) return s;
  }

  BpeModel bpe;
  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) {
    return absl::InvalidArgumentError("model.vocab missing or not an object");
  }
  bpe.vocab_.reserve(vocab_it->size());
  for (const auto& [token, id] : vocab_it->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (1 << 24)) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.vocab['", token, "'] must be an integer id in [0, 2^24)"));
    }
    bpe.vocab_.emplace(token, id.get<int32_t>());
  }

  auto merges_it = model.find("merges");
  if (merges_it == model.end() || !merges_it->is_array()) {
    return absl::InvalidArgumentError("model.merges missing or not an array");
  }
  bpe.merges_.reserve(merges_it->size());
  int32_t rank = 0;
  for (const json& m : *merges_it) {
    std::string a, b;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("model.merges[", rank, "] '", s, "' is not two tokens split by a space"));
      }
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("model.merges[", rank, "] must be \"a b\" or [\"a\", \"b\"]"));
    }
    auto ia = bpe.vocab_.find(a), ib = bpe.vocab_.find(b), iab = bpe.vocab_.find(a + b);
    if (ia == bpe.vocab_.end() || ib == bpe.vocab_.end() || iab == bpe.vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("model.merges[", rank, "] ('", a, "', '", b,
                                                     "') uses a token missing from model.vocab"));
    }
    // A repeated pair keeps its first (best) rank.
    bpe.merges_.emplace(PairKey(ia->second, ib->second), MergeTarget{rank, iab->second});
    ++rank;
  }

  if (auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
    if (!it->is_string()) return absl::InvalidArgumentError("model.unk_token must be a string");
    auto u = bpe.vocab_.find(it->get<std::string>());
    if (u == bpe.vocab_.end()) {
      return absl::InvalidArgumentError("model.unk_token is not in model.vocab");
    }
    bpe.unk_id_ = u->second;
  }
  if (auto it = model.find("fuse_unk"); it != model.end() && it->is_boolean()) {
    bpe.fuse_unk_ = it->get<bool>();
  }
  if (auto it = model.find("ignore_merges"); it != model.end() && it->is_boolean()) {
    bpe.ignore_merges_ = it->get<bool>();
  }
  return bpe;
}

void BpeModel::Encode(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    absl::MutexLock lock(&cache_->mu);
    auto it = cache_->words.find(word);
    if (it != cache_->words.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word_ids;
  EncodeUncached(word, &word_ids);
  ids->insert(ids->end(), word_ids.begin(), word_ids.end());
  if (cacheable) {
    absl::MutexLock lock(&cache_->mu);
    if (cache_->words.size() >= kMaxCachedWords) cache_->words.clear();
    cache_->words.emplace(std::string(word), std::move(word_ids));
  }
}

void BpeModel::EncodeUncached(absl::string_view word, std::vector<int32_t>* ids) const {
  if (ignore_merges_) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  // Symbols form a doubly linked list over the word's characters; merged-away
  // symbols get id -1.
  struct Symbol {
    int32_t id;
    int prev, next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  bool last_unk = false;
  for (size_t i = 0; i < word.size();) {
    const size_t len = std::min(CharLen(static_cast<unsigned char>(word[i])), word.size() - i);
    auto it = vocab_.find(word.substr(i, len));
    i += len;
    int32_t id;
    if (it != vocab_.end()) {
      id = it->second;
      last_unk = false;
    } else if (unk_id_.has_value()) {
      if (fuse_unk_ && last_unk) continue;
      id = *unk_id_;
      last_unk = true;
    } else {
      continue;  // Unknown character and no unk token: dropped, as tokenizers does.
    }
    const int n = static_cast<int>(symbols.size());
    symbols.push_back({id, n - 1, -1});
    if (n > 0) symbols[n - 1].next = n;
  }

  // Candidate merges ordered by (rank, position); stale entries are skipped on pop.
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push_pair = [&](int pos) {
    if (pos < 0) return;
    const int next = symbols[pos].next;
    if (next < 0) return;
    auto it = merges_.find(PairKey(symbols[pos].id, symbols[next].id));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.id});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) push_pair(i);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.id < 0 || left.next < 0) continue;
    auto it = merges_.find(PairKey(left.id, symbols[left.next].id));
    if (it == merges_.end() || it->second.id != top.new_id || it->second.rank != top.rank) continue;
    Symbol& right = symbols[left.next];
    left.id = top.new_id;
    right.id = -1;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    push_pair(left.prev);
    push_pair(top.pos);
  }
  for (int i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

}  // namespace cpserve::tokenizer
