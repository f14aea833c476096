// Micro-benchmark of the CUDA attention kernels (run on a GPU machine):
//   prefill: one causal sequence of 4k / 16k / 64k tokens, 32 query / 8 KV heads,
//            head dim 128 -> TFLOP/s (4 * T^2 / 2 * D * Hq flops, the FlashAttention
//            convention for causal), per prefill kernel (kernel = attn::PrefillKernel: 1
//            mma.sync, 2 Hopper, 3 Hopper persistent;
//            on non-sm_90 devices all run mma.sync);
//   decode:  batch x context, one query per sequence, paged cache (block 16),
//            32 / 8 heads, D 128 -> GB/s of K and V read.
// Times with CUDA events (manual time). Reports an error without a GPU.
#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/attention_launch.h"
#include "tests/gpu/attention/attention_gpu_util.h"

namespace cpserve::cuda::testing {
namespace {

constexpr int64_t kHq = 32, kHkv = 8, kD = 128, kBlock = 16;

// Times `fn` (which queues work on `stream`) with events: `calls` back-to-back
// calls per iteration (so the host's per-call planning and metadata upload overlap
// the previous call's kernels, as in a model's layer loop), after 3 warm-up calls.
template <typename Fn>
void TimeLoop(benchmark::State& state, cudaStream_t stream, Fn fn, int calls = 1) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (int i = 0; i < 3; ++i) fn().IgnoreError();  // warm up
  cudaStreamSynchronize(stream);
  for (auto _ : state) {
    cudaEventRecord(start, stream);
    absl::Status s;
    for (int i = 0; i < calls && s.ok(); ++i) s = fn();
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, start, stop);
    state.SetIterationTime(ms / 1e3 / calls);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

// Fills a device buffer with `n` bf16 values: one random block of up to 1M values,
// repeated (fast setup at 64k tokens; timings do not depend on the values).
void FillRandomBf16(const DeviceBuffer& buf, size_t n, std::mt19937& rng) {
  const Bf16Data block = RandomBf16(std::min<size_t>(n, size_t{1} << 20), 1.0f, rng);
  char* dst = static_cast<char*>(buf.get());
  for (size_t off = 0; off < n; off += block.bits.size()) {
    const size_t count = std::min(block.bits.size(), n - off);
    cudaMemcpy(dst + off * 2, block.bits.data(), count * 2, cudaMemcpyHostToDevice);
  }
}

// range(0): tokens; range(1): attn::PrefillKernel (see above).
void BM_PrefillCausal(benchmark::State& state) {
  if (!HaveGpu()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const int64_t t = state.range(0);
  attn::SetPrefillKernel(static_cast<attn::PrefillKernel>(state.range(1)));
  const Device dev = Device::CUDA(0);
  std::mt19937 rng(1);
  const size_t q_elems = static_cast<size_t>(t * kHq * kD);
  const size_t kv_elems = static_cast<size_t>(t * 2 * kHkv * kD);
  DeviceBuffer q(q_elems * 2), kv(kv_elems * 2), o(q_elems * 2),
      lse(static_cast<size_t>(t * kHq) * 4);
  FillRandomBf16(q, q_elems, rng);
  FillRandomBf16(kv, kv_elems, rng);
  Tensor tq = Tensor::Borrow(q.get(), {t, kHq, kD}, DType::kBF16, dev);
  Tensor tkv = Tensor::Borrow(kv.get(), {t, 2 * kHkv, kD}, DType::kBF16, dev);
  Tensor to = Tensor::Borrow(o.get(), {t, kHq, kD}, DType::kBF16, dev);
  Tensor tl = Tensor::Borrow(lse.get(), {t, kHq}, DType::kF32, dev);
  const PrefillSegment seg{0, t, 0, t, 0, {}};
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  TimeLoop(
      state, stream,
      [&] {
        return PrefillAttentionCuda(tq, tkv.Slice(1, 0, kHkv), tkv.Slice(1, kHkv, 2 * kHkv),
                                    {&seg, 1}, nullptr, 0, {}, to, tl, stream);
      },
      /*calls=*/4);
  cudaStreamDestroy(stream);
  attn::SetPrefillKernel(attn::PrefillKernel::kAuto);
  const double flops = 4.0 * static_cast<double>(t) * t / 2 * kD * kHq;
  state.counters["TFLOP/s"] =
      benchmark::Counter(flops * state.iterations() / 1e12, benchmark::Counter::kIsRate);
}
void PrefillArgs(benchmark::internal::Benchmark* b) {
  for (const int kernel : {1, 2, 3}) {
    b->Args({4096, kernel})->Args({16384, kernel})->Args({65536, kernel});
  }
}
BENCHMARK(BM_PrefillCausal)
    ->Apply(PrefillArgs)
    ->ArgNames({"T", "kernel"})
    ->MinTime(0.5)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

void BM_Decode(benchmark::State& state) {
  if (!HaveGpu()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const int64_t batch = state.range(0), ctx = state.range(1);
  const int64_t per_seq = (ctx + kBlock - 1) / kBlock, blocks = batch * per_seq;
  const Device dev = Device::CUDA(0);
  std::mt19937 rng(2);
  const Bf16Data qd = RandomBf16(static_cast<size_t>(batch * kHq * kD), 1.0f, rng);
  const size_t cache_elems = static_cast<size_t>(blocks * 2 * kBlock * kHkv * kD);
  DeviceBuffer q(qd.bits.size() * 2), o(qd.bits.size() * 2), lse(batch * kHq * 4),
      cache(cache_elems * 2);
  q.Upload(qd.bits.data(), qd.bits.size() * 2);
  cudaMemset(cache.get(), 0x3c, cache_elems * 2);  // bf16 0x3c3c ~ 0.0115
  std::vector<int32_t> ids(static_cast<size_t>(blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<PagedSegment> segs;
  for (int64_t b = 0; b < batch; ++b) {
    segs.push_back({b, 1, ctx, absl::Span<const int32_t>(ids).subspan(b * per_seq, per_seq)});
  }
  Tensor tq = Tensor::Borrow(q.get(), {batch, kHq, kD}, DType::kBF16, dev);
  Tensor to = Tensor::Borrow(o.get(), {batch, kHq, kD}, DType::kBF16, dev);
  Tensor tl = Tensor::Borrow(lse.get(), {batch, kHq}, DType::kF32, dev);
  const KvCacheView view =
      KvCacheView::Contiguous(cache.get(), DType::kBF16, dev, blocks, 1, kBlock, kHkv, kD);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  TimeLoop(state, stream,
           [&] { return PagedAttentionCuda(tq, segs, view, 0, {}, to, tl, stream); });
  cudaStreamDestroy(stream);
  const double bytes = static_cast<double>(batch) * ctx * kHkv * kD * 2 /*K,V*/ * 2 /*bf16*/;
  state.counters["GB/s"] =
      benchmark::Counter(bytes * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Decode)
    ->Args({32, 4096})
    ->Args({8, 16384})
    ->Args({1, 131072})
    ->Args({64, 16384})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace cpserve::cuda::testing

BENCHMARK_MAIN();
