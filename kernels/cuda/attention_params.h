// Launch description of the CUDA attention kernels, shared by the host planner
// (C++20, attention_launch.cc) and the kernels (attention_kernels.cu): tile shape,
// per-segment and per-block work descriptors (built on the host, uploaded per
// call) and the kernel parameters.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace cpserve::cuda::attn {

// Tile shape of the flash kernel: 4 warps x 16 rows, 64 keys per step.
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileRows = kWarps * 16;
constexpr int kTileKeys = 64;
constexpr int kSmemPad = 8;  // bf16 elements of padding per shared-memory row (bank spread)

// One query segment, uniform for prefill and paged attention. Its keys are
// ctx_len cached keys (via block table) then k_len dense keys k/v[k_start, ...).
// Rows of a segment are (query j, head of the KV head's group) pairs:
// row r -> j = r / group, q head = kvh * group + r % group; rows = q_len * group.
struct SegDesc {
  int q_start;
  int q_len;
  int k_start;
  int k_len;
  int ctx_len;
  int table_offset;    // first entry of this segment's block table in Params::tables
  int limit0;          // query j sees keys <= limit0 + j
  int num_splits;      // key splits; > 1 -> partial results in the workspace
  int64_t part_start;  // first partial row (split-major, then kv head, then row)
};

// One thread block: rows [row0, row0 + kTileRows) of segment `seg` for the KV head
// blockIdx.y, over keys [key_begin, key_end) (already clipped by the causal mask).
struct WorkItem {
  int seg;
  int row0;
  int key_begin;
  int key_end;
  int split;
};

struct Params {
  const __nv_bfloat16* q;
  int64_t q_tok, q_head;
  const __nv_bfloat16* k;
  int64_t k_tok, k_head;
  const __nv_bfloat16* v;
  int64_t v_tok, v_head;
  __nv_bfloat16* o;
  int64_t o_tok, o_head;
  float* lse;
  int64_t lse_tok, lse_head;
  // Paged cache, already offset to the layer; K of (block, offset, head) at
  // cache + block * blk + offset * cache_tok + head * cache_head, V at + kv.
  const __nv_bfloat16* cache;
  int64_t cache_blk, cache_kv, cache_tok, cache_head;
  int block_size;
  int group;         // Hq / Hkv
  int num_kv_heads;  // Hkv
  float scale_log2;  // scale * log2(e): scores kept in the log2 domain
  const SegDesc* segs;
  const WorkItem* items;
  const int* tables;  // concatenated block tables
  float* part_o;      // [partial rows, D] (normalised partial outputs)
  float* part_lse;    // [partial rows] (natural log)
  int* work_counter;  // zero at launch; the persistent Hopper kernel's work queue
};

// Launches the flash kernel over `num_items` work items x Hkv, then, when
// num_split_segs > 0, the combine kernel over the listed segments (device array
// split_segs, max_combine_rows = largest q_len * Hq among them). Head dim 32, 64 or
// 128 (cudaErrorInvalidValue otherwise). `hopper_variant` > 0 runs the Hopper
// kernel, variant HopperVariant(hopper_variant - 1) (attention_hopper.h; head dim 128, items of
// kHopperRows rows), 0 the mma.sync kernel (items of kTileRows rows). Returns the
// launch error, if any.
cudaError_t LaunchAttentionKernels(int head_dim, const Params& params, int num_items,
                                   int num_split_segs, int max_combine_rows, const int* split_segs,
                                   int hopper_variant, cudaStream_t stream);

}  // namespace cpserve::cuda::attn
