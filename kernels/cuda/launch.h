// Params structs and host launchers of the CUDA bf16 kernels (DESIGN §9). Each
// launcher enqueues on `stream` and returns the launch's cudaError_t; the
// backend (cuda_backend.cc and friends) validates shapes and maps errors to
// absl::Status. Plain types only, so .cu files need no Abseil.
//
// Element types: "bf16" buffers hold raw uint16 bit patterns (__nv_bfloat16).
// All strides are in elements.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cpserve::cuda {

// Device error flag bits, set by kernels that find an index out of range; the
// backend reports them at the next synchronising call.
enum ErrorBits : int { kBadEmbeddingId = 1, kBadGatherIndex = 2, kBadSlot = 4 };

// Element types understood by the conversion / copy kernel (values of DType).
enum class ElemType : int { kF32 = 0, kF64 = 1, kBF16 = 2, kF16 = 3, kI32 = 4, kI64 = 5, kU8 = 6 };

constexpr int kMaxRank = 6;

// dst[idx] = convert(src[idx]) for every index of `shape` (any strides). Floating
// types convert through float (round to nearest even), like the CPU backend;
// otherwise src and dst types must match (raw copy).
struct StridedCopyParams {
  const void* src = nullptr;
  void* dst = nullptr;
  ElemType src_type = ElemType::kF32;
  ElemType dst_type = ElemType::kF32;
  int rank = 0;
  int64_t numel = 0;
  int64_t shape[kMaxRank] = {};
  int64_t src_stride[kMaxRank] = {};
  int64_t dst_stride[kMaxRank] = {};
};
cudaError_t LaunchStridedCopy(const StridedCopyParams& p, cudaStream_t stream);

// A matrix of `rows` x `cols` with unit column stride.
struct RowsView {
  void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;
};

// out[t] = table[ids[t]] (bf16 rows); ids int32. Bad ids zero the row and set kBadEmbeddingId.
struct EmbeddingParams {
  RowsView table, out;
  const int32_t* ids = nullptr;
  int64_t ids_stride = 1;
  int* error_flag = nullptr;
};
cudaError_t LaunchEmbedding(const EmbeddingParams& p, cudaStream_t stream);

// RMSNorm in fp32 over bf16 rows. With `residual` set: residual += x first, and
// the norm reads the (bf16-rounded) new residual, as the CPU reference does.
struct RmsNormParams {
  RowsView x, out, residual;         // residual.data == nullptr: plain RmsNorm
  const uint16_t* weight = nullptr;  // bf16 [cols]
  float eps = 1e-6f;
};
cudaError_t LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream);

// Elementwise over bf16 rows: out = silu(a) * b (kSiluMul) or a + b (kAdd).
enum class BinaryOp : int { kSiluMul, kAdd };
struct BinaryParams {
  RowsView a, b, out;
  BinaryOp op = BinaryOp::kAdd;
};
cudaError_t LaunchBinary(const BinaryParams& p, cudaStream_t stream);

// out[r, :] += bias[:] (bias and out bf16 or f32, independently).
struct BiasParams {
  RowsView out;
  bool out_f32 = false;
  const void* bias = nullptr;
  bool bias_f32 = false;
};
cudaError_t LaunchAddBias(const BiasParams& p, cudaStream_t stream);

// out[i] = x[index[i]] for rows of `row_bytes` bytes; bad indices set kBadGatherIndex.
struct GatherRowsParams {
  const char* x = nullptr;
  char* out = nullptr;
  int64_t x_rows = 0;
  int64_t out_rows = 0;
  int64_t row_bytes = 0;
  int64_t x_stride_bytes = 0;
  int64_t out_stride_bytes = 0;
  const void* index = nullptr;
  bool index_i64 = false;
  int64_t index_stride = 1;
  int* error_flag = nullptr;
};
cudaError_t LaunchGatherRows(const GatherRowsParams& p, cudaStream_t stream);

// [T, H, D] bf16 heads with unit last stride.
struct HeadsView {
  uint16_t* data = nullptr;
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t dim = 0;
  int64_t token_stride = 0;
  int64_t head_stride = 0;
};

// In-place rotate_half RoPE of q (and k if k.data) at positions (int32/int64);
// angle = pos * inv_freq[i] in double, reduced mod 2pi, cos/sin in fp32.
struct RopeParams {
  HeadsView q, k;
  const void* positions = nullptr;
  bool positions_i64 = false;
  int64_t positions_stride = 1;
  const double* inv_freq = nullptr;  // [dim / 2]
};
cudaError_t LaunchRope(const RopeParams& p, cudaStream_t stream);

// The paged cache as the kernels see it (kernels/kv_cache.h strides, bf16).
struct CacheView {
  uint16_t* base = nullptr;
  int64_t num_blocks = 0, block_size = 0, heads = 0, dim = 0;
  int64_t block_stride = 0, layer_stride = 0, kv_stride = 0, token_stride = 0, head_stride = 0;
};

// Stores k[t], v[t] at slot_mapping[t] (int64) of `layer`; negative slots are
// skipped, slots >= num_blocks * block_size are skipped and set kBadSlot.
struct WriteKvParams {
  HeadsView k, v;
  CacheView cache;
  int64_t layer = 0;
  const int64_t* slots = nullptr;
  int64_t slots_stride = 1;
  int* error_flag = nullptr;
};
cudaError_t LaunchWriteKv(const WriteKvParams& p, cudaStream_t stream);

// k_out[t], v_out[t] = cache token t of a sequence (block_table on the device).
struct GatherKvParams {
  HeadsView k, v;
  CacheView cache;
  int64_t layer = 0;
  const int32_t* block_table = nullptr;
  int64_t len = 0;
};
cudaError_t LaunchGatherKv(const GatherKvParams& p, cudaStream_t stream);

// [T, H] fp32 LSE with any strides.
struct LseView {
  float* data = nullptr;
  int64_t token_stride = 0;
  int64_t head_stride = 0;
};

struct MergeParams {
  HeadsView o_a, o_b, o;
  LseView lse_a, lse_b, lse;
};
cudaError_t LaunchMergeStates(const MergeParams& p, cudaStream_t stream);

// lse[t, h] = log sum_r exp(parts[r, t, h]).
struct CombineLseParams {
  const float* parts = nullptr;
  int64_t n = 0, tokens = 0, heads = 0;
  int64_t part_stride = 0, token_stride = 0, head_stride = 0;
  LseView lse;
};
cudaError_t LaunchCombineLse(const CombineLseParams& p, cudaStream_t stream);

struct RescaleParams {
  HeadsView o;
  LseView local, total;
};
cudaError_t LaunchRescale(const RescaleParams& p, cudaStream_t stream);

// ids[r] = argmax_i logits[r, i] (ties: lowest id), logits f32 or bf16 rows.
struct ArgmaxParams {
  RowsView logits;
  bool logits_f32 = true;
  int32_t* ids = nullptr;
  int64_t ids_stride = 1;
};
cudaError_t LaunchArgmax(const ArgmaxParams& p, cudaStream_t stream);

}  // namespace cpserve::cuda
