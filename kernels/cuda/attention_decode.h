// Launch description of the paged decode attention kernel (attention_decode.cuh),
// shared by its host planner (attention_decode_plan.cc, C++20) and the kernels
// (attention_decode.cu, C++17): plain types only.
//
// The kernel serves paged attention segments with at most kDecodeRows rows per KV
// head (rows = q_len * group: decode, speculative / chunk tails). One thread block
// = one (segment, key split) work item x one KV head (blockIdx.y): its 16-row query
// tile against keys [split * split_keys, min(kv_len, (split + 1) * split_keys)) of
// its segment.
// The block's 4 warps take the split's 16-key tiles round robin, each with its own
// cp.async pipeline and online softmax; the warps merge in shared memory. Splits
// of one segment are merged by the combine kernel (DESIGN §4 formula).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace cpserve::cuda::attn {

constexpr int kDecodeRows = 16;  // query rows per block (one mma M tile)
constexpr int kDecodeWarps = 4;  // independent key streams per block
constexpr int kDecodeThreads = kDecodeWarps * 32;
constexpr int kDecodeTileKeys = 16;  // keys per pipeline stage (one engine KV block)

// One paged segment; rows r -> query j = r / group, q head = kvh * group + r % group.
struct DecodeSeg {
  int q_start;
  int rows;            // q_len * group, 1..kDecodeRows
  int kv_len;          // cached keys (may be 0: O = 0, LSE = -inf)
  int table_offset;    // first entry of its block table in DecodeParams::tables
  int num_splits;      // > 1: partial results in part_o / part_lse, merged by the combine
  int split_keys;      // keys per split, a multiple of kDecodeTileKeys
  int64_t part_start;  // first partial row (split-major, then kv head, then row)
};

struct DecodeItem {
  int seg;
  int split;
};

struct DecodeParams {
  const __nv_bfloat16* q;
  int64_t q_tok, q_head;
  __nv_bfloat16* o;
  int64_t o_tok, o_head;
  float* lse;
  int64_t lse_tok, lse_head;
  // Paged cache, already offset to the layer; K of (block, offset, head) at
  // cache + block * blk + offset * tok + head * head_stride, V at + kv.
  const __nv_bfloat16* cache;
  int64_t cache_blk, cache_kv, cache_tok, cache_head;
  int block_size;
  int group;         // Hq / Hkv
  int num_kv_heads;  // Hkv
  float scale_log2;  // scale * log2(e)
  const DecodeSeg* segs;
  const DecodeItem* items;
  const int* tables;      // concatenated block tables
  const int* split_segs;  // segments with num_splits > 1 (combine kernel)
  float* part_o;          // [partial rows, D] normalised partial outputs
  float* part_lse;        // [partial rows] natural log
  // Optional device counters {num_items, num_split_segs}: with them the grids may
  // be padded (fixed for CUDA graph capture) and surplus blocks exit at once.
  const int* counts;
};

// Launches the decode kernel over `num_items` x Hkv blocks, then the combine over
// `num_split_segs` segments x Hkv x `max_rows` (>= rows of every split segment)
// when num_split_segs > 0. Head dim 32, 64 or 128 (cudaErrorInvalidValue
// otherwise). Returns the first launch error.
cudaError_t LaunchDecodeAttention(int head_dim, const DecodeParams& params, int num_items,
                                  int num_split_segs, int max_rows, cudaStream_t stream);

}  // namespace cpserve::cuda::attn
