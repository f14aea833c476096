// The synthetic benchmark models generated on the GPU (random-fill kernel):
//  - the tiny preset's every tensor is bit-identical to the host generator's
//    (the CPU reference of the kernel), and a different seed changes it;
//  - the full Llama-3-8B shape (16 GB of bf16) is generated on the device; sampled
//    elements of every tensor match the documented hash rule computed here; the
//    engine prefills a 2048-token prompt and decodes with finite logits,
//    deterministically. Prints generation time, prefill and decode rates (one H200,
//    2026-11-22: 8.03e9 parameters in 22 ms; warm 2048-token prefill 54 ms; decode
//    9.2 ms/token at batch 1).
// Skips without a GPU.
#include <cuda_runtime_api.h>

#include <chrono>
#include <cmath>
#include <iostream>
#include <random>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/random_fill.h"
#include "worker/engine/engine.h"
#include "worker/model/synthetic_weights.h"
#include "worker/model/synthetic_weights_cuda.h"

namespace cpserve {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Every (name, tensor) of a model, in a fixed order.
std::vector<std::pair<std::string, const Tensor*>> Tensors(const ModelWeights& w) {
  std::vector<std::pair<std::string, const Tensor*>> out = {
      {"model.embed_tokens.weight", &w.embed_tokens},
      {"model.norm.weight", &w.final_norm},
      {"lm_head.weight", &w.lm_head}};
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    const int n = static_cast<int>(i);
    out.insert(out.end(),
               {{LayerTensorName(n, "input_layernorm.weight"), &l.input_norm},
                {LayerTensorName(n, "self_attn.q_proj.weight"), &l.q_proj},
                {LayerTensorName(n, "self_attn.k_proj.weight"), &l.k_proj},
                {LayerTensorName(n, "self_attn.v_proj.weight"), &l.v_proj},
                {LayerTensorName(n, "self_attn.o_proj.weight"), &l.o_proj},
                {LayerTensorName(n, "post_attention_layernorm.weight"), &l.post_attention_norm},
                {LayerTensorName(n, "mlp.gate_proj.weight"), &l.gate_proj},
                {LayerTensorName(n, "mlp.up_proj.weight"), &l.up_proj},
                {LayerTensorName(n, "mlp.down_proj.weight"), &l.down_proj}});
  }
  return out;
}

std::vector<uint16_t> ToHost(const Tensor& t) {
  std::vector<uint16_t> h(static_cast<size_t>(t.numel()));
  EXPECT_EQ(cudaMemcpy(h.data(), t.raw(), t.nbytes(), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

TEST(SyntheticGpuTest, TinyPresetIsBitIdenticalToTheHostGenerator) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  auto backend = MakeCudaBackend(0);
  ASSERT_TRUE(backend.ok()) << backend.status();
  const SyntheticSpec spec = *ParseSyntheticModelName("synthetic:tiny,seed=11");
  auto dev = GenerateSyntheticWeightsCuda(spec, **backend);
  ASSERT_TRUE(dev.ok()) << dev.status();
  auto host = GenerateSyntheticWeightsHost(spec, DType::kBF16);
  ASSERT_TRUE(host.ok()) << host.status();
  SyntheticSpec other = spec;
  other.seed = 12;
  auto dev2 = GenerateSyntheticWeightsCuda(other, **backend);
  ASSERT_TRUE(dev2.ok());
  const auto d = Tensors(*dev), h = Tensors(*host), d2 = Tensors(*dev2);
  ASSERT_EQ(d.size(), h.size());
  for (size_t i = 0; i < d.size(); ++i) {
    ASSERT_EQ(d[i].second->device(), Device::CUDA(0)) << d[i].first;
    ASSERT_EQ(d[i].second->dtype(), DType::kBF16) << d[i].first;
    ASSERT_EQ(d[i].second->shape(), h[i].second->shape()) << d[i].first;
    const std::vector<uint16_t> got = ToHost(*d[i].second);
    ASSERT_EQ(std::memcmp(got.data(), h[i].second->raw(), h[i].second->nbytes()), 0)
        << d[i].first << " differs from the host generator";
    EXPECT_NE(got, ToHost(*d2[i].second)) << d[i].first << " ignores the seed";
  }
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

TEST(SyntheticGpuTest, Llama3EightBOnTheGpu) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  auto backend = MakeCudaBackend(0);
  ASSERT_TRUE(backend.ok()) << backend.status();
  const SyntheticSpec spec = *ParseSyntheticModelName("synthetic:llama3-8b");
  auto t0 = Clock::now();
  auto w = GenerateSyntheticWeightsCuda(spec, **backend);
  ASSERT_TRUE(w.ok()) << w.status();
  const double gen_s = Seconds(t0);
  int64_t params = 0;
  std::mt19937_64 rng(1);
  for (const auto& [name, t] : Tensors(*w)) {
    params += t->numel();
    // Sampled elements against the documented rule (synthetic_weights.h).
    const bool norm = name.find("norm") != std::string::npos;
    const int64_t in = t->rank() == 2 ? t->dim(1) : 1;
    double sd = name == "model.embed_tokens.weight" ? 1.0 : 1.0 / std::sqrt(double(in));
    if (name.find("q_proj") != std::string::npos || name.find("k_proj") != std::string::npos) {
      sd *= 2;
    }
    if (norm) sd = 0.1;
    const float scale = static_cast<float>(sd * std::sqrt(3.0)), offset = norm ? 1.0f : 0.0f;
    const uint64_t key = RandomFillKey(spec.seed, Fnv1a(name));
    for (int k = 0; k < 64; ++k) {
      const int64_t i = static_cast<int64_t>(rng() % static_cast<uint64_t>(t->numel()));
      uint16_t got = 0;
      ASSERT_EQ(cudaMemcpy(&got, t->data<uint16_t>() + i, 2, cudaMemcpyDeviceToHost), cudaSuccess);
      ASSERT_EQ(got, FloatToBF16(RandomFillValue(key, static_cast<uint64_t>(i), scale, offset)))
          << name << " element " << i;
    }
  }
  EXPECT_EQ(params, 8030261248);
  std::cout << "llama3-8b synthetic: " << params << " parameters generated on the GPU in " << gen_s
            << " s (" << params * 2 / gen_s / 1e9 << " GB/s)\n";

  EngineOptions o;
  o.max_batch_tokens = 2048;
  o.num_kv_blocks = 512;
  auto engine = Engine::Create(*w, **backend, o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<int32_t> prompt(2048);
  for (int32_t& x : prompt) x = static_cast<int32_t>(rng() % 128256);
  std::vector<int32_t> first_tokens;
  for (int run = 0; run < 2; ++run) {
    GenerationParams p;
    p.max_tokens = 32;
    p.ignore_eos = true;
    p.return_logits = true;
    std::vector<int32_t> tokens;
    std::vector<Clock::time_point> at;
    bool finite = true;
    absl::Notification done;
    absl::Status status;
    const auto start = Clock::now();
    ASSERT_TRUE((*engine)
                    ->Submit("r", prompt, p,
                             [&](const TokenEvent& e) {
                               if (e.token >= 0) {
                                 tokens.push_back(e.token);
                                 at.push_back(Clock::now());
                                 for (float v : e.logits) finite &= std::isfinite(v);
                               }
                               if (e.finished) {
                                 status = e.status;
                                 done.Notify();
                               }
                             })
                    .ok());
    done.WaitForNotification();
    ASSERT_TRUE(status.ok()) << status;
    ASSERT_EQ(tokens.size(), 32u);
    EXPECT_TRUE(finite);
    const double ttft = std::chrono::duration<double>(at.front() - start).count();
    const double decode = std::chrono::duration<double>(at.back() - at.front()).count() / 31;
    std::cout << "llama3-8b run " << run << ": 2048-token prefill " << ttft * 1e3 << " ms ("
              << 2048 / ttft << " tok/s, first run includes warm-up), decode " << decode * 1e3
              << " ms/token (batch 1)\n";
    if (run == 0) {
      first_tokens = tokens;
    } else {
      EXPECT_EQ(tokens, first_tokens) << "greedy decoding is not deterministic";
    }
  }
}

}  // namespace
}  // namespace cpserve
