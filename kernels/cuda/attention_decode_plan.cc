// Work planning, metadata upload and launch of the paged decode attention kernel.
#include "kernels/cuda/attention_decode_plan.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cpserve::cuda::attn {
namespace {

absl::Status CudaError(cudaError_t err, const char* op, const char* what) {
  return absl::InternalError(absl::StrCat(op, ": ", what, ": ", cudaGetErrorName(err), " (",
                                          cudaGetErrorString(err), ")"));
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
size_t AlignUp(size_t n) { return (n + 255) / 256 * 256; }
constexpr size_t kUploadChunk = size_t{32} << 10;

}  // namespace

int64_t DecodeSlots(int num_sms) { return int64_t{2} * num_sms; }

bool UseDecodeKernel(const Problem& p, absl::Span<const Segment> segments) {
  if (p.k.defined() || p.causal || p.cache == nullptr || p.num_kv_heads <= 0) return false;
  const int64_t group = p.q.dim(1) / p.num_kv_heads;
  for (const Segment& s : segments) {
    if (s.k_len != 0 || s.q_len * group > kDecodeRows) return false;
  }
  return true;
}

DecodePlan MakeDecodePlan(absl::Span<const Segment> segments, int64_t group, int64_t num_kv_heads,
                          int64_t block_size, int64_t slots) {
  DecodePlan plan;
  constexpr int64_t kUnit = kDecodeWarps * kDecodeTileKeys;  // keys: one tile per warp
  int64_t total_keys = 0;
  for (const Segment& s : segments) {
    if (s.q_len > 0) total_keys += s.ctx_len;
  }
  const int64_t work = total_keys * num_kv_heads;
  slots = std::max<int64_t>(slots, 1);
  const int64_t block_keys =
      std::max({std::min<int64_t>(kDecodeSplitKeys, CeilDiv(work, slots)),
                CeilDiv(work, kDecodeWaves * slots), int64_t{kMinDecodeSplitKeys}});
  const int64_t per_block = CeilDiv(block_keys, kUnit) * kUnit;
  for (const Segment& s : segments) {
    if (s.q_len == 0) continue;
    DecodeSeg d{};
    d.q_start = static_cast<int>(s.q_start);
    d.rows = static_cast<int>(s.q_len * group);
    d.kv_len = static_cast<int>(s.ctx_len);
    d.table_offset = static_cast<int>(plan.tables.size());
    const int64_t splits = std::max<int64_t>(1, CeilDiv(s.ctx_len, per_block));
    // Equal chunks within the segment (rounded up to whole warp rounds).
    const int64_t chunk =
        std::max<int64_t>(kUnit, CeilDiv(CeilDiv(s.ctx_len, splits), kUnit) * kUnit);
    d.num_splits = static_cast<int>(std::max<int64_t>(1, CeilDiv(s.ctx_len, chunk)));
    d.split_keys = static_cast<int>(chunk);
    if (d.num_splits > 1) {
      d.part_start = plan.part_rows;
      plan.part_rows += static_cast<int64_t>(d.num_splits) * num_kv_heads * d.rows;
      plan.split_segs.push_back(static_cast<int>(plan.segs.size()));
    }
    if (s.ctx_len > 0) {
      const int64_t need = CeilDiv(s.ctx_len, block_size);
      plan.tables.insert(plan.tables.end(), s.block_table.begin(), s.block_table.begin() + need);
    }
    const int seg = static_cast<int>(plan.segs.size());
    plan.segs.push_back(d);
    for (int sp = 0; sp < d.num_splits; ++sp) plan.items.push_back({seg, sp});
  }
  auto keys = [&](const DecodeItem& it) {
    const DecodeSeg& d = plan.segs[it.seg];
    return std::min(d.split_keys, d.kv_len - it.split * d.split_keys);
  };
  std::stable_sort(plan.items.begin(), plan.items.end(),
                   [&](const DecodeItem& a, const DecodeItem& b) { return keys(a) > keys(b); });
  return plan;
}

absl::Status RunDecodeAttention(const Problem& p, absl::Span<const Segment> segments, int num_sms,
                                cudaStream_t stream) {
  const int64_t d = p.q.dim(2), hkv = p.num_kv_heads, group = p.q.dim(1) / hkv;
  const KvCacheView& c = *p.cache;
  const DecodePlan plan = MakeDecodePlan(segments, group, hkv, c.block_size, DecodeSlots(num_sms));
  if (plan.items.empty()) return absl::OkStatus();

  // One upload: segments | items | split segments | block tables; then partial lse, O.
  const size_t off_items = AlignUp(plan.segs.size() * sizeof(DecodeSeg));
  const size_t off_split = off_items + AlignUp(plan.items.size() * sizeof(DecodeItem));
  const size_t off_tables = off_split + AlignUp(plan.split_segs.size() * sizeof(int));
  const size_t meta_bytes = off_tables + AlignUp(plan.tables.size() * sizeof(int));
  const size_t off_part_o = meta_bytes + AlignUp(plan.part_rows * sizeof(float));
  const size_t total_bytes = off_part_o + plan.part_rows * d * sizeof(float);
  std::vector<char> host(meta_bytes, 0);
  std::memcpy(host.data(), plan.segs.data(), plan.segs.size() * sizeof(DecodeSeg));
  std::memcpy(host.data() + off_items, plan.items.data(), plan.items.size() * sizeof(DecodeItem));
  std::memcpy(host.data() + off_split, plan.split_segs.data(),
              plan.split_segs.size() * sizeof(int));
  std::memcpy(host.data() + off_tables, plan.tables.data(), plan.tables.size() * sizeof(int));
  void* scratch = nullptr;
  cudaError_t err = cudaMallocAsync(&scratch, total_bytes, stream);
  if (err != cudaSuccess) return CudaError(err, p.op, "scratch");
  char* base = static_cast<char*>(scratch);
  // Pageable source: the call returns once `host` has been staged, so it may go.
  // Copies of up to kUploadChunk bytes are staged by the driver without waiting
  // for the stream (measured: one larger copy stalled the host until the queued
  // kernels finished, a 3x loss at batch 64 x 4k).
  for (size_t off = 0; off < meta_bytes && err == cudaSuccess; off += kUploadChunk) {
    err = cudaMemcpyAsync(base + off, host.data() + off, std::min(kUploadChunk, meta_bytes - off),
                          cudaMemcpyHostToDevice, stream);
  }
  if (err == cudaSuccess) {
    DecodeParams params{};
    params.q = static_cast<const __nv_bfloat16*>(p.q.raw());
    params.q_tok = p.q.stride(0);
    params.q_head = p.q.stride(1);
    params.o = static_cast<__nv_bfloat16*>(p.o.raw());
    params.o_tok = p.o.stride(0);
    params.o_head = p.o.stride(1);
    params.lse = static_cast<float*>(p.lse.raw());
    params.lse_tok = p.lse.stride(0);
    params.lse_head = p.lse.stride(1);
    params.cache = static_cast<const __nv_bfloat16*>(c.base) + p.layer * c.layer_stride;
    params.cache_blk = c.block_stride;
    params.cache_kv = c.kv_stride;
    params.cache_tok = c.token_stride;
    params.cache_head = c.head_stride;
    params.block_size = static_cast<int>(c.block_size);
    params.group = static_cast<int>(group);
    params.num_kv_heads = static_cast<int>(hkv);
    const double scale = p.scale != 0.0f ? p.scale : 1.0 / std::sqrt(static_cast<double>(d));
    params.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
    params.segs = reinterpret_cast<const DecodeSeg*>(base);
    params.items = reinterpret_cast<const DecodeItem*>(base + off_items);
    params.split_segs = reinterpret_cast<const int*>(base + off_split);
    params.tables = reinterpret_cast<const int*>(base + off_tables);
    params.part_lse = reinterpret_cast<float*>(base + meta_bytes);
    params.part_o = reinterpret_cast<float*>(base + off_part_o);
    int max_rows = 1;
    for (int i : plan.split_segs) max_rows = std::max(max_rows, plan.segs[i].rows);
    err = LaunchDecodeAttention(static_cast<int>(d), params, static_cast<int>(plan.items.size()),
                                static_cast<int>(plan.split_segs.size()), max_rows, stream);
  }
  const cudaError_t free_err = cudaFreeAsync(scratch, stream);
  if (err != cudaSuccess) return CudaError(err, p.op, "decode attention launch");
  if (free_err != cudaSuccess) return CudaError(free_err, p.op, "scratch free");
  return absl::OkStatus();
}

}  // namespace cpserve::cuda::attn
