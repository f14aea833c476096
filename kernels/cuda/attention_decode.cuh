// The paged decode attention kernel and its split combine (see attention_decode.h).
//
// Per warp: the block's 16 query rows as mma A fragments (rows past the segment's
// are zero), a DecodeStages<D>()-deep cp.async pipeline of 16-key K and V tiles
// (16-byte copies, padded rows), S = Q K^T and O += P V on tensor cores (mma.sync
// m16n8k16 bf16, ldmatrix / ldmatrix.trans fragments, fp32 accumulation), online
// softmax in the log2 domain. Warps never synchronise until the final merge.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/attention_decode.h"

namespace cpserve::cuda::attn {

template <int D>
constexpr int DecodeStages() {
  return D == 128 ? 3 : D == 64 ? 4 : 6;
}
template <int D>
constexpr int DecodeLd() {
  return D + 8;  // bf16 per shared row: 16 bytes of padding spread ldmatrix rows over banks
}
template <int D>
constexpr int DecodeStageElems() {
  return 2 * kDecodeTileKeys * DecodeLd<D>();  // K then V
}
template <int D>
constexpr int DecodeKernelSmem() {
  return kDecodeWarps * DecodeStages<D>() * DecodeStageElems<D>() * 2;
}
template <int D>
constexpr int DecodeMergeFloats() {  // per warp: acc [16][D], m [16], l [16]
  return kDecodeRows * D + 2 * kDecodeRows;
}
static_assert(DecodeKernelSmem<128>() >= kDecodeWarps * DecodeMergeFloats<128>() * 4, "smem");
static_assert(DecodeKernelSmem<64>() >= kDecodeWarps * DecodeMergeFloats<64>() * 4, "smem");
static_assert(DecodeKernelSmem<32>() >= kDecodeWarps * DecodeMergeFloats<32>() * 4, "smem");

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* smem) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], const void* smem) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

template <int D>
__global__ void __launch_bounds__(kDecodeThreads) DecodeAttnKernel(const DecodeParams p) {
  static_assert(D % 32 == 0 && D <= 128, "unsupported head dim");
  constexpr int kLd = DecodeLd<D>();
  constexpr int kStages = DecodeStages<D>();
  constexpr int kStage = DecodeStageElems<D>();
  constexpr int kChunks = D / 8;  // 16-byte chunks per key row
  constexpr float kInf = __builtin_huge_valf();
  extern __shared__ __align__(16) unsigned char smem_raw[];

  if (p.counts != nullptr && static_cast<int>(blockIdx.x) >= p.counts[0]) return;
  const DecodeItem item = p.items[blockIdx.x];
  const DecodeSeg s = p.segs[item.seg];
  const int kvh = blockIdx.y;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, tig = lane % 4;
  const int key_begin = item.split * s.split_keys;
  const int key_end = min(s.kv_len, key_begin + s.split_keys);
  const int n_tiles =
      key_end > key_begin ? (key_end - key_begin + kDecodeTileKeys - 1) / kDecodeTileKeys : 0;
  const int my_tiles = n_tiles > warp ? (n_tiles - warp + kDecodeWarps - 1) / kDecodeWarps : 0;
  __nv_bfloat16* wsmem = reinterpret_cast<__nv_bfloat16*>(smem_raw) + warp * kStages * kStage;
  const int* table = p.tables + s.table_offset;
  const __nv_bfloat16* head_base = p.cache + kvh * p.cache_head;
  const bool whole_blocks = p.block_size % kDecodeTileKeys == 0;
  // Whole-block tiles: lane j holds the block id of the warp's tile 32 w + j for the
  // current window w of 32 tiles, so a tile's address needs a shuffle, not a
  // dependent load (one coalesced table load per 32 tiles).
  int window_block = 0;

  // Copies this warp's i-th tile (keys key_begin + 16 * (warp + 4 i) ...) into `stage`.
  auto load_tile = [&](int i, int stage) {
    const int kb = key_begin + kDecodeTileKeys * (warp + kDecodeWarps * i);
    __nv_bfloat16* ks = wsmem + stage * kStage;
    __nv_bfloat16* vs = ks + kDecodeTileKeys * kLd;
    const __nv_bfloat16* tile_base = p.cache;
    if (whole_blocks) {  // the 16 keys sit in one cache block
      if (i % 32 == 0) {
        const int t = i + lane;
        const int key = key_begin + kDecodeTileKeys * (warp + kDecodeWarps * t);
        window_block = t < my_tiles ? table[key / p.block_size] : 0;
      }
      const int block = __shfl_sync(0xffffffffu, window_block, i % 32);
      tile_base =
          head_base + static_cast<int64_t>(block) * p.cache_blk + (kb % p.block_size) * p.cache_tok;
    }
#pragma unroll
    for (int c = lane; c < kDecodeTileKeys * kChunks; c += 32) {
      const int r = c / kChunks, col = (c % kChunks) * 8, key = kb + r;
      const bool in = key < key_end;
      const __nv_bfloat16* src = p.cache;
      if (in) {
        src = whole_blocks
                  ? tile_base + r * p.cache_tok
                  : head_base + static_cast<int64_t>(table[key / p.block_size]) * p.cache_blk +
                        (key % p.block_size) * p.cache_tok;
        src += col;
      }
      CpAsync16(ks + r * kLd + col, src, in ? 16 : 0);
      CpAsync16(vs + r * kLd + col, in ? src + p.cache_kv : src, in ? 16 : 0);
    }
  };

  // Start the pipeline before touching Q.
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < my_tiles) load_tile(i, i);
    CpAsyncCommit();
  }

  // Q rows g and g + 8 as A fragments (zero past the segment's rows).
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = g + 8 * i;
    const bool valid = r < s.rows;
    const int j = valid ? r / p.group : 0, h = kvh * p.group + (valid ? r % p.group : 0);
    const __nv_bfloat16* qrow = p.q + (s.q_start + j) * p.q_tok + h * p.q_head + 2 * tig;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      qf[kk][i] = valid ? *reinterpret_cast<const uint32_t*>(qrow + kk * 16) : 0u;
      qf[kk][i + 2] = valid ? *reinterpret_cast<const uint32_t*>(qrow + kk * 16 + 8) : 0u;
    }
  }

  float acc[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.0f;
  float m[2] = {-kInf, -kInf}, l[2] = {0.0f, 0.0f};

  // ldmatrix row addresses (element offsets inside a stage) of this lane.
  const int k_off = ((lane / 16) * 8 + lane % 8) * kLd + ((lane / 8) % 2) * 8;
  const int v_off =
      kDecodeTileKeys * kLd + (((lane / 8) % 2) * 8 + lane % 8) * kLd + (lane / 16) * 8;

  for (int i = 0; i < my_tiles; ++i) {
    CpAsyncWait<kStages - 2>();
    __syncwarp();  // tile i visible to the warp; stage (i - 1) % kStages free
    if (i + kStages - 1 < my_tiles) load_tile(i + kStages - 1, (i + kStages - 1) % kStages);
    CpAsyncCommit();
    const __nv_bfloat16* st = wsmem + (i % kStages) * kStage;
    const int kb = key_begin + kDecodeTileKeys * (warp + kDecodeWarps * i);

    // S = Q K^T: 16 rows x 16 keys (two n8 tiles).
    float sc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t b[4];
      LdMatrixX4(b, st + k_off + kk * 16);
      MmaBf16(sc[0], qf[kk], b[0], b[1]);
      MmaBf16(sc[1], qf[kk], b[2], b[3]);
    }
    float mx[2] = {-kInf, -kInf};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = kb + nt * 8 + 2 * tig + (e & 1);
        const float x = key < key_end ? sc[nt][e] * p.scale_log2 : -kInf;
        sc[nt][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    }
    float base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], QuadMax(mx[r]));
      base[r] = m_new == -kInf ? 0.0f : m_new;
      const float alpha = exp2f(m[r] - base[r]);
      m[r] = m_new;
      l[r] *= alpha;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        acc[dt][2 * r] *= alpha;
        acc[dt][2 * r + 1] *= alpha;
      }
    }
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        sc[nt][e] = exp2f(sc[nt][e] - base[e >> 1]);
        l[e >> 1] += sc[nt][e];
      }
    }
    // O += P V: P (16 x 16 keys) is one A fragment; V fragments by ldmatrix.trans.
    const uint32_t a[4] = {PackBf16(sc[0][0], sc[0][1]), PackBf16(sc[0][2], sc[0][3]),
                           PackBf16(sc[1][0], sc[1][1]), PackBf16(sc[1][2], sc[1][3])};
#pragma unroll
    for (int dt = 0; dt < D / 8; dt += 2) {
      uint32_t b[4];
      LdMatrixX4Trans(b, st + v_off + dt * 8);
      MmaBf16(acc[dt], a, b[0], b[1]);
      MmaBf16(acc[dt + 1], a, b[2], b[3]);
    }
  }
  CpAsyncWait<0>();
  __syncthreads();  // every warp is done with its pipeline: reuse shared memory

  // Merge the 4 warps: each stores m, l (quad-summed) and its unnormalised acc.
  float* mf = reinterpret_cast<float*>(smem_raw);
  float* wacc = mf + warp * DecodeMergeFloats<D>();
  float* wm = wacc + kDecodeRows * D;
  float* wl = wm + kDecodeRows;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float lsum = QuadSum(l[r]);
    const int row = g + 8 * r;
    if (tig == 0) {
      wm[row] = m[r];
      wl[row] = lsum;
    }
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      *reinterpret_cast<float2*>(wacc + row * D + dt * 8 + 2 * tig) =
          make_float2(acc[dt][2 * r], acc[dt][2 * r + 1]);
    }
  }
  __syncthreads();
  for (int e = tid; e < s.rows * (D / 4); e += kDecodeThreads) {
    const int row = e / (D / 4), col = (e % (D / 4)) * 4;
    float mw[kDecodeWarps], mmax = -kInf;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) {
      mw[w] = mf[w * DecodeMergeFloats<D>() + kDecodeRows * D + row];
      mmax = fmaxf(mmax, mw[w]);
    }
    float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float lsum = 0.0f;
    if (mmax != -kInf) {
#pragma unroll
      for (int w = 0; w < kDecodeWarps; ++w) {
        const float* base = mf + w * DecodeMergeFloats<D>();
        const float f = exp2f(mw[w] - mmax);
        lsum += f * base[kDecodeRows * D + kDecodeRows + row];
        const float4 x = *reinterpret_cast<const float4*>(base + row * D + col);
        o.x += f * x.x;
        o.y += f * x.y;
        o.z += f * x.z;
        o.w += f * x.w;
      }
    }
    const float inv = lsum > 0.0f ? 1.0f / lsum : 0.0f;
    o.x *= inv;
    o.y *= inv;
    o.z *= inv;
    o.w *= inv;
    const float lse = lsum > 0.0f ? (mmax + log2f(lsum)) * 0.69314718055994531f : -kInf;
    if (s.num_splits == 1) {
      const int64_t t = s.q_start + row / p.group;
      const int h = kvh * p.group + row % p.group;
      __nv_bfloat16* orow = p.o + t * p.o_tok + h * p.o_head + col;
      reinterpret_cast<uint32_t*>(orow)[0] = PackBf16(o.x, o.y);
      reinterpret_cast<uint32_t*>(orow)[1] = PackBf16(o.z, o.w);
      if (col == 0) p.lse[t * p.lse_tok + h * p.lse_head] = lse;
    } else {
      const int64_t pr =
          s.part_start + (static_cast<int64_t>(item.split) * p.num_kv_heads + kvh) * s.rows + row;
      *reinterpret_cast<float4*>(p.part_o + pr * D + col) = o;
      if (col == 0) p.part_lse[pr] = lse;
    }
  }
}

// Merges the splits of one (segment, KV head, row) per block: blockIdx.x indexes
// split_segs, blockIdx.y = kvh * rows_per_head + row with rows_per_head =
// gridDim.y / Hkv. Thread = (split lane, 4 dims).
template <int D>
__global__ void __launch_bounds__(kDecodeThreads) DecodeCombineKernel(const DecodeParams p) {
  constexpr float kInf = __builtin_huge_valf();
  constexpr int kCols = D / 4, kLanes = kDecodeThreads / kCols;
  __shared__ float red[kDecodeThreads];
  __shared__ float4 part[kLanes][kCols];
  __shared__ float wpart[kLanes];
  if (p.counts != nullptr && static_cast<int>(blockIdx.x) >= p.counts[1]) return;
  const DecodeSeg s = p.segs[p.split_segs[blockIdx.x]];
  const int rows_per_head = gridDim.y / p.num_kv_heads;
  const int kvh = blockIdx.y / rows_per_head, row = blockIdx.y % rows_per_head;
  if (row >= s.rows) return;
  const int tid = threadIdx.x;
  auto part_row = [&](int sp) {
    return s.part_start + (static_cast<int64_t>(sp) * p.num_kv_heads + kvh) * s.rows + row;
  };
  float mx = -kInf;
  for (int sp = tid; sp < s.num_splits; sp += kDecodeThreads)
    mx = fmaxf(mx, p.part_lse[part_row(sp)]);
  red[tid] = mx;
  __syncthreads();
  for (int n = kDecodeThreads / 2; n > 0; n /= 2) {
    if (tid < n) red[tid] = fmaxf(red[tid], red[tid + n]);
    __syncthreads();
  }
  mx = red[0];
  const int col = (tid % kCols) * 4, sl = tid / kCols;
  float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float wsum = 0.0f;
  if (mx != -kInf) {
#pragma unroll 4
    for (int sp = sl; sp < s.num_splits; sp += kLanes) {
      const int64_t pr = part_row(sp);
      const float w = __expf(p.part_lse[pr] - mx);
      const float4 x = *reinterpret_cast<const float4*>(p.part_o + pr * D + col);
      wsum += w;
      o.x += w * x.x;
      o.y += w * x.y;
      o.z += w * x.z;
      o.w += w * x.w;
    }
  }
  part[sl][tid % kCols] = o;
  if (tid % kCols == 0) wpart[sl] = wsum;
  __syncthreads();
  if (sl != 0) return;
  float total = 0.0f;
  for (int k = 1; k < kLanes; ++k) {
    const float4 x = part[k][tid];
    o.x += x.x;
    o.y += x.y;
    o.z += x.z;
    o.w += x.w;
  }
  for (int k = 0; k < kLanes; ++k) total += wpart[k];
  const float inv = total > 0.0f ? 1.0f / total : 0.0f;
  const int64_t t = s.q_start + row / p.group;
  const int h = kvh * p.group + row % p.group;
  __nv_bfloat16* orow = p.o + t * p.o_tok + h * p.o_head + col;
  reinterpret_cast<uint32_t*>(orow)[0] = PackBf16(o.x * inv, o.y * inv);
  reinterpret_cast<uint32_t*>(orow)[1] = PackBf16(o.z * inv, o.w * inv);
  if (tid == 0) p.lse[t * p.lse_tok + h * p.lse_head] = total > 0.0f ? mx + logf(total) : -kInf;
}

}  // namespace cpserve::cuda::attn
