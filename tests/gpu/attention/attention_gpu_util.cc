#include "tests/gpu/attention/attention_gpu_util.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "glog/logging.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/attention_cuda.h"

namespace cpserve::cuda::testing {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

DeviceBuffer::DeviceBuffer(size_t bytes) {
  CHECK_EQ(cudaMalloc(&ptr_, std::max<size_t>(bytes, 256)), cudaSuccess);
}
DeviceBuffer::~DeviceBuffer() { cudaFree(ptr_); }
void DeviceBuffer::Upload(const void* src, size_t bytes) const {
  CHECK_EQ(cudaMemcpy(ptr_, src, bytes, cudaMemcpyHostToDevice), cudaSuccess);
}
void DeviceBuffer::Download(void* dst, size_t bytes) const {
  CHECK_EQ(cudaMemcpy(dst, ptr_, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
}

Bf16Data RandomBf16(size_t n, float sigma, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, sigma);
  Bf16Data out;
  out.bits.resize(n);
  out.f32.resize(n);
  for (size_t i = 0; i < n; ++i) {
    out.bits[i] = FloatToBF16(dist(rng));
    out.f32[i] = BF16ToFloat(out.bits[i]);
  }
  return out;
}

namespace {

// Copies rows [T, H, D] of a wider [T, W, D] buffer (heads [h0, h0 + H)) into a
// contiguous fp32 host tensor.
Tensor HostHeads(const std::vector<float>& wide, int64_t t, int64_t w, int64_t h0, int64_t h,
                 int64_t d) {
  Tensor out = Tensor::Zeros({t, h, d}, DType::kF32);
  for (int64_t i = 0; i < t; ++i) {
    std::memcpy(out.data<float>() + i * h * d, wide.data() + (i * w + h0) * d,
                sizeof(float) * h * d);
  }
  return out;
}

}  // namespace

CaseResult RunCase(const CaseSpec& c, const PagedRunner& paged_runner) {
  std::mt19937 rng(c.seed);
  CaseResult r;
  const int64_t wq = c.hq + 3;        // q lives in a wider buffer: token stride (hq + 3) * d
  const int64_t wkv = 2 * c.hkv + 1;  // k and v are head slices of one fused buffer
  Bf16Data q = RandomBf16(static_cast<size_t>(c.tq * wq * c.d), c.q_sigma, rng);
  Bf16Data kv = RandomBf16(static_cast<size_t>(std::max<int64_t>(c.tk, 1) * wkv * c.d), 1.0f, rng);
  const Shape cache_shape =
      KvCacheView::CacheShape(c.num_blocks, c.num_layers, c.block_size, c.hkv, c.d);
  int64_t cache_n = 1;
  for (int64_t s : cache_shape) cache_n *= s;
  Bf16Data cache = RandomBf16(static_cast<size_t>(std::max<int64_t>(cache_n, 1)), 1.0f, rng);

  // Block tables: each segment takes a random selection of blocks.
  std::vector<std::vector<int32_t>> tables(c.segs.size());
  for (size_t i = 0; i < c.segs.size(); ++i) {
    std::vector<int32_t> perm(static_cast<size_t>(c.num_blocks));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    const int64_t need = (c.segs[i].ctx_len + c.block_size - 1) / c.block_size;
    CHECK_LE(need, c.num_blocks);
    tables[i].assign(perm.begin(), perm.begin() + need);
  }
  std::vector<PrefillSegment> pre;
  std::vector<PagedSegment> paged;
  r.covered.assign(static_cast<size_t>(c.tq), false);
  for (size_t i = 0; i < c.segs.size(); ++i) {
    const SegSpec& s = c.segs[i];
    pre.push_back({s.q_start, s.q_len, s.k_start, s.k_len, s.ctx_len, tables[i]});
    paged.push_back({s.q_start, s.q_len, s.ctx_len, tables[i]});
    for (int64_t j = 0; j < s.q_len; ++j) r.covered[static_cast<size_t>(s.q_start + j)] = true;
  }
  const AttentionOptions options{c.scale, c.causal};

  // CPU reference (fp32).
  {
    auto cpu = MakeCpuBackend();
    Tensor hq = HostHeads(q.f32, c.tq, wq, 0, c.hq, c.d);
    Tensor hk = HostHeads(kv.f32, c.tk, wkv, 0, c.hkv, c.d);
    Tensor hv = HostHeads(kv.f32, c.tk, wkv, c.hkv, c.hkv, c.d);
    Tensor ho = Tensor::Zeros({c.tq, c.hq, c.d}, DType::kF32);
    Tensor hl = Tensor::Zeros({c.tq, c.hq}, DType::kF32);
    KvCacheView view =
        KvCacheView::Contiguous(cache.f32.data(), DType::kF32, Device::CPU(), c.num_blocks,
                                c.num_layers, c.block_size, c.hkv, c.d);
    r.cpu_status = c.paged
                       ? cpu->PagedAttention(hq, paged, view, c.layer, options, ho, hl)
                       : cpu->PrefillAttention(hq, hk, hv, pre, &view, c.layer, options, ho, hl);
    r.o_ref.assign(ho.data<float>(), ho.data<float>() + ho.numel());
    r.lse_ref.assign(hl.data<float>(), hl.data<float>() + hl.numel());
  }

  // CUDA (bf16), outputs poisoned with NaN.
  const Device dev = Device::CUDA(0);
  DeviceBuffer dq(q.bits.size() * 2), dkv(kv.bits.size() * 2), dcache(cache.bits.size() * 2);
  DeviceBuffer dout(static_cast<size_t>(c.tq * c.hq * c.d) * 2), dlse(c.tq * c.hq * 4);
  dq.Upload(q.bits.data(), q.bits.size() * 2);
  dkv.Upload(kv.bits.data(), kv.bits.size() * 2);
  dcache.Upload(cache.bits.data(), cache.bits.size() * 2);
  CHECK_EQ(cudaMemset(dout.get(), 0xff, static_cast<size_t>(c.tq * c.hq * c.d) * 2), cudaSuccess);
  CHECK_EQ(cudaMemset(dlse.get(), 0xff, static_cast<size_t>(c.tq * c.hq) * 4), cudaSuccess);
  Tensor tq = Tensor::Borrow(dq.get(), {c.tq, wq, c.d}, DType::kBF16, dev).Slice(1, 0, c.hq);
  Tensor tkv = Tensor::Borrow(dkv.get(), {c.tk, wkv, c.d}, DType::kBF16, dev);
  Tensor tk = tkv.Slice(1, 0, c.hkv), tv = tkv.Slice(1, c.hkv, 2 * c.hkv);
  Tensor to = Tensor::Borrow(dout.get(), {c.tq, c.hq, c.d}, DType::kBF16, dev);
  Tensor tl = Tensor::Borrow(dlse.get(), {c.tq, c.hq}, DType::kF32, dev);
  KvCacheView view = KvCacheView::Contiguous(dcache.get(), DType::kBF16, dev, c.num_blocks,
                                             c.num_layers, c.block_size, c.hkv, c.d);
  cudaStream_t stream;
  CHECK_EQ(cudaStreamCreate(&stream), cudaSuccess);
  r.gpu_status =
      c.paged
          ? (paged_runner ? paged_runner(tq, paged, view, c.layer, options, to, tl, stream)
                          : PagedAttentionCuda(tq, paged, view, c.layer, options, to, tl, stream))
          : PrefillAttentionCuda(tq, tk, tv, pre, &view, c.layer, options, to, tl, stream);
  const cudaError_t err = cudaStreamSynchronize(stream);
  CHECK_EQ(cudaStreamDestroy(stream), cudaSuccess);
  if (r.gpu_status.ok() && err != cudaSuccess) {
    r.gpu_status = absl::InternalError(cudaGetErrorString(err));
  }
  std::vector<uint16_t> ob(static_cast<size_t>(c.tq * c.hq * c.d));
  dout.Download(ob.data(), ob.size() * 2);
  r.o.resize(ob.size());
  for (size_t i = 0; i < ob.size(); ++i) r.o[i] = BF16ToFloat(ob[i]);
  r.lse.resize(static_cast<size_t>(c.tq * c.hq));
  dlse.Download(r.lse.data(), r.lse.size() * 4);
  return r;
}

}  // namespace cpserve::cuda::testing
