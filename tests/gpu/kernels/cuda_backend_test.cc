// Every CUDA backend op against the CPU reference backend on random inputs of odd
// sizes, outputs poisoned with NaN before each run (DESIGN §9). bf16: element-wise
// relative error < 2e-2; copies, gathers and greedy sampling exact. Skips without a GPU.
#include "kernels/cuda/cuda_backend.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/gpu/kernels/test_util.h"

namespace cpserve {
namespace {

using testing::Download;
using testing::ExpectBitEqual;
using testing::ExpectClose;
using testing::Poisoned;
using testing::RandomBf16Values;
using testing::Upload;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

Tensor Clone(const Tensor& t) {
  Tensor c = Tensor::Zeros(t.shape(), t.dtype());
  std::memcpy(c.raw(), t.raw(), t.nbytes());
  return c;
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    absl::StatusOr<std::unique_ptr<Backend>> b = MakeCudaBackend(0);
    ASSERT_TRUE(b.ok()) << b.status();
    gpu_ = *std::move(b);
    cpu_ = MakeCpuBackend();
  }
  void Sync() { ASSERT_TRUE(gpu_->Synchronize().ok()); }
  Tensor Up(const Tensor& host, DType dtype = DType::kBF16) { return Upload(*gpu_, host, dtype); }
  Tensor Down(const Tensor& dev) { return Download(*gpu_, dev); }
  Tensor Index(const std::vector<int64_t>& v, DType dtype) {
    Tensor h = Tensor::Zeros({static_cast<int64_t>(v.size())}, dtype);
    for (size_t i = 0; i < v.size(); ++i) {
      if (dtype == DType::kI32) {
        h.data<int32_t>()[i] = static_cast<int32_t>(v[i]);
      } else {
        h.data<int64_t>()[i] = v[i];
      }
    }
    return Upload(*gpu_, h, dtype);
  }

  std::mt19937 rng_{1234};
  std::unique_ptr<Backend> gpu_;
  std::unique_ptr<Backend> cpu_;
};

TEST_F(CudaBackendTest, Basics) {
  EXPECT_STREQ(gpu_->name(), "cuda");
  EXPECT_EQ(gpu_->ComputeDType(), DType::kBF16);
  EXPECT_EQ(gpu_->device(), Device::CUDA(0));
  EXPECT_FALSE(MakeCudaBackend(CudaDeviceCount()).ok());
  absl::StatusOr<Tensor> cache = gpu_->AllocKvCache(3, 2, 16, 2, 64);
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(cache->dtype(), DType::kBF16);
  EXPECT_EQ(cache->shape(), (Shape{3, 2, 2, 16, 2, 64}));
  // A host tensor where a device one is wanted is InvalidArgument, not a crash.
  Tensor host = Tensor::Zeros({3, 4}, DType::kBF16);
  Tensor w = Tensor::Zeros({4}, DType::kBF16);
  EXPECT_EQ(gpu_->RmsNorm(host, w, 1e-6f, host).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CudaBackendTest, CopiesConvertAndRespectStrides) {
  const Tensor x = RandomBf16Values({17, 37}, rng_);
  Tensor raw = Tensor::Zeros({17, 37}, DType::kF32);  // not bf16-representable values
  std::normal_distribution<float> dist;
  for (float& v : raw.span<float>()) v = dist(rng_);
  // f32 -> bf16 on the device rounds like FloatToBF16; bf16 -> bf16 download is exact.
  Tensor d = Poisoned(*gpu_, {17, 37}, DType::kBF16);
  ASSERT_TRUE(gpu_->CopyFromHost(raw, d).ok());
  Tensor back = Download(*gpu_, d, DType::kBF16);
  Tensor want = Tensor::Zeros({17, 37}, DType::kBF16);
  ASSERT_TRUE(cpu_->CopyFromHost(raw, want).ok());
  ExpectBitEqual(back, want, "f32 -> bf16 rounding");
  // f64 host and strided views both ways.
  Tensor x64 = Tensor::Zeros({17, 37}, DType::kF64);
  ASSERT_TRUE(cpu_->CopyFromHost(x, x64).ok());
  Tensor d2 = Poisoned(*gpu_, {17, 40}, DType::kBF16);
  ASSERT_TRUE(gpu_->CopyFromHost(x64, d2.Slice(1, 2, 39)).ok());
  Tensor host_wide = Tensor::Zeros({17, 50}, DType::kF32);
  ASSERT_TRUE(gpu_->CopyToHost(d2.Slice(1, 2, 39), host_wide.Slice(1, 5, 42)).ok());
  Tensor got = Tensor::Zeros({17, 37}, DType::kF32);
  ASSERT_TRUE(cpu_->Copy(host_wide.Slice(1, 5, 42), got).ok());
  ExpectBitEqual(got, x, "strided f64 -> bf16 -> f32");
  // Strided source on the host, device-to-device strided copy, integer round trip.
  Tensor src_wide = RandomBf16Values({17, 45}, rng_);
  Tensor d3 = Poisoned(*gpu_, {17, 37}, DType::kBF16);
  ASSERT_TRUE(gpu_->CopyFromHost(src_wide.Slice(1, 3, 40), d3).ok());
  Tensor d4 = Poisoned(*gpu_, {17, 39}, DType::kBF16);
  ASSERT_TRUE(gpu_->Copy(d3, d4.Slice(1, 1, 38)).ok());
  Tensor want_wide = Tensor::Zeros({17, 37}, DType::kF32);
  ASSERT_TRUE(cpu_->Copy(src_wide.Slice(1, 3, 40), want_wide).ok());
  ExpectBitEqual(Down(d4.Slice(1, 1, 38)), want_wide, "device strided copy");
  Tensor ints = Tensor::Zeros({1000}, DType::kI64);
  for (int i = 0; i < 1000; ++i) ints.data<int64_t>()[i] = int64_t{i} * 1000003 - 77;
  Tensor di = Upload(*gpu_, ints, DType::kI64);
  ExpectBitEqual(Download(*gpu_, di, DType::kI64), ints, "int64 round trip");
  EXPECT_FALSE(gpu_->CopyFromHost(ints, Poisoned(*gpu_, {1000}, DType::kI32)).ok());
}

TEST_F(CudaBackendTest, EmbeddingMatchesCpuAndFlagsBadIds) {
  for (int64_t hidden : {1000, 1024, 37}) {
    const Tensor table = RandomBf16Values({37, hidden}, rng_);
    std::vector<int64_t> ids(17);
    std::vector<int32_t> ids32(17);
    for (int i = 0; i < 17; ++i) ids32[i] = static_cast<int32_t>(ids[i] = (i * 7 + 3) % 37);
    Tensor out = Poisoned(*gpu_, {17, hidden}, DType::kBF16);
    ASSERT_TRUE(gpu_->Embedding(Up(table), Index(ids, DType::kI32), out).ok());
    Tensor want = Tensor::Zeros({17, hidden}, DType::kF32);
    ASSERT_TRUE(cpu_->Embedding(table, Tensor::Borrow(ids32.data(), {17}, DType::kI32), want).ok());
    ExpectBitEqual(Down(out), want, "embedding");
  }
  Tensor table = Up(RandomBf16Values({37, 64}, rng_));
  Tensor out = Poisoned(*gpu_, {2, 64}, DType::kBF16);
  ASSERT_TRUE(gpu_->Embedding(table, Index({1, 37}, DType::kI32), out).ok());
  absl::Status s = gpu_->Synchronize();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(gpu_->Synchronize().ok()) << "the error flag is cleared once reported";
}

TEST_F(CudaBackendTest, RmsNormAndAddRmsNormMatchCpu) {
  for (int64_t hidden : {37, 1000, 4096}) {
    const Tensor x = RandomBf16Values({17, hidden}, rng_, 3.0f);
    const Tensor w = RandomBf16Values({hidden}, rng_);
    const Tensor res = RandomBf16Values({17, hidden}, rng_, 2.0f);
    Tensor out = Poisoned(*gpu_, {17, hidden}, DType::kBF16);
    ASSERT_TRUE(gpu_->RmsNorm(Up(x), Up(w), 1e-5f, out).ok());
    Tensor want = Tensor::Zeros({17, hidden}, DType::kF32);
    ASSERT_TRUE(cpu_->RmsNorm(x, w, 1e-5f, want).ok());
    ExpectClose(Down(out), want, 2e-2, 0.05, "RmsNorm");
    // In place (out aliases x).
    Tensor dx = Up(x);
    ASSERT_TRUE(gpu_->RmsNorm(dx, Up(w), 1e-5f, dx).ok());
    ExpectClose(Down(dx), want, 2e-2, 0.05, "RmsNorm in place");
    // Fused residual add; out aliases x.
    Tensor dres = Up(res);
    Tensor dx2 = Up(x);
    ASSERT_TRUE(gpu_->AddRmsNorm(dres, dx2, Up(w), 1e-5f, dx2).ok());
    Tensor cres = Clone(res);
    Tensor cout = Tensor::Zeros({17, hidden}, DType::kF32);
    ASSERT_TRUE(cpu_->AddRmsNorm(cres, x, w, 1e-5f, cout).ok());
    ExpectClose(Down(dres), cres, 2e-2, 0.05, "AddRmsNorm residual");
    ExpectClose(Down(dx2), cout, 2e-2, 0.05, "AddRmsNorm out");
  }
}

TEST_F(CudaBackendTest, SiluMulAndAddMatchCpu) {
  for (int64_t f : {37, 1000, 1024}) {
    const Tensor gate_up = RandomBf16Values({17, 2 * f}, rng_, 2.0f);
    Tensor dgu = Up(gate_up);
    Tensor out = Poisoned(*gpu_, {17, f}, DType::kBF16);
    ASSERT_TRUE(gpu_->SiluMul(dgu.Slice(1, 0, f), dgu.Slice(1, f, 2 * f), out).ok());
    Tensor want = Tensor::Zeros({17, f}, DType::kF32);
    ASSERT_TRUE(cpu_->SiluMul(gate_up.Slice(1, 0, f), gate_up.Slice(1, f, 2 * f), want).ok());
    ExpectClose(Down(out), want, 2e-2, 0.05, "SiluMul");
    const Tensor a = RandomBf16Values({17, f}, rng_), b = RandomBf16Values({17, f}, rng_);
    Tensor sum = Poisoned(*gpu_, {17, f}, DType::kBF16);
    ASSERT_TRUE(gpu_->Add(Up(a), Up(b), sum).ok());
    Tensor want_sum = Tensor::Zeros({17, f}, DType::kF32);
    ASSERT_TRUE(cpu_->Add(a, b, want_sum).ok());
    ExpectClose(Down(sum), want_sum, 2e-2, 0.05, "Add");
  }
}

TEST_F(CudaBackendTest, GatherRowsIsExact) {
  const Tensor x = RandomBf16Values({37, 3, 17}, rng_);
  const std::vector<int64_t> idx = {36, 0, 5, 5, 17, 1, 30};
  for (DType it : {DType::kI32, DType::kI64}) {
    Tensor out = Poisoned(*gpu_, {7, 3, 17}, DType::kBF16);
    ASSERT_TRUE(gpu_->GatherRows(Up(x), Index(idx, it), out).ok());
    Tensor want = Tensor::Zeros({7, 3, 17}, DType::kF32);
    Tensor hidx = Tensor::Zeros({7}, DType::kI64);
    for (int i = 0; i < 7; ++i) hidx.data<int64_t>()[i] = idx[i];
    ASSERT_TRUE(cpu_->GatherRows(x, hidx, want).ok());
    ExpectBitEqual(Down(out), want, "GatherRows bf16");
  }
  // fp32 rows (LSE) too.
  const Tensor l = RandomBf16Values({37, 8}, rng_);
  Tensor dl = Up(l, DType::kF32);
  Tensor out = Poisoned(*gpu_, {7, 8}, DType::kF32);
  ASSERT_TRUE(gpu_->GatherRows(dl, Index(idx, DType::kI64), out).ok());
  Tensor got = Down(out);
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(std::memcmp(got.data<float>() + i * 8, l.data<float>() + idx[i] * 8, 32), 0);
  }
  ASSERT_TRUE(gpu_->GatherRows(dl, Index({0, 37}, DType::kI32), out.Slice(0, 0, 2)).ok());
  EXPECT_EQ(gpu_->Synchronize().code(), absl::StatusCode::kInvalidArgument);
}

struct LinearShape {
  int64_t t, n, k;
};

TEST_F(CudaBackendTest, LinearMatchesCpuAtAlignedAndUnalignedShapes) {
  // K = 17, 37, 1000 are not multiples of 8 (rows not 16-byte aligned): handled, not rejected.
  for (const LinearShape& s : std::vector<LinearShape>{{17, 37, 1000},
                                                       {37, 1000, 17},
                                                       {1, 4096, 4096},
                                                       {5, 33, 37},
                                                       {64, 256, 512},
                                                       {1000, 64, 128}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << s.t << " N=" << s.n << " K=" << s.k);
    const float scale = 1.0f / std::sqrt(static_cast<float>(s.k));
    const Tensor x = RandomBf16Values({s.t, s.k}, rng_);
    const Tensor w = RandomBf16Values({s.n, s.k}, rng_, scale);
    const Tensor bias = RandomBf16Values({s.n}, rng_);
    Tensor want = Tensor::Zeros({s.t, s.n}, DType::kF32);
    ASSERT_TRUE(cpu_->Linear(x, w, Tensor(), want).ok());
    Tensor dx = Up(x), dw = Up(w);
    Tensor out = Poisoned(*gpu_, {s.t, s.n}, DType::kBF16);
    absl::Status st = gpu_->Linear(dx, dw, Tensor(), out);
    ASSERT_TRUE(st.ok()) << st;
    ExpectClose(Down(out), want, 2e-2, 0.05, "Linear bf16 out");
    // fp32 output (logits) and bias.
    Tensor want_b = Tensor::Zeros({s.t, s.n}, DType::kF32);
    ASSERT_TRUE(cpu_->Linear(x, w, bias, want_b).ok());
    Tensor out32 = Poisoned(*gpu_, {s.t, s.n}, DType::kF32);
    st = gpu_->Linear(dx, dw, Up(bias), out32);
    ASSERT_TRUE(st.ok()) << st;
    ExpectClose(Down(out32), want_b, 1e-2, 0.05, "Linear fp32 out + bias");
  }
  // Row-strided x (a column slice: leading dimension != K) and an out slice.
  const Tensor xw = RandomBf16Values({17, 50}, rng_);
  const Tensor w = RandomBf16Values({37, 41}, rng_, 0.2f);
  Tensor want = Tensor::Zeros({17, 37}, DType::kF32);
  ASSERT_TRUE(cpu_->Linear(xw.Slice(1, 3, 44), w, Tensor(), want).ok());
  Tensor out = Poisoned(*gpu_, {17, 40}, DType::kBF16);
  ASSERT_TRUE(gpu_->Linear(Up(xw).Slice(1, 3, 44), Up(w), Tensor(), out.Slice(1, 1, 38)).ok());
  Tensor got = Tensor::Zeros({17, 37}, DType::kF32);
  ASSERT_TRUE(gpu_->CopyToHost(out.Slice(1, 1, 38), got).ok());
  ExpectClose(got, want, 2e-2, 0.05, "Linear strided");
  // Shape mismatch is InvalidArgument.
  EXPECT_EQ(gpu_->Linear(Up(xw), Up(w), Tensor(), out).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CudaBackendTest, RopeMatchesCpu) {
  RopeConfig llama3;
  llama3.theta = 500000.0;
  llama3.scaling = RopeScaling::kLlama3;
  llama3.factor = 8.0;
  for (const RopeConfig& cfg : {RopeConfig{}, llama3}) {
    for (int64_t d : {64, 128, 38}) {
      const int64_t t = 17, hq = 8, hkv = 2;
      const Tensor q = RandomBf16Values({t, hq, d}, rng_), k = RandomBf16Values({t, hkv, d}, rng_);
      std::vector<int64_t> pos(t);
      for (int64_t i = 0; i < t; ++i) pos[i] = i < 9 ? i : 100000 + 7919 * i;
      for (DType pt : {DType::kI32, DType::kI64}) {
        Tensor dq = Up(q), dk = Up(k);
        ASSERT_TRUE(gpu_->Rope(dq, dk, Index(pos, pt), cfg).ok());
        Tensor cq = Clone(q), ck = Clone(k);
        Tensor hpos = Tensor::Zeros({t}, DType::kI64);
        for (int64_t i = 0; i < t; ++i) hpos.data<int64_t>()[i] = pos[i];
        ASSERT_TRUE(cpu_->Rope(cq, ck, hpos, cfg).ok());
        ExpectClose(Down(dq), cq, 2e-2, 0.05, "Rope q");
        ExpectClose(Down(dk), ck, 2e-2, 0.05, "Rope k");
      }
      // q only, as a strided view of a fused qkv buffer.
      const Tensor qkv = RandomBf16Values({t, hq + 2 * hkv, d}, rng_);
      Tensor dqkv = Up(qkv);
      ASSERT_TRUE(gpu_->Rope(dqkv.Slice(1, 0, hq), Tensor(), Index(pos, DType::kI64), cfg).ok());
      Tensor cqkv = Clone(qkv);
      Tensor hpos = Tensor::Zeros({t}, DType::kI64);
      for (int64_t i = 0; i < t; ++i) hpos.data<int64_t>()[i] = pos[i];
      ASSERT_TRUE(cpu_->Rope(cqkv.Slice(1, 0, hq), Tensor(), hpos, cfg).ok());
      ExpectClose(Down(dqkv), cqkv, 2e-2, 0.05, "Rope strided q");
    }
  }
}

TEST_F(CudaBackendTest, KvCacheWriteAndGatherAreExact) {
  for (int64_t d : {64, 36}) {
    const int64_t nb = 7, layers = 3, bs = 16, hkv = 2, t = 37;
    absl::StatusOr<Tensor> gcache = gpu_->AllocKvCache(nb, layers, bs, hkv, d);
    ASSERT_TRUE(gcache.ok());
    const Tensor zeros = Tensor::Zeros(gcache->shape(), DType::kF32);
    ASSERT_TRUE(gpu_->CopyFromHost(zeros, *gcache).ok());
    Tensor ccache = Tensor::Zeros(gcache->shape(), DType::kF32);
    auto gview = KvCacheView::FromTensor(*gcache);
    auto cview = KvCacheView::FromTensor(ccache);
    ASSERT_TRUE(gview.ok() && cview.ok());
    const Tensor k = RandomBf16Values({t, hkv, d}, rng_), v = RandomBf16Values({t, hkv, d}, rng_);
    std::vector<int64_t> slots(t);
    for (int64_t i = 0; i < t; ++i) slots[i] = i % 5 == 3 ? -1 : (i * 3 + 11) % (nb * bs);
    Tensor hslots = Tensor::Zeros({t}, DType::kI64);
    std::memcpy(hslots.raw(), slots.data(), sizeof(int64_t) * t);
    ASSERT_TRUE(gpu_->WriteKvCache(1, Up(k), Up(v), Index(slots, DType::kI64), *gview).ok());
    ASSERT_TRUE(cpu_->WriteKvCache(1, k, v, hslots, *cview).ok());
    ExpectBitEqual(Down(*gcache), ccache, "cache after WriteKvCache");
    // Gather a sequence of 37 tokens through a shuffled block table.
    const std::vector<int32_t> table = {4, 0, 6};
    Tensor gk = Poisoned(*gpu_, {t, hkv, d}, DType::kBF16);
    Tensor gv = Poisoned(*gpu_, {t, hkv, d}, DType::kBF16);
    ASSERT_TRUE(gpu_->GatherKvCache(1, table, t, *gview, gk, gv).ok());
    Tensor ck = Tensor::Zeros({t, hkv, d}, DType::kF32),
           cv = Tensor::Zeros({t, hkv, d}, DType::kF32);
    ASSERT_TRUE(cpu_->GatherKvCache(1, table, t, *cview, ck, cv).ok());
    ExpectBitEqual(Down(gk), ck, "gathered K");
    ExpectBitEqual(Down(gv), cv, "gathered V");
    // Bad slot: reported at the next sync; bad block id: at once.
    ASSERT_TRUE(gpu_->WriteKvCache(0, Up(k).Slice(0, 0, 1), Up(v).Slice(0, 0, 1),
                                   Index({nb * bs}, DType::kI64), *gview)
                    .ok());
    EXPECT_EQ(gpu_->Synchronize().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(gpu_->GatherKvCache(1, std::vector<int32_t>{7}, 1, *gview, gk.Slice(0, 0, 1),
                                  gv.Slice(0, 0, 1))
                  .code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(CudaBackendTest, MergeCombineAndRescaleMatchCpu) {
  const int64_t t = 17, h = 5, d = 37;
  const Tensor oa = RandomBf16Values({t, h, d}, rng_), ob = RandomBf16Values({t, h, d}, rng_);
  Tensor la = RandomBf16Values({t, h}, rng_, 3.0f), lb = RandomBf16Values({t, h}, rng_, 3.0f);
  // Empty sides: row 0 both, row 1 only a, row 2 only b.
  for (int64_t j = 0; j < h; ++j) {
    la.data<float>()[0 * h + j] = lb.data<float>()[0 * h + j] = kNegInf;
    la.data<float>()[1 * h + j] = kNegInf;
    lb.data<float>()[2 * h + j] = kNegInf;
  }
  Tensor o = Poisoned(*gpu_, {t, h, d}, DType::kBF16);
  Tensor lse = Poisoned(*gpu_, {t, h}, DType::kF32);
  Tensor doa = Up(oa), dob = Up(ob);
  ASSERT_TRUE(
      gpu_->MergeAttentionStates(doa, Up(la, DType::kF32), dob, Up(lb, DType::kF32), o, lse).ok());
  Tensor co = Tensor::Zeros({t, h, d}, DType::kF32), cl = Tensor::Zeros({t, h}, DType::kF32);
  ASSERT_TRUE(cpu_->MergeAttentionStates(oa, la, ob, lb, co, cl).ok());
  Tensor go = Down(o);
  ExpectClose(go, co, 2e-2, 0.05, "merged O");
  ExpectClose(Down(lse), cl, 1e-5, 0.0, "merged LSE");
  // One-sided rows are the other side bit for bit.
  EXPECT_EQ(std::memcmp(go.data<float>() + 1 * h * d, ob.data<float>() + 1 * h * d, 4 * h * d), 0);
  EXPECT_EQ(std::memcmp(go.data<float>() + 2 * h * d, oa.data<float>() + 2 * h * d, 4 * h * d), 0);
  // In place into o_a / lse_a.
  Tensor dla = Up(la, DType::kF32);
  ASSERT_TRUE(gpu_->MergeAttentionStates(doa, dla, dob, Up(lb, DType::kF32), doa, dla).ok());
  ExpectClose(Down(doa), co, 2e-2, 0.05, "merged O in place");
  ExpectClose(Down(dla), cl, 1e-5, 0.0, "merged LSE in place");

  // CombineLse over 3 parts, some all -inf.
  Tensor parts = RandomBf16Values({3, t, h}, rng_, 4.0f);
  for (int64_t r = 0; r < 3; ++r) parts.data<float>()[r * t * h + 4] = kNegInf;
  parts.data<float>()[1 * t * h + 9] = kNegInf;
  Tensor total = Poisoned(*gpu_, {t, h}, DType::kF32);
  ASSERT_TRUE(gpu_->CombineLse(Up(parts, DType::kF32), total).ok());
  Tensor ctotal = Tensor::Zeros({t, h}, DType::kF32);
  ASSERT_TRUE(cpu_->CombineLse(parts, ctotal).ok());
  ExpectClose(Down(total), ctotal, 1e-5, 0.0, "CombineLse");

  // Rescale part 1 by exp(lse_1 - total), 0 where lse_1 is -inf (NaN rows cleared).
  Tensor local = Clone(parts.Select(0, 1));
  Tensor ro = RandomBf16Values({t, h, d}, rng_);
  Tensor dro = Up(ro);
  ASSERT_TRUE(
      gpu_->RescaleAttentionOutput(dro, Up(local, DType::kF32), Up(ctotal, DType::kF32)).ok());
  Tensor cro = Clone(ro);
  ASSERT_TRUE(cpu_->RescaleAttentionOutput(cro, local, ctotal).ok());
  ExpectClose(Down(dro), cro, 2e-2, 0.05, "Rescale");
}

TEST_F(CudaBackendTest, SampleGreedyOnDeviceExactAndHostPathMatchesCpu) {
  const int64_t s = 6, vocab = 1000;
  Tensor logits = RandomBf16Values({s, vocab}, rng_);
  // Well separated maxima; row 3 has a tie (lowest id wins); row 4 is all equal.
  const int64_t argmax[] = {999, 0, 517, 3, 0, 77};
  for (int64_t r = 0; r < s; ++r) logits.data<float>()[r * vocab + argmax[r]] = 10.0f;
  logits.data<float>()[3 * vocab + 900] = 10.0f;
  for (int64_t i = 0; i < vocab; ++i) logits.data<float>()[4 * vocab + i] = 0.5f;
  std::vector<SamplingParams> greedy(s);
  for (DType dt : {DType::kF32, DType::kBF16}) {
    Tensor ids = Poisoned(*gpu_, {s}, DType::kI32);
    ASSERT_TRUE(gpu_->Sample(Up(logits, dt), greedy, ids).ok());
    Tensor got = Download(*gpu_, ids, DType::kI32);
    for (int64_t r = 0; r < s; ++r) EXPECT_EQ(got.data<int32_t>()[r], argmax[r]) << "row " << r;
  }
  // Mixed batch: temperature rows go through the CPU algorithm on the same fp32 logits.
  Tensor soft = RandomBf16Values({s, vocab}, rng_, 2.0f);
  std::vector<SamplingParams> params(s);
  params[1] = {0.7f, 0, 1.0f, 42, 3};
  params[2] = {1.0f, 50, 1.0f, 7, 0};
  params[4] = {1.3f, 0, 0.9f, 99, 17};
  params[5] = {0.5f, 10, 0.5f, 1, 2};
  Tensor ids = Poisoned(*gpu_, {s}, DType::kI32);
  ASSERT_TRUE(gpu_->Sample(Up(soft, DType::kF32), params, ids).ok());
  Tensor want = Tensor::Zeros({s}, DType::kI32);
  ASSERT_TRUE(cpu_->Sample(soft, params, want).ok());
  ExpectBitEqual(Download(*gpu_, ids, DType::kI32), want, "sampled ids");
}

}  // namespace
}  // namespace cpserve
