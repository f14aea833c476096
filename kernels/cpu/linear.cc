// Linear: out[T, N] = x[T, K] · w[N, K]^T (+ bias) on OpenBLAS sgemm.
#include <cblas.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/common.h"
#include "kernels/cpu/cpu_backend.h"

namespace cpserve {

absl::Status CpuBackend::Linear(const Tensor& x, const Tensor& w, const Tensor& bias,
                                const Tensor& out) {
  CPSERVE_ASSIGN_OR_RETURN(auto xr, cpu::AsRows(x, "Linear x"));
  CPSERVE_ASSIGN_OR_RETURN(auto wr, cpu::AsRows(w, "Linear w"));
  CPSERVE_ASSIGN_OR_RETURN(auto o, cpu::AsRows(out, "Linear out"));
  if (x.rank() != 2 || w.rank() != 2 || out.rank() != 2 || xr.cols != wr.cols ||
      o.rows != xr.rows || o.cols != wr.rows) {
    return absl::InvalidArgumentError(absl::StrCat("Linear: x ", x.DebugString(), ", w ",
                                                   w.DebugString(), ", out ", out.DebugString(),
                                                   " (want [T,K], [N,K], [T,N])"));
  }
  const float* b = nullptr;
  if (bias.defined()) {
    CPSERVE_ASSIGN_OR_RETURN(auto br, cpu::AsRows(bias, "Linear bias"));
    if (bias.rank() != 1 || br.cols != wr.rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("Linear: bias ", bias.DebugString(), " does not match N=", wr.rows));
    }
    b = br.data;
  }
  const int64_t t = xr.rows, n = wr.rows, k = xr.cols;
  if (t == 0 || n == 0) return absl::OkStatus();
  if (b != nullptr) {
    for (int64_t r = 0; r < t; ++r) std::memcpy(o.row(r), b, sizeof(float) * n);
  } else if (k == 0) {
    for (int64_t r = 0; r < t; ++r) std::memset(o.row(r), 0, sizeof(float) * n);
  }
  if (k == 0) return absl::OkStatus();
  // BLAS needs leading dimensions >= the row length even for a single row.
  const int64_t ldx = t > 1 ? xr.stride : k;
  const int64_t ldw = n > 1 ? wr.stride : k;
  const int64_t ldo = t > 1 ? o.stride : n;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(t), static_cast<int>(n),
              static_cast<int>(k), 1.0f, xr.data, static_cast<int>(ldx), wr.data,
              static_cast<int>(ldw), b != nullptr ? 1.0f : 0.0f, o.data, static_cast<int>(ldo));
  return absl::OkStatus();
}

}  // namespace cpserve
