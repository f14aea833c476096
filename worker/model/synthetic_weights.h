// Synthetic models generated in memory from a seed, with no checkpoint files: the
// benchmark model with the Llama-3-8B shape (16 GB of bf16 weights, generated
// directly on the GPU) and smaller variants of the same code for tests.
//
// Selection (one path for every model): a model name "synthetic:<preset>[,layers=N]
// [,seed=S]" is resolved by ResolveModelDir (worker/builtin) to a cached directory
// holding config.json, the built-in tokenizer and the marker file
// kSyntheticMarkerFile (preset, layers, seed) instead of safetensors; the loaders
// (worker/pool/pool_backend.h LoadWeightsForBackend) see the marker and generate the
// weights on the rank's backend.
//
// Presets: "llama3-8b" — Meta-Llama-3.1-8B's shape: 32 layers, hidden 4096, 32 heads,
// 8 KV heads, head dim 128, intermediate 14336, vocab 128256, rope theta 500000 with
// llama3 scaling (factor 8, low 1, high 4, original 8192), 131072 positions, untied;
// "tiny" — the built-in tiny shape (worker/model/synthetic_model.h). Bos/eos are the
// built-in tokenizer's (256/257); ids the tokenizer never produces are valid model
// inputs (`cpserve bench` prompts given as ids).
//
// Weights (kernels/cuda/random_fill.h, a counter-based hash per tensor name and
// element → uniform): standard deviations as the synthetic checkpoint writer's —
// embed_tokens 1; q/k_proj 2/√in; v/o/gate/up/down_proj and lm_head 1/√in; norm
// weights 1 ± uniform of sd 0.1 — values rounded once to bf16. The host generator is
// the reference of the device one (same bits).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "worker/model/weights.h"

namespace cpserve {

inline constexpr char kSyntheticPrefix[] = "synthetic:";
inline constexpr char kSyntheticMarkerFile[] = "cpserve_synthetic.json";

struct SyntheticSpec {
  std::string preset = "llama3-8b";
  int64_t num_layers = 0;  // 0: the preset's
  uint64_t seed = 0;

  // Canonical name: "synthetic:llama3-8b" (+ ",layers=N" / ",seed=S" when set).
  std::string Name() const;
};

bool IsSyntheticModelName(const std::string& name);
// INVALID_ARGUMENT for an unknown preset, a malformed option or layers < 1.
absl::StatusOr<SyntheticSpec> ParseSyntheticModelName(const std::string& name);

// The config.json of the spec (validated).
absl::StatusOr<ModelConfig> SyntheticSpecConfig(const SyntheticSpec& spec);

// Marker file (JSON) <-> spec.
std::string SyntheticMarkerJson(const SyntheticSpec& spec);
absl::StatusOr<SyntheticSpec> ParseSyntheticMarker(const std::string& json_text);
// The spec of a model directory that carries the marker; NOT_FOUND when it has none.
absl::StatusOr<SyntheticSpec> ReadSyntheticMarker(const std::string& dir);

// Value rule of one tensor: element i = RandomFillValue(key, i, scale, offset).
struct SyntheticFill {
  uint64_t key = 0;
  float scale = 0;
  float offset = 0;
};

// Builds the model's weights: `alloc` makes each tensor (shape, HF name), `fill`
// writes its values. Tied embeddings would share one buffer (no preset ties them).
using SyntheticAlloc = std::function<absl::StatusOr<Tensor>(const Shape& shape)>;
using SyntheticFiller = std::function<absl::Status(const Tensor& t, const SyntheticFill& fill)>;
absl::StatusOr<ModelWeights> BuildSyntheticWeights(const SyntheticSpec& spec,
                                                   const SyntheticAlloc& alloc,
                                                   const SyntheticFiller& fill);

// Host weights: `dtype` kF32 (bf16-rounded values, for the CPU backend) or kBF16.
absl::StatusOr<ModelWeights> GenerateSyntheticWeightsHost(const SyntheticSpec& spec,
                                                          DType dtype = DType::kF32);

}  // namespace cpserve
