#include "worker/model/synthetic_weights.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/cuda/random_fill.h"
#include "nlohmann/json.hpp"
#include "worker/model/synthetic_model.h"

namespace cpserve {
namespace {

// The preset's shape as synthetic checkpoint options (one config path for both).
absl::StatusOr<SyntheticModelOptions> PresetOptions(const SyntheticSpec& spec) {
  SyntheticModelOptions o;
  if (spec.preset == "llama3-8b") {
    o.vocab_size = 128256;
    o.hidden_size = 4096;
    o.intermediate_size = 14336;
    o.num_hidden_layers = 32;
    o.num_attention_heads = 32;
    o.num_key_value_heads = 8;
    o.head_dim = 128;
    o.rope_theta = 500000.0;
    o.rms_norm_eps = 1e-5;
    o.max_position_embeddings = 131072;
    o.rope_scaling.type = RopeScalingType::kLlama3;
    o.rope_scaling.factor = 8.0;
    o.rope_scaling.low_freq_factor = 1.0;
    o.rope_scaling.high_freq_factor = 4.0;
    o.rope_scaling.original_max_position_embeddings = 8192;
  } else if (spec.preset == "tiny") {
    o = TinyModelOptions();
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("synthetic model: unknown preset '", spec.preset, "' (llama3-8b, tiny)"));
  }
  if (spec.num_layers < 0) {
    return absl::InvalidArgumentError("synthetic model: layers must be >= 1");
  }
  if (spec.num_layers > 0) o.num_hidden_layers = spec.num_layers;
  o.bos_token_id = 256;  // the built-in tokenizer's <|bos|> / <|eos|>
  o.eos_token_id = 257;
  o.seed = spec.seed;
  o.storage_dtype = DType::kBF16;
  return o;
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Uniform on [offset − scale, offset + scale) has standard deviation scale/√3.
SyntheticFill Fill(uint64_t seed, const std::string& name, double offset, double sd) {
  return {RandomFillKey(seed, Fnv1a(name)), static_cast<float>(sd * std::sqrt(3.0)),
          static_cast<float>(offset)};
}

}  // namespace

std::string SyntheticSpec::Name() const {
  std::string name = absl::StrCat(kSyntheticPrefix, preset);
  if (num_layers > 0) absl::StrAppend(&name, ",layers=", num_layers);
  if (seed != 0) absl::StrAppend(&name, ",seed=", seed);
  return name;
}

bool IsSyntheticModelName(const std::string& name) {
  return absl::StartsWith(name, kSyntheticPrefix);
}

absl::StatusOr<SyntheticSpec> ParseSyntheticModelName(const std::string& name) {
  if (!IsSyntheticModelName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", name, "' is not a synthetic model name (", kSyntheticPrefix, "...)"));
  }
  const std::vector<std::string> parts =
      absl::StrSplit(name.substr(sizeof(kSyntheticPrefix) - 1), ',');
  SyntheticSpec spec;
  spec.preset = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::vector<std::string> kv = absl::StrSplit(parts[i], absl::MaxSplits('=', 1));
    bool ok = kv.size() == 2;
    if (ok && kv[0] == "layers") {
      ok = absl::SimpleAtoi(kv[1], &spec.num_layers) && spec.num_layers >= 1;
    } else if (ok && kv[0] == "seed") {
      ok = absl::SimpleAtoi(kv[1], &spec.seed);
    } else {
      ok = false;
    }
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("synthetic model '", name, "': bad option '",
                                                     parts[i], "' (layers=N>=1, seed=S)"));
    }
  }
  if (auto o = PresetOptions(spec); !o.ok()) return o.status();
  return spec;
}

absl::StatusOr<ModelConfig> SyntheticSpecConfig(const SyntheticSpec& spec) {
  absl::StatusOr<SyntheticModelOptions> o = PresetOptions(spec);
  if (!o.ok()) return o.status();
  ModelConfig c = SyntheticModelConfig(*o);
  if (absl::Status s = c.Validate(spec.Name()); !s.ok()) return s;
  return c;
}

std::string SyntheticMarkerJson(const SyntheticSpec& spec) {
  nlohmann::json j;
  j["preset"] = spec.preset;
  j["layers"] = spec.num_layers;
  j["seed"] = spec.seed;
  j["name"] = spec.Name();
  return j.dump(2) + "\n";
}

absl::StatusOr<SyntheticSpec> ParseSyntheticMarker(const std::string& json_text) {
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("preset") || !j["preset"].is_string() ||
      !j.contains("layers") || !j["layers"].is_number_integer() || !j.contains("seed") ||
      !j["seed"].is_number_unsigned()) {
    return absl::InvalidArgumentError(absl::StrCat(
        kSyntheticMarkerFile, ": expected {\"preset\": str, \"layers\": int, \"seed\": uint}"));
  }
  SyntheticSpec spec;
  spec.preset = j["preset"].get<std::string>();
  spec.num_layers = j["layers"].get<int64_t>();
  spec.seed = j["seed"].get<uint64_t>();
  if (auto o = PresetOptions(spec); !o.ok()) return o.status();
  return spec;
}

absl::StatusOr<SyntheticSpec> ReadSyntheticMarker(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / kSyntheticMarkerFile).string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no synthetic-model marker"));
  }
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  return ParseSyntheticMarker(*text);
}

absl::StatusOr<ModelWeights> BuildSyntheticWeights(const SyntheticSpec& spec,
                                                   const SyntheticAlloc& alloc,
                                                   const SyntheticFiller& fill) {
  absl::StatusOr<ModelConfig> config = SyntheticSpecConfig(spec);
  if (!config.ok()) return config.status();
  const ModelConfig& c = *config;
  ModelWeights w;
  w.config = c;
  const int64_t H = c.hidden_size, I = c.intermediate_size, Q = c.q_size(), KV = c.kv_size();
  const auto make = [&](const std::string& name, const Shape& shape, double offset, double sd,
                        Tensor* out) -> absl::Status {
    absl::StatusOr<Tensor> t = alloc(shape);
    if (!t.ok()) return t.status();
    if (absl::Status s = fill(*t, Fill(spec.seed, name, offset, sd)); !s.ok()) return s;
    *out = *std::move(t);
    return absl::OkStatus();
  };
  const auto inv_sqrt = [](int64_t n) { return 1.0 / std::sqrt(static_cast<double>(n)); };
  absl::Status s = make("model.embed_tokens.weight", {c.vocab_size, H}, 0, 1.0, &w.embed_tokens);
  w.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int i = 0; s.ok() && i < c.num_hidden_layers; ++i) {
    LayerWeights& l = w.layers[i];
    const auto n = [i](const char* suffix) { return LayerTensorName(i, suffix); };
    for (absl::Status part :
         {make(n("input_layernorm.weight"), {H}, 1.0, 0.1, &l.input_norm),
          make(n("self_attn.q_proj.weight"), {Q, H}, 0, 2 * inv_sqrt(H), &l.q_proj),
          make(n("self_attn.k_proj.weight"), {KV, H}, 0, 2 * inv_sqrt(H), &l.k_proj),
          make(n("self_attn.v_proj.weight"), {KV, H}, 0, inv_sqrt(H), &l.v_proj),
          make(n("self_attn.o_proj.weight"), {H, Q}, 0, inv_sqrt(Q), &l.o_proj),
          make(n("post_attention_layernorm.weight"), {H}, 1.0, 0.1, &l.post_attention_norm),
          make(n("mlp.gate_proj.weight"), {I, H}, 0, inv_sqrt(H), &l.gate_proj),
          make(n("mlp.up_proj.weight"), {I, H}, 0, inv_sqrt(H), &l.up_proj),
          make(n("mlp.down_proj.weight"), {H, I}, 0, inv_sqrt(I), &l.down_proj)}) {
      if (s.ok()) s = part;
    }
  }
  if (s.ok()) s = make("model.norm.weight", {H}, 1.0, 0.1, &w.final_norm);
  if (s.ok()) s = make("lm_head.weight", {c.vocab_size, H}, 0, inv_sqrt(H), &w.lm_head);
  if (!s.ok()) return s;
  return w;
}

absl::StatusOr<ModelWeights> GenerateSyntheticWeightsHost(const SyntheticSpec& spec, DType dtype) {
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError("synthetic weights on the host: float32 or bfloat16");
  }
  return BuildSyntheticWeights(
      spec, [dtype](const Shape& shape) { return Tensor::Empty(shape, dtype); },
      [dtype](const Tensor& t, const SyntheticFill& f) {
        const int64_t n = t.numel();
        for (int64_t i = 0; i < n; ++i) {
          const uint16_t b =
              FloatToBF16(RandomFillValue(f.key, static_cast<uint64_t>(i), f.scale, f.offset));
          if (dtype == DType::kBF16) {
            t.data<uint16_t>()[i] = b;
          } else {
            t.data<float>()[i] = BF16ToFloat(b);
          }
        }
        return absl::OkStatus();
      });
}

}  // namespace cpserve
