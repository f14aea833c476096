// The CPU model forward pass against the float64 naive reference
// (tests/reference/forward_ref), one-shot and in chunks read back from the paged cache.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/reference/forward_ref.h"
#include "tests/unit/generation/test_model.h"
#include "worker/cp/cp_attention.h"
#include "worker/model/llama_model.h"

namespace cpserve {
namespace {

// max_i |a_i - b_i| / max_i |b_i| over one row.
double RowRelError(const float* a, const std::vector<double>& b) {
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return diff / scale;
}

std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (int& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

class ModelForwardTest : public ::testing::TestWithParam<int> {};

SyntheticModelOptions Variant(int v) {
  SyntheticModelOptions o;
  o.seed = 11 + v;
  if (v == 1) o.architecture = "Qwen2ForCausalLM";  // q/k/v biases
  if (v == 2) o.tie_word_embeddings = true;
  if (v == 3) o.rope_scaling = TinyLlama3RopeScaling();
  if (v == 4) o.attention_bias = true;  // Llama with q/k/v/o biases
  return o;
}

// Runs the model over `tokens` in chunks of `chunk` positions with a single-rank
// paged cache, returning the logits of every position.
std::vector<std::vector<float>> ChunkedLogits(const ModelWeights& w,
                                              const std::vector<int32_t>& tokens, int chunk,
                                              int block_size) {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  const ModelConfig& c = w.config;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t blocks = (n + block_size - 1) / block_size;
  Tensor cache = *backend->AllocKvCache(blocks + 3, c.num_hidden_layers, block_size,
                                        c.num_key_value_heads, c.head_dim);
  const KvCacheView view = *KvCacheView::FromTensor(cache);
  // Shuffled physical blocks: the table, not the order, must decide placement.
  std::vector<int32_t> table(blocks + 3);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(5));
  table.resize(blocks);
  LlamaModel model(w, *backend);
  CpAttention attention(*backend, /*group=*/nullptr, view, CpLayout{1, block_size, block_size});
  std::vector<std::vector<float>> out;
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t end = std::min<int64_t>(n, start + chunk);
    ForwardInput in;
    std::vector<int64_t> slots;
    for (int64_t p = start; p < end; ++p) {
      in.tokens.push_back(tokens[p]);
      in.positions.push_back(p);
      in.logit_rows.push_back(p - start);
      slots.push_back(int64_t{table[p / block_size]} * block_size + p % block_size);
    }
    std::vector<CpWork> works = {{start, end - start, false}};
    CpStepLayout layout = BuildCpStepLayout(works, 0, 1);
    EXPECT_TRUE(attention.SetStep(works, layout, {table}, slots).ok());
    absl::StatusOr<Tensor> logits = model.Forward(in, attention);
    EXPECT_TRUE(logits.ok()) << logits.status();
    for (int64_t r = 0; r < end - start; ++r) {
      const float* row = logits->data<float>() + r * c.vocab_size;
      out.emplace_back(row, row + c.vocab_size);
    }
  }
  return out;
}

TEST_P(ModelForwardTest, LogitsMatchFloat64ReferenceOneShotAndChunked) {
  const ModelWeights w = testing::WriteAndLoad(Variant(GetParam()));
  const std::vector<int32_t> tokens = RandomTokens(41, w.config.vocab_size, GetParam());
  const auto ref = reference::ForwardLogits(w, tokens);
  for (int chunk : {41, 7, 1}) {
    const auto got = ChunkedLogits(w, tokens, chunk, 4);
    ASSERT_EQ(got.size(), ref.size());
    for (size_t p = 0; p < ref.size(); ++p) {
      ASSERT_LT(RowRelError(got[p].data(), ref[p]), 1e-4) << "chunk " << chunk << " position " << p;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelForwardTest, ::testing::Range(0, 5));

TEST(ModelForwardTest, SyntheticModelIsNotDegenerate) {
  // Greedy next tokens of different prompts differ: the logits carry information.
  const ModelWeights w = testing::WriteAndLoad(SyntheticModelOptions());
  std::set<int> argmaxes;
  for (uint32_t s = 0; s < 16; ++s) {
    const auto ref = reference::ForwardLogits(w, RandomTokens(5, w.config.vocab_size, 100 + s));
    const auto& last = ref.back();
    argmaxes.insert(static_cast<int>(std::max_element(last.begin(), last.end()) - last.begin()));
  }
  EXPECT_GE(argmaxes.size(), 8u);
}

}  // namespace
}  // namespace cpserve
