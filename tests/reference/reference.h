// Naive float64 reference implementations of the kernels, for tests only. They
// are written independently of kernels/cpu (plain loops, explicit key lists) and
// favour obviousness over speed. Arrays are row-major std::vector<double>.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/rope.h"
#include "kernels/sampling.h"

namespace cpserve::reference {

// out [T, H] = x / sqrt(mean(x^2) + eps) * w.
std::vector<double> RmsNorm(const std::vector<double>& x, const std::vector<double>& w,
                            int64_t tokens, int64_t hidden, double eps);

// out [T, N] = x [T, K] · w [N, K]^T + bias [N] (bias may be empty).
std::vector<double> Matmul(const std::vector<double>& x, const std::vector<double>& w,
                           const std::vector<double>& bias, int64_t t, int64_t k, int64_t n);

// out = silu(gate) * up, elementwise.
std::vector<double> SiluMul(const std::vector<double>& gate, const std::vector<double>& up);

// inv_freq [D/2] following transformers' _compute_default / _linear / _llama3 rope parameters.
std::vector<double> RopeInvFreq(const RopeConfig& config, int64_t head_dim);

// x [T, H, D] rotated at positions [T] ("rotate_half" convention).
std::vector<double> Rope(const std::vector<double>& x, const std::vector<int64_t>& positions,
                         int64_t heads, int64_t head_dim, const RopeConfig& config);

struct AttentionResult {
  std::vector<double> o;    // [Tq, Hq, D]
  std::vector<double> lse;  // [Tq, Hq]; -inf where a query sees no key
};

// Dense attention: query i (all heads) sees the keys listed in visible[i]
// (indices into k / v [L, Hkv, D]). GQA: head h reads KV head h / (Hq / Hkv).
AttentionResult Attention(const std::vector<double>& q, const std::vector<double>& k,
                          const std::vector<double>& v, int64_t q_tokens, int64_t q_heads,
                          int64_t kv_heads, int64_t head_dim,
                          const std::vector<std::vector<int64_t>>& visible, double scale);

// visible lists for q_len queries over `keys` keys: bottom-right aligned causal
// (query j sees 0 .. keys - q_len + j) or all keys.
std::vector<std::vector<int64_t>> VisibleKeys(int64_t q_len, int64_t keys, bool causal);

// The probability of each token under SamplingParams (kernels/sampling.h);
// greedy puts mass 1 on the lowest-id argmax.
std::vector<double> SamplingProbs(const std::vector<double>& logits, const SamplingParams& params);

}  // namespace cpserve::reference
