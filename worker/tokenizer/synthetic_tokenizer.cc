#include "worker/tokenizer/synthetic_tokenizer.h"

#include <algorithm>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizer/bpe_trainer.h"
#include "worker/tokenizer/byte_level.h"
#include "worker/tokenizer/pre_tokenizer.h"

namespace cpserve::tokenizer {
namespace {

using ojson = nlohmann::ordered_json;

ojson PreTokenizerJson() {
  return ojson{{"type", "Sequence"},
               {"pretokenizers",
                ojson::array({ojson{{"type", "Split"},
                                    {"pattern", ojson{{"Regex", std::string(kLlama3SplitPattern)}}},
                                    {"behavior", "Isolated"},
                                    {"invert", false}},
                              ojson{{"type", "ByteLevel"},
                                    {"add_prefix_space", false},
                                    {"trim_offsets", true},
                                    {"use_regex", false}}})}};
}

ojson AddedTokenJson(int32_t id, absl::string_view content) {
  return ojson{{"id", id},
               {"content", std::string(content)},
               {"single_word", false},
               {"lstrip", false},
               {"rstrip", false},
               {"normalized", false},
               {"special", true}};
}

}  // namespace

absl::StatusOr<std::string> BuildSyntheticTokenizerJson(int vocab_size) {
  if (vocab_size < kSyntheticMinVocabSize || vocab_size > kSyntheticMaxVocabSize) {
    return absl::InvalidArgumentError(absl::StrCat("synthetic tokenizer vocab_size ", vocab_size,
                                                   " must be in [", kSyntheticMinVocabSize, ", ",
                                                   kSyntheticMaxVocabSize, "]"));
  }
  const ojson pre_json = PreTokenizerJson();
  // Train on exactly the pieces the tokenizer itself will produce.
  absl::StatusOr<PreTokenizer> pre = PreTokenizer::FromJson(nlohmann::json::parse(pre_json.dump()));
  if (!pre.ok()) return pre.status();
  absl::StatusOr<std::vector<std::string>> pieces = pre->Split(SyntheticTrainingText());
  if (!pieces.ok()) return pieces.status();
  std::vector<std::string> words;
  words.reserve(pieces->size());
  for (const std::string& piece : *pieces) {
    std::string bytes;
    if (!ByteLevelToBytes(piece, &bytes)) return absl::InternalError("byte-level round trip");
    words.push_back(std::move(bytes));
  }
  absl::StatusOr<BpeTrainingResult> trained =
      TrainByteLevelBpe(words, vocab_size, {kSyntheticBosId, kSyntheticEosId, kSyntheticPadId});
  if (!trained.ok()) return trained.status();

  ojson vocab = ojson::object();
  for (int32_t id = 0; id < vocab_size; ++id) {
    if (id == kSyntheticBosId || id == kSyntheticEosId || id == kSyntheticPadId) continue;
    vocab[trained->tokens[id]] = id;
  }
  ojson merges = ojson::array();
  for (const auto& [a, b] : trained->merges) merges.push_back(a + " " + b);

  const std::string bos(kSyntheticBosToken);
  ojson root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  root["added_tokens"] = ojson::array({AddedTokenJson(kSyntheticBosId, kSyntheticBosToken),
                                       AddedTokenJson(kSyntheticEosId, kSyntheticEosToken),
                                       AddedTokenJson(kSyntheticPadId, kSyntheticPadToken)});
  root["normalizer"] = nullptr;
  root["pre_tokenizer"] = pre_json;
  root["post_processor"] = ojson{
      {"type", "Sequence"},
      {"processors",
       ojson::array(
           {ojson{{"type", "ByteLevel"},
                  {"add_prefix_space", true},
                  {"trim_offsets", false},
                  {"use_regex", true}},
            ojson{{"type", "TemplateProcessing"},
                  {"single", ojson::array({ojson{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                                           ojson{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                  {"pair", ojson::array({ojson{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                                         ojson{{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                         ojson{{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
                                         ojson{{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
                  {"special_tokens",
                   {{bos,
                     {{"id", bos},
                      {"ids", ojson::array({kSyntheticBosId})},
                      {"tokens", ojson::array({bos})}}}}}}})}};
  root["decoder"] = ojson{{"type", "ByteLevel"},
                          {"add_prefix_space", true},
                          {"trim_offsets", true},
                          {"use_regex", true}};
  root["model"] = ojson{{"type", "BPE"},
                        {"dropout", nullptr},
                        {"unk_token", nullptr},
                        {"continuing_subword_prefix", nullptr},
                        {"end_of_word_suffix", nullptr},
                        {"fuse_unk", false},
                        {"byte_fallback", false},
                        {"ignore_merges", false},
                        {"vocab", std::move(vocab)},
                        {"merges", std::move(merges)}};
  return root.dump(2) + "\n";
}

absl::StatusOr<std::string> PadTokenizerVocab(absl::string_view tokenizer_json, int vocab_size) {
  constexpr int kMaxPaddedVocab = 1 << 24;
  if (vocab_size < 0 || vocab_size > kMaxPaddedVocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size ", vocab_size, " outside [0, ", kMaxPaddedVocab, "]"));
  }
  // nlohmann::json (a sorted map): ordered_json's linear key search is quadratic here.
  nlohmann::json root = nlohmann::json::parse(tokenizer_json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object() || !root.contains("model") ||
      !root["model"].is_object() || root["model"].value("type", "") != "BPE" ||
      !root["model"].contains("vocab") || !root["model"]["vocab"].is_object()) {
    return absl::InvalidArgumentError("tokenizer.json has no BPE model vocabulary to pad");
  }
  nlohmann::json& vocab = root["model"]["vocab"];
  int64_t next = 0;  // one past the largest id in use
  for (const auto& [token, id] : vocab.items()) {
    if (id.is_number_integer()) next = std::max<int64_t>(next, id.get<int64_t>() + 1);
  }
  if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
    for (const nlohmann::json& t : root["added_tokens"]) {
      if (t.is_object() && t.contains("id") && t["id"].is_number_integer()) {
        next = std::max<int64_t>(next, t["id"].get<int64_t>() + 1);
      }
    }
  }
  if (next >= vocab_size) return std::string(tokenizer_json);
  for (int64_t id = next; id < vocab_size; ++id) {
    const std::string token = absl::StrCat("<|id_", id, "|>");
    if (vocab.contains(token)) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", token, " already in the vocabulary"));
    }
    vocab[token] = id;
  }
  return root.dump(2) + "\n";
}

}  // namespace cpserve::tokenizer
