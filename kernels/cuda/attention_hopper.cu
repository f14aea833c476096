// Hopper (sm_90a) flash attention for head dim 128 (see attention_hopper.h).
//
// A work = rows [row0, row0 + 128) of one segment (a WorkItem) for one KV head. One
// thread block = 3 warpgroups doing one work, or (persistent launch) a stream of
// works taken from a global counter:
//   warpgroup 0 (producer, few registers): streams K and V tiles of 128 keys into a
//     2-stage shared-memory ring with cp.async (dense keys and block-table gathered
//     context keys alike), 128-byte swizzled; after its copies land it fences them
//     for the async proxy and arrives on the stage's "full" mbarrier. The ring runs
//     on across the works of a persistent block;
//   warpgroups 1, 2 (consumers, 64 rows each): load their Q rows into swizzled
//     shared memory (the next work's under the current one's epilogue); S = Q K^T
//     with wgmma m64n128k16 (Q and K from shared memory), causal / range mask only
//     on edge tiles, online softmax in the log2 domain, O += P V with wgmma (P from
//     registers, V from shared memory read MN-major), S of tile t and PV of tile
//     t - 1 in flight together; they release each stage through its "empty"
//     mbarriers (K after S, V after PV).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/attention_flash.cuh"
#include "kernels/cuda/attention_hopper.h"
#include "kernels/cuda/attention_wgmma.cuh"

namespace cpserve::cuda::attn {
namespace {

constexpr int kD = kHopperHeadDim;
constexpr int kThreadsHopper = 384;
constexpr int kQBytes = kHopperRows * kD * 2;     // 32 KiB
constexpr int kTileBytes = kHopperKeys * kD * 2;  // 32 KiB per K or V tile

template <int kStages>
constexpr int HopperSmemBytes() {
  return 1024 /*alignment slack*/ + kQBytes + kStages * 2 * kTileBytes;
}

#if CPSERVE_ATTN_SM90A
constexpr int kHalfBytes = kHopperKeys * 128;  // one 64-column half of a tile
constexpr int kProducerRegs = 56;
constexpr int kConsumerRegs = 224;  // 128 * 56 + 256 * 224 <= 64K registers

// Byte offset of 16-byte chunk c (0..15) of row `row` in a [128][128] bf16 tile
// stored as two [128][64] halves with 128-byte rows, 128-byte swizzle (chunk index
// XOR row % 8), the layout wgmma descriptors with swizzle mode 1 read.
__device__ __forceinline__ uint32_t Swz(int row, int c) {
  return (c >> 3) * kHalfBytes + row * 128 + (((c & 7) ^ (row & 7)) << 4);
}

__device__ __forceinline__ void CpAsync16To(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}

#endif  // CPSERVE_ATTN_SM90A

// Works are (item, KV head) pairs, KV-head-major (wk = kvh * num_items + item):
// blocks running together share K/V in L2. Block b starts with work b; with
// p.work_counter (persistent launch, one block per SM) it then takes gridDim.x +
// atomicAdd(counter, 1) until past the end (greedy, longest items first); without,
// it does one work. The producer's thread 0 fetches each next work and hands it to
// the other threads through a 2-slot shared-memory queue (mbarriers work_full /
// work_empty).
template <int kStages>
__global__ void __launch_bounds__(kThreadsHopper, 1)
    HopperFlashKernel(const Params p, int num_items, int num_works) {
#if CPSERVE_ATTN_SM90A
  using namespace sm90;  // NOLINT
  constexpr float kInf = __builtin_huge_valf();
  extern __shared__ unsigned char smem_raw[];
  __shared__ uint64_t bars[4 * kStages];  // full K, full V, empty K, empty V
  __shared__ uint64_t work_full[2], work_empty[2];
  __shared__ int work_slot[2];
  uint64_t* full_k = bars;
  uint64_t* full_v = bars + kStages;
  uint64_t* empty_k = bars + 2 * kStages;
  uint64_t* empty_v = bars + 3 * kStages;
  const uint32_t smem = (SmemAddr(smem_raw) + 1023u) & ~1023u;
  const uint32_t q_smem = smem;
  auto kv_smem = [&](int stage, int kv) {
    return smem + kQBytes + static_cast<uint32_t>((stage * 2 + kv) * kTileBytes);
  };
  const int tid = threadIdx.x;
  // Work of the n-th fetch (n-th work of this block), read by every thread once.
  auto fetch_work = [&](int n) {
    const int slot = n & 1;
    if (tid == 0) {
      if (n >= 2) MbarWait(work_empty + slot, ((n >> 1) - 1) & 1);
      work_slot[slot] = n == 0 ? static_cast<int>(blockIdx.x)
                        : p.work_counter == nullptr
                            ? num_works
                            : static_cast<int>(gridDim.x) + atomicAdd(p.work_counter, 1);
      MbarArrive(work_full + slot);
    }
    MbarWait(work_full + slot, (n >> 1) & 1);
    const int wk = *static_cast<volatile int*>(work_slot + slot);
    MbarArrive(work_empty + slot);
    return wk < num_works ? wk : -1;
  };
  auto num_tiles_of = [](const WorkItem& w) {
    const int n_keys = w.key_end - w.key_begin;
    return n_keys > 0 ? (n_keys + kHopperKeys - 1) / kHopperKeys : 0;
  };

  if (tid == 0) {
#pragma unroll
    for (int i = 0; i < kStages; ++i) {
      MbarInit(full_k + i, 128);
      MbarInit(full_v + i, 128);
      MbarInit(empty_k + i, 256);
      MbarInit(empty_v + i, 256);
    }
    for (int i = 0; i < 2; ++i) {
      MbarInit(work_full + i, 1);
      MbarInit(work_empty + i, kThreadsHopper);
    }
    FenceBarrierInit();
  }
  __syncthreads();

  if (tid < 128) {
    // ---- producer warpgroup: one K/V ring across all works of this block ----
    SetMaxRegsDec<kProducerRegs>();
    const int c = tid & 15, rb = tid >> 4;  // 16-byte chunk of a key row; first row
    int gt = 0;                             // tiles loaded so far (ring position)
    bool v_pending = false;                 // the last tile's V is not published yet
    for (int n = 0;; ++n) {
      const int wk = fetch_work(n);
      if (wk < 0) break;
      const WorkItem w = p.items[wk % num_items];
      const SegDesc s = p.segs[w.seg];
      const int kvh = wk / num_items;
      auto load = [&](int t, int stage, int kv) {
        const int kb = w.key_begin + t * kHopperKeys;
        const uint32_t dst = kv_smem(stage, kv) + Swz(rb, c);    // row rb + 8 i: + 1024 i
        if (kb >= s.ctx_len && kb + kHopperKeys <= w.key_end) {  // dense keys, full tile
          const int64_t tok = s.k_start + (kb - s.ctx_len) + rb;
          const __nv_bfloat16* src = (kv == 0 ? p.k + tok * p.k_tok + kvh * p.k_head
                                              : p.v + tok * p.v_tok + kvh * p.v_head) +
                                     c * 8;
          const int64_t step = 8 * (kv == 0 ? p.k_tok : p.v_tok);
#pragma unroll
          for (int i = 0; i < kHopperKeys / 8; ++i) {
            CpAsync16To(dst + 1024 * i, src + i * step, 16);
          }
        } else {  // context keys through the block table, or the range's last tile
#pragma unroll 4
          for (int i = 0; i < kHopperKeys / 8; ++i) {
            const int key = kb + rb + 8 * i;
            const bool in = key < w.key_end;
            const __nv_bfloat16* src = in ? KeyRow(p, s, kvh, key, kv) + c * 8 : p.q;
            CpAsync16To(dst + 1024 * i, src, in ? 16 : 0);  // zero-fill past the range
          }
        }
        CpAsyncCommit();
      };
      const int num_tiles = num_tiles_of(w);
      if (num_tiles == 0 && v_pending) {
        // Nothing to load for this work: publish the pending V now. Holding it until
        // the next loaded tile deadlocks when two empty works follow: the consumers
        // wait for that V before they take the next work, while thread 0 waits for
        // them to take it (work_empty) before it fetches another (2026-11-22 hang).
        CpAsyncWait<0>();
        FenceProxyAsync();
        MbarArrive(full_v + (gt - 1) % kStages);
        v_pending = false;
      }
      for (int t = 0; t < num_tiles; ++t, ++gt) {
        const int st = gt % kStages;
        const uint32_t reuse_parity = ((gt / kStages) - 1) & 1;
        if (gt >= kStages) MbarWait(empty_k + st, reuse_parity);
        load(t, st, 0);
        if (v_pending) {  // V of the previous tile has landed: publish it
          CpAsyncWait<1>();
          FenceProxyAsync();
          MbarArrive(full_v + (gt - 1) % kStages);
        }
        if (gt >= kStages) MbarWait(empty_v + st, reuse_parity);
        load(t, st, 1);
        CpAsyncWait<1>();  // K of this tile has landed
        FenceProxyAsync();
        MbarArrive(full_k + st);
        v_pending = true;
      }
    }
    if (v_pending) {
      CpAsyncWait<0>();
      FenceProxyAsync();
      MbarArrive(full_v + (gt - 1) % kStages);
    }
  } else {
    // ---- consumer warpgroups ----
    SetMaxRegsInc<kConsumerRegs>();
    const int cw = tid / 128 - 1;  // consumer index: rows [64 cw, 64 cw + 64) of the tile
    const int ctid = tid % 128, warp = ctid / 32, lane = ctid % 32, g = lane / 4, tig = lane % 4;

    // Q rows of this warpgroup for work wk -> swizzled shared memory (zero rows past
    // the segment); cp.async, completed by finish_q.
    auto issue_q = [&](int wk) {
      const WorkItem w = p.items[wk % num_items];
      const SegDesc s = p.segs[w.seg];
      const int kvh = wk / num_items, rows = s.q_len * p.group, wg_row0 = w.row0 + cw * 64;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int idx = ctid + 128 * i, r = idx / 16, c = idx % 16, row = wg_row0 + r;
        const bool valid = row < rows;
        const int j = valid ? row / p.group : 0, h = kvh * p.group + (valid ? row % p.group : 0);
        const __nv_bfloat16* src = p.q + (s.q_start + j) * p.q_tok + h * p.q_head + c * 8;
        CpAsync16To(q_smem + Swz(cw * 64 + r, c), valid ? src : p.q, valid ? 16 : 0);
      }
      CpAsyncCommit();
    };
    auto finish_q = [&] {
      CpAsyncWait<0>();
      FenceProxyAsync();
      NamedBarrier(1 + cw, 128);
    };
    int n = 0;
    int next = fetch_work(n++);  // next work of this block, -1: none
    if (next >= 0) {
      issue_q(next);
      finish_q();
    }
    int gt = 0;  // tiles consumed so far (ring position)
    while (next >= 0) {
      const int wk = next;
      const WorkItem w = p.items[wk % num_items];
      const SegDesc s = p.segs[w.seg];
      const int kvh = wk / num_items;
      const int rows = s.q_len * p.group;
      const int wg_row0 = w.row0 + cw * 64;
      const int num_tiles = num_tiles_of(w);

      int limit[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int row = wg_row0 + warp * 16 + g + 8 * i;
        limit[i] = s.limit0 + (row < rows ? row / p.group : 0);
      }
      // Tiles ending at or below this key need no causal mask for any row here.
      const int unmasked_below = s.limit0 + wg_row0 / p.group + 1;

      float o[64];
#pragma unroll
      for (int i = 0; i < 64; ++i) o[i] = 0.0f;
      float m[2] = {-kInf, -kInf}, l[2] = {0.0f, 0.0f};
      float sc[64];                      // S, then P (fp32) of the tile in softmax
      uint32_t pa[kHopperKeys / 16][4];  // P (bf16 A fragments) of the tile in PV
      const float scale = p.scale_log2;  // > 0 (the planner picks this kernel only then)

      // S = Q K^T (64 rows x 128 keys), issued asynchronously.
      auto issue_s = [&](int t) {
        const uint32_t k_smem = kv_smem((gt + t) % kStages, 0);
#pragma unroll
        for (int kk = 0; kk < kD / 16; ++kk) {
          const uint32_t off = (kk >> 2) * kHalfBytes + (kk & 3) * 32;
          WgmmaSS(sc, SmemDesc(q_smem + cw * 64 * 128 + off, 16, 1024),
                  SmemDesc(k_smem + off, 16, 1024), kk > 0);
        }
      };
      // O += P V (V tile read MN-major: 64-column halves kHalfBytes apart, 8-key groups
      // 1024 bytes apart), issued asynchronously.
      auto issue_pv = [&](int t) {
        const uint32_t v_smem = kv_smem((gt + t) % kStages, 1);
#pragma unroll
        for (int kk = 0; kk < kHopperKeys / 16; ++kk) {
          WgmmaRS<1>(o, pa[kk], SmemDesc(v_smem + kk * 16 * 128, kHalfBytes, 1024), 1);
        }
      };
      // Online softmax of tile t (log2 domain): masks edge tiles, updates m and l,
      // leaves P in sc and the factor for O in alpha.
      auto softmax = [&](int t, float(&alpha)[2]) {
        const int kb = w.key_begin + t * kHopperKeys;
        const bool masked = kb + kHopperKeys > w.key_end || kb + kHopperKeys > unmasked_below;
        float mx[2] = {-kInf, -kInf};
#pragma unroll
        for (int e = 0; e < 64; ++e) {
          const int i = (e >> 1) & 1;
          if (masked) {
            const int key = kb + 8 * (e >> 2) + 2 * tig + (e & 1);
            sc[e] = (key < w.key_end && key <= limit[i]) ? sc[e] : -kInf;
          }
          mx[i] = fmaxf(mx[i], sc[e]);
        }
        float base[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const float m_new = fmaxf(m[i], QuadMax(mx[i]) * scale);
          base[i] = m_new == -kInf ? 0.0f : m_new;  // all masked so far: avoid -inf - -inf
          alpha[i] = Exp2(m[i] - base[i]);
          m[i] = m_new;
          l[i] *= alpha[i];
        }
#pragma unroll
        for (int e = 0; e < 64; ++e) {
          const int i = (e >> 1) & 1;
          sc[e] = Exp2(fmaf(sc[e], scale, -base[i]));
          l[i] += sc[e];
        }
      };
      auto pack_p = [&] {
#pragma unroll
        for (int e = 0; e < 64; e += 2) pa[e >> 3][(e >> 1) & 3] = PackBf16(sc[e], sc[e + 1]);
      };
      auto rescale_o = [&](const float(&alpha)[2]) {
#pragma unroll
        for (int e = 0; e < 64; ++e) o[e] *= alpha[(e >> 1) & 1];
      };

      // Software pipeline within the warpgroup: S of tile t and PV of tile t - 1 run
      // on the tensor cores while the softmax of tile t waits only for S. O is rescaled
      // by tile t's factor one step later, while S of tile t + 1 runs (rescaling right
      // after PV of tile t - 1 completes measured 1-3% slower). Warps whose rows all
      // kept their maxima skip the rescale.
      float alpha[2] = {1.0f, 1.0f};  // pending factor for O
      auto maybe_rescale_o = [&] {
        if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) rescale_o(alpha);
      };
      if (num_tiles > 0) {
        MbarWait(full_k + gt % kStages, (gt / kStages) & 1);
        WgmmaFence();
        issue_s(0);
        WgmmaCommit();
        WgmmaWait<0>();
        FenceRegs(sc);
        MbarArrive(empty_k + gt % kStages);
        softmax(0, alpha);
        alpha[0] = alpha[1] = 1.0f;  // O is still zero: no rescale
        pack_p();
      }
      for (int t = 1; t < num_tiles; ++t) {
        const int st = (gt + t) % kStages, pst = (gt + t - 1) % kStages;
        MbarWait(full_k + st, ((gt + t) / kStages) & 1);
        WgmmaFence();
        issue_s(t);
        WgmmaCommit();
        maybe_rescale_o();
        MbarWait(full_v + pst, ((gt + t - 1) / kStages) & 1);
        WgmmaFence();
        issue_pv(t - 1);
        WgmmaCommit();
        WgmmaWait<1>();  // S of tile t
        FenceRegs(sc);
        MbarArrive(empty_k + st);
        softmax(t, alpha);
        WgmmaWait<0>();  // PV of tile t - 1
        FenceRegs(o);
        FenceRegs(sc);  // P is packed only now: pa may still be in use until the wait
        MbarArrive(empty_v + pst);
        pack_p();
      }
      if (num_tiles > 0) {
        const int last = gt + num_tiles - 1;
        maybe_rescale_o();
        MbarWait(full_v + last % kStages, (last / kStages) & 1);
        WgmmaFence();
        issue_pv(num_tiles - 1);
        WgmmaCommit();
        WgmmaWait<0>();
        FenceRegs(o);
        MbarArrive(empty_v + last % kStages);
      }
      gt += num_tiles;
      // The next work's Q loads under this epilogue (every wgmma reading Q is done).
      next = fetch_work(n++);
      NamedBarrier(1 + cw, 128);
      if (next >= 0) issue_q(next);

        // Epilogue: normalise, write O (or the split's partial) and the LSE.
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        l[i] = QuadSum(l[i]);
        const int row = wg_row0 + warp * 16 + g + 8 * i;
        if (row >= rows) continue;
        const int j = row / p.group, h = kvh * p.group + row % p.group;
        const bool empty = l[i] == 0.0f;
        const float inv = empty ? 0.0f : 1.0f / l[i];
        const float lse = empty ? -kInf : (m[i] + log2f(l[i])) * 0.69314718055994531f;
        if (s.num_splits == 1) {
          const int64_t tok = s.q_start + j;
          __nv_bfloat16* orow = p.o + tok * p.o_tok + h * p.o_head + 2 * tig;
#pragma unroll
          for (int dt = 0; dt < kD / 8; ++dt) {
            *reinterpret_cast<uint32_t*>(orow + dt * 8) =
                PackBf16(o[4 * dt + 2 * i] * inv, o[4 * dt + 2 * i + 1] * inv);
          }
          if (tig == 0) p.lse[tok * p.lse_tok + h * p.lse_head] = lse;
        } else {
          const int64_t pr =
              s.part_start + (static_cast<int64_t>(w.split) * p.num_kv_heads + kvh) * rows + row;
          float* orow = p.part_o + pr * kD + 2 * tig;
#pragma unroll
          for (int dt = 0; dt < kD / 8; ++dt) {
            *reinterpret_cast<float2*>(orow + dt * 8) =
                make_float2(o[4 * dt + 2 * i] * inv, o[4 * dt + 2 * i + 1] * inv);
          }
          if (tig == 0) p.part_lse[pr] = lse;
        }
      }
      if (next >= 0) finish_q();
    }
  }
#else
  __trap();  // never launched: HopperFlashSupported() requires sm_90 (sm_90a code)
#endif
}

template <int kStages>
cudaError_t Launch(Params params, int num_items, bool persistent, cudaStream_t stream) {
  constexpr int smem = HopperSmemBytes<kStages>();
  cudaError_t err = cudaFuncSetAttribute(HopperFlashKernel<kStages>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  const int num_works = num_items * params.num_kv_heads;
  int blocks = num_works;
  if (persistent) {
    int device = 0, sms = 0;
    if ((err = cudaGetDevice(&device)) != cudaSuccess) return err;
    err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err != cudaSuccess) return err;
    blocks = std::min(blocks, sms);  // one block per SM (shared memory)
  } else {
    params.work_counter = nullptr;
  }
  HopperFlashKernel<kStages><<<static_cast<unsigned>(blocks), kThreadsHopper, smem, stream>>>(
      params, num_items, num_works);
  return cudaGetLastError();
}

}  // namespace

bool HopperFlashSupported(int device) {
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    return false;
  }
  return major == 9 && minor == 0;
}

cudaError_t LaunchHopperFlash(const Params& params, int num_items, HopperVariant variant,
                              cudaStream_t stream) {
  return Launch<2>(params, num_items, variant == HopperVariant::kPersistent, stream);
}

}  // namespace cpserve::cuda::attn
