// Rotary position embedding (RoPE) configuration, Hugging Face Llama convention.
//
// Convention ("rotate_half", NOT interleaved pairs): for a head vector x of size D
// (D even) and i in [0, D/2), with angle a = position * inv_freq[i]:
//   x'[i]       = x[i] * cos(a) - x[i + D/2] * sin(a)
//   x'[i + D/2] = x[i + D/2] * cos(a) + x[i] * sin(a)
// inv_freq[i] = theta^(-2i/D), optionally rescaled as transformers'
// ROPE_INIT_FUNCTIONS do for rope_type "linear" and "llama3". The attention
// scaling factor of those rope types is 1, so cos/sin are not scaled.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cpserve {

enum class RopeScaling : uint8_t {
  kNone,    // rope_scaling absent or rope_type "default"
  kLinear,  // rope_type "linear": inv_freq /= factor
  kLlama3,  // rope_type "llama3": wavelength-dependent interpolation
};

// Parses a Hugging Face rope_type ("default", "linear", "llama3"); others are
// Unimplemented.
absl::StatusOr<RopeScaling> ParseRopeScaling(absl::string_view rope_type);

struct RopeConfig {
  double theta = 10000.0;  // config.json "rope_theta"
  RopeScaling scaling = RopeScaling::kNone;
  // rope_scaling fields (used by kLinear: factor; kLlama3: all four).
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192.0;
};

// inv_freq[i] for i in [0, head_dim/2), in radians per position, computed in
// double exactly as transformers computes it (up to its fp32 rounding).
// head_dim must be even and positive (CHECKed).
std::vector<double> ComputeRopeInvFreq(const RopeConfig& config, int64_t head_dim);

}  // namespace cpserve
