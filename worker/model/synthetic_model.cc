#include "worker/model/synthetic_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "worker/model/dtype_convert.h"
#include "worker/model/safetensors.h"
#include "worker/model/weights.h"

namespace cpserve {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Uniform in (0, 1]: 53 random bits.
double Uniform(uint64_t bits) { return (static_cast<double>(bits >> 11) + 1.0) * 0x1.0p-53; }

// Deterministic N(0,1) for element i of the stream `key` (two draws per element).
double Normal(uint64_t key, uint64_t i) {
  const double u1 = Uniform(SplitMix64(key + 2 * i));
  const double u2 = Uniform(SplitMix64(key + 2 * i + 1));
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

// Fills a [shape] fp32 tensor with offset + scale·N(0,1) and converts to `dtype`.
absl::StatusOr<Tensor> Make(const SyntheticModelOptions& o, const std::string& name,
                            const Shape& shape, double offset, double scale) {
  Tensor f = Tensor::Zeros(shape, DType::kF32);
  const uint64_t key = SplitMix64(o.seed ^ SplitMix64(Fnv1a(name)));
  float* p = f.data<float>();
  for (int64_t i = 0; i < f.numel(); ++i) {
    p[i] = static_cast<float>(offset + scale * Normal(key, static_cast<uint64_t>(i)));
  }
  if (o.storage_dtype == DType::kF32) return f;
  return ConvertTensor(f, o.storage_dtype);
}

}  // namespace

SyntheticModelOptions TinyModelOptions() { return SyntheticModelOptions(); }

RopeScalingConfig TinyLlama3RopeScaling() {
  RopeScalingConfig r;
  r.type = RopeScalingType::kLlama3;
  r.factor = 8.0;
  r.low_freq_factor = 1.0;
  r.high_freq_factor = 4.0;
  r.original_max_position_embeddings = 1024;
  return r;
}

ModelConfig SyntheticModelConfig(const SyntheticModelOptions& o) {
  ModelConfig c;
  c.architecture = o.architecture;
  c.model_type = o.architecture == "Qwen2ForCausalLM"     ? "qwen2"
                 : o.architecture == "MistralForCausalLM" ? "mistral"
                                                          : "llama";
  c.vocab_size = o.vocab_size;
  c.hidden_size = o.hidden_size;
  c.intermediate_size = o.intermediate_size;
  c.num_hidden_layers = o.num_hidden_layers;
  c.num_attention_heads = o.num_attention_heads;
  c.num_key_value_heads = o.num_key_value_heads;
  c.head_dim = o.head_dim;
  c.rms_norm_eps = o.rms_norm_eps;
  c.rope_theta = o.rope_theta;
  c.rope_scaling = o.rope_scaling;
  c.max_position_embeddings = o.max_position_embeddings;
  c.tie_word_embeddings = o.tie_word_embeddings;
  c.qkv_bias = c.model_type == "qwen2" || (c.model_type == "llama" && o.attention_bias);
  c.o_bias = c.model_type == "llama" && o.attention_bias;
  c.bos_token_id = o.bos_token_id;
  c.eos_token_ids = {o.eos_token_id};
  c.torch_dtype = DTypeName(o.storage_dtype);
  return c;
}

absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> GenerateSyntheticTensors(
    const SyntheticModelOptions& o) {
  if (o.storage_dtype != DType::kF32 && o.storage_dtype != DType::kBF16 &&
      o.storage_dtype != DType::kF16) {
    return absl::InvalidArgumentError(absl::StrCat("synthetic model: storage dtype ",
                                                   DTypeName(o.storage_dtype),
                                                   " not supported (float32, bfloat16, float16)"));
  }
  const ModelConfig c = SyntheticModelConfig(o);
  if (absl::Status s = c.Validate("synthetic model options"); !s.ok()) return s;
  const double H = static_cast<double>(c.hidden_size);
  // Checkpoint order: embed, layers, final norm, lm_head (ExpectedTensorNames lists the
  // globals first).
  std::vector<std::string> names = ExpectedTensorNames(c);
  std::stable_partition(names.begin(), names.end(), [](const std::string& n) {
    return n == "model.embed_tokens.weight" || absl::StartsWith(n, "model.layers.");
  });
  std::vector<std::pair<std::string, Tensor>> out;
  // Scale of a weight of this name and shape: see the header comment.
  for (const std::string& name : names) {
    const bool embed = name == "model.embed_tokens.weight";
    Shape shape;
    double offset = 0, scale = 0;
    const auto ends_with = [&](const char* s) { return absl::EndsWith(name, s); };
    if (embed) {
      shape = {c.vocab_size, c.hidden_size};
      scale = c.tie_word_embeddings ? 1.0 / std::sqrt(H) : 1.0;
    } else if (name == "lm_head.weight") {
      shape = {c.vocab_size, c.hidden_size};
      scale = 1.0 / std::sqrt(H);
    } else if (ends_with("norm.weight")) {
      shape = {c.hidden_size};
      offset = 1.0;
      scale = 0.1;
    } else if (ends_with(".bias")) {
      shape = {ends_with("q_proj.bias")   ? c.q_size()
               : ends_with("o_proj.bias") ? c.hidden_size
                                          : c.kv_size()};
      scale = 0.2;
    } else if (ends_with("q_proj.weight")) {
      shape = {c.q_size(), c.hidden_size};
    } else if (ends_with("k_proj.weight") || ends_with("v_proj.weight")) {
      shape = {c.kv_size(), c.hidden_size};
    } else if (ends_with("o_proj.weight")) {
      shape = {c.hidden_size, c.q_size()};
    } else if (ends_with("gate_proj.weight") || ends_with("up_proj.weight")) {
      shape = {c.intermediate_size, c.hidden_size};
    } else if (ends_with("down_proj.weight")) {
      shape = {c.hidden_size, c.intermediate_size};
    } else {
      return absl::InternalError(absl::StrCat("synthetic model: unexpected tensor ", name));
    }
    if (scale == 0) {  // a Linear weight [out, in]
      const double in = static_cast<double>(shape[1]);
      // Sharper attention (q/k ×2: score sd ≈ 4) makes outputs depend on context, so greedy
      // decoding does not fall into a short cycle driven by the last token alone.
      const bool qk = ends_with("q_proj.weight") || ends_with("k_proj.weight");
      scale = (qk ? 2.0 : 1.0) / std::sqrt(in);
    }
    auto t = Make(o, name, shape, offset, scale);
    if (!t.ok()) return t.status();
    out.emplace_back(name, std::move(*t));
  }
  return out;
}

absl::Status WriteSyntheticModel(const std::string& dir, const SyntheticModelOptions& o) {
  namespace fs = std::filesystem;
  if (o.num_shards < 1) {
    return absl::InvalidArgumentError(absl::StrCat("num_shards must be >= 1, got ", o.num_shards));
  }
  auto tensors = GenerateSyntheticTensors(o);
  if (!tensors.ok()) return tensors.status();
  if (static_cast<size_t>(o.num_shards) > tensors->size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_shards ", o.num_shards, " exceeds the ", tensors->size(), " tensors"));
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(dir, ": ", ec.message()));
  const auto path = [&](const std::string& name) { return (fs::path(dir) / name).string(); };

  const ModelConfig config = SyntheticModelConfig(o);
  if (absl::Status s = WriteStringToFile(path("config.json"), config.ToJson()); !s.ok()) return s;
  nlohmann::json gen = {{"bos_token_id", o.bos_token_id}, {"eos_token_id", o.eos_token_id}};
  if (absl::Status s = WriteStringToFile(path("generation_config.json"), gen.dump(2) + "\n");
      !s.ok()) {
    return s;
  }
  if (!o.tokenizer_json.empty()) {
    if (absl::Status s = WriteStringToFile(path("tokenizer.json"), o.tokenizer_json); !s.ok()) {
      return s;
    }
  }
  if (!o.tokenizer_config_json.empty()) {
    if (absl::Status s = WriteStringToFile(path("tokenizer_config.json"), o.tokenizer_config_json);
        !s.ok()) {
      return s;
    }
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (o.num_shards == 1) return WriteSafetensors(path("model.safetensors"), *tensors, metadata);

  // Contiguous groups of roughly equal bytes, none empty.
  uint64_t total = 0;
  for (const auto& [_, t] : *tensors) total += t.nbytes();
  std::map<std::string, std::string> weight_map;
  size_t next = 0;
  uint64_t written = 0;
  for (int k = 0; k < o.num_shards; ++k) {
    const std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", k + 1, o.num_shards);
    const uint64_t target = total * static_cast<uint64_t>(k + 1) / o.num_shards;
    const size_t must_leave = static_cast<size_t>(o.num_shards - k - 1);
    std::vector<std::pair<std::string, Tensor>> shard;
    while (next < tensors->size() - must_leave &&
           (shard.empty() || written + (*tensors)[next].second.nbytes() <= target ||
            k == o.num_shards - 1)) {
      written += (*tensors)[next].second.nbytes();
      weight_map[(*tensors)[next].first] = name;
      shard.push_back((*tensors)[next++]);
    }
    if (absl::Status s = WriteSafetensors(path(name), shard, metadata); !s.ok()) return s;
  }
  return WriteSafetensorsIndex(path("model.safetensors.index.json"), weight_map, total);
}

}  // namespace cpserve
