// Linear on cuBLASLt: out[T, N] = x[T, K] · w[N, K]^T (+ bias), bf16 inputs, fp32
// accumulation, bf16 or fp32 output. Row-major operands are read as column-major
// transposes: D^T[N, T] = W^T(op T of col-major [K, N]) · X^T(col-major [K, T]).
// Any K and leading dimension is accepted: the heuristic is told each pointer's
// real alignment, and an (unexpected) empty heuristic answer is Unimplemented.
#include <array>
#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_backend_impl.h"

namespace cpserve::cuda {
namespace {

absl::Status LtStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cublasLtGetStatusName(s), ": ", cublasLtGetStatusString(s)));
}
#define CPSERVE_LT_RETURN_IF_ERROR(expr) CPSERVE_RETURN_IF_ERROR(LtStatus((expr), #expr))

// Largest power of two (<= 256) dividing the address.
uint32_t Alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al >>= 1;
  return al;
}

struct LtDeleter {
  void operator()(cublasLtMatmulDescOpaque_t* d) const { cublasLtMatmulDescDestroy(d); }
  void operator()(cublasLtMatrixLayoutOpaque_t* l) const { cublasLtMatrixLayoutDestroy(l); }
  void operator()(cublasLtMatmulPreferenceOpaque_t* p) const { cublasLtMatmulPreferenceDestroy(p); }
};
using Desc = std::unique_ptr<cublasLtMatmulDescOpaque_t, LtDeleter>;
using Layout = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, LtDeleter>;
using Pref = std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, LtDeleter>;

absl::StatusOr<Layout> MakeLayout(cudaDataType t, int64_t rows, int64_t cols, int64_t ld) {
  cublasLtMatrixLayout_t l = nullptr;
  CPSERVE_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&l, t, rows, cols, ld));
  return Layout(l);
}

}  // namespace

absl::Status CudaBackend::Linear(const Tensor& x, const Tensor& w, const Tensor& bias,
                                 const Tensor& out) {
  CPSERVE_ASSIGN_OR_RETURN(RowsView xr, AsRows(x, device(), DType::kBF16, "Linear x"));
  CPSERVE_ASSIGN_OR_RETURN(RowsView wr, AsRows(w, device(), DType::kBF16, "Linear w"));
  const bool out_f32 = out.defined() && out.dtype() == DType::kF32;
  CPSERVE_ASSIGN_OR_RETURN(
      RowsView o, AsRows(out, device(), out_f32 ? DType::kF32 : DType::kBF16, "Linear out"));
  if (x.rank() != 2 || w.rank() != 2 || out.rank() != 2 || xr.cols != wr.cols ||
      o.rows != xr.rows || o.cols != wr.rows) {
    return absl::InvalidArgumentError(absl::StrCat("Linear: x ", x.DebugString(), ", w ",
                                                   w.DebugString(), ", out ", out.DebugString(),
                                                   " (want [T,K], [N,K], [T,N])"));
  }
  BiasParams bp;
  if (bias.defined()) {
    const bool bias_f32 = bias.dtype() == DType::kF32;
    CPSERVE_ASSIGN_OR_RETURN(
        RowsView br, AsRows(bias, device(), bias_f32 ? DType::kF32 : DType::kBF16, "Linear bias"));
    if (bias.rank() != 1 || br.cols != wr.rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("Linear: bias ", bias.DebugString(), " does not match N=", wr.rows));
    }
    bp = BiasParams{o, out_f32, br.data, bias_f32};
  }
  const int64_t t = xr.rows, n = wr.rows, k = xr.cols;
  if (t == 0 || n == 0) return absl::OkStatus();
  const size_t out_es = out_f32 ? 4 : 2;
  if (k == 0) {
    CPSERVE_CUDA_RETURN_IF_ERROR(
        cudaMemset2DAsync(o.data, o.stride * out_es, 0, n * out_es, t, stream_), "Linear zero");
  } else {
    const int64_t ldx = t > 1 ? xr.stride : k;
    const int64_t ldw = n > 1 ? wr.stride : k;
    const int64_t ldo = t > 1 ? o.stride : n;
    const cudaDataType out_type = out_f32 ? CUDA_R_32F : CUDA_R_16BF;
    cublasLtMatmulDesc_t desc_raw = nullptr;
    CPSERVE_LT_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&desc_raw, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    Desc desc(desc_raw);
    const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
    CPSERVE_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.get(), CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)));
    CPSERVE_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.get(), CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)));
    CPSERVE_ASSIGN_OR_RETURN(Layout a, MakeLayout(CUDA_R_16BF, k, n, ldw));
    CPSERVE_ASSIGN_OR_RETURN(Layout b, MakeLayout(CUDA_R_16BF, k, t, ldx));
    CPSERVE_ASSIGN_OR_RETURN(Layout d, MakeLayout(out_type, n, t, ldo));
    const uint32_t al_a = Alignment(wr.data), al_b = Alignment(xr.data), al_d = Alignment(o.data);
    const std::array<int64_t, 10> key = {t, n, k, ldx, ldw, ldo, out_f32, al_a, al_b, al_d};
    auto it = algo_cache_.find(key);
    if (it == algo_cache_.end()) {
      cublasLtMatmulPreference_t pref_raw = nullptr;
      CPSERVE_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref_raw));
      Pref pref(pref_raw);
      const uint64_t ws = workspace_bytes_;
      CPSERVE_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
          pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
      const std::array<std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t>, 4> aligns = {
          {{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, al_a},
           {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, al_b},
           {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, al_d},
           {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, al_d}}};
      for (const auto& [attr, value] : aligns) {
        CPSERVE_LT_RETURN_IF_ERROR(
            cublasLtMatmulPreferenceSetAttribute(pref.get(), attr, &value, sizeof(value)));
      }
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      CPSERVE_LT_RETURN_IF_ERROR(cublasLtMatmulAlgoGetHeuristic(
          lt_, desc.get(), a.get(), b.get(), d.get(), d.get(), pref.get(), 1, &result, &found));
      if (found == 0) {
        return absl::UnimplementedError(absl::StrCat(
            "Linear: cuBLASLt has no bf16 algorithm for T=", t, " N=", n, " K=", k, " (ld ", ldx,
            "/", ldw, "/", ldo, ", alignments ", al_a, "/", al_b, "/", al_d, " bytes)"));
      }
      it = algo_cache_.emplace(key, result.algo).first;
    }
    const float alpha = 1.0f, beta = 0.0f;
    CPSERVE_LT_RETURN_IF_ERROR(cublasLtMatmul(lt_, desc.get(), &alpha, wr.data, a.get(), xr.data,
                                              b.get(), &beta, o.data, d.get(), o.data, d.get(),
                                              &it->second, workspace_, workspace_bytes_, stream_));
  }
  if (bias.defined()) {
    CPSERVE_RETURN_IF_ERROR(CudaStatus(LaunchAddBias(bp, stream_), "Linear bias"));
  }
  return CudaStatus(cudaGetLastError(), "Linear");
}

}  // namespace cpserve::cuda
