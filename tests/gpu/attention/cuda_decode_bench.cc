// Paged decode attention bandwidth on a GPU (bf16, 32 query / 8 KV heads, head
// dim 128, block 16, one query per sequence) against a device-to-device copy
// measured in the same run. Prints, per batch x context:
//   kernel GB/s: the decode + combine kernels alone, plan uploaded once;
//   call GB/s:   PagedAttentionCuda per call (planning, upload, launches);
//   flash GB/s:  the shared flash kernel on the same problem (the previous path);
// where bytes = K and V read = 2 * ctx * Hkv * D * 2 per sequence, and % of the
// copy rate (cudaMemcpyAsync D2D of 1 GiB, bytes read + written). Caches smaller
// than 512 MiB are replicated and rotated so that no run reads from L2 only.
// Usage: cuda_decode_bench [max_cache_gib (default 40)]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/attention_decode_plan.h"
#include "tests/gpu/attention/attention_gpu_util.h"

namespace cpserve::cuda::testing {
namespace {

constexpr int64_t kHq = 32, kHkv = 8, kD = 128, kBlock = 16;

#define CUDA_OK(x)                                                                            \
  do {                                                                                        \
    const cudaError_t e_ = (x);                                                               \
    if (e_ != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)

// Average milliseconds per call of `fn` over `iters` back-to-back calls.
template <typename Fn>
double TimeMs(cudaStream_t stream, int iters, Fn fn) {
  for (int i = 0; i < 3; ++i) fn(i);
  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  CUDA_OK(cudaEventRecord(a, stream));
  for (int i = 0; i < iters; ++i) fn(i);
  CUDA_OK(cudaEventRecord(b, stream));
  CUDA_OK(cudaEventSynchronize(b));
  float ms = 0;
  CUDA_OK(cudaEventElapsedTime(&ms, a, b));
  CUDA_OK(cudaEventDestroy(a));
  CUDA_OK(cudaEventDestroy(b));
  return ms / iters;
}

double CopyGbps(cudaStream_t stream) {
  const size_t bytes = size_t{1} << 30;
  DeviceBuffer src(bytes), dst(bytes);
  CUDA_OK(cudaMemset(src.get(), 1, bytes));
  const double ms = TimeMs(stream, 20, [&](int) {
    CUDA_OK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, stream));
  });
  return 2.0 * bytes / (ms * 1e-3) / 1e9;
}

struct Row {
  double kernel, call, flash;
};

Row RunDecode(cudaStream_t stream, int64_t batch, int64_t ctx, int num_sms) {
  const int64_t per_seq = (ctx + kBlock - 1) / kBlock;
  const double kv_bytes = static_cast<double>(batch) * ctx * kHkv * kD * 2 * 2;
  const int copies = static_cast<int>(std::max(1.0, std::ceil(512.0 * (1 << 20) / kv_bytes)));
  const int64_t blocks = copies * batch * per_seq;
  const Device dev = Device::CUDA(0);
  std::mt19937 rng(2);
  const Bf16Data qd = RandomBf16(static_cast<size_t>(batch * kHq * kD), 1.0f, rng);
  const size_t cache_elems = static_cast<size_t>(blocks * 2 * kBlock * kHkv * kD);
  DeviceBuffer q(qd.bits.size() * 2), o(qd.bits.size() * 2), lse(batch * kHq * 4),
      cache(cache_elems * 2), empty_kv(256);
  q.Upload(qd.bits.data(), qd.bits.size() * 2);
  CUDA_OK(cudaMemset(cache.get(), 0x3c, cache_elems * 2));  // bf16 0x3c3c ~ 0.0115
  std::vector<int32_t> ids(static_cast<size_t>(blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<std::vector<PagedSegment>> segs(copies);
  std::vector<std::vector<PrefillSegment>> pre(copies);
  std::vector<std::vector<attn::Segment>> asegs(copies);
  for (int c = 0; c < copies; ++c) {
    for (int64_t b = 0; b < batch; ++b) {
      const auto table = absl::Span<const int32_t>(ids).subspan((c * batch + b) * per_seq, per_seq);
      segs[c].push_back({b, 1, ctx, table});
      pre[c].push_back({b, 1, 0, 0, ctx, table});
      asegs[c].push_back({b, 1, 0, 0, ctx, table});
    }
  }
  Tensor tq = Tensor::Borrow(q.get(), {batch, kHq, kD}, DType::kBF16, dev);
  Tensor to = Tensor::Borrow(o.get(), {batch, kHq, kD}, DType::kBF16, dev);
  Tensor tl = Tensor::Borrow(lse.get(), {batch, kHq}, DType::kF32, dev);
  Tensor tk = Tensor::Borrow(empty_kv.get(), {0, kHkv, kD}, DType::kBF16, dev);
  const KvCacheView view =
      KvCacheView::Contiguous(cache.get(), DType::kBF16, dev, blocks, 1, kBlock, kHkv, kD);
  const int iters = static_cast<int>(std::clamp(2e10 / kv_bytes, 10.0, 2000.0));
  Row row{};

  // Kernel alone: every copy's plan uploaded once.
  std::vector<attn::DecodePlan> plans;
  std::vector<std::unique_ptr<DeviceBuffer>> meta;
  std::vector<attn::DecodeParams> params;
  for (int c = 0; c < copies; ++c) {
    plans.push_back(
        attn::MakeDecodePlan(asegs[c], kHq / kHkv, kHkv, kBlock, attn::DecodeSlots(num_sms)));
    const attn::DecodePlan& pl = plans.back();
    const size_t nseg = pl.segs.size() * sizeof(attn::DecodeSeg);
    const size_t nitem = pl.items.size() * sizeof(attn::DecodeItem);
    const size_t nsplit = pl.split_segs.size() * 4, ntab = pl.tables.size() * 4;
    const size_t npart = pl.part_rows * (kD + 1) * 4;
    meta.push_back(std::make_unique<DeviceBuffer>(nseg + nitem + nsplit + ntab + npart + 64));
    char* base = static_cast<char*>(meta.back()->get());
    CUDA_OK(cudaMemcpy(base, pl.segs.data(), nseg, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(base + nseg, pl.items.data(), nitem, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(base + nseg + nitem, pl.split_segs.data(), nsplit, cudaMemcpyHostToDevice));
    CUDA_OK(
        cudaMemcpy(base + nseg + nitem + nsplit, pl.tables.data(), ntab, cudaMemcpyHostToDevice));
    attn::DecodeParams p{};
    p.q = static_cast<const __nv_bfloat16*>(q.get());
    p.q_tok = kHq * kD;
    p.q_head = kD;
    p.o = static_cast<__nv_bfloat16*>(o.get());
    p.o_tok = kHq * kD;
    p.o_head = kD;
    p.lse = static_cast<float*>(lse.get());
    p.lse_tok = kHq;
    p.lse_head = 1;
    p.cache = static_cast<const __nv_bfloat16*>(cache.get());
    p.cache_blk = view.block_stride;
    p.cache_kv = view.kv_stride;
    p.cache_tok = view.token_stride;
    p.cache_head = view.head_stride;
    p.block_size = kBlock;
    p.group = kHq / kHkv;
    p.num_kv_heads = kHkv;
    p.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(double{kD}));
    p.segs = reinterpret_cast<const attn::DecodeSeg*>(base);
    p.items = reinterpret_cast<const attn::DecodeItem*>(base + nseg);
    p.split_segs = reinterpret_cast<const int*>(base + nseg + nitem);
    p.tables = reinterpret_cast<const int*>(base + nseg + nitem + nsplit);
    // 16-byte aligned partials after the tables.
    const size_t off = (nseg + nitem + nsplit + ntab + 15) / 16 * 16;
    p.part_o = reinterpret_cast<float*>(base + off);
    p.part_lse = p.part_o + pl.part_rows * kD;
    params.push_back(p);
  }
  row.kernel = kv_bytes /
               (TimeMs(stream, iters,
                       [&](int i) {
                         const int c = i % copies;
                         CUDA_OK(attn::LaunchDecodeAttention(
                             kD, params[c], static_cast<int>(plans[c].items.size()),
                             static_cast<int>(plans[c].split_segs.size()), kHq / kHkv, stream));
                       }) *
                1e-3) /
               1e9;
  row.call = kv_bytes /
             (TimeMs(stream, iters,
                     [&](int i) {
                       const absl::Status s =
                           PagedAttentionCuda(tq, segs[i % copies], view, 0, {}, to, tl, stream);
                       if (!s.ok()) std::fprintf(stderr, "%s\n", s.ToString().c_str());
                     }) *
              1e-3) /
             1e9;
  const AttentionOptions full{0.0f, false};
  row.flash = kv_bytes /
              (TimeMs(stream, std::max(iters / 4, 5),
                      [&](int i) {
                        const absl::Status s = PrefillAttentionCuda(tq, tk, tk, pre[i % copies],
                                                                    &view, 0, full, to, tl, stream);
                        if (!s.ok()) std::fprintf(stderr, "%s\n", s.ToString().c_str());
                      }) *
               1e-3) /
              1e9;
  CUDA_OK(cudaStreamSynchronize(stream));
  return row;
}

int Main(int argc, char** argv) {
  if (!HaveGpu()) {
    std::fprintf(stderr, "no CUDA device\n");
    return 1;
  }
  const double max_gib = argc > 1 ? std::atof(argv[1]) : 40.0;
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  const double copy = CopyGbps(stream);
  std::printf("device %s, %d SMs; D2D copy %.0f GB/s (read + write, 1 GiB)\n", prop.name,
              prop.multiProcessorCount, copy);
  std::printf("decode attention, bf16, Hq 32, Hkv 8, D 128, block 16; GB/s of K+V read\n");
  std::printf("%6s %7s %10s %7s %10s %7s %10s %7s\n", "batch", "ctx", "kernel", "%copy", "call",
              "%copy", "flash", "%copy");
  for (int64_t batch : {1, 8, 32, 64}) {
    for (int64_t ctx : {4096, 16384, 32768, 131072}) {
      const double gib = static_cast<double>(batch) * ctx * kHkv * kD * 4 / (1 << 30);
      if (gib > max_gib) {
        std::printf("%6ld %7ld  skipped (cache %.1f GiB > %.1f)\n", static_cast<long>(batch),
                    static_cast<long>(ctx), gib, max_gib);
        continue;
      }
      const Row r = RunDecode(stream, batch, ctx, prop.multiProcessorCount);
      std::printf("%6ld %7ld %10.0f %6.1f%% %10.0f %6.1f%% %10.0f %6.1f%%\n",
                  static_cast<long>(batch), static_cast<long>(ctx), r.kernel, 100 * r.kernel / copy,
                  r.call, 100 * r.call / copy, r.flash, 100 * r.flash / copy);
      std::fflush(stdout);
    }
  }
  CUDA_OK(cudaStreamDestroy(stream));
  return 0;
}

}  // namespace
}  // namespace cpserve::cuda::testing

int main(int argc, char** argv) { return cpserve::cuda::testing::Main(argc, argv); }
