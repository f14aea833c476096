// The cpserve side of the Hugging Face check (cpserve_hf_dump, hf_runner) on the built-in
// model with the CPU fp32 backend: the dense prompt logits agree with the engine's logits
// of the same positions (first step, and every later step under teacher forcing), greedy
// tokens are the argmax of their rows, the prompt logits are causal, and the binary
// writes what scripts/gpu/hf_check.py reads. The comparison with transformers itself runs
// on the GPU machine (scripts/gpu/hf_check.py).
#include <filesystem>
#include <random>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "nlohmann/json.hpp"
#include "tests/common/subprocess.h"
#include "tests/gpu/hf/hf_runner.h"
#include "worker/builtin/builtin_model.h"

namespace cpserve::hfcheck {
namespace {

// max |a - b| over the row, divided by max |b| (the row's logit scale).
double RelDiff(const float* a, const float* b, int64_t n) {
  double diff = 0, scale = 1e-30;
  for (int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::fabs(double{a[i]} - b[i]));
    scale = std::max(scale, std::fabs(double{b[i]}));
  }
  return diff / scale;
}

class HfDumpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(::testing::TempDir() + "/hf-dump-model");
    std::filesystem::remove_all(*dir_);
    ASSERT_TRUE(WriteBuiltinModel(*dir_).ok());
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string* dir_;
};
std::string* HfDumpTest::dir_ = nullptr;

TEST_F(HfDumpTest, PromptLogitsAgreeWithTheEngine) {
  absl::StatusOr<ModelWeights> w = LoadModel(*dir_, DType::kF32);
  ASSERT_TRUE(w.ok()) << w.status();
  const int64_t V = w->config.vocab_size;
  std::unique_ptr<Backend> cpu = MakeCpuBackend();
  std::mt19937 rng(5);
  std::vector<std::vector<int32_t>> prompts;
  for (int n : {1, 23, 70}) {
    prompts.emplace_back(n);
    for (int32_t& t : prompts.back()) t = static_cast<int32_t>(rng() % V);
  }
  RunOptions o;
  o.steps = 6;
  o.max_batch_tokens = 32;  // the 70-token prompt prefills in chunks over cached context
  absl::StatusOr<std::vector<PromptResult>> got = RunPrompts(*w, *cpu, prompts, o);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), prompts.size());
  for (const PromptResult& r : *got) {
    const int64_t T = static_cast<int64_t>(r.prompt.size());
    SCOPED_TRACE(::testing::Message() << "prompt of " << T);
    EXPECT_EQ(r.finish, "length");
    ASSERT_EQ(r.tokens.size(), 6u);
    ASSERT_EQ(static_cast<int64_t>(r.prefill_logits.size()), T * V);
    ASSERT_EQ(static_cast<int64_t>(r.step_logits.size()), 6 * V);
    for (size_t k = 0; k < r.tokens.size(); ++k) {
      const float* row = &r.step_logits[k * V];
      EXPECT_EQ(r.tokens[k], std::max_element(row, row + V) - row) << "step " << k;
    }
    // Teacher forcing: one dense pass over prompt + generated tokens reproduces the
    // prompt logits and every step's row (fp32; only summation order differs).
    std::vector<int32_t> seq = r.prompt;
    seq.insert(seq.end(), r.tokens.begin(), r.tokens.end() - 1);
    absl::StatusOr<std::vector<float>> dense = PromptLogits(*w, *cpu, seq);
    ASSERT_TRUE(dense.ok()) << dense.status();
    for (int64_t t = 0; t < T; ++t) {
      EXPECT_LT(RelDiff(&(*dense)[t * V], &r.prefill_logits[t * V], V), 1e-5) << "row " << t;
    }
    for (int64_t k = 0; k < 6; ++k) {
      EXPECT_LT(RelDiff(&r.step_logits[k * V], &(*dense)[(T - 1 + k) * V], V), 1e-4)
          << "step " << k;
    }
    // Causality: the logits of position t do not depend on later tokens.
    const int64_t t = T / 2;
    std::vector<int32_t> head(r.prompt.begin(), r.prompt.begin() + t + 1);
    absl::StatusOr<std::vector<float>> short_logits = PromptLogits(*w, *cpu, head);
    ASSERT_TRUE(short_logits.ok());
    EXPECT_LT(RelDiff(&(*short_logits)[t * V], &r.prefill_logits[t * V], V), 1e-5);
  }
}

TEST_F(HfDumpTest, BinaryWritesWhatTheScriptReads) {
  const std::string tmp = ::testing::TempDir() + "/hf-dump-cli";
  std::filesystem::remove_all(tmp);
  std::filesystem::create_directories(tmp);
  ASSERT_TRUE(WriteStringToFile(tmp + "/prompts.json", R"({"prompts": [[1, 2, 3], [300]]})").ok());
  const std::string bin = testing::BinaryPath("cpserve_hf_dump");
  testing::RunResult run = testing::RunCommand({bin, "run", "--model=" + *dir_, "--device=cpu",
                                                "--prompts=" + tmp + "/prompts.json", "--steps=4",
                                                "--out=" + tmp + "/d"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  absl::StatusOr<std::string> header = ReadFileToString(tmp + "/d.json");
  ASSERT_TRUE(header.ok()) << header.status();
  const nlohmann::json h = nlohmann::json::parse(*header);
  EXPECT_EQ(h["device"], "cpu");
  EXPECT_EQ(h["compute_dtype"], "float32");
  const int64_t V = h["vocab_size"];
  ASSERT_EQ(h["results"].size(), 2u);
  int64_t floats = 0;
  for (const auto& r : h["results"]) {
    EXPECT_EQ(r["tokens"].size(), 4u);
    EXPECT_EQ(r["step_rows"], 4);
    EXPECT_EQ(r["prefill_rows"], r["prompt_len"]);
    EXPECT_EQ(r["prefill_offset"], floats);
    floats += r["prefill_rows"].get<int64_t>() * V;
    EXPECT_EQ(r["step_offset"], floats);
    floats += 4 * V;
  }
  EXPECT_EQ(std::filesystem::file_size(tmp + "/d.bin"), static_cast<uintmax_t>(floats * 4));

  // Unknown device and missing prompts are errors, not crashes.
  EXPECT_EQ(testing::RunCommand({bin, "run", "--model=" + *dir_, "--device=tpu",
                                 "--prompts=" + tmp + "/prompts.json", "--out=" + tmp + "/e"})
                .exit_code,
            1);
  EXPECT_EQ(testing::RunCommand({bin, "run", "--model=" + *dir_, "--prompts=" + tmp + "/none",
                                 "--out=" + tmp + "/e"})
                .exit_code,
            1);

  // A 1024-id tokenizer, then tokenizing with it as the router does (BOS first).
  ASSERT_EQ(testing::RunCommand({bin, "tokenizer", "--vocab_size=1024", "--out=" + tmp}).exit_code,
            0);
  ASSERT_TRUE(
      WriteStringToFile(tmp + "/texts.json", R"({"texts": ["The cat sat.", "hello"]})").ok());
  run = testing::RunCommand({bin, "tokenize", "--model=" + tmp, "--texts=" + tmp + "/texts.json",
                             "--out=" + tmp + "/ids.json"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json ids = nlohmann::json::parse(*ReadFileToString(tmp + "/ids.json"));
  ASSERT_EQ(ids["ids"].size(), 2u);
  for (const auto& row : ids["ids"]) {
    ASSERT_GE(row.size(), 2u);
    EXPECT_EQ(row[0], 256);  // <|begin_of_text|>
    for (const auto& id : row) EXPECT_LT(id.get<int>(), 1024);
  }
}

}  // namespace
}  // namespace cpserve::hfcheck
