#include "tests/reference/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

namespace cpserve::reference {

std::vector<double> RmsNorm(const std::vector<double>& x, const std::vector<double>& w,
                            int64_t tokens, int64_t hidden, double eps) {
  std::vector<double> out(x.size());
  for (int64_t t = 0; t < tokens; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < hidden; ++i) ss += x[t * hidden + i] * x[t * hidden + i];
    const double r = std::sqrt(ss / hidden + eps);
    for (int64_t i = 0; i < hidden; ++i) out[t * hidden + i] = x[t * hidden + i] / r * w[i];
  }
  return out;
}

std::vector<double> Matmul(const std::vector<double>& x, const std::vector<double>& w,
                           const std::vector<double>& bias, int64_t t, int64_t k, int64_t n) {
  std::vector<double> out(t * n);
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = bias.empty() ? 0.0 : bias[j];
      for (int64_t c = 0; c < k; ++c) s += x[i * k + c] * w[j * k + c];
      out[i * n + j] = s;
    }
  }
  return out;
}

std::vector<double> SiluMul(const std::vector<double>& gate, const std::vector<double>& up) {
  std::vector<double> out(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) out[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
  return out;
}

std::vector<double> RopeInvFreq(const RopeConfig& config, int64_t head_dim) {
  std::vector<double> base;
  for (int64_t e = 0; e < head_dim; e += 2) {
    base.push_back(1.0 / std::pow(config.theta, static_cast<double>(e) / head_dim));
  }
  if (config.scaling == RopeScaling::kLinear) {
    for (double& f : base) f = f / config.factor;
  } else if (config.scaling == RopeScaling::kLlama3) {
    // Literal transcription of transformers' _compute_llama3_parameters.
    const double old_ctx = config.original_max_position_embeddings;
    const double low_wl = old_ctx / config.low_freq_factor;
    const double high_wl = old_ctx / config.high_freq_factor;
    for (double& f : base) {
      const double wavelen = 2 * std::numbers::pi / f;
      const double llama = wavelen > low_wl ? f / config.factor : f;
      const double smooth_factor = (old_ctx / wavelen - config.low_freq_factor) /
                                   (config.high_freq_factor - config.low_freq_factor);
      const double smoothed = (1 - smooth_factor) * llama / config.factor + smooth_factor * llama;
      const bool is_medium = !(wavelen < high_wl) && !(wavelen > low_wl);
      f = is_medium ? smoothed : llama;
    }
  }
  return base;
}

std::vector<double> Rope(const std::vector<double>& x, const std::vector<int64_t>& positions,
                         int64_t heads, int64_t head_dim, const RopeConfig& config) {
  const std::vector<double> inv_freq = RopeInvFreq(config, head_dim);
  std::vector<double> out(x.size());
  const int64_t half = head_dim / 2;
  for (size_t t = 0; t < positions.size(); ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const double* in = &x[(t * heads + h) * head_dim];
      double* o = &out[(t * heads + h) * head_dim];
      for (int64_t i = 0; i < head_dim; ++i) {
        // rotate_half(x)[i] = -x[i + half] for i < half, x[i - half] otherwise.
        const double rot = i < half ? -in[i + half] : in[i - half];
        const double angle = positions[t] * inv_freq[i % half];
        o[i] = in[i] * std::cos(angle) + rot * std::sin(angle);
      }
    }
  }
  return out;
}

AttentionResult Attention(const std::vector<double>& q, const std::vector<double>& k,
                          const std::vector<double>& v, int64_t q_tokens, int64_t q_heads,
                          int64_t kv_heads, int64_t head_dim,
                          const std::vector<std::vector<int64_t>>& visible, double scale) {
  AttentionResult r;
  r.o.assign(q_tokens * q_heads * head_dim, 0.0);
  r.lse.assign(q_tokens * q_heads, -std::numeric_limits<double>::infinity());
  const int64_t group = q_heads / kv_heads;
  for (int64_t i = 0; i < q_tokens; ++i) {
    for (int64_t h = 0; h < q_heads; ++h) {
      const int64_t kvh = h / group;
      const std::vector<int64_t>& keys = visible[i];
      if (keys.empty()) continue;
      std::vector<double> s(keys.size());
      for (size_t j = 0; j < keys.size(); ++j) {
        double dot = 0;
        for (int64_t c = 0; c < head_dim; ++c) {
          dot += q[(i * q_heads + h) * head_dim + c] * k[(keys[j] * kv_heads + kvh) * head_dim + c];
        }
        s[j] = dot * scale;
      }
      const double m = *std::max_element(s.begin(), s.end());
      double sum = 0;
      for (double x : s) sum += std::exp(x - m);
      r.lse[i * q_heads + h] = m + std::log(sum);
      for (size_t j = 0; j < keys.size(); ++j) {
        const double p = std::exp(s[j] - m) / sum;
        for (int64_t c = 0; c < head_dim; ++c) {
          r.o[(i * q_heads + h) * head_dim + c] += p * v[(keys[j] * kv_heads + kvh) * head_dim + c];
        }
      }
    }
  }
  return r;
}

std::vector<std::vector<int64_t>> VisibleKeys(int64_t q_len, int64_t keys, bool causal) {
  std::vector<std::vector<int64_t>> vis(q_len);
  for (int64_t j = 0; j < q_len; ++j) {
    const int64_t last = causal ? keys - q_len + j : keys - 1;
    for (int64_t c = 0; c <= last && c < keys; ++c) vis[j].push_back(c);
  }
  return vis;
}

std::vector<double> SamplingProbs(const std::vector<double>& logits, const SamplingParams& params) {
  const int64_t n = static_cast<int64_t>(logits.size());
  std::vector<double> out(n, 0.0);
  if (params.temperature <= 0) {
    int64_t best = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    out[best] = 1.0;
    return out;
  }
  std::vector<double> p(n);
  const double m = *std::max_element(logits.begin(), logits.end()) / params.temperature;
  for (int64_t i = 0; i < n; ++i) p[i] = std::exp(logits[i] / params.temperature - m);
  // Rank: descending probability, lower id first on ties.
  std::vector<int64_t> idx(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  const int64_t k = params.top_k > 0 ? std::min<int64_t>(params.top_k, n) : n;
  double topk_mass = 0;
  for (int64_t i = 0; i < k; ++i) topk_mass += p[idx[i]];
  int64_t keep = k;
  if (params.top_p < 1) {
    double cum = 0;
    for (keep = 0; keep < k;) {
      cum += p[idx[keep++]];
      if (cum / topk_mass >= params.top_p) break;
    }
  }
  double mass = 0;
  for (int64_t i = 0; i < keep; ++i) mass += p[idx[i]];
  for (int64_t i = 0; i < keep; ++i) out[idx[i]] = p[idx[i]] / mass;
  return out;
}

}  // namespace cpserve::reference
