// cpserve_attention_sweep: times the CUDA attention kernels at the sizes
// scripts/gpu/bench_attention.sh asks for and prints one JSON object per line.
//
//   cpserve_attention_sweep prefill 4096,16384,65536 [iters]
//     {"kind":"prefill","tokens":T,"ms":median,"tflops":...}
//     one causal sequence, 32 query / 8 KV heads, head dim 128, bf16;
//     flops = 4 * T^2 / 2 * D * Hq (the FlashAttention causal convention, as
//     tests/gpu/attention/cuda_attention_bench.cc counts).
//   cpserve_attention_sweep decode 1,8,64 4096,131072 [iters]
//     {"kind":"decode","batch":B,"context":C,"us":median,"gbps":...}
//     one query per sequence over a paged bf16 cache (block 16, shuffled blocks);
//     bytes = B * C * Hkv * D * 2 (K and V) * 2 (bf16) read.
// Times are medians of `iters` (default 10) CUDA-event-timed samples of 4 back-to-back
// calls each, after 3 warm-ups.
// Cases that do not fit in free device memory print {"kind":..., "skipped": "..."}.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "kernels/cuda/attention_cuda.h"
#include "tests/gpu/attention/attention_gpu_util.h"

namespace cpserve::cuda::testing {
namespace {

constexpr int64_t kHq = 32, kHkv = 8, kD = 128, kBlock = 16;

std::vector<int64_t> ParseList(const char* arg) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(arg, ',', absl::SkipEmpty())) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v <= 0) return {};
    out.push_back(v);
  }
  return out;
}

// Fills `n` bf16 values on the device with a 1 Mi-value random pattern repeated (the
// values only need to look like activations; generating billions on the host is slow).
void FillRandom(const DeviceBuffer& buf, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  const Bf16Data pattern = RandomBf16(std::min<size_t>(n, size_t{1} << 20), 1.0f, rng);
  const size_t chunk = pattern.bits.size();
  auto* dst = static_cast<uint16_t*>(buf.get());
  for (size_t at = 0; at < n; at += chunk) {
    cudaMemcpy(dst + at, pattern.bits.data(), std::min(chunk, n - at) * 2, cudaMemcpyHostToDevice);
  }
}

bool Fits(size_t bytes) {
  size_t free_bytes = 0, total = 0;
  cudaMemGetInfo(&free_bytes, &total);
  return bytes + (size_t{1} << 30) < free_bytes;
}

// Median over `iters` samples of the milliseconds per call, each sample timing
// kCallsPerSample back-to-back calls (as the model issues them layer after layer, so
// the host-side planning of one call overlaps the kernels of the previous), after 3
// warm-ups; -1 on error.
constexpr int kCallsPerSample = 4;
double MedianMs(int iters, cudaStream_t stream, const std::function<absl::Status()>& fn,
                std::string* error) {
  for (int i = 0; i < 3; ++i) {
    if (absl::Status s = fn(); !s.ok()) {
      *error = s.ToString();
      return -1;
    }
  }
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    cudaEventRecord(start, stream);
    for (int c = 0; c < kCallsPerSample; ++c) {
      if (const absl::Status s = fn(); !s.ok()) *error = s.ToString();
    }
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float t = 0;
    cudaEventElapsedTime(&t, start, stop);
    ms.push_back(t / kCallsPerSample);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return error->empty() ? ms[ms.size() / 2] : -1;
}

void Prefill(int64_t t, int iters, cudaStream_t stream) {
  const size_t q_elems = static_cast<size_t>(t * kHq * kD);
  const size_t kv_elems = static_cast<size_t>(t * 2 * kHkv * kD);
  if (!Fits(2 * (2 * q_elems + kv_elems) + static_cast<size_t>(t * kHq) * 4)) {
    std::printf("{\"kind\":\"prefill\",\"tokens\":%ld,\"skipped\":\"out of memory\"}\n", t);
    return;
  }
  const Device dev = Device::CUDA(0);
  DeviceBuffer q(q_elems * 2), kv(kv_elems * 2), o(q_elems * 2),
      lse(static_cast<size_t>(t * kHq) * 4);
  FillRandom(q, q_elems, 1);
  FillRandom(kv, kv_elems, 2);
  Tensor tq = Tensor::Borrow(q.get(), {t, kHq, kD}, DType::kBF16, dev);
  Tensor tkv = Tensor::Borrow(kv.get(), {t, 2 * kHkv, kD}, DType::kBF16, dev);
  Tensor to = Tensor::Borrow(o.get(), {t, kHq, kD}, DType::kBF16, dev);
  Tensor tl = Tensor::Borrow(lse.get(), {t, kHq}, DType::kF32, dev);
  const PrefillSegment seg{0, t, 0, t, 0, {}};
  std::string error;
  const double ms = MedianMs(
      iters, stream,
      [&] {
        return PrefillAttentionCuda(tq, tkv.Slice(1, 0, kHkv), tkv.Slice(1, kHkv, 2 * kHkv),
                                    {&seg, 1}, nullptr, 0, {}, to, tl, stream);
      },
      &error);
  if (ms < 0) {
    std::printf("{\"kind\":\"prefill\",\"tokens\":%ld,\"error\":\"%s\"}\n", t, error.c_str());
    return;
  }
  const double flops = 4.0 * static_cast<double>(t) * t / 2 * kD * kHq;
  std::printf("{\"kind\":\"prefill\",\"tokens\":%ld,\"ms\":%.4f,\"tflops\":%.2f}\n", t, ms,
              flops / (ms / 1e3) / 1e12);
}

void Decode(int64_t batch, int64_t ctx, int iters, cudaStream_t stream) {
  const int64_t per_seq = (ctx + kBlock - 1) / kBlock, blocks = batch * per_seq;
  const size_t cache_elems = static_cast<size_t>(blocks * 2 * kBlock * kHkv * kD);
  if (!Fits(cache_elems * 2)) {
    std::printf(
        "{\"kind\":\"decode\",\"batch\":%ld,\"context\":%ld,\"skipped\":\"out of memory\"}\n",
        batch, ctx);
    return;
  }
  const Device dev = Device::CUDA(0);
  std::mt19937 rng(2);
  const size_t q_elems = static_cast<size_t>(batch * kHq * kD);
  DeviceBuffer q(q_elems * 2), o(q_elems * 2), lse(static_cast<size_t>(batch * kHq) * 4),
      cache(cache_elems * 2);
  FillRandom(q, q_elems, 3);
  FillRandom(cache, cache_elems, 4);
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
  std::string error;
  const double ms = MedianMs(
      iters, stream, [&] { return PagedAttentionCuda(tq, segs, view, 0, {}, to, tl, stream); },
      &error);
  if (ms < 0) {
    std::printf("{\"kind\":\"decode\",\"batch\":%ld,\"context\":%ld,\"error\":\"%s\"}\n", batch,
                ctx, error.c_str());
    return;
  }
  const double bytes = static_cast<double>(batch) * ctx * kHkv * kD * 2 * 2;
  std::printf("{\"kind\":\"decode\",\"batch\":%ld,\"context\":%ld,\"us\":%.2f,\"gbps\":%.1f}\n",
              batch, ctx, ms * 1e3, bytes / (ms / 1e3) / 1e9);
}

int Main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  const int need = mode == "prefill" ? 3 : mode == "decode" ? 4 : 0;
  if (need == 0 || argc < need || argc > need + 1) {
    std::fprintf(stderr,
                 "usage: %s prefill T1,T2,... [iters] | decode B1,B2,... C1,C2,... [iters]\n",
                 argv[0]);
    return 2;
  }
  int iters = 10;
  if (argc == need + 1 && (!absl::SimpleAtoi(argv[need], &iters) || iters < 1)) {
    std::fprintf(stderr, "bad iteration count '%s'\n", argv[need]);
    return 2;
  }
  const std::vector<int64_t> a = ParseList(argv[2]);
  const std::vector<int64_t> b = need == 4 ? ParseList(argv[3]) : std::vector<int64_t>{1};
  if (a.empty() || b.empty()) {
    std::fprintf(stderr, "bad size list\n");
    return 2;
  }
  if (!HaveGpu()) {
    std::fprintf(stderr, "no CUDA device\n");
    return 1;
  }
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  for (int64_t x : a) {
    for (int64_t y : b) {
      if (mode == "prefill") {
        Prefill(x, iters, stream);
      } else {
        Decode(x, y, iters, stream);
      }
      std::fflush(stdout);
    }
  }
  cudaStreamDestroy(stream);
  return 0;
}

}  // namespace
}  // namespace cpserve::cuda::testing

int main(int argc, char** argv) { return cpserve::cuda::testing::Main(argc, argv); }
