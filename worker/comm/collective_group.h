// A pool's collective group (DESIGN §2, §6): the ranks of one pool exchange tensors
// with all-gather, all-reduce, reduce-scatter and broadcast. Two backends: Gloo over
// TCP for CPU ranks (gloo_group.h) and NCCL for CUDA ranks (nccl_group.h).
//
// Contract shared by every backend:
// - Every rank calls the same collectives in the same order with matching shapes.
// - Buffers are contiguous Tensors on the backend's device (host for Gloo, the rank's
//   GPU for NCCL; NCCL also takes host tensors, staged through the device, for the
//   engine's control traffic). Dtypes: f32, f64, bf16, f16, i32, i64, u8. bf16/f16 reductions
//   accumulate each pairwise sum in fp32 and round back (NCCL does the same).
// - Every call honours the timeout given at construction: a peer that never arrives
//   or has died yields DEADLINE_EXCEEDED or UNAVAILABLE (with the op and rank in the
//   message) within about that timeout, never a hang.
// - After such a failure the group is broken: every later call fails at once with
//   FAILED_PRECONDITION naming the original error; healthy() turns false. A broken
//   group cannot be repaired — the pool reports itself unhealthy and re-forms.
// - Argument errors (wrong shape, dtype mismatch, non-contiguous) return
//   INVALID_ARGUMENT before any communication and do not break the group.
// - One thread at a time per group (calls are serialized by an internal mutex).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/tensor.h"

namespace cpserve::comm {

enum class ReduceOp : uint8_t { kSum, kMax };
const char* ReduceOpName(ReduceOp op);

class CollectiveGroup {
 public:
  virtual ~CollectiveGroup() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // "gloo", "nccl", or "nccl+gloo" for a GPU pool (split_group.h).
  virtual const char* backend() const = 0;
  // False once a collective has failed (timeout, dead peer, transport error).
  virtual bool healthy() const = 0;
  // The error that broke the group (OK while healthy).
  virtual absl::Status broken_status() const = 0;

  // input [n, ...] -> output [world * n, ...], rank-major: output[r*n + i] = input_r[i].
  // input and output must not overlap.
  virtual absl::Status AllGather(const Tensor& input, Tensor& output) = 0;

  // Variable-size all-gather along dim 0: rank r contributes counts[r] rows (every
  // rank passes the same counts; input has counts[rank] rows); output has sum(counts)
  // rows, rank-major. Trailing dims must match. For DualChunkSwap ranks holding
  // different token counts.
  virtual absl::Status AllGatherV(const Tensor& input, Tensor& output,
                                  absl::Span<const int64_t> counts) = 0;

  // In place: every rank ends with the element-wise reduction over ranks.
  virtual absl::Status AllReduce(Tensor& tensor, ReduceOp op = ReduceOp::kSum) = 0;

  // input [world * n, ...] -> output [n, ...]: output_r = sum over ranks q of
  // input_q[r*n : (r+1)*n].
  virtual absl::Status ReduceScatter(const Tensor& input, Tensor& output,
                                     ReduceOp op = ReduceOp::kSum) = 0;

  // In place: every rank ends with root's tensor.
  virtual absl::Status Broadcast(Tensor& tensor, int root) = 0;

  virtual absl::Status Barrier() = 0;
};

// Shared argument checks (INVALID_ARGUMENT with a message naming `op`).
namespace internal {
absl::Status CheckCollectiveDType(const char* op, const Tensor& t);
absl::Status CheckContiguous(const char* op, const char* which, const Tensor& t);
// AllGather: output = input with dim 0 times world. ReduceScatter: the reverse.
absl::Status CheckAllGatherShapes(const char* op, const Tensor& input, const Tensor& output,
                                  int world);
absl::Status CheckReduceScatterShapes(const Tensor& input, const Tensor& output, int world);
absl::Status CheckAllGatherVShapes(const Tensor& input, const Tensor& output,
                                   absl::Span<const int64_t> counts, int rank, int world);
// Bytes of one dim-0 row of t (product of the trailing dims times the dtype size).
size_t RowBytes(const Tensor& t);
}  // namespace internal

}  // namespace cpserve::comm
