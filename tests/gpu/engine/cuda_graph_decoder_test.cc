// CudaGraphDecoder on the built-in model: staggered sequences joining and leaving
// (batches of 1..6 over buckets 1, 2, 4, 8), prompts fed token by token, then
// greedy generation. Every step runs three ways on three caches with identical
// block tables: replayed CUDA graphs, the same work op by op, and today's engine
// path (LlamaModel::Forward with CpAttention); and on the CPU backend in fp32 (the
// independent reference). Graph and op-by-op logits must be bit-identical (so are
// the greedy tokens); against the engine path (a different, exact attention split:
// in-step key + context merged by LSE) and the fp32 reference the logits must stay
// within 6e-2 of each row's largest magnitude, gpu_engine_test's bf16 bound.
// Skips without a GPU.
#include "worker/engine/cuda_graph_decoder.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <numeric>
#include <random>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "worker/builtin/builtin_model.h"
#include "worker/cp/cp_attention.h"
#include "worker/cp/cp_step.h"
#include "worker/model/weights_upload.h"

namespace cpserve {
namespace {

struct Seq {
  int64_t start_step = 0;
  std::vector<int32_t> prompt;
  int gen = 0;
  int64_t pos = 0;  // tokens cached so far
  int32_t next = 0;
  std::vector<int32_t> table;
};

std::vector<float> ToHost(Backend& b, const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  EXPECT_TRUE(b.CopyToHost(t, Tensor::Borrow(out.data(), t.shape(), DType::kF32)).ok());
  return out;
}

TEST(CudaGraphDecoderTest, GraphsMatchOpByOpAndTheEnginePath) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  const std::string dir = ::testing::TempDir() + "/graph-decoder-model";
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WriteBuiltinModel(dir).ok());
  absl::StatusOr<ModelWeights> host = LoadModel(dir, DType::kF32);
  ASSERT_TRUE(host.ok()) << host.status();
  absl::StatusOr<std::unique_ptr<Backend>> gpu = MakeCudaBackend(0);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  Backend& be = **gpu;
  absl::StatusOr<ModelWeights> dev = UploadWeights(*host, be);
  ASSERT_TRUE(dev.ok()) << dev.status();
  LlamaModel model(*dev, be);
  const ModelConfig& c = model.config();
  const int64_t kBs = 16, kPerSeq = 8, kSeqs = 6, kBlocks = kSeqs * kPerSeq + 5;

  std::vector<Tensor> caches;
  std::vector<KvCacheView> views;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<Tensor> t =
        be.AllocKvCache(kBlocks, c.num_hidden_layers, kBs, c.num_key_value_heads, c.head_dim);
    ASSERT_TRUE(t.ok()) << t.status();
    caches.push_back(*t);
    views.push_back(*KvCacheView::FromTensor(caches.back()));
  }
  GraphDecoderOptions opts;
  opts.batch_buckets = {1, 2, 4, 8};
  opts.max_context = kPerSeq * kBs;
  auto graph = CudaGraphDecoder::Create(model, be, views[0], opts);
  auto eager = CudaGraphDecoder::Create(model, be, views[1], opts);
  ASSERT_TRUE(graph.ok()) << graph.status();
  ASSERT_TRUE(eager.ok()) << eager.status();
  CpAttention engine_attention(be, nullptr, views[2], CpLayout{1, 16, 16});
  std::unique_ptr<Backend> cpu = MakeCpuBackend();
  LlamaModel cpu_model(*host, *cpu);
  absl::StatusOr<Tensor> cpu_cache =
      cpu->AllocKvCache(kBlocks, c.num_hidden_layers, kBs, c.num_key_value_heads, c.head_dim);
  ASSERT_TRUE(cpu_cache.ok()) << cpu_cache.status();
  CpAttention cpu_attention(*cpu, nullptr, *KvCacheView::FromTensor(*cpu_cache),
                            CpLayout{1, 16, 16});

  std::mt19937 rng(5);
  std::vector<int32_t> ids(kSeqs * kPerSeq);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  const int prompt_len[kSeqs] = {5, 1, 23, 40, 9, 16};
  const int gen_len[kSeqs] = {30, 12, 20, 60, 3, 25};
  std::vector<Seq> seqs(kSeqs);
  for (int i = 0; i < kSeqs; ++i) {
    seqs[i].start_step = 3 * i;
    for (int t = 0; t < prompt_len[i]; ++t) {
      seqs[i].prompt.push_back(static_cast<int32_t>(rng() % c.vocab_size));
    }
    seqs[i].gen = gen_len[i];
    seqs[i].next = seqs[i].prompt[0];
    seqs[i].table.assign(ids.begin() + i * kPerSeq, ids.begin() + (i + 1) * kPerSeq);
  }

  double worst = 0, worst_fp32 = 0;
  int steps = 0, mismatched = 0;
  std::vector<int> batch_sizes;
  for (int64_t step = 0;; ++step) {
    std::vector<int> active;
    bool pending = false;
    for (int i = 0; i < kSeqs; ++i) {
      const Seq& s = seqs[i];
      const bool done = s.pos >= static_cast<int64_t>(s.prompt.size()) + s.gen;
      if (!done && step >= s.start_step) active.push_back(i);
      pending |= !done;
    }
    if (!pending) break;
    if (active.empty()) continue;
    if (step % 2 == 1) std::reverse(active.begin(), active.end());  // rows change order
    DecodeBatch batch;
    std::vector<CpWork> works;
    std::vector<std::vector<int32_t>> tables;
    ForwardInput in;
    for (int i : active) {
      const Seq& s = seqs[i];
      batch.tokens.push_back(s.next);
      batch.positions.push_back(s.pos);
      batch.slots.push_back(int64_t{s.table[s.pos / kBs]} * kBs + s.pos % kBs);
      batch.block_tables.push_back(s.table);
      works.push_back({s.pos, 1, false});
      tables.push_back(s.table);
      in.tokens.push_back(s.next);
      in.positions.push_back(s.pos);
      in.logit_rows.push_back(static_cast<int64_t>(in.logit_rows.size()));
    }
    const int64_t n = static_cast<int64_t>(active.size());
    batch_sizes.push_back(static_cast<int>(n));
    absl::StatusOr<Tensor> lg = (*graph)->Step(batch, true);
    ASSERT_TRUE(lg.ok()) << lg.status();
    const std::vector<float> got = ToHost(be, *lg);
    absl::StatusOr<Tensor> le = (*eager)->Step(batch, false);
    ASSERT_TRUE(le.ok()) << le.status();
    const std::vector<float> want = ToHost(be, *le);
    ASSERT_TRUE(
        engine_attention.SetStep(works, BuildCpStepLayout(works, 0, 1), tables, batch.slots).ok());
    absl::StatusOr<Tensor> lr = model.Forward(in, engine_attention);
    ASSERT_TRUE(lr.ok()) << lr.status();
    const std::vector<float> ref = ToHost(be, *lr);
    ASSERT_TRUE(
        cpu_attention.SetStep(works, BuildCpStepLayout(works, 0, 1), tables, batch.slots).ok());
    absl::StatusOr<Tensor> lc = cpu_model.Forward(in, cpu_attention);
    ASSERT_TRUE(lc.ok()) << lc.status();
    const float* fp32 = lc->data<float>();
    ASSERT_EQ(got.size(), static_cast<size_t>(n * c.vocab_size));
    mismatched += std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) != 0;
    for (int64_t r = 0; r < n; ++r) {
      double diff = 0, diff_fp32 = 0, scale = 1e-30, scale_fp32 = 1e-30;
      for (int64_t v = 0; v < c.vocab_size; ++v) {
        const size_t k = static_cast<size_t>(r * c.vocab_size + v);
        diff = std::max(diff, std::fabs(double{got[k]} - ref[k]));
        scale = std::max(scale, std::fabs(double{ref[k]}));
        diff_fp32 = std::max(diff_fp32, std::fabs(double{got[k]} - fp32[k]));
        scale_fp32 = std::max(scale_fp32, std::fabs(double{fp32[k]}));
      }
      worst = std::max(worst, diff / scale);
      worst_fp32 = std::max(worst_fp32, diff_fp32 / scale_fp32);
      // Next token: the prompt, then greedy (lowest id on ties) from the op-by-op logits.
      Seq& s = seqs[active[r]];
      ++s.pos;
      if (s.pos < static_cast<int64_t>(s.prompt.size())) {
        s.next = s.prompt[s.pos];
      } else {
        const float* row = want.data() + r * c.vocab_size;
        s.next = static_cast<int32_t>(std::max_element(row, row + c.vocab_size) - row);
      }
    }
    ++steps;
  }
  std::cout << steps << " steps, batch sizes "
            << *std::min_element(batch_sizes.begin(), batch_sizes.end()) << ".."
            << *std::max_element(batch_sizes.begin(), batch_sizes.end()) << ", "
            << (*graph)->graphs_captured() << " graphs; worst logits error of the graph path vs "
            << "the engine path " << worst << ", vs the fp32 CPU engine path " << worst_fp32
            << "\n";
  EXPECT_EQ(mismatched, 0) << "steps whose graph logits differ from op-by-op";
  EXPECT_GE((*graph)->graphs_captured(), 3);
  EXPECT_EQ((*eager)->graphs_captured(), 0);
  EXPECT_LT(worst, 6e-2);
  EXPECT_LT(worst_fp32, 6e-2);
}

TEST(CudaGraphDecoderTest, RejectsBadSteps) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  const std::string dir = ::testing::TempDir() + "/graph-decoder-model-2";
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WriteBuiltinModel(dir).ok());
  absl::StatusOr<ModelWeights> host = LoadModel(dir, DType::kF32);
  ASSERT_TRUE(host.ok()) << host.status();
  absl::StatusOr<std::unique_ptr<Backend>> gpu = MakeCudaBackend(0);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  absl::StatusOr<ModelWeights> dev = UploadWeights(*host, **gpu);
  ASSERT_TRUE(dev.ok()) << dev.status();
  LlamaModel model(*dev, **gpu);
  const ModelConfig& c = model.config();
  absl::StatusOr<Tensor> cache =
      (*gpu)->AllocKvCache(4, c.num_hidden_layers, 16, c.num_key_value_heads, c.head_dim);
  ASSERT_TRUE(cache.ok());
  const KvCacheView view = *KvCacheView::FromTensor(*cache);
  GraphDecoderOptions opts;
  opts.batch_buckets = {1, 2};
  opts.max_context = 32;
  auto dec = CudaGraphDecoder::Create(model, **gpu, view, opts);
  ASSERT_TRUE(dec.ok()) << dec.status();
  const std::vector<int32_t> table = {0, 1};
  DecodeBatch ok{{3}, {20}, {21}, {table}};
  EXPECT_TRUE((*dec)->Step(ok, true).ok());
  DecodeBatch three{{3, 3, 3}, {1, 1, 1}, {1, 2, 3}, {table, table, table}};
  EXPECT_EQ((*dec)->Step(three, true).status().code(), absl::StatusCode::kInvalidArgument);
  DecodeBatch too_long{{3}, {32}, {1}, {table}};
  EXPECT_EQ((*dec)->Step(too_long, true).status().code(), absl::StatusCode::kInvalidArgument);
  DecodeBatch bad_slot{{3}, {1}, {64}, {table}};
  EXPECT_EQ((*dec)->Step(bad_slot, true).status().code(), absl::StatusCode::kInvalidArgument);
  DecodeBatch short_table{{3}, {20}, {1}, {absl::Span<const int32_t>(table).subspan(0, 1)}};
  EXPECT_EQ((*dec)->Step(short_table, false).status().code(), absl::StatusCode::kInvalidArgument);
  auto no_buckets = CudaGraphDecoder::Create(model, **gpu, view, GraphDecoderOptions{{}, 32});
  EXPECT_EQ(no_buckets.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpserve
