// CUDA attention kernels (bf16) against the CPU backend (fp32) on the same
// bf16-rounded random inputs: odd sizes, GQA, head dims 32/64/128, causal and
// not, cached context through shuffled block tables, overlapping segments, empty
// key sets, key splits. Outputs are NaN-poisoned before each run; rows no
// segment covers must stay NaN. Skipped without a CUDA device.
#include "kernels/cuda/attention_cuda.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention_launch.h"
#include "tests/gpu/attention/attention_gpu_util.h"

namespace cpserve::cuda::testing {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device"

// O: max |gpu - ref| / max |ref| < 2e-2 over covered rows; LSE: both -inf or
// |gpu - ref| < 1e-2; rows with LSE -inf have O = 0; uncovered rows stay NaN.
void ExpectClose(const CaseSpec& c, const CaseResult& r) {
  ASSERT_TRUE(r.cpu_status.ok()) << r.cpu_status;
  ASSERT_TRUE(r.gpu_status.ok()) << r.gpu_status;
  float ref_max = 1e-6f, err_max = 0.0f;
  int64_t worst = -1, lse_bad = 0, nan_bad = 0, untouched_bad = 0;
  for (int64_t t = 0; t < c.tq; ++t) {
    for (int64_t h = 0; h < c.hq; ++h) {
      const size_t row = static_cast<size_t>(t * c.hq + h);
      if (!r.covered[static_cast<size_t>(t)]) {
        untouched_bad += !std::isnan(r.lse[row]) || !std::isnan(r.o[row * c.d]);
        continue;
      }
      const float a = r.lse[row], b = r.lse_ref[row];
      const bool lse_ok = (std::isinf(a) && std::isinf(b) && a < 0 && b < 0) ||
                          (std::isfinite(a) && std::isfinite(b) && std::fabs(a - b) < 1e-2f);
      if (!lse_ok && lse_bad++ < 5) {
        ADD_FAILURE() << "lse row t=" << t << " h=" << h << ": gpu " << a << " cpu " << b;
      }
      for (int64_t i = 0; i < c.d; ++i) {
        const float x = r.o[row * c.d + i], y = r.o_ref[row * c.d + i];
        if (std::isnan(x)) {
          ++nan_bad;
          continue;
        }
        ref_max = std::max(ref_max, std::fabs(y));
        if (std::fabs(x - y) > err_max) {
          err_max = std::fabs(x - y);
          worst = static_cast<int64_t>(row);
        }
      }
    }
  }
  EXPECT_EQ(nan_bad, 0) << "NaN in O of covered rows";
  EXPECT_EQ(untouched_bad, 0) << "rows no segment covers were written";
  EXPECT_LT(err_max / ref_max, 2e-2f) << "O max abs err " << err_max << " (ref max " << ref_max
                                      << ") at row t=" << worst / c.hq << " h=" << worst % c.hq;
}

CaseSpec Base(int64_t hq, int64_t hkv, int64_t d) {
  CaseSpec c;
  c.hq = hq;
  c.hkv = hkv;
  c.d = d;
  return c;
}

// Tokens of q / k implied by the segments.
void Finish(CaseSpec& c, int64_t extra_q_rows = 0) {
  int64_t blocks = 0;  // segments draw distinct blocks each, but may share blocks
  for (const SegSpec& s : c.segs) {
    c.tq = std::max(c.tq, s.q_start + s.q_len + extra_q_rows);
    c.tk = std::max(c.tk, s.k_start + s.k_len);
    blocks = std::max(blocks, (s.ctx_len + c.block_size - 1) / c.block_size);
  }
  c.num_blocks = std::max(c.num_blocks, blocks + 3);
}

class PrefillTest : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

// hq/hkv from the GQA ratio, D, causal: a ragged batch with context, an
// overlapping pair, a segment with more queries than keys, and an empty one.
TEST_P(PrefillTest, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const auto [ratio, d, causal] = GetParam();
  CaseSpec c = Base(2 * ratio, 2, d);
  c.causal = causal;
  c.block_size = 16;
  c.segs = {
      {0, 37, 0, 37, 0},       // plain prompt
      {37, 100, 37, 100, 75},  // chunk after 75 cached tokens
      {137, 1, 137, 1, 130},   // one new token after context
      {138, 17, 0, 60, 0},     // overlaps k of the first segment (shared K/V buffer)
      {155, 20, 138, 5, 0},    // more queries than keys: early causal rows see nothing
      {175, 3, 143, 0, 0},     // no keys at all
      {180, 65, 143, 65, 33},  // tile boundary + 1
  };
  Finish(c, 4);  // 4 uncovered rows at the end, plus 178..179
  c.seed = static_cast<uint32_t>(ratio * 1000 + d * 10 + causal);
  ExpectClose(c, RunCase(c));
}

INSTANTIATE_TEST_SUITE_P(All, PrefillTest,
                         ::testing::Combine(::testing::Values(1, 4), ::testing::Values(32, 64, 128),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return absl::StrCat("gqa", std::get<0>(info.param), "_d",
                                               std::get<1>(info.param),
                                               std::get<2>(info.param) ? "_causal" : "_full");
                         });

// Few query rows over a long context: the key range is split across blocks and
// merged by LSE; custom scale and sharper scores.
TEST(PrefillSplit, LongContextFewQueries) {
  SKIP_WITHOUT_GPU();
  CaseSpec c = Base(8, 2, 128);
  c.block_size = 32;
  c.scale = 0.2f;
  c.q_sigma = 2.0f;
  c.segs = {{0, 5, 0, 7, 3001}, {5, 1, 7, 1, 0}};
  Finish(c);
  ExpectClose(c, RunCase(c));
}

// Head dim 128 prefill under each prefill kernel (the Hopper kernel runs on
// compute capability 9.0 only; elsewhere these fall back to the mma.sync kernel):
// ragged segments with context and odd sizes, several 128-row tiles and K/V
// pipeline wrap-arounds (32 query / 8 KV heads, ~700 keys), and a key split.
class PrefillKernelTest : public ::testing::TestWithParam<attn::PrefillKernel> {
 protected:
  void TearDown() override { attn::SetPrefillKernel(attn::PrefillKernel::kAuto); }
};

TEST_P(PrefillKernelTest, RaggedGqa4) {
  SKIP_WITHOUT_GPU();
  attn::SetPrefillKernel(GetParam());
  for (const bool causal : {true, false}) {
    CaseSpec c = Base(8, 2, 128);
    c.causal = causal;
    c.segs = {{0, 37, 0, 37, 0},      {37, 100, 37, 100, 75}, {137, 1, 137, 1, 130},
              {138, 17, 0, 60, 0},    {155, 20, 138, 5, 0},   {175, 3, 143, 0, 0},
              {180, 65, 143, 65, 33}, {245, 33, 208, 33, 129}};
    Finish(c, 4);
    c.seed = 77 + causal;
    SCOPED_TRACE(causal ? "causal" : "full");
    ExpectClose(c, RunCase(c));
  }
}

TEST_P(PrefillKernelTest, LongGqa8Heads32) {
  SKIP_WITHOUT_GPU();
  attn::SetPrefillKernel(GetParam());
  CaseSpec c = Base(32, 8, 128);
  c.block_size = 16;
  c.q_sigma = 1.5f;
  c.segs = {{0, 300, 0, 300, 395}, {300, 261, 300, 261, 0}};
  Finish(c);
  ExpectClose(c, RunCase(c));
}

TEST_P(PrefillKernelTest, SplitFewQueriesLongContext) {
  SKIP_WITHOUT_GPU();
  attn::SetPrefillKernel(GetParam());
  CaseSpec c = Base(4, 1, 128);
  c.block_size = 32;
  c.scale = 0.15f;
  c.segs = {{0, 3, 0, 3, 2500}};
  Finish(c);
  ExpectClose(c, RunCase(c));
}

// One causal 1024-token segment, 16 query / 4 KV heads: too few 128-row works to
// fill the GPU, so the planner splits the keys and every late split of an early row
// tile is empty. The persistent kernel's blocks then take runs of empty works after
// a loaded one (the engine's 2048-token prefill on the Llama-3-8B shape deadlocked
// that way before the producer published its pending V tile on empty works).
TEST_P(PrefillKernelTest, CausalSplitsWithEmptyWorks) {
  SKIP_WITHOUT_GPU();
  attn::SetPrefillKernel(GetParam());
  CaseSpec c = Base(16, 4, 128);
  c.segs = {{0, 1024, 0, 1024, 0}};
  Finish(c);
  c.seed = 1024;
  ExpectClose(c, RunCase(c));
}

INSTANTIATE_TEST_SUITE_P(Kernels, PrefillKernelTest,
                         ::testing::Values(attn::PrefillKernel::kMmaSync,
                                           attn::PrefillKernel::kHopper,
                                           attn::PrefillKernel::kHopperPersistent),
                         [](const auto& info) {
                           switch (info.param) {
                             case attn::PrefillKernel::kMmaSync:
                               return std::string("MmaSync");
                             case attn::PrefillKernel::kHopper:
                               return std::string("Hopper");
                             case attn::PrefillKernel::kHopperPersistent:
                               return std::string("HopperPersistent");
                             default:
                               return std::string("Auto");
                           }
                         });

class PagedTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(PagedTest, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const auto [ratio, d] = GetParam();
  CaseSpec c = Base(2 * ratio, 2, d);
  c.paged = true;
  c.block_size = 16;
  c.segs = {{0, 1, 0, 0, 0},    {1, 1, 0, 0, 1},    {2, 1, 0, 0, 17},  {3, 1, 0, 0, 300},
            {4, 3, 0, 0, 1000}, {8, 1, 0, 0, 4097}, {9, 70, 0, 0, 129}};  // row 7 uncovered
  Finish(c);
  c.seed = static_cast<uint32_t>(ratio * 100 + d);
  ExpectClose(c, RunCase(c));
}

INSTANTIATE_TEST_SUITE_P(
    All, PagedTest, ::testing::Combine(::testing::Values(1, 4), ::testing::Values(32, 64, 128)),
    [](const auto& info) {
      return absl::StrCat("gqa", std::get<0>(info.param), "_d", std::get<1>(info.param));
    });

// Decode-shaped batch (32 query / 8 KV heads) large enough not to split.
TEST(PagedBatch, ManySequencesNoSplit) {
  SKIP_WITHOUT_GPU();
  CaseSpec c = Base(32, 8, 128);
  c.paged = true;
  c.block_size = 16;
  for (int i = 0; i < 80; ++i) c.segs.push_back({i, 1, 0, 0, 37 * i + 5});
  Finish(c);
  ExpectClose(c, RunCase(c));
}

TEST(Validation, RejectsBadHeadDimAndDtype) {
  SKIP_WITHOUT_GPU();
  CaseSpec c = Base(4, 2, 48);
  c.segs = {{0, 4, 0, 4, 0}};
  Finish(c);
  // RunCase's CPU side accepts any head dim; the CUDA side must refuse 48.
  const CaseResult r = RunCase(c);
  EXPECT_EQ(r.gpu_status.code(), absl::StatusCode::kInvalidArgument) << r.gpu_status;

  DeviceBuffer buf(1 << 16);
  const Device dev = Device::CUDA(0);
  Tensor q = Tensor::Borrow(buf.get(), {4, 2, 64}, DType::kF32, dev);  // fp32: wrong dtype
  Tensor l = Tensor::Borrow(buf.get(), {4, 2}, DType::kF32, dev);
  const PrefillSegment seg{0, 4, 0, 4, 0, {}};
  EXPECT_EQ(PrefillAttentionCuda(q, q, q, {&seg, 1}, nullptr, 0, {}, q, l, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  Tensor qb = Tensor::Borrow(buf.get(), {4, 2, 64}, DType::kBF16, dev);
  const PrefillSegment ctx_seg{0, 4, 0, 4, 8, {}};  // context but no cache
  EXPECT_EQ(PrefillAttentionCuda(qb, qb, qb, {&ctx_seg, 1}, nullptr, 0, {}, qb, l, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpserve::cuda::testing
