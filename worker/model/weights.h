// Llama-family weights loaded from a Hugging Face model directory into owned CPU Tensors.
//
// Shapes (HF layout, Linear weights are [out_features, in_features]); H = hidden_size,
// I = intermediate_size, V = vocab_size, Q = heads*head_dim, KV = kv_heads*head_dim:
//   embed_tokens [V, H]   final_norm [H]   lm_head [V, H]
//   input_norm [H]  q_proj [Q, H]  k_proj [KV, H]  v_proj [KV, H]  o_proj [H, Q]
//   q_bias [Q]  k_bias [KV]  v_bias [KV]  o_bias [H]   (undefined Tensors when absent)
//   post_attention_norm [H]  gate_proj [I, H]  up_proj [I, H]  down_proj [H, I]
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "worker/model/model_config.h"

namespace cpserve {

struct LayerWeights {
  Tensor input_norm;  // model.layers.{i}.input_layernorm.weight
  Tensor q_proj, k_proj, v_proj, o_proj;
  Tensor q_bias, k_bias, v_bias;  // defined iff config.qkv_bias (Qwen2; Llama attention_bias)
  Tensor o_bias;                  // defined iff config.o_bias (Llama attention_bias only)
  Tensor post_attention_norm;     // model.layers.{i}.post_attention_layernorm.weight
  Tensor gate_proj, up_proj, down_proj;
};

struct ModelWeights {
  ModelConfig config;
  Tensor embed_tokens;  // model.embed_tokens.weight
  Tensor final_norm;    // model.norm.weight
  Tensor lm_head;       // lm_head.weight; shares embed_tokens' buffer when tied
  std::vector<LayerWeights> layers;
};

// HF tensor names, e.g. LayerTensorName(3, "self_attn.q_proj.weight").
std::string LayerTensorName(int layer, const std::string& suffix);

// Every tensor name a checkpoint for `config` must contain (lm_head.weight only if untied).
std::vector<std::string> ExpectedTensorNames(const ModelConfig& config);

// Loads `dir`/config.json and the safetensors checkpoint (single, sharded with index, or
// several *.safetensors), converting F32/BF16/F16 storage to `target` (F32, BF16, F16 or F64).
// Errors (never crashes): NotFound for a missing directory, config.json, shard or tensor;
// InvalidArgument for bad config fields, corrupt files, or shapes that disagree with the
// config; Unimplemented for unsupported architectures or storage dtypes. Messages name the
// file and the tensor. Tensors in the checkpoint that the model does not use are ignored.
absl::StatusOr<ModelWeights> LoadModel(const std::string& dir, DType target = DType::kF32);

}  // namespace cpserve
