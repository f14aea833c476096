// Micro-benchmarks of the CPU attention kernels (Google Benchmark).
//   kernels_bench --benchmark_filter=Prefill
// FLOP/s counts 4 * Hq * D per visible (query, key) pair (QK^T and PV multiply-adds).
#include <benchmark/benchmark.h>

#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace cpserve {
namespace {

constexpr int64_t kHq = 8, kHkv = 2;

Tensor Random(const Shape& shape, std::mt19937_64& rng) {
  Tensor t = Tensor::Zeros(shape, DType::kF32);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& x : t.span<float>()) x = dist(rng);
  return t;
}

// args: tokens, head_dim. One causal segment, no cached context.
void BM_PrefillAttention(benchmark::State& state) {
  const int64_t n = state.range(0), d = state.range(1);
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(1);
  Tensor q = Random({n, kHq, d}, rng), k = Random({n, kHkv, d}, rng), v = Random({n, kHkv, d}, rng);
  Tensor o = Tensor::Zeros({n, kHq, d}, DType::kF32), lse = Tensor::Zeros({n, kHq}, DType::kF32);
  const PrefillSegment seg{0, n, 0, n, 0, {}};
  for (auto _ : state) {
    absl::Status s = be->PrefillAttention(q, k, v, {&seg, 1}, nullptr, 0, {}, o, lse);
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(o.raw());
  }
  const double pairs = static_cast<double>(n) * (n + 1) / 2;
  state.counters["FLOP/s"] =
      benchmark::Counter(4.0 * kHq * d * pairs * state.iterations(), benchmark::Counter::kIsRate);
  state.SetItemsProcessed(state.iterations() * n);  // query tokens
}
BENCHMARK(BM_PrefillAttention)
    ->ArgsProduct({{512, 2048}, {32, 128}})
    ->ArgNames({"tokens", "D"})
    ->Unit(benchmark::kMillisecond);

// args: context length, head_dim. Batch of 8 single-query segments, block size 16,
// shuffled block tables.
void BM_PagedDecodeAttention(benchmark::State& state) {
  const int64_t ctx = state.range(0), d = state.range(1), batch = 8, bs = 16;
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(2);
  const int64_t blocks_per_seq = (ctx + bs - 1) / bs, nb = batch * blocks_per_seq;
  Tensor cache_t = *be->AllocKvCache(nb, 1, bs, kHkv, d);
  {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (float& x : cache_t.span<float>()) x = dist(rng);
  }
  const KvCacheView cache = *KvCacheView::FromTensor(cache_t);
  std::vector<int32_t> ids(nb);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<PagedSegment> segs;
  for (int64_t b = 0; b < batch; ++b) {
    segs.push_back(
        {b, 1, ctx, absl::MakeConstSpan(ids).subspan(b * blocks_per_seq, blocks_per_seq)});
  }
  Tensor q = Random({batch, kHq, d}, rng);
  Tensor o = Tensor::Zeros({batch, kHq, d}, DType::kF32),
         lse = Tensor::Zeros({batch, kHq}, DType::kF32);
  for (auto _ : state) {
    absl::Status s = be->PagedAttention(q, segs, cache, 0, {}, o, lse);
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(o.raw());
  }
  const double it = static_cast<double>(state.iterations());
  state.counters["FLOP/s"] =
      benchmark::Counter(4.0 * kHq * d * ctx * batch * it, benchmark::Counter::kIsRate);
  state.counters["KV_bytes/s"] =
      benchmark::Counter(2.0 * kHkv * d * sizeof(float) * ctx * batch * it,
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1024);
  state.SetItemsProcessed(state.iterations() * batch);  // decoded tokens
}
BENCHMARK(BM_PagedDecodeAttention)
    ->ArgsProduct({{1024, 4096}, {32, 128}})
    ->ArgNames({"ctx", "D"})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace cpserve

BENCHMARK_MAIN();
