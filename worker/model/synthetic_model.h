// Writes a small Llama-family model in Hugging Face format (config.json, safetensors —
// single file or sharded with index —, optional tokenizer files) with deterministic
// weights from a seed. The defaults are the "tiny" preset used by the demo and the tests.
//
// Weights: counter-based RNG (splitmix64 of seed, a hash of the tensor name, and the
// element index) → standard normal (Box–Muller), scaled so activations stay O(1):
//   embed_tokens N(0, 1) (untied) or N(0, 1/sqrt(H)) (tied);  q_proj/k_proj
//   N(0, 2/sqrt(in_features));  v/o/gate/up/down_proj and lm_head N(0, 1/sqrt(in_features));
//   norm weights 1 + 0.1·N(0, 1);  biases 0.2·N(0, 1).
// Checked by tests/unit/model/synthetic_model_sanity_test: logits sd ≈ 1 and greedy decoding
// of the tiny preset yields varied tokens (no immediate single-token collapse).
// Values are drawn in fp32 and rounded once to the storage dtype.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "worker/model/model_config.h"

namespace cpserve {

struct SyntheticModelOptions {
  // "LlamaForCausalLM", "MistralForCausalLM", or "Qwen2ForCausalLM" (q/k/v biases).
  std::string architecture = "LlamaForCausalLM";
  int64_t vocab_size = 512;
  int64_t hidden_size = 256;
  int64_t intermediate_size = 688;
  int64_t num_hidden_layers = 4;
  int64_t num_attention_heads = 8;
  int64_t num_key_value_heads = 2;
  int64_t head_dim = 32;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  int64_t max_position_embeddings = 4096;
  bool tie_word_embeddings = false;
  bool attention_bias = false;     // Llama only: biases on q/k/v/o_proj
  RopeScalingConfig rope_scaling;  // none by default; see TinyLlama3RopeScaling()
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  uint64_t seed = 0;
  DType storage_dtype = DType::kBF16;  // kBF16, kF16 or kF32
  int num_shards = 1;  // >1: model-0000k-of-0000N.safetensors + model.safetensors.index.json
  std::string tokenizer_json;         // written as tokenizer.json when non-empty
  std::string tokenizer_config_json;  // written as tokenizer_config.json when non-empty
};

// The "tiny" preset (== default-constructed options), spelled out for readers.
SyntheticModelOptions TinyModelOptions();
// Llama-3.1-style scaling that bites within the tiny model's 4096 positions:
// factor 8, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 1024.
RopeScalingConfig TinyLlama3RopeScaling();

// The config.json content the options describe (validated by WriteSyntheticModel).
ModelConfig SyntheticModelConfig(const SyntheticModelOptions& options);

// Every tensor (HF names, file order: embed, layers, norm, lm_head) in the storage dtype.
absl::StatusOr<std::vector<std::pair<std::string, Tensor>>> GenerateSyntheticTensors(
    const SyntheticModelOptions& options);

// Creates `dir` if needed and writes config.json, generation_config.json, the safetensors
// file(s), and the tokenizer files given in the options.
absl::Status WriteSyntheticModel(const std::string& dir,
                                 const SyntheticModelOptions& options = SyntheticModelOptions());

}  // namespace cpserve
