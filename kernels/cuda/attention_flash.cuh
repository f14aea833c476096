// The flash-attention kernel shared by prefill and paged attention, and the
// split-KV combine kernel.
//
// One thread block = 4 warps = 64 rows (query, group head) of one segment and one
// KV head (blockIdx.y), over a key range of that segment. Keys stream through
// shared memory in tiles of 64 (cp.async, double buffered); each key comes from
// the paged cache (first ctx_len keys, via the block table) or from the dense
// k/v rows. S = Q K^T and O += P V run on tensor cores (mma.sync m16n8k16 bf16,
// fp32 accumulation); the softmax is online, in the log2 domain, in fp32.
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/attention_common.cuh"

namespace cpserve::cuda::attn {

template <int D>
constexpr int FlashSmemBytes() {
  return 2 /*stages*/ * 2 /*K,V*/ * kTileKeys * (D + kSmemPad) * 2 /*bytes*/;
}

// Address of key `key` (segment order) of KV head `kvh`; `kv` 0 = K, 1 = V.
__device__ __forceinline__ const __nv_bfloat16* KeyRow(const Params& p, const SegDesc& s, int kvh,
                                                       int key, int kv) {
  if (key < s.ctx_len) {
    const int block = p.tables[s.table_offset + key / p.block_size];
    return p.cache + block * p.cache_blk + (key % p.block_size) * p.cache_tok + kvh * p.cache_head +
           kv * p.cache_kv;
  }
  const int64_t t = s.k_start + (key - s.ctx_len);
  return kv == 0 ? p.k + t * p.k_tok + kvh * p.k_head : p.v + t * p.v_tok + kvh * p.v_head;
}

template <int D>
__global__ void __launch_bounds__(kThreads) FlashAttnKernel(const Params p) {
  static_assert(D % 16 == 0 && (kTileKeys * D / 8) % kThreads == 0, "unsupported head dim");
  constexpr int kLd = D + kSmemPad;
  constexpr int kTileElems = kTileKeys * kLd;
  constexpr float kInf = __builtin_huge_valf();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* smem = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [stage][K,V][key][kLd]

  const WorkItem w = p.items[blockIdx.x];
  const SegDesc s = p.segs[w.seg];
  const int kvh = blockIdx.y;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, tig = lane % 4;
  const int rows = s.q_len * p.group;

  // This thread's two accumulator rows: g and g + 8 of its warp's 16.
  int row[2], j[2], h[2], limit[2];
  bool valid[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    row[i] = w.row0 + warp * 16 + g + 8 * i;
    valid[i] = row[i] < rows;
    j[i] = valid[i] ? row[i] / p.group : 0;
    h[i] = kvh * p.group + (valid[i] ? row[i] % p.group : 0);
    limit[i] = s.limit0 + j[i];
  }

  // Q as mma A fragments, straight from global memory (read once per block).
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const __nv_bfloat16* qrow = p.q + (s.q_start + j[i]) * p.q_tok + h[i] * p.q_head + 2 * tig;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      qf[kk][i] = valid[i] ? *reinterpret_cast<const uint32_t*>(qrow + kk * 16) : 0u;
      qf[kk][i + 2] = valid[i] ? *reinterpret_cast<const uint32_t*>(qrow + kk * 16 + 8) : 0u;
    }
  }

  float acc[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.0f;
  float m[2] = {-kInf, -kInf}, l[2] = {0.0f, 0.0f};

  const int n_keys = w.key_end - w.key_begin;
  const int num_tiles = n_keys > 0 ? (n_keys + kTileKeys - 1) / kTileKeys : 0;

  auto load_tile = [&](int t, int stage) {
    const int kb = w.key_begin + t * kTileKeys;
    __nv_bfloat16* ks = smem + stage * 2 * kTileElems;
    __nv_bfloat16* vs = ks + kTileElems;
    constexpr int kChunks = D / 8;  // 16-byte chunks per key row
#pragma unroll
    for (int c = tid; c < kTileKeys * kChunks; c += kThreads) {
      const int r = c / kChunks, col = (c % kChunks) * 8, key = kb + r;
      const bool in = key < w.key_end;
      const __nv_bfloat16* krow = in ? KeyRow(p, s, kvh, key, 0) + col : p.q;
      const __nv_bfloat16* vrow = in ? KeyRow(p, s, kvh, key, 1) + col : p.q;
      CpAsync16(ks + r * kLd + col, krow, in ? 16 : 0);  // zero-fill keys past the range
      CpAsync16(vs + r * kLd + col, vrow, in ? 16 : 0);
    }
    CpAsyncCommit();
  };

  if (num_tiles > 0) load_tile(0, 0);
  for (int t = 0; t < num_tiles; ++t) {
    if (t + 1 < num_tiles) {
      load_tile(t + 1, (t + 1) & 1);
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    const __nv_bfloat16* ks = smem + (t & 1) * 2 * kTileElems;
    const __nv_bfloat16* vs = ks + kTileElems;
    const int kb = w.key_begin + t * kTileKeys;

    // S = Q K^T for 16 rows x 64 keys per warp.
    float sc[kTileKeys / 8][4];
#pragma unroll
    for (int nt = 0; nt < kTileKeys / 8; ++nt) {
      sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
      const __nv_bfloat16* kp = ks + (nt * 8 + g) * kLd + 2 * tig;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(kp + kk * 16);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(kp + kk * 16 + 8);
        MmaBf16(sc[nt], qf[kk], b0, b1);
      }
    }

    // Mask (range end, causal limit), scale, online softmax.
    float mx[2] = {-kInf, -kInf};
#pragma unroll
    for (int nt = 0; nt < kTileKeys / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = kb + nt * 8 + 2 * tig + (e & 1), i = e >> 1;
        const float x = (key < w.key_end && key <= limit[i]) ? sc[nt][e] * p.scale_log2 : -kInf;
        sc[nt][e] = x;
        mx[i] = fmaxf(mx[i], x);
      }
    }
    float base[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float m_new = fmaxf(m[i], QuadMax(mx[i]));
      base[i] = m_new == -kInf ? 0.0f : m_new;  // all masked so far: avoid -inf - -inf
      const float alpha = exp2f(m[i] - base[i]);
      m[i] = m_new;
      l[i] *= alpha;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        acc[dt][2 * i] *= alpha;
        acc[dt][2 * i + 1] *= alpha;
      }
    }
#pragma unroll
    for (int nt = 0; nt < kTileKeys / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        sc[nt][e] = exp2f(sc[nt][e] - base[e >> 1]);
        l[e >> 1] += sc[nt][e];
      }
    }

    // O += P V: the S accumulators of two adjacent key octets form one A fragment.
#pragma unroll
    for (int kk = 0; kk < kTileKeys / 16; ++kk) {
      const uint32_t a[4] = {PackBf16(sc[2 * kk][0], sc[2 * kk][1]),
                             PackBf16(sc[2 * kk][2], sc[2 * kk][3]),
                             PackBf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                             PackBf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
      const __nv_bfloat16* vp = vs + (kk * 16 + 2 * tig) * kLd + g;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        const __nv_bfloat16* c = vp + dt * 8;
        MmaBf16(acc[dt], a, PackBf16(c[0], c[kLd]), PackBf16(c[8 * kLd], c[9 * kLd]));
      }
    }
    __syncthreads();  // the next iteration's prefetch overwrites this stage
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) l[i] = QuadSum(l[i]);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (!valid[i]) continue;
    const bool empty = l[i] == 0.0f;
    const float inv = empty ? 0.0f : 1.0f / l[i];
    const float lse = empty ? -kInf : (m[i] + log2f(l[i])) * 0.69314718055994531f;
    if (s.num_splits == 1) {
      const int64_t t = s.q_start + j[i];
      __nv_bfloat16* orow = p.o + t * p.o_tok + h[i] * p.o_head + 2 * tig;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        *reinterpret_cast<uint32_t*>(orow + dt * 8) =
            PackBf16(acc[dt][2 * i] * inv, acc[dt][2 * i + 1] * inv);
      }
      if (tig == 0) p.lse[t * p.lse_tok + h[i] * p.lse_head] = lse;
    } else {
      const int64_t pr =
          s.part_start + (static_cast<int64_t>(w.split) * p.num_kv_heads + kvh) * rows + row[i];
      float* orow = p.part_o + pr * D + 2 * tig;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        *reinterpret_cast<float2*>(orow + dt * 8) =
            make_float2(acc[dt][2 * i] * inv, acc[dt][2 * i + 1] * inv);
      }
      if (tig == 0) p.part_lse[pr] = lse;
    }
  }
}

// Merges the key splits of the segments listed in `split_segs` (blockIdx.x): one
// warp per (KV head, row), DESIGN §4's formula over the splits.
template <int D>
__global__ void __launch_bounds__(kThreads)
    CombineSplitsKernel(const Params p, const int* split_segs) {
  static_assert(D % 32 == 0, "unsupported head dim");
  constexpr float kInf = __builtin_huge_valf();
  const SegDesc s = p.segs[split_segs[blockIdx.x]];
  const int rows = s.q_len * p.group, total = rows * p.num_kv_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int rr = blockIdx.y * kWarps + warp; rr < total; rr += gridDim.y * kWarps) {
    const int kvh = rr / rows, r = rr % rows;
    const int64_t t = s.q_start + r / p.group;
    const int h = kvh * p.group + r % p.group;
    auto part = [&](int sp) {
      return s.part_start + (static_cast<int64_t>(sp) * p.num_kv_heads + kvh) * rows + r;
    };
    float mx = -kInf;
    for (int sp = lane; sp < s.num_splits; sp += 32) mx = fmaxf(mx, p.part_lse[part(sp)]);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    __nv_bfloat16* orow = p.o + t * p.o_tok + h * p.o_head;
    float out[D / 32] = {};
    float lse = -kInf;
    if (mx != -kInf) {
      float wsum = 0.0f;
      for (int sp = 0; sp < s.num_splits; ++sp) {
        const int64_t pr = part(sp);
        const float wgt = expf(p.part_lse[pr] - mx);
        wsum += wgt;
        if (wgt == 0.0f) continue;
#pragma unroll
        for (int c = 0; c < D / 32; ++c) out[c] += wgt * p.part_o[pr * D + lane + 32 * c];
      }
#pragma unroll
      for (int c = 0; c < D / 32; ++c) out[c] /= wsum;
      lse = mx + logf(wsum);
    }
#pragma unroll
    for (int c = 0; c < D / 32; ++c) orow[lane + 32 * c] = __float2bfloat16_rn(out[c]);
    if (lane == 0) p.lse[t * p.lse_tok + h * p.lse_head] = lse;
  }
}

}  // namespace cpserve::cuda::attn
