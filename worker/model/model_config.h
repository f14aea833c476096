// ModelConfig: the subset of a Hugging Face config.json that a Llama-family decoder needs
// (Llama 2/3, Mistral, Qwen2/2.5). Parsing validates every field and names the file and
// field in its errors; ToJson() writes a config.json that parses back to the same config.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cpserve {

enum class RopeScalingType : uint8_t {
  kNone,    // rope_scaling null, absent, or rope_type "default"
  kLinear,  // positions divided by factor
  kLlama3,  // Llama 3.1 frequency-dependent scaling
};

struct RopeScalingConfig {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;                              // linear and llama3
  double low_freq_factor = 1.0;                     // llama3 only
  double high_freq_factor = 4.0;                    // llama3 only
  int64_t original_max_position_embeddings = 8192;  // llama3 only
};

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM"
  std::string model_type;    // "llama" | "mistral" | "qwen2"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScalingConfig rope_scaling;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  // q_proj/k_proj/v_proj carry a bias: always for Qwen2, attention_bias for Llama/Mistral.
  bool qkv_bias = false;
  // o_proj carries a bias: Llama/Mistral with attention_bias true (HF applies it to q,k,v,o).
  bool o_bias = false;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // config's eos_token_id, int or list; may be empty
  std::string torch_dtype;             // as written ("bfloat16", "float16", "float32"), or ""
  // Mistral/Qwen2 sliding window as written (Qwen2: only when use_sliding_window is true).
  // Not implemented by cpserve: attention is always full; see `notes`.
  std::optional<int64_t> sliding_window;
  // Human-readable limitations found while parsing (e.g. an active sliding window that
  // cpserve ignores). Not written by ToJson().
  std::vector<std::string> notes;

  int64_t q_size() const { return num_attention_heads * head_dim; }   // q_proj out features
  int64_t kv_size() const { return num_key_value_heads * head_dim; }  // k/v_proj out features
  int64_t group_size() const { return num_attention_heads / num_key_value_heads; }

  // Pretty-printed config.json text (HF field names; round-trips through ParseModelConfig).
  std::string ToJson() const;
  // Checks sizes and divisibility; `source` (a file name) prefixes every message.
  absl::Status Validate(absl::string_view source = "config") const;
};

// Parses config.json text. `source` names the file in error messages.
// Unsupported architectures are Unimplemented; bad or missing fields are InvalidArgument.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source = "config.json");
// Reads and parses `path` (NotFound if it does not exist).
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);

// Reads a whole file into a string; NotFound / Internal errors name the path.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);
// Writes (truncates) a file; errors name the path.
absl::Status WriteStringToFile(const std::string& path, absl::string_view contents);

}  // namespace cpserve
