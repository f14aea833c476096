#include "worker/model/weights.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"
#include "worker/model/dtype_convert.h"
#include "worker/model/safetensors.h"

namespace cpserve {
namespace {

std::string ShapeString(const Shape& s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

// Reads `name`, checking it against `expected` before converting.
absl::Status ReadChecked(const SafetensorsCheckpoint& ckpt, const std::string& name,
                         const Shape& expected, DType target, Tensor* out) {
  auto found = ckpt.Find(name);
  if (!found.ok()) {
    return absl::NotFoundError(
        absl::StrCat(ckpt.dir(), ": missing tensor '", name, "': ", found.status().message()));
  }
  const auto& [file, info] = *found;
  if (info->shape != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(file->path(), ": tensor '", name, "' has shape ", ShapeString(info->shape),
                     ", config.json implies ", ShapeString(expected)));
  }
  auto t = file->Read(name, target);
  if (!t.ok()) return t.status();
  *out = std::move(*t);
  return absl::OkStatus();
}

struct Spec {
  std::string name;
  Shape shape;
  Tensor* dst;
};

std::vector<Spec> LayerSpecs(const ModelConfig& c, int i, LayerWeights* w) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, Q = c.q_size(), KV = c.kv_size();
  std::vector<Spec> s = {
      {LayerTensorName(i, "input_layernorm.weight"), {H}, w ? &w->input_norm : nullptr},
      {LayerTensorName(i, "self_attn.q_proj.weight"), {Q, H}, w ? &w->q_proj : nullptr},
      {LayerTensorName(i, "self_attn.k_proj.weight"), {KV, H}, w ? &w->k_proj : nullptr},
      {LayerTensorName(i, "self_attn.v_proj.weight"), {KV, H}, w ? &w->v_proj : nullptr},
      {LayerTensorName(i, "self_attn.o_proj.weight"), {H, Q}, w ? &w->o_proj : nullptr},
      {LayerTensorName(i, "post_attention_layernorm.weight"),
       {H},
       w ? &w->post_attention_norm : nullptr},
      {LayerTensorName(i, "mlp.gate_proj.weight"), {I, H}, w ? &w->gate_proj : nullptr},
      {LayerTensorName(i, "mlp.up_proj.weight"), {I, H}, w ? &w->up_proj : nullptr},
      {LayerTensorName(i, "mlp.down_proj.weight"), {H, I}, w ? &w->down_proj : nullptr},
  };
  if (c.qkv_bias) {
    s.push_back({LayerTensorName(i, "self_attn.q_proj.bias"), {Q}, w ? &w->q_bias : nullptr});
    s.push_back({LayerTensorName(i, "self_attn.k_proj.bias"), {KV}, w ? &w->k_bias : nullptr});
    s.push_back({LayerTensorName(i, "self_attn.v_proj.bias"), {KV}, w ? &w->v_bias : nullptr});
  }
  if (c.o_bias) {
    s.push_back({LayerTensorName(i, "self_attn.o_proj.bias"), {H}, w ? &w->o_bias : nullptr});
  }
  return s;
}

std::vector<Spec> GlobalSpecs(const ModelConfig& c, ModelWeights* m) {
  std::vector<Spec> s = {
      {"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, m ? &m->embed_tokens : nullptr},
      {"model.norm.weight", {c.hidden_size}, m ? &m->final_norm : nullptr},
  };
  if (!c.tie_word_embeddings) {
    s.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}, m ? &m->lm_head : nullptr});
  }
  return s;
}

}  // namespace

std::string LayerTensorName(int layer, const std::string& suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

std::vector<std::string> ExpectedTensorNames(const ModelConfig& config) {
  std::vector<std::string> names;
  for (const Spec& s : GlobalSpecs(config, nullptr)) names.push_back(s.name);
  for (int i = 0; i < config.num_hidden_layers; ++i) {
    for (const Spec& s : LayerSpecs(config, i, nullptr)) names.push_back(s.name);
  }
  return names;
}

absl::StatusOr<ModelWeights> LoadModel(const std::string& dir, DType target) {
  if (!IsFloatingDType(target)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoadModel: target dtype ", DTypeName(target), " is not a float type"));
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": model directory not found"));
  }
  ModelWeights m;
  {
    auto config = LoadModelConfig((std::filesystem::path(dir) / "config.json").string());
    if (!config.ok()) return config.status();
    m.config = std::move(*config);
  }
  for (const std::string& note : m.config.notes) LOG(WARNING) << dir << ": " << note;
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  if (!ckpt.ok()) return ckpt.status();

  for (const Spec& s : GlobalSpecs(m.config, &m)) {
    if (absl::Status st = ReadChecked(**ckpt, s.name, s.shape, target, s.dst); !st.ok()) return st;
  }
  if (m.config.tie_word_embeddings) m.lm_head = m.embed_tokens;  // same buffer
  m.layers.resize(static_cast<size_t>(m.config.num_hidden_layers));
  for (int i = 0; i < m.config.num_hidden_layers; ++i) {
    for (const Spec& s : LayerSpecs(m.config, i, &m.layers[i])) {
      if (absl::Status st = ReadChecked(**ckpt, s.name, s.shape, target, s.dst); !st.ok()) {
        return st;
      }
    }
  }
  return m;
}

}  // namespace cpserve
