#include "kernels/rope.h"

#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace cpserve {

absl::StatusOr<RopeScaling> ParseRopeScaling(absl::string_view rope_type) {
  if (rope_type.empty() || rope_type == "default") return RopeScaling::kNone;
  if (rope_type == "linear") return RopeScaling::kLinear;
  if (rope_type == "llama3") return RopeScaling::kLlama3;
  return absl::UnimplementedError(absl::StrCat("unsupported rope_type '", rope_type, "'"));
}

std::vector<double> ComputeRopeInvFreq(const RopeConfig& config, int64_t head_dim) {
  CHECK(head_dim > 0 && head_dim % 2 == 0) << "head_dim must be even, got " << head_dim;
  const int64_t half = head_dim / 2;
  std::vector<double> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] =
        1.0 / std::pow(config.theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
  }
  switch (config.scaling) {
    case RopeScaling::kNone:
      break;
    case RopeScaling::kLinear:
      for (double& f : inv_freq) f /= config.factor;
      break;
    case RopeScaling::kLlama3: {
      const double old_len = config.original_max_position_embeddings;
      const double low_freq_wavelen = old_len / config.low_freq_factor;
      const double high_freq_wavelen = old_len / config.high_freq_factor;
      for (double& f : inv_freq) {
        const double wavelen = 2.0 * std::numbers::pi / f;
        if (wavelen > low_freq_wavelen) {
          f = f / config.factor;  // low frequency: fully interpolated
        } else if (wavelen >= high_freq_wavelen) {
          // Medium frequency: smooth blend between interpolation and extrapolation.
          const double smooth = (old_len / wavelen - config.low_freq_factor) /
                                (config.high_freq_factor - config.low_freq_factor);
          f = (1.0 - smooth) * f / config.factor + smooth * f;
        }  // high frequency (wavelen < high_freq_wavelen): unchanged
      }
      break;
    }
  }
  return inv_freq;
}

}  // namespace cpserve
