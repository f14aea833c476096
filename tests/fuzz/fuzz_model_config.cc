// Fuzzes ParseModelConfig (Hugging Face config.json) on arbitrary text. Every accepted
// config must pass Validate(), and ToJson() must parse back to the same config (the
// round trip model_config.h promises). Rejections must carry a message naming the source.
#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "tests/fuzz/fuzz_check.h"
#include "worker/model/model_config.h"

namespace {

using cpserve::ModelConfig;

// Doubles compare bit for bit except that NaN equals NaN (a NaN can never be accepted by
// Validate, so equality suffices in practice).
bool SameDouble(double a, double b) { return a == b || (a != a && b != b); }

std::string Diff(const ModelConfig& a, const ModelConfig& b) {
  const auto& ra = a.rope_scaling;
  const auto& rb = b.rope_scaling;
  if (a.architecture != b.architecture) return "architecture";
  if (a.model_type != b.model_type) return "model_type";
  if (a.vocab_size != b.vocab_size) return "vocab_size";
  if (a.hidden_size != b.hidden_size) return "hidden_size";
  if (a.intermediate_size != b.intermediate_size) return "intermediate_size";
  if (a.num_hidden_layers != b.num_hidden_layers) return "num_hidden_layers";
  if (a.num_attention_heads != b.num_attention_heads) return "num_attention_heads";
  if (a.num_key_value_heads != b.num_key_value_heads) return "num_key_value_heads";
  if (a.head_dim != b.head_dim) return "head_dim";
  if (!SameDouble(a.rms_norm_eps, b.rms_norm_eps)) return "rms_norm_eps";
  if (!SameDouble(a.rope_theta, b.rope_theta)) return "rope_theta";
  if (ra.type != rb.type) return "rope_scaling.type";
  if (ra.type != cpserve::RopeScalingType::kNone && !SameDouble(ra.factor, rb.factor)) {
    return "rope_scaling.factor";
  }
  if (ra.type == cpserve::RopeScalingType::kLlama3 &&
      (!SameDouble(ra.low_freq_factor, rb.low_freq_factor) ||
       !SameDouble(ra.high_freq_factor, rb.high_freq_factor) ||
       ra.original_max_position_embeddings != rb.original_max_position_embeddings)) {
    return "rope_scaling (llama3 fields)";
  }
  if (a.max_position_embeddings != b.max_position_embeddings) return "max_position_embeddings";
  if (a.tie_word_embeddings != b.tie_word_embeddings) return "tie_word_embeddings";
  if (a.qkv_bias != b.qkv_bias) return "qkv_bias";
  if (a.o_bias != b.o_bias) return "o_bias";
  if (a.bos_token_id != b.bos_token_id) return "bos_token_id";
  if (a.eos_token_ids != b.eos_token_ids) return "eos_token_ids";
  if (a.torch_dtype != b.torch_dtype) return "torch_dtype";
  if (a.sliding_window != b.sliding_window) return "sliding_window";
  return "";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ModelConfig> cfg = cpserve::ParseModelConfig(text, "fuzz.json");
  if (!cfg.ok()) {
    FUZZ_CHECK(cfg.status().code() == absl::StatusCode::kInvalidArgument ||
                   cfg.status().code() == absl::StatusCode::kUnimplemented,
               cfg.status().ToString());
    FUZZ_CHECK(absl::StartsWith(cfg.status().message(), "fuzz.json"), cfg.status().ToString());
    return 0;
  }
  const absl::Status valid = cfg->Validate("fuzz.json");
  FUZZ_CHECK(valid.ok(), absl::StrCat("accepted config fails Validate: ", valid.ToString()));
  FUZZ_CHECK(cfg->num_attention_heads % cfg->num_key_value_heads == 0, "group size");

  const std::string written = cfg->ToJson();
  absl::StatusOr<ModelConfig> again = cpserve::ParseModelConfig(written, "roundtrip.json");
  FUZZ_CHECK(again.ok(), absl::StrCat("ToJson() does not parse back: ", again.status().ToString(),
                                      "\n", written));
  const std::string diff = Diff(*cfg, *again);
  FUZZ_CHECK(diff.empty(), absl::StrCat("round trip changed ", diff, "\n", written));
  return 0;
}
