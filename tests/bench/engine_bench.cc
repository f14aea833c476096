// One engine step of the built-in model on the CPU backend (single rank):
// a decode step for a batch of B sequences with C tokens of cached context each,
// and a prefill step of P prompt tokens. Figures: time per step, tokens/s.
//   build/bench/engine_bench [--benchmark_filter=...]
#include <numeric>

#include "benchmark/benchmark.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/unit/generation/test_model.h"
#include "worker/engine/step_runner.h"

namespace cpserve {
namespace {

constexpr int kBlock = 16;

const ModelWeights& Weights() {
  static const ModelWeights* w = new ModelWeights(testing::WriteAndLoad(SyntheticModelOptions()));
  return *w;
}

v1::StepCommand Command(int batch, int64_t start, int64_t end, int64_t blocks_per_seq) {
  v1::StepCommand c;
  c.set_kind(v1::StepCommand::KIND_STEP);
  for (int b = 0; b < batch; ++b) {
    v1::StepWork* w = c.add_work();
    w->set_id(std::to_string(b));
    w->set_start(start);
    w->set_end(end);
    w->set_samples(true);
    w->set_top_p(1.0f);
    for (int64_t p = start; p < end; ++p) w->add_tokens(static_cast<int32_t>((p * 31 + b) % 500));
    auto* ids = w->add_blocks()->mutable_ids();
    for (int64_t k = 0; k < blocks_per_seq; ++k)
      ids->Add(static_cast<int32_t>(b * blocks_per_seq + k));
  }
  return c;
}

struct Fixture {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  Tensor cache;
  KvCacheView view;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<StepRunner> runner;

  // Cache for `batch` sequences of up to `capacity` tokens; prefills `context`.
  Fixture(int batch, int64_t context, int64_t capacity) {
    const ModelConfig& c = Weights().config;
    const int64_t blocks = (capacity + kBlock - 1) / kBlock;
    cache = *backend->AllocKvCache(batch * blocks, c.num_hidden_layers, kBlock,
                                   c.num_key_value_heads, c.head_dim);
    view = *KvCacheView::FromTensor(cache);
    model = std::make_unique<LlamaModel>(Weights(), *backend);
    runner = std::make_unique<StepRunner>(*model, *backend, nullptr, view,
                                          CpLayout{1, kBlock, kBlock}, 0);
    if (context > 0) (void)runner->Run(Command(batch, 0, context, blocks));
  }
};

void BM_DecodeStep(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  const int64_t context = state.range(1);
  Fixture f(batch, context, context + 1);
  const v1::StepCommand decode =
      Command(batch, context, context + 1, (context + 1 + kBlock - 1) / kBlock);
  for (auto _ : state) {
    auto out = f.runner->Run(decode);
    if (!out.ok()) state.SkipWithError(out.status().ToString().c_str());
    benchmark::DoNotOptimize(out);
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_DecodeStep)
    ->ArgNames({"batch", "context"})
    ->Args({1, 128})
    ->Args({1, 1024})
    ->Args({8, 128})
    ->Args({8, 1024})
    ->Args({32, 1024})
    ->Unit(benchmark::kMillisecond);

void BM_PrefillStep(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  Fixture f(1, 0, tokens);
  const v1::StepCommand prefill = Command(1, 0, tokens, (tokens + kBlock - 1) / kBlock);
  for (auto _ : state) {
    auto out = f.runner->Run(prefill);
    if (!out.ok()) state.SkipWithError(out.status().ToString().c_str());
    benchmark::DoNotOptimize(out);
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_PrefillStep)->ArgName("tokens")->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace cpserve

BENCHMARK_MAIN();
