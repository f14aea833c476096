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
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
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
               int64_t target) {
  const DecodePlan plan = attn::MakeDecodePlan(segs, group, hkv, bs, target);
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
    const int64_t target = 1 + static_cast<int64_t>(rng() % 3000);
    CheckPlan(segs, 4, 2, bs, target);
    if (HasFailure()) {
      ADD_FAILURE() << "trial " << trial;
      return;
    }
  }
}

TEST(DecodePlanTest, SplitsFillTheTargetForOneLongSequence) {
  std::vector<int32_t> ids(8192);
  const Segment s{0, 1, 0, 0, 131072, ids};
  const DecodePlan plan = attn::MakeDecodePlan({&s, 1}, 4, 8, 16, 1056);
  ASSERT_EQ(plan.segs.size(), 1u);
  // 131072 keys x 8 heads over ~1056 blocks: ~1000 keys, rounded to 64.
  EXPECT_EQ(plan.segs[0].split_keys, 1024);
  EXPECT_EQ(plan.segs[0].num_splits, 128);
  EXPECT_EQ(plan.items.size(), 128u);
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

}  // namespace
}  // namespace cpserve::cuda::testing
