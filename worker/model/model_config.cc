#include "worker/model/model_config.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace cpserve {
namespace {

using json = nlohmann::json;

constexpr const char* kLlama = "LlamaForCausalLM";
constexpr const char* kMistral = "MistralForCausalLM";
constexpr const char* kQwen2 = "Qwen2ForCausalLM";

std::string Dump(const json& j) {
  std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

absl::Status FieldError(absl::string_view source, absl::string_view field, absl::string_view what,
                        const json* value = nullptr) {
  return absl::InvalidArgumentError(absl::StrCat(
      source, ": field '", field, "': ", what, value ? absl::StrCat(", got ", Dump(*value)) : ""));
}

bool Present(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && !it->is_null();
}

// An integer written as 42 or 42.0.
bool AsInt(const json& v, int64_t* out) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return false;
    }
    *out = v.get<int64_t>();
    return true;
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) {
      *out = static_cast<int64_t>(d);
      return true;
    }
  }
  return false;
}

absl::StatusOr<int64_t> GetInt(const json& obj, const char* key, absl::string_view source,
                               std::optional<int64_t> fallback = std::nullopt) {
  if (!Present(obj, key)) {
    if (fallback) return *fallback;
    return FieldError(source, key, "required integer field is missing");
  }
  int64_t v = 0;
  if (!AsInt(obj[key], &v)) return FieldError(source, key, "expected an integer", &obj[key]);
  return v;
}

absl::StatusOr<double> GetDouble(const json& obj, const char* key, absl::string_view source,
                                 std::optional<double> fallback = std::nullopt) {
  if (!Present(obj, key)) {
    if (fallback) return *fallback;
    return FieldError(source, key, "required number field is missing");
  }
  const json& v = obj[key];
  if (!v.is_number()) return FieldError(source, key, "expected a number", &v);
  const double d = v.get<double>();
  if (!std::isfinite(d)) return FieldError(source, key, "expected a finite number", &v);
  return d;
}

absl::StatusOr<bool> GetBool(const json& obj, const char* key, absl::string_view source,
                             bool fallback) {
  if (!Present(obj, key)) return fallback;
  if (!obj[key].is_boolean()) return FieldError(source, key, "expected true or false", &obj[key]);
  return obj[key].get<bool>();
}

// RoPE scaling from `key`: "rope_scaling" (transformers 4) or "rope_parameters"
// (transformers 5, which also moves rope_theta there).
absl::Status ParseRopeScaling(const json& root, const char* key, absl::string_view source,
                              RopeScalingConfig* out) {
  *out = RopeScalingConfig();
  if (!Present(root, key)) return absl::OkStatus();
  const json& rs = root[key];
  const std::string k = key;
  if (!rs.is_object()) return FieldError(source, k, "expected an object or null", &rs);
  const char* type_key = Present(rs, "rope_type") ? "rope_type" : "type";
  if (!Present(rs, type_key) || !rs[type_key].is_string()) {
    return FieldError(source, k + ".rope_type", "expected a string", &rs);
  }
  const std::string type = rs[type_key].get<std::string>();
  const std::string where = absl::StrCat(source, " ", k);
  if (type == "default") return absl::OkStatus();
  if (type != "linear" && type != "llama3") {
    return absl::UnimplementedError(
        absl::StrCat(source, ": field '", k, "': rope scaling type '", type,
                     "' is not supported (supported: null, \"default\", \"linear\", \"llama3\")"));
  }
  auto factor = GetDouble(rs, "factor", where);
  if (!factor.ok()) return factor.status();
  if (*factor <= 0) return FieldError(source, k + ".factor", "must be > 0", &rs["factor"]);
  out->factor = *factor;
  if (type == "linear") {
    out->type = RopeScalingType::kLinear;
    return absl::OkStatus();
  }
  out->type = RopeScalingType::kLlama3;
  auto low = GetDouble(rs, "low_freq_factor", where);
  if (!low.ok()) return low.status();
  auto high = GetDouble(rs, "high_freq_factor", where);
  if (!high.ok()) return high.status();
  auto orig = GetInt(rs, "original_max_position_embeddings", where);
  if (!orig.ok()) return orig.status();
  out->low_freq_factor = *low;
  out->high_freq_factor = *high;
  out->original_max_position_embeddings = *orig;
  return absl::OkStatus();
}

absl::Status ParseTokenIds(const json& root, absl::string_view source, ModelConfig* c) {
  if (Present(root, "bos_token_id")) {
    auto bos = GetInt(root, "bos_token_id", source);
    if (!bos.ok()) return bos.status();
    c->bos_token_id = *bos;
  }
  if (Present(root, "eos_token_id")) {
    const json& e = root["eos_token_id"];
    int64_t v = 0;
    if (AsInt(e, &v)) {
      c->eos_token_ids.push_back(v);
    } else if (e.is_array()) {
      for (const json& x : e) {
        if (!AsInt(x, &v)) return FieldError(source, "eos_token_id", "expected integers", &e);
        c->eos_token_ids.push_back(v);
      }
    } else {
      return FieldError(source, "eos_token_id", "expected an integer or a list of integers", &e);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ResolveArchitecture(const json& root, absl::string_view source) {
  static const char* kSupported = "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM";
  if (Present(root, "architectures")) {
    const json& a = root["architectures"];
    if (!a.is_array() || a.empty()) {
      return FieldError(source, "architectures", "expected a non-empty list of strings", &a);
    }
    std::vector<std::string> names;
    for (const json& x : a) {
      if (!x.is_string()) {
        return FieldError(source, "architectures", "expected a list of strings", &a);
      }
      names.push_back(x.get<std::string>());
      if (names.back() == kLlama || names.back() == kMistral || names.back() == kQwen2) {
        return names.back();
      }
    }
    return absl::UnimplementedError(absl::StrCat(source, ": unsupported architecture '",
                                                 absl::StrJoin(names, "', '"),
                                                 "' (supported: ", kSupported, ")"));
  }
  if (Present(root, "model_type") && root["model_type"].is_string()) {
    const std::string t = root["model_type"].get<std::string>();
    if (t == "llama") return std::string(kLlama);
    if (t == "mistral") return std::string(kMistral);
    if (t == "qwen2") return std::string(kQwen2);
    return absl::UnimplementedError(
        absl::StrCat(source, ": unsupported model_type '", t,
                     "' and no architectures field (supported: ", kSupported, ")"));
  }
  return FieldError(source, "architectures", "missing (and no model_type to infer it from)");
}

absl::StatusOr<ModelConfig> ParseRoot(const json& root, absl::string_view source) {
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": expected a JSON object"));
  }
  ModelConfig c;
  auto arch = ResolveArchitecture(root, source);
  if (!arch.ok()) return arch.status();
  c.architecture = *arch;
  const bool qwen2 = c.architecture == kQwen2;
  const bool mistral = c.architecture == kMistral;
  if (Present(root, "model_type")) {
    if (!root["model_type"].is_string()) {
      return FieldError(source, "model_type", "expected a string", &root["model_type"]);
    }
    c.model_type = root["model_type"].get<std::string>();
  } else {
    c.model_type = qwen2 ? "qwen2" : mistral ? "mistral" : "llama";
  }

#define CPSERVE_ASSIGN_OR_RETURN_FIELD(lhs, expr) \
  do {                                            \
    auto _v = (expr);                             \
    if (!_v.ok()) return _v.status();             \
    lhs = *_v;                                    \
  } while (0)
  CPSERVE_ASSIGN_OR_RETURN_FIELD(c.vocab_size, GetInt(root, "vocab_size", source));
  CPSERVE_ASSIGN_OR_RETURN_FIELD(c.hidden_size, GetInt(root, "hidden_size", source));
  CPSERVE_ASSIGN_OR_RETURN_FIELD(c.intermediate_size, GetInt(root, "intermediate_size", source));
  CPSERVE_ASSIGN_OR_RETURN_FIELD(c.num_hidden_layers, GetInt(root, "num_hidden_layers", source));
  CPSERVE_ASSIGN_OR_RETURN_FIELD(c.num_attention_heads,
                                 GetInt(root, "num_attention_heads", source));
  CPSERVE_ASSIGN_OR_RETURN_FIELD(
      c.num_key_value_heads, GetInt(root, "num_key_value_heads", source, c.num_attention_heads));
  if (c.num_attention_heads <= 0) {
    return FieldError(source, "num_attention_heads", "must be > 0", &root["num_attention_heads"]);
  }
  CPSERVE_ASSIGN_OR_RETURN_FIELD(
      c.head_dim, GetInt(root, "head_dim", source, c.hidden_size / c.num_attention_heads));
  if (!Present(root, "head_dim") && c.hidden_size % c.num_attention_heads != 0) {
    return FieldError(source, "hidden_size",
                      absl::StrCat("not divisible by num_attention_heads (", c.num_attention_heads,
                                   ") and no head_dim given"),
                      &root["hidden_size"]);
  }
  CPSERVE_ASSIGN_OR_RETURN_FIELD(c.rms_norm_eps, GetDouble(root, "rms_norm_eps", source, 1e-6));
  CPSERVE_ASSIGN_OR_RETURN_FIELD(c.rope_theta, GetDouble(root, "rope_theta", source, 10000.0));
  CPSERVE_ASSIGN_OR_RETURN_FIELD(c.max_position_embeddings,
                                 GetInt(root, "max_position_embeddings", source, 2048));
  CPSERVE_ASSIGN_OR_RETURN_FIELD(c.tie_word_embeddings,
                                 GetBool(root, "tie_word_embeddings", source, false));
  bool attention_bias = false, mlp_bias = false;
  CPSERVE_ASSIGN_OR_RETURN_FIELD(attention_bias, GetBool(root, "attention_bias", source, false));
  CPSERVE_ASSIGN_OR_RETURN_FIELD(mlp_bias, GetBool(root, "mlp_bias", source, false));
#undef CPSERVE_ASSIGN_OR_RETURN_FIELD

  if (qwen2) {  // Qwen2Attention: q/k/v always biased, o_proj never.
    c.qkv_bias = true;
    c.o_bias = false;
  } else if (mistral) {  // MistralAttention has no biases whatever the config says.
    if (attention_bias) c.notes.push_back("attention_bias ignored: Mistral has no biases");
  } else {
    c.qkv_bias = c.o_bias = attention_bias;
  }
  if (mlp_bias) {
    return absl::UnimplementedError(
        absl::StrCat(source, ": field 'mlp_bias': MLP biases are not supported"));
  }
  // transformers 5 writes rope_parameters {rope_type, rope_theta, ...} instead of
  // rope_scaling + a top-level rope_theta.
  const bool v5_rope = !Present(root, "rope_scaling") && Present(root, "rope_parameters");
  if (absl::Status s = ParseRopeScaling(root, v5_rope ? "rope_parameters" : "rope_scaling", source,
                                        &c.rope_scaling);
      !s.ok()) {
    return s;
  }
  if (v5_rope && !Present(root, "rope_theta") && Present(root["rope_parameters"], "rope_theta")) {
    auto theta =
        GetDouble(root["rope_parameters"], "rope_theta", absl::StrCat(source, " rope_parameters"));
    if (!theta.ok()) return theta.status();
    c.rope_theta = *theta;
  }
  if (absl::Status s = ParseTokenIds(root, source, &c); !s.ok()) return s;

  const char* dtype_key = Present(root, "torch_dtype") ? "torch_dtype" : "dtype";
  if (Present(root, dtype_key)) {
    if (!root[dtype_key].is_string()) {
      return FieldError(source, dtype_key, "expected a string", &root[dtype_key]);
    }
    c.torch_dtype = root[dtype_key].get<std::string>();
  }

  // Qwen2 writes sliding_window but only uses it when use_sliding_window is true.
  bool use_sliding_window = true;
  auto usw = GetBool(root, "use_sliding_window", source, true);
  if (!usw.ok()) return usw.status();
  use_sliding_window = *usw;
  if (Present(root, "sliding_window") && use_sliding_window) {
    auto sw = GetInt(root, "sliding_window", source);
    if (!sw.ok()) return sw.status();
    if (*sw <= 0)
      return FieldError(source, "sliding_window", "must be > 0", &root["sliding_window"]);
    c.sliding_window = *sw;
    if (*sw < c.max_position_embeddings) {
      c.notes.push_back(absl::StrCat(
          "sliding_window ", *sw, " < max_position_embeddings ", c.max_position_embeddings,
          ": cpserve does not implement sliding-window attention; sequences longer than the "
          "window attend to all positions and differ from the reference model"));
    }
  }
  if (absl::Status s = c.Validate(source); !s.ok()) return s;
  return c;
}

}  // namespace

absl::Status ModelConfig::Validate(absl::string_view source) const {
  auto positive = [&](const char* field, int64_t v) -> absl::Status {
    if (v > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field '", field, "': must be > 0, got ", v));
  };
  for (auto [field, v] : {std::pair<const char*, int64_t>{"vocab_size", vocab_size},
                          {"hidden_size", hidden_size},
                          {"intermediate_size", intermediate_size},
                          {"num_hidden_layers", num_hidden_layers},
                          {"num_attention_heads", num_attention_heads},
                          {"num_key_value_heads", num_key_value_heads},
                          {"head_dim", head_dim},
                          {"max_position_embeddings", max_position_embeddings}}) {
    if (absl::Status s = positive(field, v); !s.ok()) return s;
  }
  auto bad = [&](const char* field, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": field '", field, "': ", what));
  };
  if (architecture != kLlama && architecture != kMistral && architecture != kQwen2) {
    return absl::UnimplementedError(
        absl::StrCat(source, ": unsupported architecture '", architecture, "'"));
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    return bad("num_key_value_heads",
               absl::StrCat(num_key_value_heads, " does not divide num_attention_heads ",
                            num_attention_heads));
  }
  if (head_dim % 2 != 0)
    return bad("head_dim", absl::StrCat("must be even for RoPE, got ", head_dim));
  if (!(rms_norm_eps > 0))
    return bad("rms_norm_eps", absl::StrCat("must be > 0, got ", rms_norm_eps));
  if (!(rope_theta > 0)) return bad("rope_theta", absl::StrCat("must be > 0, got ", rope_theta));
  if (rope_scaling.type != RopeScalingType::kNone && !(rope_scaling.factor > 0)) {
    return bad("rope_scaling.factor", "must be > 0");
  }
  if (rope_scaling.type == RopeScalingType::kLlama3) {
    if (!(rope_scaling.low_freq_factor > 0) ||
        !(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor)) {
      return bad("rope_scaling",
                 absl::StrCat("llama3 needs 0 < low_freq_factor (", rope_scaling.low_freq_factor,
                              ") < high_freq_factor (", rope_scaling.high_freq_factor, ")"));
    }
    if (rope_scaling.original_max_position_embeddings <= 0) {
      return bad("rope_scaling.original_max_position_embeddings", "must be > 0");
    }
  }
  if (architecture == kQwen2 && (!qkv_bias || o_bias)) {
    return bad("attention_bias", "Qwen2 has q/k/v biases and no o_proj bias");
  }
  if (architecture == kMistral && (qkv_bias || o_bias)) {
    return bad("attention_bias", "Mistral has no attention biases");
  }
  if (architecture == kLlama && qkv_bias != o_bias) {
    return bad("attention_bias", "Llama biases either all of q/k/v/o_proj or none");
  }
  if (bos_token_id && (*bos_token_id < 0 || *bos_token_id >= vocab_size)) {
    return bad("bos_token_id",
               absl::StrCat(*bos_token_id, " outside [0, vocab_size=", vocab_size, ")"));
  }
  for (int64_t e : eos_token_ids) {
    if (e < 0 || e >= vocab_size) {
      return bad("eos_token_id", absl::StrCat(e, " outside [0, vocab_size=", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

std::string ModelConfig::ToJson() const {
  json j = json::object();
  j["architectures"] = json::array({architecture});
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["max_position_embeddings"] = max_position_embeddings;
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (architecture != kQwen2) j["attention_bias"] = qkv_bias;
  j["mlp_bias"] = false;
  switch (rope_scaling.type) {
    case RopeScalingType::kNone:
      j["rope_scaling"] = nullptr;
      break;
    case RopeScalingType::kLinear:
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rope_scaling.factor}};
      break;
    case RopeScalingType::kLlama3:
      j["rope_scaling"] = {
          {"rope_type", "llama3"},
          {"factor", rope_scaling.factor},
          {"low_freq_factor", rope_scaling.low_freq_factor},
          {"high_freq_factor", rope_scaling.high_freq_factor},
          {"original_max_position_embeddings", rope_scaling.original_max_position_embeddings}};
      break;
  }
  if (bos_token_id) j["bos_token_id"] = *bos_token_id;
  if (eos_token_ids.size() == 1) {
    j["eos_token_id"] = eos_token_ids[0];
  } else if (!eos_token_ids.empty()) {
    j["eos_token_id"] = eos_token_ids;
  }
  if (!torch_dtype.empty()) j["torch_dtype"] = torch_dtype;
  if (sliding_window) {
    j["sliding_window"] = *sliding_window;
    if (architecture == kQwen2) j["use_sliding_window"] = true;
  } else {
    j["sliding_window"] = nullptr;
    if (architecture == kQwen2) j["use_sliding_window"] = false;
  }
  return j.dump(2) + "\n";
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source) {
  json root = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": malformed JSON"));
  }
  try {  // Defensive: every access above checks types first, so nothing should throw.
    return ParseRoot(root, source);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  }
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  return ParseModelConfig(*text, path);
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": file not found"));
    return absl::FailedPreconditionError(absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return ss.str();
}

absl::Status WriteStringToFile(const std::string& path, absl::string_view contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot open for writing: ", std::strerror(errno)));
  }
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace cpserve
