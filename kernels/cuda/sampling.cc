// Sample: greedy rows on the device (argmax, ties to the lowest id); rows with
// temperature > 0 are copied to the host and sampled with the CPU reference's
// exact algorithm (kernels/cpu sampling), then their ids are uploaded. First
// version: a device top-k / top-p sampler can replace the host path later.
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend_impl.h"

namespace cpserve::cuda {

absl::Status CudaBackend::Sample(const Tensor& logits, absl::Span<const SamplingParams> params,
                                 const Tensor& ids) {
  const bool f32 = logits.defined() && logits.dtype() == DType::kF32;
  CPSERVE_ASSIGN_OR_RETURN(
      RowsView lg, AsRows(logits, device(), f32 ? DType::kF32 : DType::kBF16, "Sample logits"));
  CPSERVE_RETURN_IF_ERROR(CheckDeviceTensor(ids, device(), DType::kI32, "Sample ids"));
  if (logits.rank() != 2 || ids.rank() != 1 || ids.dim(0) != lg.rows ||
      static_cast<int64_t>(params.size()) != lg.rows || lg.cols == 0) {
    return absl::InvalidArgumentError(absl::StrCat("Sample: logits ", logits.DebugString(),
                                                   ", ids ", ids.DebugString(), ", ", params.size(),
                                                   " params (want [S, V>0], [S], S)"));
  }
  std::vector<int64_t> host_rows;
  for (size_t r = 0; r < params.size(); ++r) {
    const SamplingParams& sp = params[r];
    if (!(sp.temperature >= 0.0f) || sp.top_k < 0 || !(sp.top_p > 0.0f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Sample: bad params temperature=", sp.temperature, " top_k=", sp.top_k,
                       " top_p=", sp.top_p));
    }
    if (sp.temperature > 0.0f) host_rows.push_back(static_cast<int64_t>(r));
  }
  ArgmaxParams p{lg, f32, ids.data<int32_t>(), ids.stride(0)};
  CPSERVE_RETURN_IF_ERROR(CudaStatus(LaunchArgmax(p, stream_), "Sample argmax"));
  if (host_rows.empty()) return absl::OkStatus();
  const auto cpu = MakeCpuBackend();
  const int64_t vocab = lg.cols;
  Tensor row_logits = Tensor::Zeros({1, vocab}, DType::kF32);
  Tensor row_id = Tensor::Zeros({1}, DType::kI32);
  for (int64_t r : host_rows) {
    CPSERVE_RETURN_IF_ERROR(CopyToHost(logits.Slice(0, r, r + 1), row_logits));
    CPSERVE_RETURN_IF_ERROR(cpu->Sample(row_logits, params.subspan(r, 1), row_id));
    CPSERVE_RETURN_IF_ERROR(CopyFromHost(row_id, ids.Slice(0, r, r + 1)));
    // The upload reads row_id from pageable memory before returning; reusing it is safe.
  }
  return absl::OkStatus();
}

}  // namespace cpserve::cuda
