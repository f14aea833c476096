// Embedding, RMSNorm, SwiGLU, residual add, row gather and RoPE: checks, then launch.
#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_backend_impl.h"

namespace cpserve::cuda {
namespace {

absl::Status SameRows(const RowsView& a, const RowsView& b, const char* op) {
  if (a.rows != b.rows || a.cols != b.cols) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": shape mismatch [", a.rows, ",", a.cols,
                                                   "] vs [", b.rows, ",", b.cols, "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CudaBackend::Embedding(const Tensor& table, const Tensor& ids, const Tensor& out) {
  CPSERVE_ASSIGN_OR_RETURN(RowsView t, AsRows(table, device(), DType::kBF16, "Embedding table"));
  CPSERVE_ASSIGN_OR_RETURN(RowsView o, AsRows(out, device(), DType::kBF16, "Embedding out"));
  CPSERVE_RETURN_IF_ERROR(CheckDeviceTensor(ids, device(), DType::kI32, "Embedding ids"));
  if (ids.rank() != 1 || table.rank() != 2 || out.rank() != 2 || o.rows != ids.dim(0) ||
      o.cols != t.cols) {
    return absl::InvalidArgumentError(absl::StrCat("Embedding: table ", table.DebugString(),
                                                   ", ids ", ids.DebugString(), ", out ",
                                                   out.DebugString(), " (want [V,H], [T], [T,H])"));
  }
  EmbeddingParams p{t, o, ids.data<int32_t>(), ids.stride(0), error_flag_};
  return CudaStatus(LaunchEmbedding(p, stream_), "Embedding");
}

absl::Status CudaBackend::RmsNorm(const Tensor& x, const Tensor& weight, float eps,
                                  const Tensor& out) {
  CPSERVE_ASSIGN_OR_RETURN(RowsView xr, AsRows(x, device(), DType::kBF16, "RmsNorm x"));
  CPSERVE_ASSIGN_OR_RETURN(RowsView orr, AsRows(out, device(), DType::kBF16, "RmsNorm out"));
  CPSERVE_ASSIGN_OR_RETURN(RowsView w, AsRows(weight, device(), DType::kBF16, "RmsNorm weight"));
  CPSERVE_RETURN_IF_ERROR(SameRows(xr, orr, "RmsNorm"));
  if (weight.rank() != 1 || w.cols != xr.cols) {
    return absl::InvalidArgumentError(absl::StrCat("RmsNorm: weight ", weight.DebugString(),
                                                   " does not match hidden size ", xr.cols));
  }
  RmsNormParams p;
  p.x = xr;
  p.out = orr;
  p.weight = static_cast<const uint16_t*>(w.data);
  p.eps = eps;
  return CudaStatus(LaunchRmsNorm(p, stream_), "RmsNorm");
}

absl::Status CudaBackend::AddRmsNorm(const Tensor& residual, const Tensor& x, const Tensor& weight,
                                     float eps, const Tensor& out) {
  CPSERVE_ASSIGN_OR_RETURN(RowsView rr,
                           AsRows(residual, device(), DType::kBF16, "AddRmsNorm residual"));
  CPSERVE_ASSIGN_OR_RETURN(RowsView xr, AsRows(x, device(), DType::kBF16, "AddRmsNorm x"));
  CPSERVE_ASSIGN_OR_RETURN(RowsView orr, AsRows(out, device(), DType::kBF16, "AddRmsNorm out"));
  CPSERVE_ASSIGN_OR_RETURN(RowsView w, AsRows(weight, device(), DType::kBF16, "AddRmsNorm weight"));
  CPSERVE_RETURN_IF_ERROR(SameRows(rr, xr, "AddRmsNorm"));
  CPSERVE_RETURN_IF_ERROR(SameRows(rr, orr, "AddRmsNorm"));
  if (weight.rank() != 1 || w.cols != xr.cols) {
    return absl::InvalidArgumentError(absl::StrCat("AddRmsNorm: weight ", weight.DebugString(),
                                                   " does not match hidden size ", xr.cols));
  }
  RmsNormParams p;
  p.x = xr;
  p.out = orr;
  p.residual = rr;
  p.weight = static_cast<const uint16_t*>(w.data);
  p.eps = eps;
  return CudaStatus(LaunchRmsNorm(p, stream_), "AddRmsNorm");
}

absl::Status CudaBackend::SiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  CPSERVE_ASSIGN_OR_RETURN(RowsView g, AsRows(gate, device(), DType::kBF16, "SiluMul gate"));
  CPSERVE_ASSIGN_OR_RETURN(RowsView u, AsRows(up, device(), DType::kBF16, "SiluMul up"));
  CPSERVE_ASSIGN_OR_RETURN(RowsView o, AsRows(out, device(), DType::kBF16, "SiluMul out"));
  CPSERVE_RETURN_IF_ERROR(SameRows(g, u, "SiluMul"));
  CPSERVE_RETURN_IF_ERROR(SameRows(g, o, "SiluMul"));
  return CudaStatus(LaunchBinary({g, u, o, BinaryOp::kSiluMul}, stream_), "SiluMul");
}

absl::Status CudaBackend::Add(const Tensor& a, const Tensor& b, const Tensor& out) {
  CPSERVE_ASSIGN_OR_RETURN(RowsView ar, AsRows(a, device(), DType::kBF16, "Add a"));
  CPSERVE_ASSIGN_OR_RETURN(RowsView br, AsRows(b, device(), DType::kBF16, "Add b"));
  CPSERVE_ASSIGN_OR_RETURN(RowsView o, AsRows(out, device(), DType::kBF16, "Add out"));
  if (a.shape() != b.shape() || a.shape() != out.shape()) {
    return absl::InvalidArgumentError(absl::StrCat("Add: shape mismatch ", a.DebugString(), ", ",
                                                   b.DebugString(), ", ", out.DebugString()));
  }
  return CudaStatus(LaunchBinary({ar, br, o, BinaryOp::kAdd}, stream_), "Add");
}

absl::Status CudaBackend::GatherRows(const Tensor& x, const Tensor& index, const Tensor& out) {
  if (!x.defined() || !out.defined() || !(x.device() == device()) || !(out.device() == device()) ||
      x.dtype() != out.dtype() || x.rank() < 1 || out.rank() != x.rank()) {
    return absl::InvalidArgumentError(
        absl::StrCat("GatherRows: want device x [T, ...] and out [M, ...] of one dtype, got ",
                     x.defined() ? x.DebugString() : "undefined", ", ",
                     out.defined() ? out.DebugString() : "undefined"));
  }
  CPSERVE_RETURN_IF_ERROR(CheckIndexVector(index, device(), out.dim(0), true, "GatherRows index"));
  // Each row (dims 1..) must be one contiguous run of elements.
  int64_t row = 1;
  for (int d = x.rank() - 1; d >= 1; --d) {
    if (x.dim(d) != out.dim(d)) {
      return absl::InvalidArgumentError(absl::StrCat("GatherRows: row shape mismatch ",
                                                     x.DebugString(), " vs ", out.DebugString()));
    }
    if (x.dim(d) > 1 && (x.stride(d) != row || out.stride(d) != row)) {
      return absl::InvalidArgumentError(absl::StrCat("GatherRows: rows of ", x.DebugString(), " / ",
                                                     out.DebugString(), " are not contiguous"));
    }
    row *= x.dim(d);
  }
  const int64_t es = static_cast<int64_t>(DTypeSize(x.dtype()));
  GatherRowsParams p;
  p.x = static_cast<const char*>(x.raw());
  p.out = static_cast<char*>(out.raw());
  p.x_rows = x.dim(0);
  p.out_rows = out.dim(0);
  p.row_bytes = row * es;
  p.x_stride_bytes = x.stride(0) * es;
  p.out_stride_bytes = out.stride(0) * es;
  p.index = index.raw();
  p.index_i64 = index.dtype() == DType::kI64;
  p.index_stride = index.stride(0);
  p.error_flag = error_flag_;
  return CudaStatus(LaunchGatherRows(p, stream_), "GatherRows");
}

absl::Status CudaBackend::Rope(const Tensor& q, const Tensor& k, const Tensor& positions,
                               const RopeConfig& config) {
  CPSERVE_ASSIGN_OR_RETURN(HeadsView qh, AsHeads(q, device(), "Rope q"));
  HeadsView kh;
  if (k.defined()) {
    CPSERVE_ASSIGN_OR_RETURN(kh, AsHeads(k, device(), "Rope k"));
    if (kh.tokens != qh.tokens || kh.dim != qh.dim) {
      return absl::InvalidArgumentError(absl::StrCat("Rope: q ", q.DebugString(), " and k ",
                                                     k.DebugString(), " disagree on T or D"));
    }
  }
  CPSERVE_RETURN_IF_ERROR(CheckIndexVector(positions, device(), qh.tokens, true, "Rope positions"));
  if (qh.dim <= 0 || qh.dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("Rope: head dim must be even, got ", qh.dim));
  }
  CPSERVE_ASSIGN_OR_RETURN(const double* inv_freq, InvFreq(config, qh.dim));
  RopeParams p;
  p.q = qh;
  p.k = kh;
  p.positions = positions.raw();
  p.positions_i64 = positions.dtype() == DType::kI64;
  p.positions_stride = positions.stride(0);
  p.inv_freq = inv_freq;
  return CudaStatus(LaunchRope(p, stream_), "Rope");
}

}  // namespace cpserve::cuda
