// Merging partial attention results over disjoint key sets (DESIGN §4).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/common.h"
#include "kernels/cpu/cpu_backend.h"

namespace cpserve {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

absl::Status SameAttnShape(const cpu::Heads& a, const cpu::Rows& la, const cpu::Heads& b,
                           const cpu::Rows& lb, const char* op) {
  if (a.tokens != b.tokens || a.heads != b.heads || a.dim != b.dim || la.rows != a.tokens ||
      la.cols != a.heads || lb.rows != b.tokens || lb.cols != b.heads) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": O [T, H, D] and LSE [T, H] shapes disagree"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CpuBackend::MergeAttentionStates(const Tensor& o_a, const Tensor& lse_a,
                                              const Tensor& o_b, const Tensor& lse_b,
                                              const Tensor& o, const Tensor& lse) {
  constexpr const char* kOp = "MergeAttentionStates";
  CPSERVE_ASSIGN_OR_RETURN(auto oa, cpu::AsHeads(o_a, "MergeAttentionStates o_a"));
  CPSERVE_ASSIGN_OR_RETURN(auto ob, cpu::AsHeads(o_b, "MergeAttentionStates o_b"));
  CPSERVE_ASSIGN_OR_RETURN(auto oo, cpu::AsHeads(o, "MergeAttentionStates o"));
  CPSERVE_ASSIGN_OR_RETURN(auto la, cpu::AsLse(lse_a, "MergeAttentionStates lse_a"));
  CPSERVE_ASSIGN_OR_RETURN(auto lb, cpu::AsLse(lse_b, "MergeAttentionStates lse_b"));
  CPSERVE_ASSIGN_OR_RETURN(auto lo, cpu::AsLse(lse, "MergeAttentionStates lse"));
  if (absl::Status s = SameAttnShape(oa, la, ob, lb, kOp); !s.ok()) return s;
  if (absl::Status s = SameAttnShape(oa, la, oo, lo, kOp); !s.ok()) return s;
  const int64_t d = oa.dim;
  for (int64_t t = 0; t < oa.tokens; ++t) {
    for (int64_t h = 0; h < oa.heads; ++h) {
      const double a = la.row(t)[h], b = lb.row(t)[h];
      const float* pa = oa.at(t, h);
      const float* pb = ob.at(t, h);
      float* out = oo.at(t, h);
      const double m = std::max(a, b);
      if (m == kNegInf) {  // both empty
        std::fill(out, out + d, 0.0f);
        lo.row(t)[h] = static_cast<float>(kNegInf);
        continue;
      }
      const double wa = std::exp(a - m), wb = std::exp(b - m);
      if (wb == 0.0) {  // exactly the other side, bit for bit
        if (out != pa) std::memmove(out, pa, sizeof(float) * d);
        lo.row(t)[h] = static_cast<float>(a);
        continue;
      }
      if (wa == 0.0) {
        if (out != pb) std::memmove(out, pb, sizeof(float) * d);
        lo.row(t)[h] = static_cast<float>(b);
        continue;
      }
      const double inv = 1.0 / (wa + wb);
      const float fa = static_cast<float>(wa * inv), fb = static_cast<float>(wb * inv);
      for (int64_t i = 0; i < d; ++i) out[i] = fa * pa[i] + fb * pb[i];
      lo.row(t)[h] = static_cast<float>(m + std::log(wa + wb));
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::CombineLse(const Tensor& lse_parts, const Tensor& lse) {
  if (absl::Status s = cpu::CheckTensor(lse_parts, DType::kF32, "CombineLse lse_parts"); !s.ok()) {
    return s;
  }
  CPSERVE_ASSIGN_OR_RETURN(auto lo, cpu::AsLse(lse, "CombineLse lse"));
  if (lse_parts.rank() != 3 || lse_parts.dim(1) != lo.rows || lse_parts.dim(2) != lo.cols) {
    return absl::InvalidArgumentError(absl::StrCat("CombineLse: lse_parts ",
                                                   lse_parts.DebugString(), " vs lse ",
                                                   lse.DebugString(), " (want [N,T,H], [T,H])"));
  }
  const int64_t n = lse_parts.dim(0);
  const float* base = lse_parts.data<float>();
  auto part = [&](int64_t r, int64_t t, int64_t h) {
    return static_cast<double>(
        base[r * lse_parts.stride(0) + t * lse_parts.stride(1) + h * lse_parts.stride(2)]);
  };
  for (int64_t t = 0; t < lo.rows; ++t) {
    for (int64_t h = 0; h < lo.cols; ++h) {
      double m = kNegInf;
      for (int64_t r = 0; r < n; ++r) m = std::max(m, part(r, t, h));
      if (m == kNegInf) {
        lo.row(t)[h] = static_cast<float>(kNegInf);
        continue;
      }
      double sum = 0.0;
      for (int64_t r = 0; r < n; ++r) sum += std::exp(part(r, t, h) - m);
      lo.row(t)[h] = static_cast<float>(m + std::log(sum));
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::RescaleAttentionOutput(const Tensor& o, const Tensor& lse_local,
                                                const Tensor& lse_total) {
  CPSERVE_ASSIGN_OR_RETURN(auto oo, cpu::AsHeads(o, "RescaleAttentionOutput o"));
  CPSERVE_ASSIGN_OR_RETURN(auto ll, cpu::AsLse(lse_local, "RescaleAttentionOutput lse_local"));
  CPSERVE_ASSIGN_OR_RETURN(auto lt, cpu::AsLse(lse_total, "RescaleAttentionOutput lse_total"));
  if (ll.rows != oo.tokens || ll.cols != oo.heads || lt.rows != oo.tokens || lt.cols != oo.heads) {
    return absl::InvalidArgumentError(
        "RescaleAttentionOutput: want o [T, H, D], lse_local and lse_total [T, H]");
  }
  for (int64_t t = 0; t < oo.tokens; ++t) {
    for (int64_t h = 0; h < oo.heads; ++h) {
      const double local = ll.row(t)[h], total = lt.row(t)[h];
      const float w = local == kNegInf ? 0.0f : static_cast<float>(std::exp(local - total));
      float* p = oo.at(t, h);
      if (w == 0.0f) {
        std::fill(p, p + oo.dim, 0.0f);  // also clears NaN/garbage rows of empty shards
      } else {
        for (int64_t i = 0; i < oo.dim; ++i) p[i] *= w;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace cpserve
