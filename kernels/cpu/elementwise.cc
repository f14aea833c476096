// Embedding, RMSNorm, SwiGLU, residual add and row gather on fp32 CPU tensors.
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/common.h"
#include "kernels/cpu/cpu_backend.h"

namespace cpserve {
namespace {

absl::Status SameRows(const cpu::Rows& a, const cpu::Rows& b, const char* op) {
  if (a.rows != b.rows || a.cols != b.cols) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": shape mismatch [", a.rows, ",", a.cols,
                                                   "] vs [", b.rows, ",", b.cols, "]"));
  }
  return absl::OkStatus();
}

// One row of RMSNorm; sum of squares in double. Safe when out == x.
void RmsNormRow(const float* x, const float* w, float eps, int64_t n, float* out) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * inv * w[i];
}

}  // namespace

absl::Status CpuBackend::Embedding(const Tensor& table, const Tensor& ids, const Tensor& out) {
  CPSERVE_ASSIGN_OR_RETURN(auto t, cpu::AsRows(table, "Embedding table"));
  CPSERVE_ASSIGN_OR_RETURN(auto o, cpu::AsRows(out, "Embedding out"));
  if (absl::Status s = cpu::CheckTensor(ids, DType::kI32, "Embedding ids"); !s.ok()) return s;
  if (ids.rank() != 1 || table.rank() != 2 || out.rank() != 2 || o.rows != ids.dim(0) ||
      o.cols != t.cols) {
    return absl::InvalidArgumentError(absl::StrCat("Embedding: table ", table.DebugString(),
                                                   ", ids ", ids.DebugString(), ", out ",
                                                   out.DebugString(), " (want [V,H], [T], [T,H])"));
  }
  const int32_t* id = ids.data<int32_t>();
  for (int64_t i = 0; i < o.rows; ++i) {
    const int32_t v = id[i * ids.stride(0)];
    if (v < 0 || v >= t.rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("Embedding: id ", v, " at ", i, " outside [0, ", t.rows, ")"));
    }
  }
  for (int64_t i = 0; i < o.rows; ++i) {
    std::memcpy(o.row(i), t.row(id[i * ids.stride(0)]), sizeof(float) * t.cols);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::RmsNorm(const Tensor& x, const Tensor& weight, float eps,
                                 const Tensor& out) {
  CPSERVE_ASSIGN_OR_RETURN(auto xr, cpu::AsRows(x, "RmsNorm x"));
  CPSERVE_ASSIGN_OR_RETURN(auto orr, cpu::AsRows(out, "RmsNorm out"));
  CPSERVE_ASSIGN_OR_RETURN(auto w, cpu::AsRows(weight, "RmsNorm weight"));
  if (absl::Status s = SameRows(xr, orr, "RmsNorm"); !s.ok()) return s;
  if (weight.rank() != 1 || w.cols != xr.cols) {
    return absl::InvalidArgumentError(absl::StrCat("RmsNorm: weight ", weight.DebugString(),
                                                   " does not match hidden size ", xr.cols));
  }
  for (int64_t r = 0; r < xr.rows; ++r) RmsNormRow(xr.row(r), w.data, eps, xr.cols, orr.row(r));
  return absl::OkStatus();
}

absl::Status CpuBackend::AddRmsNorm(const Tensor& residual, const Tensor& x, const Tensor& weight,
                                    float eps, const Tensor& out) {
  CPSERVE_ASSIGN_OR_RETURN(auto rr, cpu::AsRows(residual, "AddRmsNorm residual"));
  CPSERVE_ASSIGN_OR_RETURN(auto xr, cpu::AsRows(x, "AddRmsNorm x"));
  CPSERVE_ASSIGN_OR_RETURN(auto orr, cpu::AsRows(out, "AddRmsNorm out"));
  CPSERVE_ASSIGN_OR_RETURN(auto w, cpu::AsRows(weight, "AddRmsNorm weight"));
  if (absl::Status s = SameRows(rr, xr, "AddRmsNorm"); !s.ok()) return s;
  if (absl::Status s = SameRows(rr, orr, "AddRmsNorm"); !s.ok()) return s;
  if (weight.rank() != 1 || w.cols != xr.cols) {
    return absl::InvalidArgumentError(absl::StrCat("AddRmsNorm: weight ", weight.DebugString(),
                                                   " does not match hidden size ", xr.cols));
  }
  for (int64_t r = 0; r < xr.rows; ++r) {
    float* res = rr.row(r);
    const float* xi = xr.row(r);
    for (int64_t i = 0; i < xr.cols; ++i) res[i] += xi[i];
    RmsNormRow(res, w.data, eps, xr.cols, orr.row(r));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::SiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  CPSERVE_ASSIGN_OR_RETURN(auto g, cpu::AsRows(gate, "SiluMul gate"));
  CPSERVE_ASSIGN_OR_RETURN(auto u, cpu::AsRows(up, "SiluMul up"));
  CPSERVE_ASSIGN_OR_RETURN(auto o, cpu::AsRows(out, "SiluMul out"));
  if (absl::Status s = SameRows(g, u, "SiluMul"); !s.ok()) return s;
  if (absl::Status s = SameRows(g, o, "SiluMul"); !s.ok()) return s;
  for (int64_t r = 0; r < g.rows; ++r) {
    const float* gi = g.row(r);
    const float* ui = u.row(r);
    float* oi = o.row(r);
    for (int64_t i = 0; i < g.cols; ++i) oi[i] = gi[i] / (1.0f + std::exp(-gi[i])) * ui[i];
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Add(const Tensor& a, const Tensor& b, const Tensor& out) {
  CPSERVE_ASSIGN_OR_RETURN(auto ar, cpu::AsRows(a, "Add a"));
  CPSERVE_ASSIGN_OR_RETURN(auto br, cpu::AsRows(b, "Add b"));
  CPSERVE_ASSIGN_OR_RETURN(auto o, cpu::AsRows(out, "Add out"));
  if (a.shape() != b.shape() || a.shape() != out.shape()) {
    return absl::InvalidArgumentError(absl::StrCat("Add: shape mismatch ", a.DebugString(), ", ",
                                                   b.DebugString(), ", ", out.DebugString()));
  }
  for (int64_t r = 0; r < ar.rows; ++r) {
    const float* ai = ar.row(r);
    const float* bi = br.row(r);
    float* oi = o.row(r);
    for (int64_t i = 0; i < ar.cols; ++i) oi[i] = ai[i] + bi[i];
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::GatherRows(const Tensor& x, const Tensor& index, const Tensor& out) {
  if (absl::Status s = cpu::CheckTensor(x, DType::kF32, "GatherRows x"); !s.ok()) return s;
  if (absl::Status s = cpu::CheckTensor(out, DType::kF32, "GatherRows out"); !s.ok()) return s;
  CPSERVE_ASSIGN_OR_RETURN(auto idx, cpu::ReadIndices(index, "GatherRows index"));
  if (x.rank() < 1 || out.rank() != x.rank() || out.dim(0) != static_cast<int64_t>(idx.size())) {
    return absl::InvalidArgumentError(absl::StrCat("GatherRows: x ", x.DebugString(), ", index ",
                                                   index.DebugString(), ", out ",
                                                   out.DebugString()));
  }
  for (int d = 1; d < x.rank(); ++d) {
    if (x.dim(d) != out.dim(d)) {
      return absl::InvalidArgumentError(absl::StrCat("GatherRows: row shape mismatch ",
                                                     x.DebugString(), " vs ", out.DebugString()));
    }
  }
  for (int64_t i : idx) {
    if (i < 0 || i >= x.dim(0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("GatherRows: index ", i, " outside [0, ", x.dim(0), ")"));
    }
  }
  for (size_t i = 0; i < idx.size(); ++i) {
    Tensor src = x.Select(0, idx[i]);
    Tensor dst = out.Select(0, static_cast<int64_t>(i));
    if (absl::Status s = Copy(src, dst); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace cpserve
