// Fuzzes the KV-transfer descriptor validation (BuildPlanInput) on a KvTransferTarget
// parsed from fuzzed bytes (what a decode pool sends a prefill pool), then PlanTransfer on
// every target it accepts.
//
// Input layout: a 10-byte header describing the pushing (prefill) side, then the
// serialized v1::KvTransferTarget. The prefill side copies the target's block geometry
// and dtype when those are small (block_size <= 64, layers <= 4, kv heads <= 4,
// head_dim <= 16) so that fuzzing reaches past the layout comparison; otherwise it uses a
// fixed small geometry (and the target is refused). Header bytes:
//   0: P - 1 (mod 4)   1: interleave choice (a divisor of B)   2: rank + 1 (mod 6)
//   3-4: prompt length (mod 1025)   5: first block id   6: block id step - 1 (mod 3)
//   7: extra block ids (mod 3)   8: stride multiple - 1 (mod 2)
//   9: flags: 1 CUDA memory supported, 2 repeat a block id, 4 negative first id,
//      8 one more layer than the target, 16 other dtype, 32 region exactly fits
//
// Checks on an accepted target: PlanTransfer succeeds; its runs belong to the src rank,
// are whole tokens, stay inside both regions, never overlap on the destination, and
// expand to exactly the (src offset -> dst rank, dst offset) token copies a brute-force
// walk over every owned position, layer and K/V computes from DESIGN §3's layout math.
#include <algorithm>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cpserve/v1/kv_transfer.pb.h"
#include "tests/fuzz/fuzz_check.h"
#include "worker/transfer/kv_descriptor.h"
#include "worker/transfer/transfer_plan.h"

namespace {

using cpserve::transfer::KvBlockGeometry;
using cpserve::transfer::TransferPlanInput;
using cpserve::transfer::TransferRun;

using Copy = std::tuple<uint64_t, int, uint64_t>;  // src offset, dst rank, dst offset

std::vector<Copy> BruteForce(const TransferPlanInput& in, int rank) {
  const KvBlockGeometry& g = in.geometry;
  const int B = g.block_size;
  std::vector<Copy> out;
  const int64_t local = in.src.layout.LocalLength(in.prompt_len, rank);
  for (int64_t l = 0; l < local; ++l) {
    const int64_t p = in.src.layout.GlobalPosition(rank, l);
    const int d = in.dst.layout.Owner(p);
    const int64_t dl = in.dst.layout.LocalIndex(p);
    const uint64_t sb =
        static_cast<uint64_t>(in.src.block_ids[rank][l / B]) * in.src.block_stride_bytes;
    const uint64_t db =
        static_cast<uint64_t>(in.dst.block_ids[d][dl / B]) * in.dst.block_stride_bytes;
    for (int layer = 0; layer < g.num_layers; ++layer) {
      for (int kv = 0; kv < 2; ++kv) {
        out.emplace_back(sb + g.OffsetInBlock(layer, kv, static_cast<int>(l % B)), d,
                         db + g.OffsetInBlock(layer, kv, static_cast<int>(dl % B)));
      }
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cpserve::fuzz::ByteReader in(data, size);
  const int world = 1 + in.U8() % 4;
  const uint8_t interleave_choice = in.U8();
  const int rank = in.U8() % 6 - 1;
  const int64_t prompt_len = in.U16() % 1025;
  const int first_id = in.U8();
  const int step = 1 + in.U8() % 3;
  const int extra = in.U8() % 3;
  const int stride_mult = 1 + in.U8() % 2;
  const uint8_t flags = in.U8();

  cpserve::v1::KvTransferTarget target;
  if (!target.ParseFromArray(in.rest(), static_cast<int>(in.rest_size()))) return 0;
  const cpserve::v1::KvLayout& tl = target.layout();

  cpserve::transfer::PushSource src;
  KvBlockGeometry& g = src.layout.geometry;
  absl::StatusOr<int> elem = cpserve::transfer::DTypeBytes(tl.dtype());
  if (elem.ok() && tl.block_size() >= 1 && tl.block_size() <= 64 && tl.num_layers() >= 1 &&
      tl.num_layers() <= 4 && tl.num_kv_heads() >= 1 && tl.num_kv_heads() <= 4 &&
      tl.head_dim() >= 1 && tl.head_dim() <= 16) {
    g = KvBlockGeometry{tl.block_size(), tl.num_layers(), tl.num_kv_heads(), tl.head_dim(), *elem};
    src.layout.dtype = tl.dtype();
  } else {
    g = KvBlockGeometry{16, 1, 1, 4, 4};
    src.layout.dtype = "float32";
  }
  if (flags & 8) ++g.num_layers;
  if (flags & 16) {
    src.layout.dtype = g.elem_bytes == 4 ? "bfloat16" : "float32";
    g.elem_bytes = g.elem_bytes == 4 ? 2 : 4;
  }
  std::vector<int> divisors;
  for (int i = 1; i <= g.block_size; ++i) {
    if (g.block_size % i == 0) divisors.push_back(i);
  }
  src.layout.cp =
      cpserve::CpLayout{world, divisors[interleave_choice % divisors.size()], g.block_size};
  src.rank = rank;
  src.prompt_len = prompt_len;
  const int64_t needed =
      rank >= 0 && rank < world ? src.layout.cp.LocalBlocks(prompt_len, rank) : 1;
  for (int64_t k = 0; k < needed + extra; ++k) {
    src.block_ids.push_back(static_cast<int32_t>(first_id + k * step));
  }
  if ((flags & 2) && src.block_ids.size() >= 2) src.block_ids.back() = src.block_ids.front();
  if ((flags & 4) && !src.block_ids.empty()) src.block_ids.front() = -1 - src.block_ids.front();
  src.block_stride_bytes = g.BlockBytes() * stride_mult;
  const uint64_t max_id =
      src.block_ids.empty()
          ? 0
          : static_cast<uint64_t>(
                std::max(0, *std::max_element(src.block_ids.begin(), src.block_ids.end())));
  src.region_bytes = max_id * src.block_stride_bytes + g.BlockBytes() + ((flags & 32) ? 0 : 4096);

  const bool cuda = flags & 1;
  absl::StatusOr<TransferPlanInput> plan_in = cpserve::transfer::BuildPlanInput(target, src, cuda);
  if (!plan_in.ok()) {
    FUZZ_CHECK(plan_in.status().code() == absl::StatusCode::kInvalidArgument,
               plan_in.status().ToString());
    return 0;
  }
  const TransferPlanInput& pin = *plan_in;
  const int D = target.layout().world_size();
  FUZZ_CHECK(pin.dst.layout.world_size == D && target.destinations_size() == D, "dst ranks");
  for (int d = 0; d < D; ++d) {
    const auto& dest = target.destinations(d);
    FUZZ_CHECK(dest.rank() == d && !dest.worker_address().empty() && !dest.rkey().empty(),
               absl::StrCat("destination ", d));
    FUZZ_CHECK(dest.memory() == "host" || (cuda && dest.memory() == "cuda"), dest.memory());
  }

  absl::StatusOr<std::vector<TransferRun>> runs = cpserve::transfer::PlanTransfer(pin, rank);
  FUZZ_CHECK(runs.ok(), absl::StrCat("PlanTransfer after BuildPlanInput accepted: ",
                                     runs.status().ToString()));
  const uint64_t tb = g.TokenBytes();
  std::vector<Copy> got;
  for (const TransferRun& r : *runs) {
    FUZZ_CHECK(r.src_rank == rank, "run from another rank");
    FUZZ_CHECK(r.dst_rank >= 0 && r.dst_rank < D, "run to a bad rank");
    FUZZ_CHECK(r.bytes > 0 && r.bytes % tb == 0, absl::StrCat("run of ", r.bytes, " bytes"));
    const uint64_t dst_region = pin.dst.region_bytes[r.dst_rank];
    FUZZ_CHECK(
        r.dst_offset <= dst_region && r.bytes <= dst_region - r.dst_offset,
        absl::StrCat("run [", r.dst_offset, ", +", r.bytes, ") outside dst region ", dst_region));
    FUZZ_CHECK(r.src_offset <= src.region_bytes && r.bytes <= src.region_bytes - r.src_offset,
               "run outside src region");
    for (uint64_t k = 0; k < r.bytes / tb; ++k) {
      got.emplace_back(r.src_offset + k * tb, r.dst_rank, r.dst_offset + k * tb);
    }
  }
  std::sort(got.begin(), got.end());
  FUZZ_CHECK(got == BruteForce(pin, rank), "plan differs from the brute-force token copies");
  std::vector<std::pair<int, uint64_t>> dst_tokens;
  for (const Copy& c : got) dst_tokens.emplace_back(std::get<1>(c), std::get<2>(c));
  std::sort(dst_tokens.begin(), dst_tokens.end());
  FUZZ_CHECK(std::adjacent_find(dst_tokens.begin(), dst_tokens.end()) == dst_tokens.end(),
             "two copies write the same destination token");
  return 0;
}
