// The paged decode attention kernel (kernels/cuda/attention_decode.*): its work
// plan (pure logic, exhaustive key coverage; runs without a GPU) and its results
// (bf16) against the CPU backend (fp32) on the same bf16-rounded random inputs:
// decode and small multi-query tails (<= 16 rows per KV head), GQA ratios, head
// dims 32/64/128, block sizes that do and do not hold whole 16-key tiles,
// shuffled block tables, empty contexts, many key splits. Outputs are NaN-poisoned
// before each run; rows no segment covers must stay NaN. GPU cases skip without a
// CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/attention_decode_arena.h"
#include "kernels/cuda/attention_decode_plan.h"
#include "tests/gpu/attention/attention_gpu_util.h"

namespace cpserve::cuda::testing {
namespace {

using attn::DecodePlan;
using attn::Segment;

// ---- plan (no GPU) -------------------------------------------------------------

// Every key of every segment with queries is read by exactly one split; splits
// are whole warp rounds (except the last) and at least kMinDecodeSplitKeys.
void CheckPlan(const std::vector<Segment>& segs, int64_t group, int64_t hkv, int64_t bs,
               int64_t slots) {
  const DecodePlan plan = attn::MakeDecodePlan(segs, group, hkv, bs, slots);
  size_t k = 0, tables = 0;
  int64_t part = 0;
  std::vector<std::vector<int>> seen(plan.segs.size());
  for (const Segment& s : segs) {
    if (s.q_len == 0) continue;
    ASSERT_LT(k, plan.segs.size());
    const attn::DecodeSeg& d = plan.segs[k];
    EXPECT_EQ(d.q_start, s.q_start);
    EXPECT_EQ(d.rows, s.q_len * group);
    EXPECT_EQ(d.kv_len, s.ctx_len);
    EXPECT_EQ(d.table_offset, static_cast<int>(tables));
    EXPECT_EQ(d.split_keys % (attn::kDecodeWarps * attn::kDecodeTileKeys), 0);
    if (d.num_splits > 1) {
      EXPECT_GE(d.split_keys, attn::kMinDecodeSplitKeys);
    }
    EXPECT_GE(d.num_splits, 1);
    EXPECT_LT(static_cast<int64_t>(d.num_splits - 1) * d.split_keys,
              std::max<int64_t>(1, s.ctx_len));
    EXPECT_GE(static_cast<int64_t>(d.num_splits) * d.split_keys, s.ctx_len);
    if (d.num_splits > 1) {
      EXPECT_EQ(d.part_start, part);
      part += static_cast<int64_t>(d.num_splits) * hkv * d.rows;
    }
    for (int64_t i = 0; i < (s.ctx_len + bs - 1) / bs; ++i) {
      EXPECT_EQ(plan.tables[tables + i], s.block_table[i]);
    }
    tables += (s.ctx_len + bs - 1) / bs;
    seen[k].assign(d.num_splits, 0);
    ++k;
  }
  EXPECT_EQ(k, plan.segs.size());
  EXPECT_EQ(part, plan.part_rows);
  int prev = INT32_MAX;
  for (const attn::DecodeItem& it : plan.items) {
    ASSERT_GE(it.seg, 0);
    ASSERT_LT(it.seg, static_cast<int>(plan.segs.size()));
    ASSERT_GE(it.split, 0);
    ASSERT_LT(it.split, plan.segs[it.seg].num_splits);
    ++seen[it.seg][it.split];
    const attn::DecodeSeg& d = plan.segs[it.seg];
    const int keys = std::min(d.split_keys, d.kv_len - it.split * d.split_keys);
    EXPECT_LE(keys, prev) << "items not longest first";
    prev = keys;
  }
  for (size_t i = 0; i < seen.size(); ++i) {
    for (int n : seen[i]) EXPECT_EQ(n, 1) << "segment " << i;
    const bool split = plan.segs[i].num_splits > 1;
    EXPECT_EQ(std::count(plan.split_segs.begin(), plan.split_segs.end(), static_cast<int>(i)),
              split ? 1 : 0);
  }
}

TEST(DecodePlanTest, CoversEveryKeyOnce) {
  std::mt19937 rng(7);
  std::vector<int32_t> ids(30000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 9);
    const int64_t bs = 1 + static_cast<int64_t>(rng() % 40);
    std::vector<Segment> segs;
    int64_t q = 0;
    for (int i = 0; i < n; ++i) {
      Segment s;
      s.q_start = q;
      s.q_len = static_cast<int64_t>(rng() % 5);  // 0 included: skipped by the plan
      s.ctx_len =
          rng() % 4 == 0 ? static_cast<int64_t>(rng() % 3) : static_cast<int64_t>(rng() % 30000);
      s.block_table = absl::Span<const int32_t>(ids).subspan(0, (s.ctx_len + bs - 1) / bs);
      q += s.q_len;
      segs.push_back(s);
    }
    const int64_t slots = 1 + static_cast<int64_t>(rng() % 800);
    CheckPlan(segs, 4, 2, bs, slots);
    if (HasFailure()) {
      ADD_FAILURE() << "trial " << trial;
      return;
    }
  }
}

// Splits for 264 resident blocks (132 SMs): 4 waves of ~1k-key blocks for one
// 128k sequence; one wave for small batches (>= 128 keys, <= 512 keys per block).
TEST(DecodePlanTest, SplitSizesFollowTheWork) {
  std::vector<int32_t> ids(8192);
  struct Want {
    int64_t ctx, split_keys, splits;
  };
  for (const Want& w : {Want{131072, 1024, 128}, Want{32768, 512, 64}, Want{16384, 512, 32},
                        Want{4096, 128, 32}, Want{100, 128, 1}}) {
    const Segment s{0, 1, 0, 0, w.ctx, ids};
    const DecodePlan plan = attn::MakeDecodePlan({&s, 1}, 4, 8, 16, 264);
    ASSERT_EQ(plan.segs.size(), 1u);
    EXPECT_EQ(plan.segs[0].split_keys, w.split_keys) << w.ctx;
    EXPECT_EQ(plan.segs[0].num_splits, w.splits) << w.ctx;
    EXPECT_EQ(plan.items.size(), static_cast<size_t>(w.splits)) << w.ctx;
  }
}

// ---- kernel vs CPU reference (GPU) ---------------------------------------------

#define SKIP_WITHOUT_GPU() \
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device"

// O: max |gpu - ref| / max |ref| < 2e-2 over covered rows; LSE: both -inf or
// |gpu - ref| < 1e-2; uncovered rows stay NaN.
void ExpectClose(const CaseSpec& c, const CaseResult& r) {
  ASSERT_TRUE(r.cpu_status.ok()) << r.cpu_status;
  ASSERT_TRUE(r.gpu_status.ok()) << r.gpu_status;
  float ref_max = 1e-6f, err_max = 0.0f;
  int64_t lse_bad = 0, nan_bad = 0, untouched_bad = 0, worst = -1;
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

// Paged case over `segs` (q_start, q_len, ctx_len), one uncovered row at the end.
CaseSpec Paged(int64_t hq, int64_t hkv, int64_t d, int64_t bs,
               std::vector<std::array<int64_t, 3>> segs, uint32_t seed) {
  CaseSpec c;
  c.hq = hq;
  c.hkv = hkv;
  c.d = d;
  c.block_size = bs;
  c.paged = true;
  c.seed = seed;
  int64_t blocks = 0;
  for (const auto& s : segs) {
    c.segs.push_back({s[0], s[1], 0, 0, s[2]});
    c.tq = std::max(c.tq, s[0] + s[1] + 1);
    blocks = std::max(blocks, (s[2] + bs - 1) / bs);
  }
  c.num_blocks = blocks + 3;
  return c;
}

class DecodeKernelTest : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

// GQA ratio, head dim, block size: decode rows plus multi-query tails up to 16
// rows per KV head, contexts around tile and block edges, an empty context.
TEST_P(DecodeKernelTest, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const auto [ratio, d, bs] = GetParam();
  const int64_t q_tail = 16 / ratio;  // rows per KV head = 16
  CaseSpec c = Paged(2 * ratio, 2, d, bs,
                     {{0, 1, 0},
                      {1, 1, 1},
                      {2, 1, 15},
                      {3, 1, 16},
                      {4, 1, 17},
                      {5, q_tail, 63},
                      {5 + q_tail, 1, 300},
                      {7 + q_tail, 2, 1000},  // row 6 + q_tail uncovered
                      {9 + q_tail, 1, 4097},
                      {10 + q_tail, q_tail, 2049}},
                     static_cast<uint32_t>(ratio * 1000 + d * 10 + bs));
  ExpectClose(c, RunCase(c));
}

INSTANTIATE_TEST_SUITE_P(All, DecodeKernelTest,
                         ::testing::Combine(::testing::Values(1, 4, 8),
                                            ::testing::Values(32, 64, 128),
                                            ::testing::Values(16, 32, 5)),
                         [](const auto& info) {
                           return absl::StrCat("gqa", std::get<0>(info.param), "_d",
                                               std::get<1>(info.param), "_bs",
                                               std::get<2>(info.param));
                         });

// Llama-3-8B decode shape: 32 query / 8 KV heads, D 128, block 16, a batch of odd
// contexts; split into several key ranges each.
TEST(DecodeKernel, LlamaShapeBatch) {
  SKIP_WITHOUT_GPU();
  std::vector<std::array<int64_t, 3>> segs;
  for (int64_t i = 0; i < 24; ++i) segs.push_back({i, 1, 1 + 977 * i});
  CaseSpec c = Paged(32, 8, 128, 16, segs, 11);
  ExpectClose(c, RunCase(c));
}

// One long sequence: hundreds of splits through the combine kernel; sharp scores.
TEST(DecodeKernel, LongContextManySplits) {
  SKIP_WITHOUT_GPU();
  CaseSpec c = Paged(8, 2, 128, 16, {{0, 1, 70001}, {1, 4, 40000}}, 12);
  c.q_sigma = 2.0f;
  c.scale = 0.2f;
  ExpectClose(c, RunCase(c));
}

// ---- capturable arena + CUDA graph (GPU) ------------------------------------------

// Runs paged attention through one CUDA graph (arena Upload + Launch of layer 1)
// captured on the first call and replayed for every later batch: inputs are
// copied into fixed buffers, the batch is staged, the graph replays, outputs are
// copied back. Each run is also compared bit for bit with PagedAttentionCuda.
class GraphHarness {
 public:
  static constexpr int64_t kHq = 32, kHkv = 8, kD = 128, kBs = 16, kLayers = 2;
  static constexpr int64_t kMaxSeqs = 24, kMaxTokens = 64, kMaxBlocks = 300, kCacheBlocks = 400;

  GraphHarness()
      : q_(kMaxTokens * kHq * kD * 2),
        o_(kMaxTokens * kHq * kD * 2),
        lse_(kMaxTokens * kHq * 4),
        cache_(KvCacheView::Contiguous(nullptr, DType::kBF16, Device::CUDA(0), kCacheBlocks,
                                       kLayers, kBs, kHkv, kD)
                   .block_stride *
               kCacheBlocks * 2) {
    DecodeArenaConfig c;
    c.max_seqs = kMaxSeqs;
    c.max_tokens = kMaxTokens;
    c.max_q_len = 2;
    c.max_blocks_per_seq = kMaxBlocks;
    c.num_q_heads = kHq;
    c.num_kv_heads = kHkv;
    c.head_dim = kD;
    c.block_size = kBs;
    absl::StatusOr<std::unique_ptr<DecodeAttentionArena>> a = DecodeAttentionArena::Create(c);
    CHECK(a.ok()) << a.status();
    arena_ = std::move(*a);
  }
  ~GraphHarness() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
  }

  KvCacheView CacheView() const {
    return KvCacheView::Contiguous(cache_.get(), DType::kBF16, Device::CUDA(0), kCacheBlocks,
                                   kLayers, kBs, kHkv, kD);
  }

  absl::Status Run(const Tensor& q, absl::Span<const PagedSegment> segs, const KvCacheView& cache,
                   int64_t layer, const AttentionOptions& options, const Tensor& o,
                   const Tensor& lse, cudaStream_t stream) {
    const int64_t t = q.dim(0);
    CHECK_EQ(layer, 1);
    CHECK_LE(t, kMaxTokens);
    CHECK_LE(cache.num_blocks, kCacheBlocks);
    CHECK_EQ(cache.block_stride, CacheView().block_stride);
    const size_t row = kHq * kD * 2;
    CHECK_EQ(cudaMemcpy2DAsync(q_.get(), row, q.raw(), q.stride(0) * 2, row, t,
                               cudaMemcpyDeviceToDevice, stream),
             cudaSuccess);
    CHECK_EQ(cudaMemcpyAsync(cache_.get(), cache.base, cache.num_blocks * cache.block_stride * 2,
                             cudaMemcpyDeviceToDevice, stream),
             cudaSuccess);
    CHECK_EQ(cudaMemcpyAsync(o_.get(), o.raw(), t * row, cudaMemcpyDeviceToDevice, stream),
             cudaSuccess);
    CHECK_EQ(cudaMemcpyAsync(lse_.get(), lse.raw(), t * kHq * 4, cudaMemcpyDeviceToDevice, stream),
             cudaSuccess);
    if (absl::Status s = arena_->Stage(segs, CacheView()); !s.ok()) return s;
    if (exec_ == nullptr) {
      const Device dev = Device::CUDA(0);
      const Tensor fq = Tensor::Borrow(q_.get(), {kMaxTokens, kHq, kD}, DType::kBF16, dev);
      const Tensor fo = Tensor::Borrow(o_.get(), {kMaxTokens, kHq, kD}, DType::kBF16, dev);
      const Tensor fl = Tensor::Borrow(lse_.get(), {kMaxTokens, kHq}, DType::kF32, dev);
      cudaGraph_t graph;
      CHECK_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
      absl::Status s = arena_->Upload(stream);
      if (s.ok()) s = arena_->Launch(fq, CacheView(), layer, options, fo, fl, stream);
      CHECK_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
      if (!s.ok()) return s;
      CHECK_EQ(cudaGraphInstantiate(&exec_, graph, 0), cudaSuccess);
      CHECK_EQ(cudaGraphDestroy(graph), cudaSuccess);
      options_ = options;
    }
    CHECK_EQ(options.scale, options_.scale);
    CHECK_EQ(cudaGraphLaunch(exec_, stream), cudaSuccess);
    ++replays_;
    CHECK_EQ(cudaMemcpyAsync(o.raw(), o_.get(), t * row, cudaMemcpyDeviceToDevice, stream),
             cudaSuccess);
    CHECK_EQ(cudaMemcpyAsync(lse.raw(), lse_.get(), t * kHq * 4, cudaMemcpyDeviceToDevice, stream),
             cudaSuccess);

    // The same problem through PagedAttentionCuda, from the same poisoned outputs.
    DeviceBuffer o2(t * row), l2(t * kHq * 4);
    CHECK_EQ(cudaMemsetAsync(o2.get(), 0xff, t * row, stream), cudaSuccess);
    CHECK_EQ(cudaMemsetAsync(l2.get(), 0xff, t * kHq * 4, stream), cudaSuccess);
    const Tensor to2 = Tensor::Borrow(o2.get(), {t, kHq, kD}, DType::kBF16, o.device());
    const Tensor tl2 = Tensor::Borrow(l2.get(), {t, kHq}, DType::kF32, o.device());
    if (absl::Status s = PagedAttentionCuda(q, segs, cache, layer, options, to2, tl2, stream);
        !s.ok()) {
      return s;
    }
    CHECK_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    std::vector<char> a(t * row), b(t * row), la(t * kHq * 4), lb(t * kHq * 4);
    o2.Download(a.data(), a.size());
    CHECK_EQ(cudaMemcpy(b.data(), o.raw(), b.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    l2.Download(la.data(), la.size());
    CHECK_EQ(cudaMemcpy(lb.data(), lse.raw(), lb.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    mismatches_ += a != b || la != lb;
    return absl::OkStatus();
  }

  DecodeAttentionArena& arena() { return *arena_; }
  int replays() const { return replays_; }
  int mismatches() const { return mismatches_; }

 private:
  std::unique_ptr<DecodeAttentionArena> arena_;
  DeviceBuffer q_, o_, lse_, cache_;
  cudaGraphExec_t exec_ = nullptr;
  AttentionOptions options_;
  int replays_ = 0, mismatches_ = 0;
};

// One graph, captured once, replayed over batches of different sizes, contexts,
// block tables and query counts: each matches the CPU reference and is
// bit-identical to the direct path.
TEST(DecodeArenaGraph, ReplaysNewBatchesExactly) {
  SKIP_WITHOUT_GPU();
  GraphHarness h;
  PagedRunner runner =
      [&h](const Tensor& q, absl::Span<const PagedSegment> segs, const KvCacheView& cache,
           int64_t layer, const AttentionOptions& options, const Tensor& o, const Tensor& lse,
           cudaStream_t stream) { return h.Run(q, segs, cache, layer, options, o, lse, stream); };
  std::vector<std::vector<std::array<int64_t, 3>>> batches(4);
  for (int64_t i = 0; i < 24; ++i) batches[0].push_back({i, 1, 1 + 173 * i});
  batches[1] = {{0, 1, 4097}, {1, 1, 0}, {3, 1, 50}};  // row 2 uncovered
  for (int64_t i = 0; i < 17; ++i) batches[2].push_back({2 * i, 1 + i % 2, 4700 - 251 * i});
  batches[3] = {{5, 1, 4800}};
  uint32_t seed = 100;
  for (const auto& b : batches) {
    CaseSpec c = Paged(GraphHarness::kHq, GraphHarness::kHkv, GraphHarness::kD, GraphHarness::kBs,
                       b, seed++);
    SCOPED_TRACE(absl::StrCat("batch of ", b.size()));
    ExpectClose(c, RunCase(c, runner));
  }
  EXPECT_EQ(h.replays(), 4);
  EXPECT_EQ(h.mismatches(), 0) << "graph replay differs from PagedAttentionCuda";
}

TEST(DecodeArena, RejectsBatchesOutsideItsCapacity) {
  SKIP_WITHOUT_GPU();
  GraphHarness h;
  const KvCacheView cache = h.CacheView();
  std::vector<int32_t> table(GraphHarness::kMaxBlocks + 1, 7);
  std::vector<PagedSegment> many(GraphHarness::kMaxSeqs + 1, PagedSegment{0, 1, 3, table});
  for (size_t i = 0; i < many.size(); ++i) many[i].q_start = static_cast<int64_t>(i);
  EXPECT_EQ(h.arena().Stage(many, cache).code(), absl::StatusCode::kInvalidArgument);
  const PagedSegment three_queries{0, 3, 10, table};
  EXPECT_EQ(h.arena().Stage({&three_queries, 1}, cache).code(), absl::StatusCode::kInvalidArgument);
  const PagedSegment too_long{0, 1, GraphHarness::kMaxBlocks * GraphHarness::kBs + 1, table};
  EXPECT_EQ(h.arena().Stage({&too_long, 1}, cache).code(), absl::StatusCode::kInvalidArgument);
  const PagedSegment past_rows{GraphHarness::kMaxTokens, 1, 10, table};
  EXPECT_EQ(h.arena().Stage({&past_rows, 1}, cache).code(), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> bad = {1, GraphHarness::kCacheBlocks};
  const PagedSegment bad_block{0, 1, 20, bad};
  EXPECT_EQ(h.arena().Stage({&bad_block, 1}, cache).code(), absl::StatusCode::kInvalidArgument);
  const PagedSegment fine{0, 2, 20, table};
  EXPECT_TRUE(h.arena().Stage({&fine, 1}, cache).ok());
}

TEST(DecodeArena, RejectsBadConfigs) {
  DecodeArenaConfig c;
  c.max_seqs = 4;
  c.max_tokens = 4;
  c.max_blocks_per_seq = 4;
  c.num_q_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 48;  // unsupported
  EXPECT_EQ(DecodeAttentionArena::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
  c.head_dim = 128;
  c.max_q_len = 5;  // 5 x 4 rows > 16
  EXPECT_EQ(DecodeAttentionArena::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
  c.max_q_len = 1;
  c.num_kv_heads = 5;  // 32 % 5 != 0
  EXPECT_EQ(DecodeAttentionArena::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpserve::cuda::testing
