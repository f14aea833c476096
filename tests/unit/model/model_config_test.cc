#include "worker/model/model_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/model/temp_dir.h"

namespace cpserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Verbatim shapes of published configs (trimmed of fields cpserve ignores where noted).
constexpr const char* kLlama3_8B = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
  "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 8192,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
  "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null,
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.40.0.dev0", "use_cache": true, "vocab_size": 128256})";

constexpr const char* kLlama31_8B_Instruct = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096,
  "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
  "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "vocab_size": 128256})";

constexpr const char* kQwen25_7B = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
  "intermediate_size": 18944, "max_position_embeddings": 32768, "max_window_layers": 28,
  "model_type": "qwen2", "num_attention_heads": 28, "num_hidden_layers": 28,
  "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "sliding_window": 131072, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 152064})";

constexpr const char* kQwen25_05B = R"({
  "architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151643,
  "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": 32768,
  "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14,
  "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "use_sliding_window": false, "vocab_size": 151936})";

constexpr const char* kMistral7B_v01 = R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
  "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true,
  "vocab_size": 32000})";

ModelConfig ParseOk(const char* text) {
  auto c = ParseModelConfig(text, "test/config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig();
}

absl::Status ParseErr(const std::string& text) {
  return ParseModelConfig(text, "test/config.json").status();
}

TEST(ModelConfig, Llama3_8B) {
  ModelConfig c = ParseOk(kLlama3_8B);
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.group_size(), 4);
  EXPECT_EQ(c.q_size(), 4096);
  EXPECT_EQ(c.kv_size(), 1024);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kNone);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(128001));
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_TRUE(c.notes.empty());
}

TEST(ModelConfig, Llama31WithLlama3RopeScalingAndEosList) {
  ModelConfig c = ParseOk(kLlama31_8B_Instruct);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(128001, 128008, 128009));
}

// transformers 5 writes rope_parameters (with rope_theta inside) and "dtype".
TEST(ModelConfig, Transformers5RopeParameters) {
  ModelConfig c = ParseOk(R"({
  "architectures": ["LlamaForCausalLM"], "hidden_size": 1024, "intermediate_size": 2816,
  "num_attention_heads": 16, "num_hidden_layers": 4, "num_key_value_heads": 4,
  "vocab_size": 1024, "dtype": "float32",
  "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}})");
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kNone);
  EXPECT_EQ(c.torch_dtype, "float32");

  ModelConfig l = ParseOk(R"({
  "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
  "num_hidden_layers": 1, "intermediate_size": 128, "vocab_size": 32,
  "rope_parameters": {"rope_type": "llama3", "rope_theta": 250000.0, "factor": 8.0,
                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192}})");
  EXPECT_DOUBLE_EQ(l.rope_theta, 250000.0);
  EXPECT_EQ(l.rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_DOUBLE_EQ(l.rope_scaling.factor, 8.0);
  EXPECT_EQ(l.rope_scaling.original_max_position_embeddings, 8192);

  absl::Status bad = ParseErr(R"({
  "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
  "num_hidden_layers": 1, "intermediate_size": 128, "vocab_size": 32,
  "rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": -1}})");
  EXPECT_THAT(std::string(bad.message()), HasSubstr("rope_parameters.factor"));
}

TEST(ModelConfig, Qwen25HasQkvBiasAndInactiveSlidingWindow) {
  ModelConfig c = ParseOk(kQwen25_7B);
  EXPECT_EQ(c.architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.group_size(), 7);
  EXPECT_FALSE(c.sliding_window.has_value());  // use_sliding_window: false
  EXPECT_TRUE(c.notes.empty());
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);

  ModelConfig small = ParseOk(kQwen25_05B);
  EXPECT_TRUE(small.tie_word_embeddings);
  EXPECT_EQ(small.head_dim, 64);
  EXPECT_TRUE(small.qkv_bias);
}

TEST(ModelConfig, MistralSlidingWindowIsRecordedAndNoted) {
  ModelConfig c = ParseOk(kMistral7B_v01);
  EXPECT_EQ(c.architecture, "MistralForCausalLM");
  EXPECT_EQ(c.sliding_window, 4096);
  ASSERT_EQ(c.notes.size(), 1u);
  EXPECT_THAT(c.notes[0], HasSubstr("sliding"));
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(2));
}

TEST(ModelConfig, DefaultsForOldLlamaConfig) {
  ModelConfig c = ParseOk(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
      "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2,
      "vocab_size": 100})");
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_FALSE(c.bos_token_id.has_value());
  EXPECT_TRUE(c.eos_token_ids.empty());
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
}

TEST(ModelConfig, ExplicitHeadDimAndLinearScalingAndLegacyTypeKey) {
  ModelConfig c = ParseOk(R"({"model_type": "mistral", "hidden_size": 5120, "head_dim": 128,
      "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
      "num_hidden_layers": 40, "vocab_size": 131072, "sliding_window": null,
      "rope_scaling": {"type": "linear", "factor": 2.0}})");
  EXPECT_EQ(c.architecture, "MistralForCausalLM");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.q_size(), 4096);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kLinear);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);
  EXPECT_FALSE(c.sliding_window.has_value());
}

TEST(ModelConfig, LlamaAttentionBiasBiasesAllFourProjections) {
  ModelConfig c = ParseOk(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
      "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2,
      "vocab_size": 100, "attention_bias": true})");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.o_bias);
}

TEST(ModelConfig, ToJsonRoundTrips) {
  for (const char* text :
       {kLlama3_8B, kLlama31_8B_Instruct, kQwen25_7B, kQwen25_05B, kMistral7B_v01}) {
    ModelConfig a = ParseOk(text);
    auto b = ParseModelConfig(a.ToJson(), "roundtrip");
    ASSERT_TRUE(b.ok()) << b.status() << "\n" << a.ToJson();
    EXPECT_EQ(b->architecture, a.architecture);
    EXPECT_EQ(b->model_type, a.model_type);
    EXPECT_EQ(b->vocab_size, a.vocab_size);
    EXPECT_EQ(b->hidden_size, a.hidden_size);
    EXPECT_EQ(b->intermediate_size, a.intermediate_size);
    EXPECT_EQ(b->num_hidden_layers, a.num_hidden_layers);
    EXPECT_EQ(b->num_attention_heads, a.num_attention_heads);
    EXPECT_EQ(b->num_key_value_heads, a.num_key_value_heads);
    EXPECT_EQ(b->head_dim, a.head_dim);
    EXPECT_EQ(b->rms_norm_eps, a.rms_norm_eps);
    EXPECT_EQ(b->rope_theta, a.rope_theta);
    EXPECT_EQ(b->rope_scaling.type, a.rope_scaling.type);
    EXPECT_EQ(b->rope_scaling.factor, a.rope_scaling.factor);
    EXPECT_EQ(b->rope_scaling.low_freq_factor, a.rope_scaling.low_freq_factor);
    EXPECT_EQ(b->rope_scaling.high_freq_factor, a.rope_scaling.high_freq_factor);
    EXPECT_EQ(b->rope_scaling.original_max_position_embeddings,
              a.rope_scaling.original_max_position_embeddings);
    EXPECT_EQ(b->max_position_embeddings, a.max_position_embeddings);
    EXPECT_EQ(b->tie_word_embeddings, a.tie_word_embeddings);
    EXPECT_EQ(b->qkv_bias, a.qkv_bias);
    EXPECT_EQ(b->o_bias, a.o_bias);
    EXPECT_EQ(b->bos_token_id, a.bos_token_id);
    EXPECT_EQ(b->eos_token_ids, a.eos_token_ids);
    EXPECT_EQ(b->torch_dtype, a.torch_dtype);
    EXPECT_EQ(b->sliding_window, a.sliding_window);
  }
}

TEST(ModelConfig, UnsupportedArchitectureIsUnimplementedAndNamed) {
  absl::Status s = ParseErr(R"({"architectures": ["GPT2LMHeadModel"], "vocab_size": 5})");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("GPT2LMHeadModel"));
  EXPECT_THAT(s.message(), HasSubstr("test/config.json"));
  s = ParseErr(R"({"model_type": "gemma", "vocab_size": 5})");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("gemma"));
}

TEST(ModelConfig, FieldErrorsNameFileAndField) {
  const std::string base = R"("architectures": ["LlamaForCausalLM"], "intermediate_size": 128,
      "num_hidden_layers": 2, "vocab_size": 100)";
  struct Case {
    std::string fields;
    std::string field;
  };
  const Case cases[] = {
      {R"("hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 3)",
       "num_key_value_heads"},
      {R"("hidden_size": -64, "num_attention_heads": 4)", "hidden_size"},
      {R"("hidden_size": 66, "num_attention_heads": 4)", "hidden_size"},
      {R"("hidden_size": "64", "num_attention_heads": 4)", "hidden_size"},
      {R"("hidden_size": 64.5, "num_attention_heads": 4)", "hidden_size"},
      {R"("hidden_size": 64, "num_attention_heads": 0)", "num_attention_heads"},
      {R"("num_attention_heads": 4)", "hidden_size"},
      {R"("hidden_size": 64, "num_attention_heads": 4, "rms_norm_eps": 0)", "rms_norm_eps"},
      {R"("hidden_size": 64, "num_attention_heads": 4, "head_dim": 15)", "head_dim"},
      {R"("hidden_size": 64, "num_attention_heads": 4, "eos_token_id": "x")", "eos_token_id"},
      {R"("hidden_size": 64, "num_attention_heads": 4, "bos_token_id": 100)", "bos_token_id"},
      {R"("hidden_size": 64, "num_attention_heads": 4, "tie_word_embeddings": 1)",
       "tie_word_embeddings"},
      {R"("hidden_size": 64, "num_attention_heads": 4, "rope_scaling": {"rope_type": "llama3",
         "factor": 8.0})",
       "low_freq_factor"},
      {R"("hidden_size": 64, "num_attention_heads": 4, "rope_scaling": {"type": "linear",
         "factor": -1})",
       "rope_scaling.factor"},
  };
  for (const Case& c : cases) {
    absl::Status s = ParseErr("{" + base + ", " + c.fields + "}");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.fields << " -> " << s;
    EXPECT_THAT(s.message(), HasSubstr("test/config.json")) << c.fields;
    EXPECT_THAT(s.message(), HasSubstr(c.field)) << c.fields << " -> " << s;
  }
}

TEST(ModelConfig, UnsupportedRopeScalingAndMlpBias) {
  const std::string base = R"("architectures": ["LlamaForCausalLM"], "intermediate_size": 128,
      "num_hidden_layers": 2, "vocab_size": 100, "hidden_size": 64, "num_attention_heads": 4)";
  absl::Status s =
      ParseErr("{" + base + R"(, "rope_scaling": {"type": "yarn", "factor": 4})" + "}");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("yarn"));
  s = ParseErr("{" + base + R"(, "mlp_bias": true})");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("mlp_bias"));
}

TEST(ModelConfig, MalformedJson) {
  for (const char* text : {"", "{", "[1,2]", "{\"vocab_size\": }", "nul"}) {
    absl::Status s = ParseErr(text);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(s.message(), HasSubstr("test/config.json")) << text;
  }
}

TEST(ModelConfig, LoadFromFileAndMissingFile) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteStringToFile(dir.file("config.json"), kMistral7B_v01).ok());
  auto c = LoadModelConfig(dir.file("config.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vocab_size, 32000);
  auto missing = LoadModelConfig(dir.file("nope/config.json"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope/config.json"));
}

}  // namespace
}  // namespace cpserve
