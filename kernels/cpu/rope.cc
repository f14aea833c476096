// Rotary position embedding, in place, HF "rotate_half" convention (kernels/rope.h).
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/common.h"
#include "kernels/cpu/cpu_backend.h"

namespace cpserve {
namespace {

void RotateHeads(const cpu::Heads& x, int64_t t, const float* cos, const float* sin) {
  const int64_t half = x.dim / 2;
  for (int64_t h = 0; h < x.heads; ++h) {
    float* p = x.at(t, h);
    for (int64_t i = 0; i < half; ++i) {
      const float a = p[i], b = p[i + half];
      p[i] = a * cos[i] - b * sin[i];
      p[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

}  // namespace

absl::Status CpuBackend::Rope(const Tensor& q, const Tensor& k, const Tensor& positions,
                              const RopeConfig& config) {
  CPSERVE_ASSIGN_OR_RETURN(auto qh, cpu::AsHeads(q, "Rope q"));
  cpu::Heads kh;
  if (k.defined()) {
    CPSERVE_ASSIGN_OR_RETURN(auto kk, cpu::AsHeads(k, "Rope k"));
    kh = kk;
    if (kh.tokens != qh.tokens || kh.dim != qh.dim) {
      return absl::InvalidArgumentError(absl::StrCat("Rope: q ", q.DebugString(), " and k ",
                                                     k.DebugString(), " disagree on T or D"));
    }
  }
  CPSERVE_ASSIGN_OR_RETURN(auto pos, cpu::ReadIndices(positions, "Rope positions"));
  if (static_cast<int64_t>(pos.size()) != qh.tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("Rope: positions ", positions.DebugString(), " for ", qh.tokens, " tokens"));
  }
  if (qh.dim <= 0 || qh.dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("Rope: head dim must be even, got ", qh.dim));
  }
  const std::vector<double> inv_freq = ComputeRopeInvFreq(config, qh.dim);
  const int64_t half = qh.dim / 2;
  std::vector<float> cos(half), sin(half);
  for (int64_t t = 0; t < qh.tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(pos[t]) * inv_freq[i];
      cos[i] = static_cast<float>(std::cos(angle));
      sin[i] = static_cast<float>(std::sin(angle));
    }
    RotateHeads(qh, t, cos.data(), sin.data());
    if (k.defined()) RotateHeads(kh, t, cos.data(), sin.data());
  }
  return absl::OkStatus();
}

}  // namespace cpserve
