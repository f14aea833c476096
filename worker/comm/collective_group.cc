#include "worker/comm/collective_group.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cpserve::comm {

const char* ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kMax:
      return "max";
  }
  return "?";
}

namespace internal {
namespace {

std::string ShapeString(const Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.shape(), ", "), "]");
}

bool SameTrailingDims(const Tensor& a, const Tensor& b) {
  if (a.rank() != b.rank()) return false;
  for (int i = 1; i < a.rank(); ++i) {
    if (a.dim(i) != b.dim(i)) return false;
  }
  return true;
}

}  // namespace

absl::Status CheckCollectiveDType(const char* op, const Tensor& t) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(op, ": undefined tensor"));
  return absl::OkStatus();  // every DType is a fixed-size element we can move and reduce
}

absl::Status CheckContiguous(const char* op, const char* which, const Tensor& t) {
  if (!t.defined()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", which, " is undefined"));
  }
  if (!t.is_contiguous()) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", which, " must be contiguous, got ", t.DebugString()));
  }
  return absl::OkStatus();
}

size_t RowBytes(const Tensor& t) {
  size_t bytes = DTypeSize(t.dtype());
  for (int i = 1; i < t.rank(); ++i) bytes *= static_cast<size_t>(t.dim(i));
  return bytes;
}

absl::Status CheckAllGatherShapes(const char* op, const Tensor& input, const Tensor& output,
                                  int world) {
  if (input.dtype() != output.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": dtype mismatch ", DTypeName(input.dtype()), " vs ", DTypeName(output.dtype())));
  }
  if (input.rank() < 1 || !SameTrailingDims(input, output) ||
      output.dim(0) != input.dim(0) * world) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": output shape ", ShapeString(output),
                                                   " must be input shape ", ShapeString(input),
                                                   " with dim 0 times world size ", world));
  }
  return absl::OkStatus();
}

absl::Status CheckReduceScatterShapes(const Tensor& input, const Tensor& output, int world) {
  if (input.dtype() != output.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat("ReduceScatter: dtype mismatch ",
                                                   DTypeName(input.dtype()), " vs ",
                                                   DTypeName(output.dtype())));
  }
  if (output.rank() < 1 || !SameTrailingDims(input, output) ||
      input.dim(0) != output.dim(0) * world) {
    return absl::InvalidArgumentError(
        absl::StrCat("ReduceScatter: input shape ", ShapeString(input), " must be output shape ",
                     ShapeString(output), " with dim 0 times world size ", world));
  }
  return absl::OkStatus();
}

absl::Status CheckAllGatherVShapes(const Tensor& input, const Tensor& output,
                                   absl::Span<const int64_t> counts, int rank, int world) {
  if (static_cast<int>(counts.size()) != world) {
    return absl::InvalidArgumentError(
        absl::StrCat("AllGatherV: ", counts.size(), " counts for world size ", world));
  }
  int64_t total = 0;
  for (int64_t c : counts) {
    if (c < 0) return absl::InvalidArgumentError("AllGatherV: negative count");
    total += c;
  }
  if (input.dtype() != output.dtype()) {
    return absl::InvalidArgumentError("AllGatherV: dtype mismatch");
  }
  if (input.rank() < 1 || !SameTrailingDims(input, output) || input.dim(0) != counts[rank] ||
      output.dim(0) != total) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AllGatherV: input ", ShapeString(input), " must have counts[rank] = ", counts[rank],
        " rows and output ", ShapeString(output), " sum(counts) = ", total,
        " rows with the same trailing dims"));
  }
  return absl::OkStatus();
}

}  // namespace internal
}  // namespace cpserve::comm
