// The engine's decode-step routing on the CPU (no GPU needed, label unit):
//  - IsAcceleratedDecodeStep against a brute-force reading of its contract over
//    every step of up to 3 items drawn from a small set of item shapes, for world
//    sizes 1/2, batch limits 0..3 and context limits 1..5;
//  - the engine with an accelerator that runs the same model op by op from the
//    DecodeBatch alone (LlamaModel::Forward + a CpAttention of its own) generates
//    the tokens and logits of the engine without one (fp32: logits within 1e-4 of
//    the row's largest magnitude — arrivals are staggered by wall clock, so batch
//    compositions may differ between runs; tokens equal unless the top two logits
//    are that close), for mixed-length prompts (batch sizes change), and really ran
//    steps through it; with cuda_graphs = false it runs none; factory errors fail
//    Create, a factory making nothing leaves the normal path, and an accelerator
//    error ends the step's requests with that error.
// The CUDA-graph accelerator itself is compared on a GPU by gpu_graph_engine_test.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <random>

#include "absl/synchronization/mutex.h"
#include "cpserve/v1/step.pb.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/common/logits_compare.h"
#include "tests/common/staggered_streams.h"
#include "worker/builtin/builtin_model.h"
#include "worker/cp/cp_attention.h"
#include "worker/engine/decode_step_accelerator.h"
#include "worker/engine/engine.h"

namespace cpserve {
namespace {

struct ItemShape {
  int64_t start, end;
  bool samples, partitioned;
};

// Every item shape whose fields matter: token counts 0/1/2, starts 0/2/4, sampling
// and partitioning on or off.
std::vector<ItemShape> Shapes() {
  std::vector<ItemShape> out;
  for (int64_t start : {0, 2, 4}) {
    for (int64_t n : {0, 1, 2}) {
      for (bool s : {false, true}) {
        for (bool p : {false, true}) out.push_back({start, start + n, s, p});
      }
    }
  }
  return out;
}

v1::StepCommand Command(const std::vector<ItemShape>& items) {
  v1::StepCommand c;
  for (const ItemShape& it : items) {
    v1::StepWork* w = c.add_work();
    w->set_start(it.start);
    w->set_end(it.end);
    w->set_samples(it.samples);
    w->set_partitioned(it.partitioned);
    for (int64_t t = it.start; t < it.end; ++t) w->add_tokens(1);
  }
  return c;
}

// The contract, read literally: one rank, 1..max_batch items, each a single sampled
// replicated token whose context (keys attended = position + 1) fits.
bool Reference(const std::vector<ItemShape>& items, int world, int64_t max_batch,
               int64_t max_context) {
  if (world != 1) return false;
  if (items.empty() || static_cast<int64_t>(items.size()) > max_batch) return false;
  int64_t eligible = 0;
  for (const ItemShape& it : items) {
    const int64_t tokens = it.end - it.start;
    const int64_t keys = it.start + 1;
    eligible += tokens == 1 && it.samples && !it.partitioned && keys <= max_context;
  }
  return eligible == static_cast<int64_t>(items.size());
}

TEST(DecodeRoutingTest, ExhaustiveSmallSteps) {
  const std::vector<ItemShape> shapes = Shapes();
  const int64_t s = static_cast<int64_t>(shapes.size());
  int64_t checked = 0, accepted = 0;
  for (int n = 0; n <= 3; ++n) {
    int64_t combos = 1;
    for (int i = 0; i < n; ++i) combos *= s;
    for (int64_t code = 0; code < combos; ++code) {
      std::vector<ItemShape> items;
      for (int64_t c = code, i = 0; i < n; ++i, c /= s) items.push_back(shapes[c % s]);
      const v1::StepCommand command = Command(items);
      for (int world : {1, 2}) {
        for (int64_t max_batch = 0; max_batch <= 3; ++max_batch) {
          for (int64_t max_context = 1; max_context <= 5; ++max_context) {
            const bool want = Reference(items, world, max_batch, max_context);
            ASSERT_EQ(IsAcceleratedDecodeStep(command, world, max_batch, max_context), want)
                << "items " << n << " code " << code << " world " << world << " max_batch "
                << max_batch << " max_context " << max_context;
            ++checked;
            accepted += want;
          }
        }
      }
    }
  }
  EXPECT_GT(accepted, 0);
  EXPECT_GT(checked - accepted, 0);
}

// A real decode path other than StepRunner's: the DecodeBatch alone, run op by op.
class ForwardAccelerator final : public DecodeStepAccelerator {
 public:
  ForwardAccelerator(LlamaModel& model, Backend& backend, const KvCacheView& cache,
                     int64_t max_context)
      : model_(model),
        attention_(
            backend, nullptr, cache,
            CpLayout{1, static_cast<int>(cache.block_size), static_cast<int>(cache.block_size)}),
        max_context_(max_context) {}

  absl::StatusOr<Tensor> Decode(const DecodeBatch& batch) override {
    std::vector<CpWork> works;
    std::vector<std::vector<int32_t>> tables;
    ForwardInput in;
    for (size_t i = 0; i < batch.tokens.size(); ++i) {
      works.push_back({batch.positions[i], 1, false});
      tables.emplace_back(batch.block_tables[i].begin(), batch.block_tables[i].end());
      in.tokens.push_back(batch.tokens[i]);
      in.positions.push_back(batch.positions[i]);
      in.logit_rows.push_back(static_cast<int64_t>(i));
    }
    CpStepLayout layout = BuildCpStepLayout(works, 0, 1);
    absl::Status s =
        attention_.SetStep(std::move(works), std::move(layout), std::move(tables), batch.slots);
    if (!s.ok()) return s;
    return model_.Forward(in, attention_);
  }
  int64_t max_batch() const override { return 4; }
  int64_t max_context() const override { return max_context_; }
  int graphs_captured() const override { return 0; }

 private:
  LlamaModel& model_;
  CpAttention attention_;
  int64_t max_context_;
};

// Takes every decode step and fails it.
class RefusingAccelerator final : public DecodeStepAccelerator {
 public:
  absl::StatusOr<Tensor> Decode(const DecodeBatch&) override {
    return absl::UnavailableError("decode accelerator refused the step");
  }
  int64_t max_batch() const override { return 64; }
  int64_t max_context() const override { return 1 << 20; }
  int graphs_captured() const override { return 0; }
};

using testing::RunStaggered;
using testing::Stream;

class DecodeAcceleratorEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = ::testing::TempDir() + "/decode-accel-model";
    std::filesystem::remove_all(dir);
    ASSERT_TRUE(WriteBuiltinModel(dir).ok());
    absl::StatusOr<ModelWeights> w = LoadModel(dir, DType::kF32);
    ASSERT_TRUE(w.ok()) << w.status();
    weights_ = std::move(*w);
    std::mt19937 rng(11);
    for (int n : {1, 5, 17, 40, 90, 3}) {
      std::vector<int32_t> p(n);
      for (int32_t& t : p) t = static_cast<int32_t>(rng() % 512);
      prompts_.push_back(std::move(p));
    }
  }

  ModelWeights weights_;
  std::unique_ptr<Backend> backend_ = MakeCpuBackend();
  std::vector<std::vector<int32_t>> prompts_;
};

using testing::RowError;
using testing::TopTwoGap;

constexpr double kFp32Tolerance = 1e-4;

TEST_F(DecodeAcceleratorEngineTest, RoutedDecodeStepsMatchTheNormalPath) {
  EngineOptions plain;
  plain.max_batch_tokens = 64;  // the 90-token prompt prefills in two chunks
  auto reference = Engine::Create(weights_, *backend_, plain);
  ASSERT_TRUE(reference.ok()) << reference.status();
  const std::vector<Stream> want = RunStaggered(**reference, prompts_, 12, 3);
  EXPECT_EQ((*reference)->Stats().accelerated_steps, 0);

  EngineOptions routed = plain;
  // 60 keys: the 90-token prompt's decode steps (and every step batched with it)
  // take the normal path; 4 items at most per accelerated step.
  routed.decode_accelerator =
      [](LlamaModel& m, Backend& b,
         const KvCacheView& c) -> absl::StatusOr<std::unique_ptr<DecodeStepAccelerator>> {
    return std::make_unique<ForwardAccelerator>(m, b, c, 60);
  };
  auto engine = Engine::Create(weights_, *backend_, routed);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::vector<Stream> got = RunStaggered(**engine, prompts_, 12, 3);
  const EngineStats stats = (*engine)->Stats();
  std::cout << "accelerated " << stats.accelerated_steps << " of " << stats.steps << " steps\n";
  EXPECT_GT(stats.accelerated_steps, 0) << "no step went through the accelerator";
  EXPECT_LT(stats.accelerated_steps, stats.steps) << "prefill steps must take the normal path";
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(got[i].status.ok()) << "request " << i << ": " << got[i].status;
    ASSERT_EQ(got[i].tokens.size(), want[i].tokens.size()) << "request " << i;
    size_t k = 0;
    while (k < want[i].tokens.size() && got[i].tokens[k] == want[i].tokens[k]) ++k;
    for (size_t j = 0; j < std::min(k + 1, want[i].tokens.size()); ++j) {
      EXPECT_LT(RowError(got[i].logits[j], want[i].logits[j]), kFp32Tolerance)
          << "request " << i << " token " << j;
    }
    if (k < want[i].tokens.size()) {
      EXPECT_LT(TopTwoGap(want[i].logits[k]), kFp32Tolerance)
          << "request " << i << ": token " << k << " differs without a near-tie";
    }
  }

  routed.cuda_graphs = false;
  auto off = Engine::Create(weights_, *backend_, routed);
  ASSERT_TRUE(off.ok()) << off.status();
  const std::vector<Stream> got_off = RunStaggered(**off, {prompts_[0], prompts_[1]}, 4, 3);
  EXPECT_EQ((*off)->Stats().accelerated_steps, 0) << "cuda_graphs = false must turn routing off";
  for (const Stream& r : got_off) {
    EXPECT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.tokens.size(), 4u);
  }
}

TEST_F(DecodeAcceleratorEngineTest, FactoryAndDecodeErrors) {
  // Creation errors fail Create; a factory making nothing leaves the normal path.
  EngineOptions o;
  o.decode_accelerator =
      [](LlamaModel&, Backend&,
         const KvCacheView&) -> absl::StatusOr<std::unique_ptr<DecodeStepAccelerator>> {
    return absl::ResourceExhaustedError("no graphs today");
  };
  auto failed = Engine::Create(weights_, *backend_, o);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted);

  o.decode_accelerator =
      [](LlamaModel&, Backend&,
         const KvCacheView&) -> absl::StatusOr<std::unique_ptr<DecodeStepAccelerator>> {
    return std::unique_ptr<DecodeStepAccelerator>();
  };
  auto none = Engine::Create(weights_, *backend_, o);
  ASSERT_TRUE(none.ok()) << none.status();
  const std::vector<Stream> got = RunStaggered(**none, {prompts_[2]}, 4, 3);
  EXPECT_TRUE(got[0].status.ok()) << got[0].status;
  EXPECT_EQ(got[0].tokens.size(), 4u);
  EXPECT_EQ((*none)->Stats().accelerated_steps, 0);

  // A decode step that fails ends its requests with the error; prefill still runs.
  o.decode_accelerator =
      [](LlamaModel&, Backend&,
         const KvCacheView&) -> absl::StatusOr<std::unique_ptr<DecodeStepAccelerator>> {
    return std::unique_ptr<DecodeStepAccelerator>(std::make_unique<RefusingAccelerator>());
  };
  auto refusing = Engine::Create(weights_, *backend_, o);
  ASSERT_TRUE(refusing.ok()) << refusing.status();
  const std::vector<Stream> ended = RunStaggered(**refusing, {prompts_[1]}, 4, 3);
  EXPECT_EQ(ended[0].status.code(), absl::StatusCode::kUnavailable) << ended[0].status;
  EXPECT_EQ(ended[0].tokens.size(), 1u) << "the prefill step samples the first token";
  EXPECT_TRUE((*refusing)->healthy());
}

}  // namespace
}  // namespace cpserve
