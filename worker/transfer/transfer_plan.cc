#include "worker/transfer/transfer_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace cpserve::transfer {
namespace {

absl::Status ValidateRankBlocks(const char* side, const TransferSide& s, const KvBlockGeometry& g,
                                int64_t prompt_len, int rank) {
  if (rank < 0 || rank >= static_cast<int>(s.block_ids.size())) {
    return absl::InvalidArgumentError(absl::StrCat(side, " rank ", rank, " has no block list"));
  }
  const auto& ids = s.block_ids[rank];
  const int64_t needed = s.layout.LocalBlocks(prompt_len, rank);
  if (static_cast<int64_t>(ids.size()) < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat(side, " rank ", rank, " has ", ids.size(), " blocks, needs ", needed));
  }
  const bool check_region = !s.region_bytes.empty();
  if (check_region && static_cast<int>(s.region_bytes.size()) != s.layout.world_size) {
    return absl::InvalidArgumentError(absl::StrCat(side, " region sizes: ", s.region_bytes.size(),
                                                   " for ", s.layout.world_size, " ranks"));
  }
  std::vector<int32_t> sorted(ids.begin(), ids.end());
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    return absl::InvalidArgumentError(absl::StrCat(side, " rank ", rank, " repeats a block id"));
  }
  if (!sorted.empty() && sorted.front() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(side, " rank ", rank, " negative block id"));
  }
  if (check_region && !sorted.empty()) {
    // Block end of the largest id must fit; uint128-free overflow guard via division.
    const uint64_t last = static_cast<uint64_t>(sorted.back());
    const uint64_t region = s.region_bytes[rank];
    if (region < g.BlockBytes() || last > (region - g.BlockBytes()) / s.block_stride_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(side, " rank ", rank, " block id ", last,
                                                     " outside its region of ", region, " bytes"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSide(const char* side, const TransferSide& s, const KvBlockGeometry& g) {
  if (absl::Status st = s.layout.Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(side, " layout: ", st.message()));
  }
  if (s.layout.block_size != g.block_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(side, " block size ", s.layout.block_size, " != ", g.block_size));
  }
  if (s.block_stride_bytes < g.BlockBytes()) {
    return absl::InvalidArgumentError(absl::StrCat(side, " block stride ", s.block_stride_bytes,
                                                   " < block bytes ", g.BlockBytes()));
  }
  return absl::OkStatus();
}

// Appends `run`, merging it into the previous run when contiguous on both sides.
void AppendRun(std::vector<TransferRun>& runs, const TransferRun& run) {
  if (!runs.empty()) {
    TransferRun& last = runs.back();
    if (last.dst_rank == run.dst_rank && last.src_offset + last.bytes == run.src_offset &&
        last.dst_offset + last.bytes == run.dst_offset) {
      last.bytes += run.bytes;
      return;
    }
  }
  runs.push_back(run);
}

}  // namespace

absl::Status KvBlockGeometry::Validate() const {
  if (block_size < 1 || num_layers < 1 || num_kv_heads < 1 || head_dim < 1 || elem_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad KV block geometry: B=", block_size, " layers=", num_layers,
                     " kv_heads=", num_kv_heads, " head_dim=", head_dim, " elem=", elem_bytes));
  }
  return absl::OkStatus();
}

absl::Status ValidatePlanInput(const TransferPlanInput& in, int src_rank) {
  if (absl::Status st = in.geometry.Validate(); !st.ok()) return st;
  if (in.prompt_len < 0) return absl::InvalidArgumentError("negative prompt length");
  if (absl::Status st = ValidateSide("src", in.src, in.geometry); !st.ok()) return st;
  if (absl::Status st = ValidateSide("dst", in.dst, in.geometry); !st.ok()) return st;
  if (src_rank < 0 || src_rank >= in.src.layout.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("src rank ", src_rank, " out of range"));
  }
  if (absl::Status st = ValidateRankBlocks("src", in.src, in.geometry, in.prompt_len, src_rank);
      !st.ok()) {
    return st;
  }
  if (static_cast<int>(in.dst.block_ids.size()) != in.dst.layout.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("dst has ", in.dst.block_ids.size(),
                                                   " block lists for ", in.dst.layout.world_size,
                                                   " ranks"));
  }
  for (int d = 0; d < in.dst.layout.world_size; ++d) {
    if (absl::Status st = ValidateRankBlocks("dst", in.dst, in.geometry, in.prompt_len, d);
        !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TransferRun>> PlanTransfer(const TransferPlanInput& in, int src_rank) {
  if (absl::Status st = ValidatePlanInput(in, src_rank); !st.ok()) return st;
  const KvBlockGeometry& g = in.geometry;
  const CpLayout& src = in.src.layout;
  const CpLayout& dst = in.dst.layout;
  const int B = g.block_size;
  const auto& src_ids = in.src.block_ids[src_rank];
  const int64_t local_len = src.LocalLength(in.prompt_len, src_rank);

  std::vector<TransferRun> runs;
  // Walk the src rank's local indices, cutting them into segments of tokens that
  // are consecutive in one src block and in one dst block of one dst rank.
  int64_t l = 0;
  while (l < local_len) {
    const int64_t p = src.GlobalPosition(src_rank, l);
    const int dst_rank = dst.Owner(p);
    const int64_t dl = dst.LocalIndex(p);
    // Tokens left in this src interleave chunk, src block, dst chunk and dst block.
    int64_t n = std::min<int64_t>(local_len - l, src.interleave - l % src.interleave);
    n = std::min<int64_t>(n, B - l % B);
    n = std::min<int64_t>(n, dst.interleave - p % dst.interleave);
    n = std::min<int64_t>(n, B - dl % B);
    // Extend across src chunk boundaries is impossible unless P == 1 (then the
    // chunk boundary is not a break); same for dst. Handle by a merge loop.
    while (l + n < local_len && (l + n) % B != 0 && (dl + n) % B != 0) {
      const int64_t p2 = src.GlobalPosition(src_rank, l + n);
      if (dst.Owner(p2) != dst_rank || dst.LocalIndex(p2) != dl + n) break;
      int64_t m = std::min<int64_t>(local_len - l - n, src.interleave - (l + n) % src.interleave);
      m = std::min<int64_t>(m, B - (l + n) % B);
      m = std::min<int64_t>(m, dst.interleave - p2 % dst.interleave);
      m = std::min<int64_t>(m, B - (dl + n) % B);
      n += m;
    }
    const int so = static_cast<int>(l % B);
    const int dof = static_cast<int>(dl % B);
    const uint64_t src_base = static_cast<uint64_t>(src_ids[l / B]) * in.src.block_stride_bytes;
    const uint64_t dst_base =
        static_cast<uint64_t>(in.dst.block_ids[dst_rank][dl / B]) * in.dst.block_stride_bytes;
    const uint64_t bytes = static_cast<uint64_t>(n) * g.TokenBytes();
    for (int layer = 0; layer < g.num_layers; ++layer) {
      for (int kv = 0; kv < 2; ++kv) {
        AppendRun(runs, TransferRun{src_rank, src_base + g.OffsetInBlock(layer, kv, so), dst_rank,
                                    dst_base + g.OffsetInBlock(layer, kv, dof), bytes});
      }
    }
    l += n;
  }
  return runs;
}

std::vector<uint64_t> BytesPerDstRank(absl::Span<const TransferRun> runs, int dst_world_size) {
  std::vector<uint64_t> out(dst_world_size, 0);
  for (const TransferRun& r : runs) out[r.dst_rank] += r.bytes;
  return out;
}

}  // namespace cpserve::transfer
