// Validation, work planning, metadata upload and launches of the CUDA attention
// kernels (see attention_launch.h).
#include "kernels/cuda/attention_launch.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention_decode_plan.h"
#include "kernels/cuda/attention_hopper.h"
#include "kernels/cuda/attention_params.h"
#include "kernels/status_macros.h"

namespace cpserve::cuda::attn {
namespace {

constexpr int64_t kMinKeysPerSplit = 256;
constexpr int kMaxSplits = 64;

std::atomic<PrefillKernel> g_prefill_kernel{PrefillKernel::kAuto};

// What kAuto means: $CPSERVE_PREFILL_KERNEL (mma | hopper | hopper_persistent), read
// once; the persistent Hopper kernel when unset (it still needs head dim 128, sm_90
// and 16-byte aligned q rows, else mma.sync runs).
PrefillKernel AutoPrefillKernel() {
  static const PrefillKernel kind = [] {
    const char* env = std::getenv("CPSERVE_PREFILL_KERNEL");
    const std::string v = env != nullptr ? env : "";
    if (v == "mma") return PrefillKernel::kMmaSync;
    if (v == "hopper") return PrefillKernel::kHopper;
    return PrefillKernel::kHopperPersistent;
  }();
  return kind;
}

absl::Status CudaError(cudaError_t err, const char* op, const char* what) {
  return absl::InternalError(absl::StrCat(op, ": ", what, ": ", cudaGetErrorName(err), " (",
                                          cudaGetErrorString(err), ")"));
}

bool Aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// bf16 [T, H, D] on the current device with a unit last stride; `align` bytes for
// the row starts (4 for q/o fragment loads, 16 for cp.async of k/v).
absl::Status CheckHeads(const Tensor& t, const char* name, int device, size_t align,
                        const char* op) {
  if (!t.defined() || t.rank() != 3 || t.dtype() != DType::kBF16 ||
      t.device().type != DeviceType::kCUDA || t.device().index != device ||
      (t.numel() > 0 && t.stride(2) != 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", name, " must be a bf16 [T, H, D] tensor on cuda:", device,
                     " with unit last stride, got ", t.defined() ? t.DebugString() : "undefined"));
  }
  const size_t el = align / 2;
  if (!Aligned(t.raw(), align) || t.stride(0) % el != 0 || t.stride(1) % el != 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " rows must be ", align,
                                                   "-byte aligned, got ", t.DebugString()));
  }
  if (t.dim(0) > INT_MAX / 2)
    return absl::InvalidArgumentError(absl::StrCat(op, ": too many rows"));
  return absl::OkStatus();
}

absl::Status CheckCache(const Problem& p, int device, int64_t d) {
  const KvCacheView& c = *p.cache;
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  if (c.dtype != DType::kBF16 || c.device.type != DeviceType::kCUDA || c.device.index != device ||
      p.layer < 0 || p.layer >= c.num_layers || c.num_kv_heads != p.num_kv_heads ||
      c.head_dim != d) {
    return absl::InvalidArgumentError(absl::StrCat(
        p.op, ": cache (", DTypeName(c.dtype), ", ", c.num_layers, " layers, ", c.num_kv_heads,
        " kv heads, head dim ", c.head_dim, ") does not fit bf16 on cuda:", device, ", layer ",
        p.layer, ", ", p.num_kv_heads, " kv heads, head dim ", d));
  }
  if (!Aligned(c.base, 16) || c.block_stride % 8 || c.layer_stride % 8 || c.kv_stride % 8 ||
      c.token_stride % 8 || c.head_stride % 8) {
    return absl::InvalidArgumentError(absl::StrCat(p.op, ": cache rows must be 16-byte aligned"));
  }
  return absl::OkStatus();
}

absl::Status Validate(const Problem& p, absl::Span<const Segment> segments, int device) {
  CPSERVE_RETURN_IF_ERROR(CheckHeads(p.q, "q", device, 4, p.op));
  CPSERVE_RETURN_IF_ERROR(CheckHeads(p.o, "o", device, 4, p.op));
  const int64_t tq = p.q.dim(0), hq = p.q.dim(1), d = p.q.dim(2);
  if (p.o.shape() != p.q.shape() || !p.lse.defined() || p.lse.rank() != 2 ||
      p.lse.dtype() != DType::kF32 || p.lse.device() != p.q.device() || p.lse.dim(0) != tq ||
      p.lse.dim(1) != hq || p.num_kv_heads <= 0 || hq % p.num_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(p.op, ": q ", p.q.DebugString(), ", o ", p.o.DebugString(), ", lse ",
                     p.lse.defined() ? p.lse.DebugString() : "undefined", " do not fit ",
                     p.num_kv_heads, " kv heads (want o = q shape, lse fp32 [Tq, Hq])"));
  }
  if (d != 32 && d != 64 && d != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat(p.op, ": head dim ", d, " unsupported (32, 64, 128)"));
  }
  int64_t tk = 0;
  if (p.k.defined()) {
    CPSERVE_RETURN_IF_ERROR(CheckHeads(p.k, "k", device, 16, p.op));
    CPSERVE_RETURN_IF_ERROR(CheckHeads(p.v, "v", device, 16, p.op));
    if (p.k.shape() != p.v.shape() || p.k.dim(1) != p.num_kv_heads || p.k.dim(2) != d) {
      return absl::InvalidArgumentError(absl::StrCat(p.op, ": k ", p.k.DebugString(), " and v ",
                                                     p.v.DebugString(), " must be [Tk, ",
                                                     p.num_kv_heads, ", ", d, "]"));
    }
    tk = p.k.dim(0);
  }
  bool cache_checked = false;
  if (p.require_cache) {
    if (p.cache == nullptr) return absl::InvalidArgumentError(absl::StrCat(p.op, ": no cache"));
    CPSERVE_RETURN_IF_ERROR(CheckCache(p, device, d));
    cache_checked = true;
  }
  for (size_t i = 0; i < segments.size(); ++i) {
    const Segment& s = segments[i];
    if (s.q_start < 0 || s.q_len < 0 || s.q_start + s.q_len > tq || s.k_start < 0 || s.k_len < 0 ||
        s.k_start + s.k_len > tk || s.ctx_len < 0 || s.ctx_len + s.k_len > INT_MAX / 2 ||
        s.q_len * hq > INT_MAX / 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          p.op, ": segment ", i, " (q [", s.q_start, ", +", s.q_len, "), k [", s.k_start, ", +",
          s.k_len, "), ctx ", s.ctx_len, ") outside q rows ", tq, " / k rows ", tk));
    }
    if (s.ctx_len == 0) continue;
    if (p.cache == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(p.op, ": cached context but no cache"));
    }
    if (!cache_checked) {
      CPSERVE_RETURN_IF_ERROR(CheckCache(p, device, d));
      cache_checked = true;
    }
    CPSERVE_RETURN_IF_ERROR(
        p.cache->CheckBlockTable(s.block_table, s.ctx_len, absl::StrCat(p.op, ": segment ", i)));
  }
  return absl::OkStatus();
}

// Host copy of everything the kernels read, laid out as one upload.
struct Plan {
  std::vector<SegDesc> segs;
  std::vector<WorkItem> items;
  std::vector<int> split_segs;
  std::vector<int> tables;
  int64_t part_rows = 0;
  int max_combine_rows = 0;
};

// Work items of `tile_rows` rows; key splits in multiples of `tile_keys`.
Plan MakePlan(const Problem& p, absl::Span<const Segment> segments, int num_sms, int tile_rows,
              int tile_keys) {
  Plan plan;
  const int group = static_cast<int>(p.q.dim(1) / p.num_kv_heads);
  // Blocks without splitting; split keys when they would not fill the GPU.
  int64_t base_blocks = 0;
  for (const Segment& s : segments) {
    base_blocks += (s.q_len * group + tile_rows - 1) / tile_rows * p.num_kv_heads;
  }
  const int64_t target = 4 * static_cast<int64_t>(num_sms);
  const int64_t want_splits =
      base_blocks > 0 ? std::min<int64_t>((target + base_blocks - 1) / base_blocks, kMaxSplits) : 1;
  for (const Segment& s : segments) {
    if (s.q_len == 0) continue;
    const int total = static_cast<int>(s.ctx_len + s.k_len);
    SegDesc d{};
    d.q_start = static_cast<int>(s.q_start);
    d.q_len = static_cast<int>(s.q_len);
    d.k_start = static_cast<int>(s.k_start);
    d.k_len = static_cast<int>(s.k_len);
    d.ctx_len = static_cast<int>(s.ctx_len);
    d.table_offset = static_cast<int>(plan.tables.size());
    d.limit0 = p.causal ? total - d.q_len : total - 1;
    int splits = static_cast<int>(std::clamp<int64_t>(
        std::min<int64_t>(want_splits, total / kMinKeysPerSplit), 1, kMaxSplits));
    int64_t chunk = (total + splits - 1) / std::max(splits, 1);
    chunk = std::max<int64_t>(tile_keys, (chunk + tile_keys - 1) / tile_keys * tile_keys);
    splits = std::max<int>(1, static_cast<int>((total + chunk - 1) / chunk));
    d.num_splits = splits;
    const int rows = d.q_len * group;
    if (splits > 1) {
      d.part_start = plan.part_rows;
      plan.part_rows += static_cast<int64_t>(splits) * p.num_kv_heads * rows;
      plan.split_segs.push_back(static_cast<int>(plan.segs.size()));
      plan.max_combine_rows = std::max<int>(plan.max_combine_rows, rows * p.num_kv_heads);
    }
    if (s.ctx_len > 0) {
      const int64_t need = (s.ctx_len + p.cache->block_size - 1) / p.cache->block_size;
      plan.tables.insert(plan.tables.end(), s.block_table.begin(), s.block_table.begin() + need);
    }
    const int seg = static_cast<int>(plan.segs.size());
    plan.segs.push_back(d);
    for (int row0 = 0; row0 < rows; row0 += tile_rows) {
      const int j_max = (std::min(row0 + tile_rows, rows) - 1) / group;
      const int key_hi = std::clamp(d.limit0 + j_max + 1, 0, total);  // keys this tile may see
      for (int sp = 0; sp < splits; ++sp) {
        const int kb = static_cast<int>(sp * chunk);
        const int ke = static_cast<int>(std::min<int64_t>(key_hi, (sp + 1) * chunk));
        plan.items.push_back({seg, row0, kb, std::max(kb, ke), sp});
      }
    }
  }
  // Longest key ranges first, so causal prefill's heavy late tiles do not trail.
  std::stable_sort(plan.items.begin(), plan.items.end(), [](const WorkItem& a, const WorkItem& b) {
    return a.key_end - a.key_begin > b.key_end - b.key_begin;
  });
  return plan;
}

// Stream-ordered device scratch, freed on the stream after the queued kernels.
class StreamScratch {
 public:
  StreamScratch(cudaStream_t stream) : stream_(stream) {}
  ~StreamScratch() {
    if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  cudaError_t Allocate(size_t bytes) { return cudaMallocAsync(&ptr_, bytes, stream_); }
  char* get() const { return static_cast<char*>(ptr_); }

 private:
  cudaStream_t stream_;
  void* ptr_ = nullptr;
};

size_t AlignUp(size_t n) { return (n + 255) / 256 * 256; }

}  // namespace

void SetPrefillKernel(PrefillKernel kernel) {
  g_prefill_kernel.store(kernel, std::memory_order_relaxed);
}

absl::Status RunAttention(const Problem& p, absl::Span<const Segment> segments,
                          cudaStream_t stream) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return CudaError(err, p.op, "no CUDA device");
  CPSERVE_RETURN_IF_ERROR(Validate(p, segments, device));
  int num_sms = 0;
  err = cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return CudaError(err, p.op, "device attribute");
  // Paged decode-shaped problems (<= 16 rows per KV head): the dedicated kernel.
  if (UseDecodeKernel(p, segments)) return RunDecodeAttention(p, segments, num_sms, stream);
  const int64_t d = p.q.dim(2);
  const double scale = p.scale != 0.0f ? p.scale : 1.0 / std::sqrt(static_cast<double>(d));
  // Hopper kernel: prefill, head dim 128, sm_90, q rows 16-byte aligned (cp.async),
  // positive scale (it takes row maxima of unscaled scores).
  PrefillKernel choice = g_prefill_kernel.load(std::memory_order_relaxed);
  if (choice == PrefillKernel::kAuto) choice = AutoPrefillKernel();
  int hopper_variant = 0;  // LaunchAttentionKernels' numbering
  if (p.k.defined() && d == kHopperHeadDim && choice != PrefillKernel::kMmaSync && scale > 0 &&
      Aligned(p.q.raw(), 16) && p.q.stride(0) % 8 == 0 && p.q.stride(1) % 8 == 0 &&
      HopperFlashSupported(device)) {
    hopper_variant = static_cast<int>(choice) - static_cast<int>(PrefillKernel::kHopper) + 1;
  }
  const Plan plan = hopper_variant > 0 ? MakePlan(p, segments, num_sms, kHopperRows, kHopperKeys)
                                       : MakePlan(p, segments, num_sms, kTileRows, kTileKeys);
  if (plan.items.empty()) return absl::OkStatus();

  // One upload: segments | items | split segments | block tables | work counter (0);
  // then partial lse | partial O.
  const size_t off_items = AlignUp(plan.segs.size() * sizeof(SegDesc));
  const size_t off_split = off_items + AlignUp(plan.items.size() * sizeof(WorkItem));
  const size_t off_tables = off_split + AlignUp(plan.split_segs.size() * sizeof(int));
  const size_t off_counter = off_tables + AlignUp(plan.tables.size() * sizeof(int));
  const size_t meta_bytes = off_counter + AlignUp(sizeof(int));  // counter uploaded as 0
  const size_t off_part_o = meta_bytes + AlignUp(plan.part_rows * sizeof(float));
  const size_t total_bytes = off_part_o + plan.part_rows * d * sizeof(float);
  std::vector<char> host(meta_bytes, 0);
  std::memcpy(host.data(), plan.segs.data(), plan.segs.size() * sizeof(SegDesc));
  std::memcpy(host.data() + off_items, plan.items.data(), plan.items.size() * sizeof(WorkItem));
  std::memcpy(host.data() + off_split, plan.split_segs.data(),
              plan.split_segs.size() * sizeof(int));
  std::memcpy(host.data() + off_tables, plan.tables.data(), plan.tables.size() * sizeof(int));
  StreamScratch scratch(stream);
  if ((err = scratch.Allocate(total_bytes)) != cudaSuccess) return CudaError(err, p.op, "scratch");
  // Pageable source: the call returns once `host` has been staged, so it may go.
  err = cudaMemcpyAsync(scratch.get(), host.data(), meta_bytes, cudaMemcpyHostToDevice, stream);
  if (err != cudaSuccess) return CudaError(err, p.op, "metadata upload");

  Params params{};
  params.q = static_cast<const __nv_bfloat16*>(p.q.raw());
  params.q_tok = p.q.stride(0);
  params.q_head = p.q.stride(1);
  if (p.k.defined()) {
    params.k = static_cast<const __nv_bfloat16*>(p.k.raw());
    params.k_tok = p.k.stride(0);
    params.k_head = p.k.stride(1);
    params.v = static_cast<const __nv_bfloat16*>(p.v.raw());
    params.v_tok = p.v.stride(0);
    params.v_head = p.v.stride(1);
  }
  params.o = static_cast<__nv_bfloat16*>(p.o.raw());
  params.o_tok = p.o.stride(0);
  params.o_head = p.o.stride(1);
  params.lse = static_cast<float*>(p.lse.raw());
  params.lse_tok = p.lse.stride(0);
  params.lse_head = p.lse.stride(1);
  if (p.cache != nullptr && !plan.tables.empty()) {
    const KvCacheView& c = *p.cache;
    params.cache = static_cast<const __nv_bfloat16*>(c.base) + p.layer * c.layer_stride;
    params.cache_blk = c.block_stride;
    params.cache_kv = c.kv_stride;
    params.cache_tok = c.token_stride;
    params.cache_head = c.head_stride;
    params.block_size = static_cast<int>(c.block_size);
  } else {
    params.block_size = 1;
  }
  params.group = static_cast<int>(p.q.dim(1) / p.num_kv_heads);
  params.num_kv_heads = static_cast<int>(p.num_kv_heads);
  params.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  params.segs = reinterpret_cast<const SegDesc*>(scratch.get());
  params.items = reinterpret_cast<const WorkItem*>(scratch.get() + off_items);
  params.tables = reinterpret_cast<const int*>(scratch.get() + off_tables);
  params.work_counter = reinterpret_cast<int*>(scratch.get() + off_counter);
  params.part_lse = reinterpret_cast<float*>(scratch.get() + meta_bytes);
  params.part_o = reinterpret_cast<float*>(scratch.get() + off_part_o);
  const int* split_segs = reinterpret_cast<const int*>(scratch.get() + off_split);

  err = LaunchAttentionKernels(static_cast<int>(d), params, static_cast<int>(plan.items.size()),
                               static_cast<int>(plan.split_segs.size()), plan.max_combine_rows,
                               split_segs, hopper_variant, stream);
  if (err != cudaSuccess) return CudaError(err, p.op, "kernel launch");
  return absl::OkStatus();
}

}  // namespace cpserve::cuda::attn
