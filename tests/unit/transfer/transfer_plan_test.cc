// Transfer plans against a token-by-token brute force (DESIGN §3, §5).
#include "worker/transfer/transfer_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <string>

namespace cpserve::transfer {
namespace {

struct Case {
  int P, Ip, D, Id, B;
  int64_t len;
  KvBlockGeometry g;
};

std::vector<int32_t> ShuffledIds(int64_t n, int64_t pool, std::mt19937& rng) {
  std::vector<int32_t> all(pool);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(n);
  return all;
}

TransferSide MakeSide(int n, int interleave, int B, int64_t len, const KvBlockGeometry& g,
                      std::mt19937& rng) {
  TransferSide s;
  s.layout = CpLayout{n, interleave, B};
  s.block_stride_bytes = g.BlockBytes() + (rng() % 2) * 8;
  for (int r = 0; r < n; ++r) {
    const int64_t need = s.layout.LocalBlocks(len, r);
    const int64_t pool = need + 3;
    s.block_ids.push_back(ShuffledIds(need + rng() % 2, pool, rng));
    s.region_bytes.push_back(pool * s.block_stride_bytes);
  }
  return s;
}

// Checks every byte of [off, off+bytes) lies in one of `ids`' blocks (not in the
// stride padding) and returns false otherwise.
bool InsideBlocks(uint64_t off, uint64_t bytes, const std::vector<int32_t>& ids, uint64_t stride,
                  uint64_t block_bytes) {
  std::set<int64_t> allowed(ids.begin(), ids.end());
  uint64_t pos = off;
  while (pos < off + bytes) {
    const uint64_t block = pos / stride;
    const uint64_t in_block = pos % stride;
    if (in_block >= block_bytes || !allowed.count(block)) return false;
    pos = std::min(off + bytes, block * stride + block_bytes);
  }
  return true;
}

void CheckCase(const Case& c, std::mt19937& rng) {
  SCOPED_TRACE(testing::Message() << "P=" << c.P << " Ip=" << c.Ip << " D=" << c.D << " Id=" << c.Id
                                  << " B=" << c.B << " len=" << c.len);
  TransferPlanInput in;
  in.geometry = c.g;
  in.geometry.block_size = c.B;
  in.prompt_len = c.len;
  in.src = MakeSide(c.P, c.Ip, c.B, c.len, in.geometry, rng);
  in.dst = MakeSide(c.D, c.Id, c.B, c.len, in.geometry, rng);
  const KvBlockGeometry& g = in.geometry;
  const uint64_t tb = g.TokenBytes();

  std::vector<std::string> src(c.P), want(c.D), got(c.D);
  std::vector<std::vector<int>> written(c.D);
  for (int r = 0; r < c.P; ++r) {
    src[r].resize(in.src.region_bytes[r]);
    for (char& ch : src[r]) ch = static_cast<char>(rng());
  }
  for (int d = 0; d < c.D; ++d) {
    want[d].resize(in.dst.region_bytes[d]);
    for (char& ch : want[d]) ch = static_cast<char>(rng());
    got[d] = want[d];
    written[d].assign(want[d].size(), 0);
  }
  // Brute force: every token, layer and K/V individually.
  for (int64_t p = 0; p < c.len; ++p) {
    const int r = in.src.layout.Owner(p), d = in.dst.layout.Owner(p);
    const int64_t sl = in.src.layout.LocalIndex(p), dl = in.dst.layout.LocalIndex(p);
    for (int layer = 0; layer < g.num_layers; ++layer) {
      for (int kv = 0; kv < 2; ++kv) {
        const uint64_t so = in.src.block_ids[r][sl / c.B] * in.src.block_stride_bytes +
                            g.OffsetInBlock(layer, kv, sl % c.B);
        const uint64_t dof = in.dst.block_ids[d][dl / c.B] * in.dst.block_stride_bytes +
                             g.OffsetInBlock(layer, kv, dl % c.B);
        std::memcpy(want[d].data() + dof, src[r].data() + so, tb);
      }
    }
  }
  uint64_t total = 0;
  for (int r = 0; r < c.P; ++r) {
    absl::StatusOr<std::vector<TransferRun>> runs = PlanTransfer(in, r);
    ASSERT_TRUE(runs.ok()) << runs.status();
    for (const TransferRun& run : *runs) {
      ASSERT_EQ(run.src_rank, r);
      ASSERT_GE(run.dst_rank, 0);
      ASSERT_LT(run.dst_rank, c.D);
      ASSERT_GT(run.bytes, 0u);
      ASSERT_TRUE(InsideBlocks(run.dst_offset, run.bytes, in.dst.block_ids[run.dst_rank],
                               in.dst.block_stride_bytes, g.BlockBytes()));
      ASSERT_TRUE(InsideBlocks(run.src_offset, run.bytes, in.src.block_ids[r],
                               in.src.block_stride_bytes, g.BlockBytes()));
      std::memcpy(got[run.dst_rank].data() + run.dst_offset, src[r].data() + run.src_offset,
                  run.bytes);
      for (uint64_t i = 0; i < run.bytes; ++i) {
        ASSERT_EQ(++written[run.dst_rank][run.dst_offset + i], 1) << "byte written twice";
      }
      total += run.bytes;
    }
  }
  EXPECT_EQ(total, static_cast<uint64_t>(c.len) * g.num_layers * 2 * tb);
  for (int d = 0; d < c.D; ++d) ASSERT_EQ(got[d], want[d]) << "dst rank " << d;
}

TEST(TransferPlanTest, ExhaustiveSmallAgainstBruteForce) {
  std::mt19937 rng(1);
  const KvBlockGeometry g{
      .block_size = 1, .num_layers = 2, .num_kv_heads = 1, .head_dim = 3, .elem_bytes = 1};
  for (int B : {1, 4, 16}) {
    std::set<int> interleaves{1, 2, B};
    for (int P = 1; P <= 4; ++P) {
      for (int D = 1; D <= 4; ++D) {
        for (int Ip : interleaves) {
          for (int Id : interleaves) {
            if (B % Ip != 0 || B % Id != 0) continue;
            for (int64_t len = 0; len <= 100; ++len) {
              CheckCase({P, Ip, D, Id, B, len, g}, rng);
              if (HasFatalFailure()) return;
            }
          }
        }
      }
    }
  }
}

TEST(TransferPlanTest, RandomLargerAgainstBruteForce) {
  std::mt19937 rng(7);
  for (int i = 0; i < 60; ++i) {
    const int B = std::vector<int>{1, 2, 4, 8, 16, 32}[rng() % 6];
    std::vector<int> divisors;
    for (int d = 1; d <= B; ++d)
      if (B % d == 0) divisors.push_back(d);
    const KvBlockGeometry g{.block_size = B,
                            .num_layers = 1 + static_cast<int>(rng() % 3),
                            .num_kv_heads = 1 + static_cast<int>(rng() % 2),
                            .head_dim = 1 + static_cast<int>(rng() % 4),
                            .elem_bytes = 1 + static_cast<int>(rng() % 2)};
    CheckCase({1 + static_cast<int>(rng() % 8), divisors[rng() % divisors.size()],
               1 + static_cast<int>(rng() % 8), divisors[rng() % divisors.size()], B,
               static_cast<int64_t>(rng() % 3000), g},
              rng);
    if (HasFatalFailure()) return;
  }
}

// I_p = I_d = B and P == D with full blocks: exactly one run per block, the whole
// block with all its layers (ids chosen so that no two blocks are adjacent).
TEST(TransferPlanTest, BlockInterleaveMovesWholeBlocks) {
  for (int N : {1, 2, 3, 4}) {
    const int B = 16;
    const KvBlockGeometry g{
        .block_size = B, .num_layers = 4, .num_kv_heads = 2, .head_dim = 8, .elem_bytes = 2};
    TransferPlanInput in;
    in.geometry = g;
    in.prompt_len = int64_t{B} * N * 5;
    for (TransferSide* s : {&in.src, &in.dst}) {
      s->layout = CpLayout{N, B, B};
      s->block_stride_bytes = g.BlockBytes();
      s->block_ids.resize(N);
    }
    for (int r = 0; r < N; ++r) {
      for (int k = 0; k < 5; ++k) {
        in.src.block_ids[r].push_back(40 - 2 * k);
        in.dst.block_ids[r].push_back(3 * k + r);
      }
    }
    for (int r = 0; r < N; ++r) {
      auto runs = PlanTransfer(in, r);
      ASSERT_TRUE(runs.ok()) << runs.status();
      ASSERT_EQ(runs->size(), 5u);
      for (int k = 0; k < 5; ++k) {
        EXPECT_EQ((*runs)[k], (TransferRun{r, (40 - 2 * k) * g.BlockBytes(), r,
                                           (3 * k + r) * g.BlockBytes(), g.BlockBytes()}));
      }
    }
  }
}

// Consecutive physical blocks on both sides merge into one run per rank; P = D = 1
// with token striping is the same placement, so it moves whole blocks too.
TEST(TransferPlanTest, AdjacentBlocksMergeAcrossBlocks) {
  const KvBlockGeometry g{
      .block_size = 4, .num_layers = 3, .num_kv_heads = 1, .head_dim = 2, .elem_bytes = 4};
  for (int interleave : {1, 2, 4}) {
    TransferPlanInput in;
    in.geometry = g;
    in.prompt_len = 4 * 6;
    for (TransferSide* s : {&in.src, &in.dst}) {
      s->layout = CpLayout{1, interleave, 4};
      s->block_stride_bytes = g.BlockBytes();
      s->block_ids = {{10, 11, 12, 13, 14, 15}};
    }
    in.dst.block_ids = {{0, 1, 2, 3, 4, 5}};
    auto runs = PlanTransfer(in, 0);
    ASSERT_TRUE(runs.ok());
    EXPECT_EQ(*runs,
              (std::vector<TransferRun>{{0, 10 * g.BlockBytes(), 0, 0, 6 * g.BlockBytes()}}));
  }
}

// A partial last block moves token runs per (layer, K/V): one run per layer and kv.
TEST(TransferPlanTest, PartialBlockRunsPerLayer) {
  const KvBlockGeometry g{
      .block_size = 8, .num_layers = 2, .num_kv_heads = 1, .head_dim = 1, .elem_bytes = 4};
  TransferPlanInput in;
  in.geometry = g;
  in.prompt_len = 5;
  for (TransferSide* s : {&in.src, &in.dst}) {
    s->layout = CpLayout{1, 8, 8};
    s->block_stride_bytes = g.BlockBytes();
    s->block_ids = {{1}};
  }
  auto runs = PlanTransfer(in, 0);
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ((*runs)[i],
              (TransferRun{0, g.BlockBytes() + i * 32u, 0, g.BlockBytes() + i * 32u, 20}));
  }
}

TEST(TransferPlanTest, RejectsBadInput) {
  const KvBlockGeometry g{
      .block_size = 4, .num_layers = 1, .num_kv_heads = 1, .head_dim = 1, .elem_bytes = 4};
  auto make = [&] {
    TransferPlanInput in;
    in.geometry = g;
    in.prompt_len = 8;
    for (TransferSide* s : {&in.src, &in.dst}) {
      s->layout = CpLayout{1, 4, 4};
      s->block_stride_bytes = g.BlockBytes();
      s->block_ids = {{0, 1}};
      s->region_bytes = {2 * g.BlockBytes()};
    }
    return in;
  };
  ASSERT_TRUE(PlanTransfer(make(), 0).ok());
  auto expect_invalid = [](const TransferPlanInput& in) {
    EXPECT_EQ(PlanTransfer(in, 0).status().code(), absl::StatusCode::kInvalidArgument);
  };
  TransferPlanInput in = make();
  in.dst.block_ids = {{0, 2}};  // block 2 ends past the region
  expect_invalid(in);
  in = make();
  in.dst.block_ids = {{1, 1}};
  expect_invalid(in);
  in = make();
  in.dst.block_ids = {{0}};  // too few blocks
  expect_invalid(in);
  in = make();
  in.dst.block_ids = {{-1, 0}};
  expect_invalid(in);
  in = make();
  in.dst.layout.block_size = 8;
  expect_invalid(in);
  in = make();
  in.dst.block_stride_bytes = g.BlockBytes() - 1;
  expect_invalid(in);
  in = make();
  in.dst.layout = CpLayout{2, 4, 4};  // two ranks but one block list
  expect_invalid(in);
  in = make();
  in.dst.layout.interleave = 3;  // does not divide B
  expect_invalid(in);
  EXPECT_EQ(PlanTransfer(make(), 1).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpserve::transfer
