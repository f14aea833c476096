#include <cstring>
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/model/temp_dir.h"
#include "worker/model/dtype_convert.h"
#include "worker/model/model_config.h"
#include "worker/model/safetensors.h"
#include "worker/model/synthetic_model.h"
#include "worker/model/weights.h"

namespace cpserve {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

// A loaded tensor by HF name.
const Tensor& Lookup(const ModelWeights& m, const std::string& name) {
  static const Tensor kNone;
  if (name == "model.embed_tokens.weight") return m.embed_tokens;
  if (name == "model.norm.weight") return m.final_norm;
  if (name == "lm_head.weight") return m.lm_head;
  int layer = -1;
  char rest[128] = {};
  if (std::sscanf(name.c_str(), "model.layers.%d.%127s", &layer, rest) != 2 || layer < 0 ||
      layer >= static_cast<int>(m.layers.size())) {
    return kNone;
  }
  const LayerWeights& l = m.layers[layer];
  const std::string r = rest;
  if (r == "input_layernorm.weight") return l.input_norm;
  if (r == "post_attention_layernorm.weight") return l.post_attention_norm;
  if (r == "self_attn.q_proj.weight") return l.q_proj;
  if (r == "self_attn.k_proj.weight") return l.k_proj;
  if (r == "self_attn.v_proj.weight") return l.v_proj;
  if (r == "self_attn.o_proj.weight") return l.o_proj;
  if (r == "self_attn.q_proj.bias") return l.q_bias;
  if (r == "self_attn.k_proj.bias") return l.k_bias;
  if (r == "self_attn.v_proj.bias") return l.v_bias;
  if (r == "self_attn.o_proj.bias") return l.o_bias;
  if (r == "mlp.gate_proj.weight") return l.gate_proj;
  if (r == "mlp.up_proj.weight") return l.up_proj;
  if (r == "mlp.down_proj.weight") return l.down_proj;
  return kNone;
}

// Every generated tensor must come back with the same shape and values (exactly: the
// expected values are the stored values converted by the independent tensor.h converters).
void ExpectLoadedEqualsGenerated(const SyntheticModelOptions& o, const ModelWeights& m,
                                 DType target) {
  auto gen = GenerateSyntheticTensors(o);
  ASSERT_TRUE(gen.ok()) << gen.status();
  for (const auto& [name, stored] : *gen) {
    const Tensor& t = Lookup(m, name);
    ASSERT_TRUE(t.defined()) << name;
    ASSERT_EQ(t.dtype(), target) << name;
    ASSERT_EQ(t.shape(), stored.shape()) << name;
    for (int64_t i = 0; i < t.numel(); ++i) {
      float want = 0;
      switch (stored.dtype()) {
        case DType::kF32:
          want = stored.data<float>()[i];
          break;
        case DType::kBF16:
          want = BF16ToFloat(stored.data<uint16_t>()[i]);
          break;
        default:
          want = F16ToFloat(stored.data<uint16_t>()[i]);
      }
      if (target == DType::kF32) {
        ASSERT_EQ(t.data<float>()[i], want) << name << "[" << i << "]";
      } else if (target == DType::kBF16) {
        ASSERT_EQ(t.data<uint16_t>()[i], FloatToBF16(want)) << name << "[" << i << "]";
      }
    }
  }
  // Nothing loaded that was not generated (biases undefined unless written).
  size_t defined = 3;  // embed, norm, lm_head
  for (const LayerWeights& l : m.layers) {
    for (const Tensor* t :
         {&l.input_norm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.q_bias, &l.k_bias,
          &l.v_bias, &l.o_bias, &l.post_attention_norm, &l.gate_proj, &l.up_proj, &l.down_proj}) {
      defined += t->defined() ? 1 : 0;
    }
  }
  EXPECT_EQ(defined, gen->size() + (o.tie_word_embeddings ? 1 : 0));
}

TEST(LoadModel, TinyPresetBf16RoundTripIsExact) {
  testing::TempDir dir;
  const SyntheticModelOptions o = TinyModelOptions();
  ASSERT_TRUE(WriteSyntheticModel(dir.path(), o).ok());
  EXPECT_TRUE(fs::exists(dir.file("model.safetensors")));
  EXPECT_TRUE(fs::exists(dir.file("config.json")));
  EXPECT_TRUE(fs::exists(dir.file("generation_config.json")));
  EXPECT_FALSE(fs::exists(dir.file("tokenizer.json")));

  auto m = LoadModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.intermediate_size, 688);
  EXPECT_EQ(c.num_hidden_layers, 4);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_FALSE(c.tie_word_embeddings);
  ASSERT_EQ(m->layers.size(), 4u);
  EXPECT_EQ(m->layers[0].q_proj.shape(), (Shape{256, 256}));
  EXPECT_EQ(m->layers[0].k_proj.shape(), (Shape{64, 256}));
  EXPECT_EQ(m->layers[3].down_proj.shape(), (Shape{256, 688}));
  EXPECT_FALSE(m->layers[0].q_bias.defined());
  EXPECT_NE(m->lm_head.raw(), m->embed_tokens.raw());
  ExpectLoadedEqualsGenerated(o, *m, DType::kF32);

  auto bf = LoadModel(dir.path(), DType::kBF16);
  ASSERT_TRUE(bf.ok()) << bf.status();
  ExpectLoadedEqualsGenerated(o, *bf, DType::kBF16);
}

TEST(LoadModel, Fp32StorageRoundTripIsExact) {
  testing::TempDir dir;
  SyntheticModelOptions o;
  o.storage_dtype = DType::kF32;
  o.num_hidden_layers = 2;
  ASSERT_TRUE(WriteSyntheticModel(dir.path(), o).ok());
  auto m = LoadModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.torch_dtype, "float32");
  ExpectLoadedEqualsGenerated(o, *m, DType::kF32);
}

TEST(LoadModel, Fp16StorageLoads) {
  testing::TempDir dir;
  SyntheticModelOptions o;
  o.storage_dtype = DType::kF16;
  o.num_hidden_layers = 1;
  ASSERT_TRUE(WriteSyntheticModel(dir.path(), o).ok());
  auto m = LoadModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status();
  ExpectLoadedEqualsGenerated(o, *m, DType::kF32);
}

TEST(LoadModel, ShardedEqualsSingleFile) {
  testing::TempDir single, sharded;
  SyntheticModelOptions o;
  o.seed = 7;
  ASSERT_TRUE(WriteSyntheticModel(single.path(), o).ok());
  o.num_shards = 3;
  ASSERT_TRUE(WriteSyntheticModel(sharded.path(), o).ok());
  EXPECT_FALSE(fs::exists(sharded.file("model.safetensors")));
  EXPECT_TRUE(fs::exists(sharded.file("model.safetensors.index.json")));
  for (int k = 1; k <= 3; ++k) {
    EXPECT_TRUE(
        fs::exists(sharded.file("model-0000" + std::to_string(k) + "-of-00003.safetensors")));
  }
  auto a = LoadModel(single.path());
  auto b = LoadModel(sharded.path());
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  auto gen = GenerateSyntheticTensors(o);
  ASSERT_TRUE(gen.ok());
  for (const auto& [name, _] : *gen) {
    const Tensor& x = Lookup(*a, name);
    const Tensor& y = Lookup(*b, name);
    ASSERT_EQ(x.shape(), y.shape()) << name;
    EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0) << name;
  }
  ExpectLoadedEqualsGenerated(o, *b, DType::kF32);
}

TEST(LoadModel, SeedsAreDeterministicAndDistinct) {
  SyntheticModelOptions o;
  o.num_hidden_layers = 1;
  auto a = GenerateSyntheticTensors(o);
  auto b = GenerateSyntheticTensors(o);
  o.seed = 1;
  auto c = GenerateSyntheticTensors(o);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  for (size_t i = 0; i < a->size(); ++i) {
    const Tensor& x = (*a)[i].second;
    EXPECT_EQ(std::memcmp(x.raw(), (*b)[i].second.raw(), x.nbytes()), 0);
    EXPECT_NE(std::memcmp(x.raw(), (*c)[i].second.raw(), x.nbytes()), 0);
  }
}

TEST(LoadModel, Qwen2VariantHasQkvBias) {
  testing::TempDir dir;
  SyntheticModelOptions o;
  o.architecture = "Qwen2ForCausalLM";
  o.num_hidden_layers = 2;
  ASSERT_TRUE(WriteSyntheticModel(dir.path(), o).ok());
  auto m = LoadModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.model_type, "qwen2");
  EXPECT_TRUE(m->config.qkv_bias);
  for (const LayerWeights& l : m->layers) {
    EXPECT_EQ(l.q_bias.shape(), (Shape{256}));
    EXPECT_EQ(l.k_bias.shape(), (Shape{64}));
    EXPECT_EQ(l.v_bias.shape(), (Shape{64}));
    EXPECT_FALSE(l.o_bias.defined());
  }
  ExpectLoadedEqualsGenerated(o, *m, DType::kF32);
}

TEST(LoadModel, LlamaAttentionBiasVariantHasOBias) {
  testing::TempDir dir;
  SyntheticModelOptions o;
  o.attention_bias = true;
  o.num_hidden_layers = 1;
  ASSERT_TRUE(WriteSyntheticModel(dir.path(), o).ok());
  auto m = LoadModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->layers[0].o_bias.shape(), (Shape{256}));
  EXPECT_TRUE(m->layers[0].q_bias.defined());
  ExpectLoadedEqualsGenerated(o, *m, DType::kF32);
}

TEST(LoadModel, TiedEmbeddingsShareStorage) {
  testing::TempDir dir;
  SyntheticModelOptions o;
  o.tie_word_embeddings = true;
  o.num_hidden_layers = 1;
  ASSERT_TRUE(WriteSyntheticModel(dir.path(), o).ok());
  auto f = SafetensorsFile::Open(dir.file("model.safetensors"));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->Find("lm_head.weight"), nullptr);
  auto m = LoadModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->config.tie_word_embeddings);
  EXPECT_EQ(m->lm_head.raw(), m->embed_tokens.raw());
  EXPECT_EQ(m->lm_head.shape(), (Shape{512, 256}));
  ExpectLoadedEqualsGenerated(o, *m, DType::kF32);
}

TEST(LoadModel, Llama3RopeScalingAndMistralVariants) {
  testing::TempDir dir, mistral;
  SyntheticModelOptions o;
  o.rope_scaling = TinyLlama3RopeScaling();
  o.num_hidden_layers = 1;
  ASSERT_TRUE(WriteSyntheticModel(dir.path(), o).ok());
  auto m = LoadModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->config.rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_EQ(m->config.rope_scaling.factor, 8.0);
  EXPECT_EQ(m->config.rope_scaling.original_max_position_embeddings, 1024);

  o.architecture = "MistralForCausalLM";
  o.rope_scaling = RopeScalingConfig();
  ASSERT_TRUE(WriteSyntheticModel(mistral.path(), o).ok());
  auto mm = LoadModel(mistral.path());
  ASSERT_TRUE(mm.ok()) << mm.status();
  EXPECT_EQ(mm->config.model_type, "mistral");
}

TEST(LoadModel, TokenizerHookWritesFiles) {
  testing::TempDir dir;
  SyntheticModelOptions o;
  o.num_hidden_layers = 1;
  o.tokenizer_json = R"({"version": "1.0"})";
  o.tokenizer_config_json = R"({"add_bos_token": true})";
  ASSERT_TRUE(WriteSyntheticModel(dir.path(), o).ok());
  EXPECT_EQ(*ReadFileToString(dir.file("tokenizer.json")), o.tokenizer_json);
  EXPECT_EQ(*ReadFileToString(dir.file("tokenizer_config.json")), o.tokenizer_config_json);
}

// --- errors -------------------------------------------------------------------------

class LoadModelErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    o_.num_hidden_layers = 2;
    o_.hidden_size = 64;
    o_.intermediate_size = 96;
    o_.num_attention_heads = 4;
    o_.num_key_value_heads = 2;
    o_.head_dim = 16;
    o_.vocab_size = 300;
    ASSERT_TRUE(WriteSyntheticModel(dir_.path(), o_).ok());
    auto gen = GenerateSyntheticTensors(o_);
    ASSERT_TRUE(gen.ok());
    tensors_ = std::move(*gen);
  }
  absl::Status Load() { return LoadModel(dir_.path()).status(); }
  SyntheticModelOptions o_;
  testing::TempDir dir_;
  std::vector<std::pair<std::string, Tensor>> tensors_;
};

TEST_F(LoadModelErrors, MissingTensor) {
  const std::string victim = "model.layers.1.mlp.up_proj.weight";
  std::erase_if(tensors_, [&](const auto& e) { return e.first == victim; });
  ASSERT_TRUE(WriteSafetensors(dir_.file("model.safetensors"), tensors_).ok());
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(victim), HasSubstr("model.safetensors")));
}

TEST_F(LoadModelErrors, WrongShapeVsConfig) {
  const std::string victim = "model.layers.0.self_attn.k_proj.weight";
  for (auto& [name, t] : tensors_) {
    if (name == victim) t = Tensor::Zeros({16, 64}, DType::kBF16);  // config implies [32, 64]
  }
  ASSERT_TRUE(WriteSafetensors(dir_.file("model.safetensors"), tensors_).ok());
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(victim), HasSubstr("model.safetensors"),
                                 HasSubstr("[16, 64]"), HasSubstr("[32, 64]")));
}

TEST_F(LoadModelErrors, UnsupportedStorageDtype) {
  const std::string victim = "model.norm.weight";
  for (auto& [name, t] : tensors_) {
    if (name == victim) t = Tensor::Zeros({64}, DType::kF64);
  }
  ASSERT_TRUE(WriteSafetensors(dir_.file("model.safetensors"), tensors_).ok());
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(victim), HasSubstr("F64")));
}

TEST_F(LoadModelErrors, UnsupportedArchitecture) {
  ModelConfig c = SyntheticModelConfig(o_);
  std::string text = c.ToJson();
  text.replace(text.find("LlamaForCausalLM"), 16, "PhiForCausalLM");
  ASSERT_TRUE(WriteStringToFile(dir_.file("config.json"), text).ok());
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("PhiForCausalLM"), HasSubstr("config.json")));
}

TEST_F(LoadModelErrors, MissingConfigAndMissingDir) {
  fs::remove(dir_.file("config.json"));
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("config.json"));
  s = LoadModel(dir_.file("no_such_model")).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("no_such_model"));
}

TEST_F(LoadModelErrors, MissingWeightsFile) {
  fs::remove(dir_.file("model.safetensors"));
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("safetensors"));
}

TEST_F(LoadModelErrors, IndexNamingMissingShard) {
  testing::TempDir sharded;
  o_.num_shards = 2;
  ASSERT_TRUE(WriteSyntheticModel(sharded.path(), o_).ok());
  fs::remove(sharded.file("model-00002-of-00002.safetensors"));
  absl::Status s = LoadModel(sharded.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("model.safetensors.index.json"),
                                 HasSubstr("model-00002-of-00002.safetensors")));
}

TEST_F(LoadModelErrors, TruncatedWeightsFile) {
  const std::string p = dir_.file("model.safetensors");
  fs::resize_file(p, fs::file_size(p) - 10);
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(p), HasSubstr("lm_head.weight"), HasSubstr("out of range")));
}

TEST_F(LoadModelErrors, CorruptConfigField) {
  std::string text = SyntheticModelConfig(o_).ToJson();
  text.replace(text.find("\"num_key_value_heads\": 2"), 24, "\"num_key_value_heads\": 3");
  ASSERT_TRUE(WriteStringToFile(dir_.file("config.json"), text).ok());
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("config.json"), HasSubstr("num_key_value_heads")));
}

TEST(SyntheticModel, RejectsBadOptions) {
  testing::TempDir dir;
  SyntheticModelOptions o;
  o.num_key_value_heads = 3;
  EXPECT_EQ(WriteSyntheticModel(dir.path(), o).code(), absl::StatusCode::kInvalidArgument);
  o = SyntheticModelOptions();
  o.num_shards = 0;
  EXPECT_EQ(WriteSyntheticModel(dir.path(), o).code(), absl::StatusCode::kInvalidArgument);
  o = SyntheticModelOptions();
  o.storage_dtype = DType::kI32;
  EXPECT_EQ(WriteSyntheticModel(dir.path(), o).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpserve
