// The compute interface model code is written against (DESIGN §7). A backend
// owns its memory, streams and library handles; the engine picks one at start
// (MakeCpuBackend() in kernels/cpu/cpu_backend.h; a CUDA backend later).
//
// Conventions for every op:
// - Tensors are views (kernels/tensor.h); output tensors are passed by const
//   reference and written through. Outputs must already have the stated shape.
// - Activations are in the backend's compute dtype (ComputeDType(): fp32 on
//   CPU). Index tensors are int32 or int64 as stated.
// - "Row-strided" means: the last dim has stride 1 and the leading dims collapse
//   into rows with one row stride (e.g. a column Slice of a contiguous matrix).
// - Shape, dtype or device mismatches return InvalidArgument and write nothing.
// - T = tokens, H = hidden size, V = vocab, K/N = matmul dims, F = MLP width,
//   Hq/Hkv = query/KV heads, D = head dim, B = KV block size.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/attention.h"
#include "kernels/kv_cache.h"
#include "kernels/rope.h"
#include "kernels/sampling.h"
#include "kernels/tensor.h"

namespace cpserve {

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* name() const = 0;
  virtual Device device() const = 0;
  virtual DType ComputeDType() const = 0;

  // ---- Memory ---------------------------------------------------------------
  // A new contiguous tensor on the backend's device (contents unspecified;
  // zeroed on CPU).
  virtual absl::StatusOr<Tensor> Alloc(const Shape& shape, DType dtype) = 0;
  // A KV cache tensor [num_blocks, num_layers, 2, B, Hkv, D] in the compute
  // dtype; wrap it with KvCacheView::FromTensor.
  virtual absl::StatusOr<Tensor> AllocKvCache(int64_t num_blocks, int64_t num_layers,
                                              int64_t block_size, int64_t num_kv_heads,
                                              int64_t head_dim) = 0;
  // Copies host memory `src` into `dst` (device tensor) of the same shape. Any
  // strides. If dtypes differ, both must be floating (f32, f64, bf16, f16) and
  // values are converted (round to nearest even), e.g. bf16 weights -> fp32.
  virtual absl::Status CopyFromHost(const Tensor& src, const Tensor& dst) = 0;
  // Copies device tensor `src` into host memory `dst`; same rules.
  virtual absl::Status CopyToHost(const Tensor& src, const Tensor& dst) = 0;
  // Device-to-device copy, same shape and dtype, any strides.
  virtual absl::Status Copy(const Tensor& src, const Tensor& dst) = 0;
  // Waits for all queued work (no-op on CPU).
  virtual absl::Status Synchronize() = 0;
  // Page-locks host memory [p, p + bytes) for fast, asynchronous copies to and from
  // this device (CUDA: cudaHostRegister), until UnpinHostMemory(p). UNIMPLEMENTED
  // where it means nothing (CPU).
  virtual absl::Status PinHostMemory(void* /*p*/, size_t /*bytes*/) {
    return absl::UnimplementedError("host memory pinning is not supported by this backend");
  }
  virtual void UnpinHostMemory(void* /*p*/) {}

  // ---- Dense ops ------------------------------------------------------------
  // out[t, :] = table[ids[t], :]. table [V, H] row-strided, ids int32 [T],
  // out [T, H] row-strided. An id outside [0, V) is InvalidArgument.
  virtual absl::Status Embedding(const Tensor& table, const Tensor& ids, const Tensor& out) = 0;

  // out[t, i] = x[t, i] / sqrt(mean_i(x[t, :]^2) + eps) * weight[i].
  // x, out [T, H] row-strided (out may alias x); weight [H].
  virtual absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps,
                               const Tensor& out) = 0;
  // Fused residual add + norm: residual += x; out = RmsNorm(residual).
  // residual, x, out [T, H]; out may alias x (not residual).
  virtual absl::Status AddRmsNorm(const Tensor& residual, const Tensor& x, const Tensor& weight,
                                  float eps, const Tensor& out) = 0;

  // out[T, N] = x[T, K] · w[N, K]^T (+ bias[N] if bias.defined()). w is in the
  // Hugging Face nn.Linear layout. x, w, out row-strided (GEMM on BLAS).
  virtual absl::Status Linear(const Tensor& x, const Tensor& w, const Tensor& bias,
                              const Tensor& out) = 0;

  // In-place rotary embedding (kernels/rope.h convention) of q [T, Hq, D] and
  // k [T, Hkv, D] (each [T, H, D] with unit last stride; k may be undefined)
  // at positions [T] (int32 or int64). cos/sin are computed in double.
  virtual absl::Status Rope(const Tensor& q, const Tensor& k, const Tensor& positions,
                            const RopeConfig& config) = 0;

  // SwiGLU: out[T, F] = silu(gate[T, F]) * up[T, F], silu(x) = x / (1 + e^-x).
  // For a fused gate_up projection [T, 2F] (gate first) pass
  // gate = gate_up.Slice(1, 0, F) and up = gate_up.Slice(1, F, 2F).
  // out may alias gate or up.
  virtual absl::Status SiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) = 0;

  // out = a + b, all the same shape, row-strided; out may alias a or b.
  virtual absl::Status Add(const Tensor& a, const Tensor& b, const Tensor& out) = 0;

  // out[i, ...] = x[index[i], ...]: x [T, ...] row-strided, index int32 or int64
  // [M] in [0, T), out [M, ...]. Used to reorder all-gathered CP chunks and pick
  // the rows that need logits.
  virtual absl::Status GatherRows(const Tensor& x, const Tensor& index, const Tensor& out) = 0;

  // ---- KV cache -------------------------------------------------------------
  // For each token t with slot_mapping[t] >= 0 (int64 [T]; slot = block * B +
  // offset), stores k[t] and v[t] ([T, Hkv, D]) into layer `layer` of the cache.
  // Tokens with a negative slot are skipped (context parallelism: not owned).
  // A slot >= num_blocks * B is InvalidArgument (nothing is written).
  virtual absl::Status WriteKvCache(int64_t layer, const Tensor& k, const Tensor& v,
                                    const Tensor& slot_mapping, const KvCacheView& cache) = 0;
  // Reads the first `len` tokens of one sequence (through block_table) of layer
  // `layer` into k_out, v_out [len, Hkv, D].
  virtual absl::Status GatherKvCache(int64_t layer, absl::Span<const int32_t> block_table,
                                     int64_t len, const KvCacheView& cache, const Tensor& k_out,
                                     const Tensor& v_out) = 0;

  // ---- Attention (kernels/attention.h) ---------------------------------------
  // Ragged prefill: per segment, queries attend cached context (if ctx_len > 0,
  // layer `layer` of `cache`, which may be null when no segment has context)
  // followed by new keys k/v [Tk, Hkv, D], masked as PrefillSegment describes.
  // o [Tq, Hq, D], lse [Tq, Hq] (fp32).
  virtual absl::Status PrefillAttention(const Tensor& q, const Tensor& k, const Tensor& v,
                                        absl::Span<const PrefillSegment> segments,
                                        const KvCacheView* cache, int64_t layer,
                                        const AttentionOptions& options, const Tensor& o,
                                        const Tensor& lse) = 0;
  // Paged, unmasked attention over cached keys only (decode; CP attention to a
  // local KV shard). q [Tq, Hq, D], o [Tq, Hq, D], lse [Tq, Hq].
  virtual absl::Status PagedAttention(const Tensor& q, absl::Span<const PagedSegment> segments,
                                      const KvCacheView& cache, int64_t layer,
                                      const AttentionOptions& options, const Tensor& o,
                                      const Tensor& lse) = 0;
  // Exact merge of two partial attentions over disjoint key sets (DESIGN §4):
  // o_* [T, Hq, D], lse_* [T, Hq]; -inf with -inf gives lse -inf and O = 0; if
  // one side is -inf the other is returned bit-exactly. o/lse may alias inputs.
  virtual absl::Status MergeAttentionStates(const Tensor& o_a, const Tensor& lse_a,
                                            const Tensor& o_b, const Tensor& lse_b, const Tensor& o,
                                            const Tensor& lse) = 0;
  // DCP two-collective form. lse_parts [N, T, Hq] (all-gathered from N ranks) ->
  // lse [T, Hq] = log sum_r exp(lse_parts[r]) (-inf if all are -inf).
  virtual absl::Status CombineLse(const Tensor& lse_parts, const Tensor& lse) = 0;
  // In place: o [T, Hq, D] *= exp(lse_local - lse_total) per row (0 where
  // lse_local is -inf). Summing the rescaled o over ranks (all-reduce) gives the
  // merged output.
  virtual absl::Status RescaleAttentionOutput(const Tensor& o, const Tensor& lse_local,
                                              const Tensor& lse_total) = 0;

  // ---- Sampling (kernels/sampling.h) ------------------------------------------
  // logits [S, V] fp32 row-strided, params.size() == S, ids int32 [S].
  virtual absl::Status Sample(const Tensor& logits, absl::Span<const SamplingParams> params,
                              const Tensor& ids) = 0;
};

}  // namespace cpserve
