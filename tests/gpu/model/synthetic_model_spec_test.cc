// The synthetic benchmark models on the CPU: name parsing, the Llama-3-8B preset's
// config, the model directory that selection writes (config + tokenizer + marker,
// no weight files), the host generator (determinism per seed, the hash rule, the
// weight statistics), and the tiny preset through the CPU engine.
#include <cmath>
#include <filesystem>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/random_fill.h"
#include "worker/builtin/builtin_model.h"
#include "worker/engine/engine.h"
#include "worker/model/synthetic_weights.h"
#include "worker/pool/pool_backend.h"

namespace cpserve {
namespace {

TEST(SyntheticSpecTest, ParsesNamesAndRefusesBadOnes) {
  auto spec = ParseSyntheticModelName("synthetic:llama3-8b");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->preset, "llama3-8b");
  EXPECT_EQ(spec->num_layers, 0);
  EXPECT_EQ(spec->seed, 0u);
  EXPECT_EQ(spec->Name(), "synthetic:llama3-8b");
  spec = ParseSyntheticModelName("synthetic:tiny,layers=2,seed=9");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->num_layers, 2);
  EXPECT_EQ(spec->seed, 9u);
  EXPECT_EQ(spec->Name(), "synthetic:tiny,layers=2,seed=9");
  EXPECT_TRUE(IsSyntheticModelName("synthetic:x"));
  EXPECT_FALSE(IsSyntheticModelName("/models/llama"));
  for (const char* bad :
       {"synthetic:", "synthetic:llama9", "synthetic:tiny,layers=0", "synthetic:tiny,layers=x",
        "synthetic:tiny,depth=2", "synthetic:tiny,", "/dir"}) {
    EXPECT_EQ(ParseSyntheticModelName(bad).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(SyntheticSpecTest, Llama3EightBShape) {
  auto c = SyntheticSpecConfig(*ParseSyntheticModelName("synthetic:llama3-8b"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->num_hidden_layers, 32);
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->num_attention_heads, 32);
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->intermediate_size, 14336);
  EXPECT_EQ(c->vocab_size, 128256);
  EXPECT_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_EQ(c->rope_scaling.low_freq_factor, 1.0);
  EXPECT_EQ(c->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->qkv_bias);
  // 8.03e9 parameters, as Llama-3-8B.
  const int64_t H = 4096, I = 14336, V = 128256, KV = 8 * 128;
  const int64_t params = 2 * V * H + H + 32 * (2 * H + 2 * H * H + 2 * H * KV + 3 * H * I);
  EXPECT_EQ(params, 8030261248);
  auto small = SyntheticSpecConfig(*ParseSyntheticModelName("synthetic:llama3-8b,layers=2"));
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->num_hidden_layers, 2);
  EXPECT_EQ(small->hidden_size, 4096);
}

TEST(SyntheticSpecTest, SelectionWritesAMarkedDirectoryWithoutWeights) {
  setenv("XDG_CACHE_HOME", (::testing::TempDir() + "/synthetic-cache").c_str(), 1);
  auto dir = ResolveModelDir("synthetic:llama3-8b,seed=3");
  ASSERT_TRUE(dir.ok()) << dir.status();
  namespace fs = std::filesystem;
  EXPECT_TRUE(fs::exists(fs::path(*dir) / "config.json"));
  EXPECT_TRUE(fs::exists(fs::path(*dir) / "tokenizer.json"));
  for (const auto& e : fs::directory_iterator(*dir)) {
    EXPECT_NE(e.path().extension(), ".safetensors") << e.path();
  }
  auto spec = ReadSyntheticMarker(*dir);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->Name(), "synthetic:llama3-8b,seed=3");
  auto config = LoadModelConfig(*dir + "/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->vocab_size, 128256);
  EXPECT_EQ(config->rope_scaling.type, RopeScalingType::kLlama3);
  // The same name resolves to the same directory; a plain directory has no marker.
  EXPECT_EQ(*ResolveModelDir("synthetic:llama3-8b,seed=3"), *dir);
  EXPECT_EQ(ReadSyntheticMarker(::testing::TempDir()).status().code(), absl::StatusCode::kNotFound);
  std::filesystem::remove_all(::testing::TempDir() + "/synthetic-cache");
}

TEST(SyntheticSpecTest, HostWeightsFollowTheHashRuleAndTheSeed) {
  const SyntheticSpec spec = *ParseSyntheticModelName("synthetic:tiny,seed=5");
  auto a = GenerateSyntheticWeightsHost(spec, DType::kBF16);
  auto b = GenerateSyntheticWeightsHost(spec, DType::kBF16);
  auto f = GenerateSyntheticWeightsHost(spec, DType::kF32);
  SyntheticSpec other = spec;
  other.seed = 6;
  auto c = GenerateSyntheticWeightsHost(other, DType::kBF16);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && f.ok());
  const Tensor& q = a->layers[1].q_proj;
  ASSERT_EQ(q.shape(), (Shape{256, 256}));
  EXPECT_EQ(std::memcmp(q.raw(), b->layers[1].q_proj.raw(), q.nbytes()), 0);
  EXPECT_NE(std::memcmp(q.raw(), c->layers[1].q_proj.raw(), q.nbytes()), 0);
  // Brute force: the documented rule for one tensor, and sd ≈ 2/√H for q_proj.
  const uint64_t key = RandomFillKey(5, [] {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char ch : std::string("model.layers.1.self_attn.q_proj.weight")) {
      h = (h ^ ch) * 0x100000001b3ull;
    }
    return h;
  }());
  const float scale = static_cast<float>(2.0 / 16.0 * std::sqrt(3.0));
  double sum2 = 0;
  for (int64_t i = 0; i < q.numel(); ++i) {
    const uint16_t want = FloatToBF16(RandomFillValue(key, static_cast<uint64_t>(i), scale, 0.f));
    ASSERT_EQ(q.data<uint16_t>()[i], want) << i;
    EXPECT_EQ(f->layers[1].q_proj.data<float>()[i], BF16ToFloat(want));
    const double v = BF16ToFloat(want);
    sum2 += v * v;
  }
  EXPECT_NEAR(std::sqrt(sum2 / static_cast<double>(q.numel())), 2.0 / 16.0, 0.01);
  // Norm weights: 1 ± 0.1·√3.
  for (float v : f->final_norm.span<float>()) {
    EXPECT_GE(v, 1.0f - 0.18f);
    EXPECT_LE(v, 1.0f + 0.18f);
  }
}

TEST(SyntheticSpecTest, TinyPresetRunsThroughTheCpuPoolPath) {
  setenv("XDG_CACHE_HOME", (::testing::TempDir() + "/synthetic-cache-2").c_str(), 1);
  auto dir = ResolveModelDir("synthetic:tiny,layers=2");
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto backend = CreateRankBackend(*PoolRankDevice("cpu", 0));
  ASSERT_TRUE(backend.ok());
  auto weights = LoadWeightsForBackend(*dir, **backend);
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ(weights->layers.size(), 2u);
  auto engine = Engine::Create(*weights, **backend, EngineOptions());
  ASSERT_TRUE(engine.ok()) << engine.status();
  GenerationParams p;
  p.max_tokens = 8;
  p.ignore_eos = true;
  auto first = (*engine)->Generate({1, 500, 7, 300}, p);
  auto second = (*engine)->Generate({1, 500, 7, 300}, p);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->size(), 8u);
  EXPECT_EQ(*first, *second);
  std::filesystem::remove_all(::testing::TempDir() + "/synthetic-cache-2");
}

TEST(PoolRankDeviceTest, DeviceStrings) {
  EXPECT_TRUE(PoolRankDevice("cpu", 3)->is_cpu());
  EXPECT_EQ(*PoolRankDevice("cuda", 1), Device::CUDA(1));
  EXPECT_EQ(*PoolRankDevice("cuda:2", 0), Device::CUDA(2));
  EXPECT_EQ(*PoolRankDevice("cuda:2", 1), Device::CUDA(3));
  EXPECT_EQ(*PoolRankDevice("cuda:5,1", 1), Device::CUDA(1));
  EXPECT_EQ(PoolRankDevice("cuda:5,1", 2).status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "cuda:a", "cuda:1,,2", "CPU"}) {
    EXPECT_EQ(PoolRankDevice(bad, 0).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace cpserve
