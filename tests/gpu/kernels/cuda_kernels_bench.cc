// Micro-benchmarks of the CUDA backend: Linear (cuBLASLt bf16, TFLOP/s) and
// RmsNorm (GB/s counting bytes read + written). Wall-clock manual time around
// batches of calls between stream drains. Run on a GPU machine:
//   cuda_kernels_bench --benchmark_counters_tabular=true
#include <cuda_runtime.h>

#include <chrono>
#include <memory>
#include <string>

#include "benchmark/benchmark.h"
#include "kernels/cuda/cuda_backend.h"

namespace cpserve {
namespace {

Backend* Gpu() {
  static std::unique_ptr<Backend> gpu = [] {
    absl::StatusOr<std::unique_ptr<Backend>> b = MakeCudaBackend(0);
    return b.ok() ? *std::move(b) : nullptr;
  }();
  return gpu.get();
}

Tensor Filled(Backend& gpu, const Shape& shape) {
  Tensor t = *gpu.Alloc(shape, DType::kBF16);
  cudaMemset(t.raw(), 0x3c, t.nbytes());  // 0x3c3c: a small positive bf16 (~0.0115)
  return t;
}

// Times kInner back-to-back calls of `op` between two drains of the backend's
// stream (wall clock; launch overhead included, amortised over kInner).
template <typename Op>
void TimeOp(benchmark::State& state, Backend& gpu, Op op) {
  for (int i = 0; i < 3; ++i) op();  // warm-up (cuBLASLt heuristic, caches)
  (void)gpu.Synchronize();
  for (auto _ : state) {
    constexpr int kInner = 10;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kInner; ++i) op();
    (void)gpu.Synchronize();
    const auto t1 = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count() / kInner);
  }
}

void BM_Linear(benchmark::State& state) {
  Backend* gpu = Gpu();
  if (gpu == nullptr) return state.SkipWithError("no CUDA device");
  const int64_t t = state.range(0), n = state.range(1), k = state.range(2);
  Tensor x = Filled(*gpu, {t, k}), w = Filled(*gpu, {n, k}), out = Filled(*gpu, {t, n});
  absl::Status status;
  TimeOp(state, *gpu, [&] { status = gpu->Linear(x, w, Tensor(), out); });
  if (!status.ok()) return state.SkipWithError(std::string(status.message()).c_str());
  state.counters["TFLOP/s"] =
      benchmark::Counter(2.0 * t * n * k * 1e-12 * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Linear)
    ->Args({4096, 4096, 4096})
    ->Args({8192, 8192, 8192})
    ->Args({1, 4096, 4096})
    ->Args({16, 14336, 4096})
    ->Args({2048, 4096, 14336})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

void BM_RmsNorm(benchmark::State& state) {
  Backend* gpu = Gpu();
  if (gpu == nullptr) return state.SkipWithError("no CUDA device");
  const int64_t t = state.range(0), h = state.range(1);
  Tensor x = Filled(*gpu, {t, h}), w = Filled(*gpu, {h}), out = Filled(*gpu, {t, h});
  absl::Status status;
  TimeOp(state, *gpu, [&] { status = gpu->RmsNorm(x, w, 1e-5f, out); });
  if (!status.ok()) return state.SkipWithError(std::string(status.message()).c_str());
  state.counters["GB/s"] =
      benchmark::Counter(2.0 * t * h * 2 * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_RmsNorm)
    ->Args({1, 4096})
    ->Args({64, 4096})
    ->Args({4096, 4096})
    ->Args({16384, 8192})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace cpserve

BENCHMARK_MAIN();
