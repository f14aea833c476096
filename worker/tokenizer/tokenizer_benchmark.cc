// Throughput of the tokenizer on the synthetic tokenizer (English prose):
//   build/bench/tokenizer_benchmark
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "worker/tokenizer/incremental_detokenizer.h"
#include "worker/tokenizer/synthetic_tokenizer.h"
#include "worker/tokenizer/tokenizer.h"

namespace cpserve::tokenizer {
namespace {

const Tokenizer& Synthetic() {
  static const Tokenizer* const tok =
      new Tokenizer(*Tokenizer::FromJson(*BuildSyntheticTokenizerJson(512)));
  return *tok;
}

std::string Text(int copies) {
  std::string text;
  for (int i = 0; i < copies; ++i) text += std::string(SyntheticTrainingText());
  return text;
}

void BM_Encode(benchmark::State& state) {
  const Tokenizer& tok = Synthetic();
  const std::string text = Text(20);
  for (auto _ : state) benchmark::DoNotOptimize(tok.Encode(text));
  state.SetBytesProcessed(state.iterations() * text.size());
}
BENCHMARK(BM_Encode);

void BM_Decode(benchmark::State& state) {
  const Tokenizer& tok = Synthetic();
  const std::vector<int32_t> ids = tok.Encode(Text(20));
  for (auto _ : state) benchmark::DoNotOptimize(tok.Decode(ids));
  state.SetItemsProcessed(state.iterations() * ids.size());
}
BENCHMARK(BM_Decode);

void BM_IncrementalDetokenize(benchmark::State& state) {
  const Tokenizer& tok = Synthetic();
  const std::vector<int32_t> ids = tok.Encode(Text(20));
  for (auto _ : state) {
    IncrementalDetokenizer detok(&tok);
    size_t n = 0;
    for (int32_t id : ids) n += detok.Add(id)->size();
    benchmark::DoNotOptimize(n);
  }
  state.SetItemsProcessed(state.iterations() * ids.size());
}
BENCHMARK(BM_IncrementalDetokenize);

void BM_BuildSyntheticTokenizer(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(BuildSyntheticTokenizerJson(static_cast<int>(state.range(0))));
  }
}
BENCHMARK(BM_BuildSyntheticTokenizer)->Arg(512)->Arg(4096);

}  // namespace
}  // namespace cpserve::tokenizer

BENCHMARK_MAIN();
