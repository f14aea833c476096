// DecodeAttentionArena: staging, upload and fixed-grid launches of the paged decode
// attention kernel (see attention_decode_arena.h).
#include "kernels/cuda/attention_decode_arena.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention_decode_plan.h"
#include "kernels/status_macros.h"

namespace cpserve::cuda {
namespace {

absl::Status CudaError(cudaError_t err, const char* what) {
  return absl::InternalError(absl::StrCat("DecodeAttentionArena: ", what, ": ",
                                          cudaGetErrorName(err), " (", cudaGetErrorString(err),
                                          ")"));
}
#define ARENA_CUDA(expr, what)                        \
  do {                                                \
    if (cudaError_t e_ = (expr); e_ != cudaSuccess) { \
      return CudaError(e_, what);                     \
    }                                                 \
  } while (0)

size_t AlignUp(size_t n) { return (n + 255) / 256 * 256; }

absl::Status CheckHeads(const Tensor& t, const char* name, int64_t rows, int64_t heads, int64_t d,
                        int device) {
  const bool ok = t.defined() && t.rank() == 3 && t.dtype() == DType::kBF16 &&
                  t.device().type == DeviceType::kCUDA && t.device().index == device &&
                  t.dim(0) >= rows && t.dim(1) == heads && t.dim(2) == d && t.stride(2) == 1 &&
                  reinterpret_cast<uintptr_t>(t.raw()) % 4 == 0 && t.stride(0) % 2 == 0 &&
                  t.stride(1) % 2 == 0;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "DecodeAttentionArena::Launch: ", name, " must be bf16 [>= ", rows, ", ", heads, ", ", d,
      "] on cuda:", device, " with unit last stride and 4-byte aligned rows, got ",
      t.defined() ? t.DebugString() : "undefined"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<DecodeAttentionArena>> DecodeAttentionArena::Create(
    const DecodeArenaConfig& config) {
  const DecodeArenaConfig& c = config;
  if (c.max_seqs <= 0 || c.max_tokens <= 0 || c.max_blocks_per_seq <= 0 || c.block_size <= 0 ||
      c.num_kv_heads <= 0 || c.num_q_heads <= 0 || c.num_q_heads % c.num_kv_heads != 0 ||
      c.max_q_len <= 0 || c.max_q_len * (c.num_q_heads / c.num_kv_heads) > attn::kDecodeRows ||
      (c.head_dim != 32 && c.head_dim != 64 && c.head_dim != 128) ||
      c.max_blocks_per_seq * c.block_size > (int64_t{1} << 30) || c.max_seqs > (1 << 20) ||
      c.max_tokens > (1 << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("DecodeAttentionArena: bad config (max_seqs ", c.max_seqs, ", max_tokens ",
                     c.max_tokens, ", max_q_len ", c.max_q_len, ", max_blocks_per_seq ",
                     c.max_blocks_per_seq, ", heads ", c.num_q_heads, "/", c.num_kv_heads,
                     ", head dim ", c.head_dim, ", block size ", c.block_size, ")"));
  }
  std::unique_ptr<DecodeAttentionArena> arena(new DecodeAttentionArena(config));
  CPSERVE_RETURN_IF_ERROR(arena->Init());
  return arena;
}

absl::Status DecodeAttentionArena::Init() {
  int device = 0;
  ARENA_CUDA(cudaGetDevice(&device), "cudaGetDevice");
  ARENA_CUDA(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, device),
             "device attribute");
  const int64_t hkv = config_.num_kv_heads;
  // MakeDecodePlan gives each segment at most 1 + kv_len / per_block splits with
  // per_block >= total keys * Hkv / (waves * slots): items <= segments + that / Hkv.
  max_items_ = config_.max_seqs + attn::kDecodeWaves * attn::DecodeSlots(num_sms_) / hkv + 1;
  max_part_rows_ = max_items_ * hkv * attn::kDecodeRows;
  off_segs_ = AlignUp(2 * sizeof(int));
  off_items_ = off_segs_ + AlignUp(config_.max_seqs * sizeof(attn::DecodeSeg));
  off_split_ = off_items_ + AlignUp(max_items_ * sizeof(attn::DecodeItem));
  off_tables_ = off_split_ + AlignUp(config_.max_seqs * sizeof(int));
  meta_bytes_ = off_tables_ + AlignUp(config_.max_seqs * config_.max_blocks_per_seq * sizeof(int));
  off_part_lse_ = meta_bytes_;
  off_part_o_ = off_part_lse_ + AlignUp(max_part_rows_ * sizeof(float));
  device_bytes_ = off_part_o_ + max_part_rows_ * config_.head_dim * sizeof(float);
  ARENA_CUDA(cudaMallocHost(reinterpret_cast<void**>(&staging_), meta_bytes_),
             "cudaMallocHost staging");
  std::memset(staging_, 0, meta_bytes_);
  if (cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&device_), device_bytes_);
      e != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(
        absl::StrCat("DecodeAttentionArena: cudaMalloc of ", device_bytes_, " bytes failed"));
  }
  ARENA_CUDA(cudaMemset(device_, 0, meta_bytes_), "cudaMemset");
  ARENA_CUDA(cudaEventCreateWithFlags(&uploaded_, cudaEventDisableTiming), "cudaEventCreate");
  return absl::OkStatus();
}

DecodeAttentionArena::~DecodeAttentionArena() {
  if (uploaded_ != nullptr) {
    cudaEventSynchronize(uploaded_);
    cudaEventDestroy(uploaded_);
  }
  if (device_ != nullptr) {
    cudaDeviceSynchronize();  // launches queued on any stream may still read it
    cudaFree(device_);
  }
  if (staging_ != nullptr) cudaFreeHost(staging_);
}

absl::Status DecodeAttentionArena::Stage(absl::Span<const PagedSegment> segments,
                                         const KvCacheView& cache) {
  constexpr const char* kOp = "DecodeAttentionArena::Stage";
  const DecodeArenaConfig& c = config_;
  const int64_t group = c.num_q_heads / c.num_kv_heads;
  if (static_cast<int64_t>(segments.size()) > c.max_seqs) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": ", segments.size(), " segments > max_seqs ", c.max_seqs));
  }
  if (cache.dtype != DType::kBF16 || cache.block_size != c.block_size ||
      cache.num_kv_heads != c.num_kv_heads || cache.head_dim != c.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": cache geometry differs from config"));
  }
  std::vector<attn::Segment> segs;
  segs.reserve(segments.size());
  for (size_t i = 0; i < segments.size(); ++i) {
    const PagedSegment& s = segments[i];
    if (s.q_start < 0 || s.q_len < 0 || s.q_start + s.q_len > c.max_tokens ||
        s.q_len > c.max_q_len || s.kv_len < 0 || s.kv_len > c.max_blocks_per_seq * c.block_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(kOp, ": segment ", i, " (q [", s.q_start, ", +", s.q_len, "), kv ", s.kv_len,
                       ") outside max_tokens ", c.max_tokens, ", max_q_len ", c.max_q_len,
                       " or max_blocks_per_seq ", c.max_blocks_per_seq));
    }
    if (s.kv_len > 0) {
      CPSERVE_RETURN_IF_ERROR(
          cache.CheckBlockTable(s.block_table, s.kv_len, absl::StrCat(kOp, ": segment ", i)));
    }
    segs.push_back({s.q_start, s.q_len, 0, 0, s.kv_len, s.block_table});
  }
  const attn::DecodePlan plan =
      attn::MakeDecodePlan(segs, group, c.num_kv_heads, c.block_size, attn::DecodeSlots(num_sms_));
  if (static_cast<int64_t>(plan.items.size()) > max_items_ || plan.part_rows > max_part_rows_) {
    return absl::InternalError(absl::StrCat(kOp, ": plan exceeds the arena (", plan.items.size(),
                                            " items, ", plan.part_rows, " partial rows)"));
  }
  // The previous upload must have read the staging buffer.
  ARENA_CUDA(cudaEventSynchronize(uploaded_), "cudaEventSynchronize");
  const int counts[2] = {static_cast<int>(plan.items.size()),
                         static_cast<int>(plan.split_segs.size())};
  std::memcpy(staging_, counts, sizeof(counts));
  std::memcpy(staging_ + off_segs_, plan.segs.data(), plan.segs.size() * sizeof(attn::DecodeSeg));
  std::memcpy(staging_ + off_items_, plan.items.data(),
              plan.items.size() * sizeof(attn::DecodeItem));
  std::memcpy(staging_ + off_split_, plan.split_segs.data(), plan.split_segs.size() * sizeof(int));
  std::memcpy(staging_ + off_tables_, plan.tables.data(), plan.tables.size() * sizeof(int));
  return absl::OkStatus();
}

absl::Status DecodeAttentionArena::Upload(cudaStream_t stream) {
  ARENA_CUDA(cudaMemcpyAsync(device_, staging_, meta_bytes_, cudaMemcpyHostToDevice, stream),
             "upload");
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  ARENA_CUDA(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
  // Inside a capture the record becomes an event-record node of the graph.
  ARENA_CUDA(
      cudaEventRecordWithFlags(uploaded_, stream,
                               capture == cudaStreamCaptureStatusActive ? cudaEventRecordExternal
                                                                        : cudaEventRecordDefault),
      "cudaEventRecord");
  return absl::OkStatus();
}

absl::Status DecodeAttentionArena::Launch(const Tensor& q, const KvCacheView& cache, int64_t layer,
                                          const AttentionOptions& options, const Tensor& o,
                                          const Tensor& lse, cudaStream_t stream) {
  const DecodeArenaConfig& c = config_;
  int device = 0;
  ARENA_CUDA(cudaGetDevice(&device), "cudaGetDevice");
  CPSERVE_RETURN_IF_ERROR(CheckHeads(q, "q", c.max_tokens, c.num_q_heads, c.head_dim, device));
  CPSERVE_RETURN_IF_ERROR(CheckHeads(o, "o", c.max_tokens, c.num_q_heads, c.head_dim, device));
  if (!lse.defined() || lse.rank() != 2 || lse.dtype() != DType::kF32 ||
      lse.device() != q.device() || lse.dim(0) < c.max_tokens || lse.dim(1) != c.num_q_heads) {
    return absl::InvalidArgumentError(
        absl::StrCat("DecodeAttentionArena::Launch: lse must be fp32 [>= ", c.max_tokens, ", ",
                     c.num_q_heads, "] on the device of q"));
  }
  CPSERVE_RETURN_IF_ERROR(cache.Validate());
  if (cache.dtype != DType::kBF16 || cache.device != q.device() ||
      cache.block_size != c.block_size || cache.num_kv_heads != c.num_kv_heads ||
      cache.head_dim != c.head_dim || layer < 0 || layer >= cache.num_layers ||
      reinterpret_cast<uintptr_t>(cache.base) % 16 != 0 || cache.block_stride % 8 ||
      cache.layer_stride % 8 || cache.kv_stride % 8 || cache.token_stride % 8 ||
      cache.head_stride % 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("DecodeAttentionArena::Launch: cache does not fit the config, layer ", layer,
                     ", or its rows are not 16-byte aligned"));
  }
  attn::DecodeParams p{};
  p.q = static_cast<const __nv_bfloat16*>(q.raw());
  p.q_tok = q.stride(0);
  p.q_head = q.stride(1);
  p.o = static_cast<__nv_bfloat16*>(o.raw());
  p.o_tok = o.stride(0);
  p.o_head = o.stride(1);
  p.lse = static_cast<float*>(lse.raw());
  p.lse_tok = lse.stride(0);
  p.lse_head = lse.stride(1);
  p.cache = static_cast<const __nv_bfloat16*>(cache.base) + layer * cache.layer_stride;
  p.cache_blk = cache.block_stride;
  p.cache_kv = cache.kv_stride;
  p.cache_tok = cache.token_stride;
  p.cache_head = cache.head_stride;
  p.block_size = static_cast<int>(c.block_size);
  p.group = static_cast<int>(c.num_q_heads / c.num_kv_heads);
  p.num_kv_heads = static_cast<int>(c.num_kv_heads);
  const double scale =
      options.scale != 0.0f ? options.scale : 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  p.counts = reinterpret_cast<const int*>(device_);
  p.segs = reinterpret_cast<const attn::DecodeSeg*>(device_ + off_segs_);
  p.items = reinterpret_cast<const attn::DecodeItem*>(device_ + off_items_);
  p.split_segs = reinterpret_cast<const int*>(device_ + off_split_);
  p.tables = reinterpret_cast<const int*>(device_ + off_tables_);
  p.part_lse = reinterpret_cast<float*>(device_ + off_part_lse_);
  p.part_o = reinterpret_cast<float*>(device_ + off_part_o_);
  ARENA_CUDA(attn::LaunchDecodeAttention(static_cast<int>(c.head_dim), p,
                                         static_cast<int>(max_items_), static_cast<int>(c.max_seqs),
                                         static_cast<int>(c.max_q_len * p.group), stream),
             "launch");
  return absl::OkStatus();
}

}  // namespace cpserve::cuda
