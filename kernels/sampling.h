// Token sampling parameters and the counter-based random numbers behind them.
//
// For one row of logits z[V]: temperature == 0 -> argmax (ties: lowest id).
// Otherwise p = softmax(z / temperature) in double; candidates are sorted by
// descending p (ties: lower id first), cut to the first top_k (0 = all), then to
// the shortest prefix whose cumulative probability (relative to the top-k mass)
// is >= top_p (top_p >= 1 keeps all; at least one token is always kept). With
// kept masses p_0..p_{n-1} in that order and S = their sum, the token is the
// first index i with p_0 + ... + p_i > u * S, where u = SamplingUniform(seed,
// step) (the last kept token if rounding leaves none). The result depends only
// on the row's logits and parameters, never on the batch it was sampled in.
#pragma once

#include <cstdint>

namespace cpserve {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  int32_t top_k = 0;         // 0 = no limit
  float top_p = 1.0f;        // in (0, 1]
  uint64_t seed = 0;         // per request
  uint64_t step = 0;         // index of the token being generated
};

// SplitMix64 finaliser (Steele et al.), integer-only, so GPUs reproduce it exactly.
inline uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// 64 random bits for (seed, step): Mix64(seed ^ Mix64(step + golden)).
inline uint64_t SamplingBits(uint64_t seed, uint64_t step) {
  return Mix64(seed ^ Mix64(step + 0x9E3779B97F4A7C15ULL));
}

// Uniform double in [0, 1): the top 53 bits of SamplingBits, times 2^-53.
inline double SamplingUniform(uint64_t seed, uint64_t step) {
  return static_cast<double>(SamplingBits(seed, step) >> 11) * 0x1.0p-53;
}

}  // namespace cpserve
