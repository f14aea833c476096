#include "tests/reference/forward_ref.h"

#include <cmath>
#include <limits>

namespace cpserve::reference {
namespace {

using Mat = std::vector<std::vector<double>>;

double At(const Tensor& t, int64_t i) { return static_cast<double>(t.data<float>()[i]); }

// y[T][N] = x[T][K] · W[N][K]^T (+ b[N]).
Mat Linear(const Mat& x, const Tensor& w, const Tensor* b) {
  const int64_t n = w.dim(0), k = w.dim(1);
  Mat y(x.size(), std::vector<double>(n, 0.0));
  for (size_t t = 0; t < x.size(); ++t) {
    for (int64_t o = 0; o < n; ++o) {
      double s = (b != nullptr && b->defined()) ? At(*b, o) : 0.0;
      for (int64_t i = 0; i < k; ++i) s += x[t][i] * At(w, o * k + i);
      y[t][o] = s;
    }
  }
  return y;
}

Mat RmsNorm(const Mat& x, const Tensor& w, double eps) {
  Mat y = x;
  for (auto& row : y) {
    double ss = 0;
    for (double v : row) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / row.size() + eps);
    for (size_t i = 0; i < row.size(); ++i) row[i] = row[i] * inv * At(w, i);
  }
  return y;
}

// In place on x[T][H*D] (HF rotate_half convention).
void Rope(Mat& x, int heads, int d, const std::vector<double>& inv_freq) {
  for (size_t t = 0; t < x.size(); ++t) {
    for (int h = 0; h < heads; ++h) {
      double* v = x[t].data() + h * d;
      std::vector<double> out(d);
      for (int i = 0; i < d; ++i) {
        const int f = i % (d / 2);
        const double angle = static_cast<double>(t) * inv_freq[f];
        const double rot = i < d / 2 ? -v[i + d / 2] : v[i - d / 2];
        out[i] = v[i] * std::cos(angle) + rot * std::sin(angle);
      }
      for (int i = 0; i < d; ++i) v[i] = out[i];
    }
  }
}

}  // namespace

std::vector<double> RopeInverseFrequencies(const ModelConfig& c) {
  const int d = c.head_dim;
  std::vector<double> inv(d / 2);
  for (int i = 0; i < d / 2; ++i) inv[i] = 1.0 / std::pow(c.rope_theta, 2.0 * i / d);
  const RopeScalingConfig& s = c.rope_scaling;
  if (s.type == RopeScalingType::kLinear) {
    for (double& f : inv) f /= s.factor;
  } else if (s.type == RopeScalingType::kLlama3) {
    const double old_ctx = s.original_max_position_embeddings;
    const double low_wavelen = old_ctx / s.low_freq_factor;
    const double high_wavelen = old_ctx / s.high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = f / s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
  }
  return inv;
}

std::vector<std::vector<double>> ForwardLogits(const ModelWeights& w,
                                               const std::vector<int32_t>& tokens) {
  const ModelConfig& c = w.config;
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int H = c.hidden_size, hq = c.num_attention_heads, hkv = c.num_key_value_heads;
  const int d = c.head_dim;
  const std::vector<double> inv_freq = RopeInverseFrequencies(c);

  Mat h(T, std::vector<double>(H));
  for (int64_t t = 0; t < T; ++t) {
    for (int i = 0; i < H; ++i) h[t][i] = At(w.embed_tokens, int64_t{tokens[t]} * H + i);
  }
  for (const LayerWeights& L : w.layers) {
    const Mat x = RmsNorm(h, L.input_norm, c.rms_norm_eps);
    Mat q = Linear(x, L.q_proj, &L.q_bias);
    Mat k = Linear(x, L.k_proj, &L.k_bias);
    const Mat v = Linear(x, L.v_proj, &L.v_bias);
    Rope(q, hq, d, inv_freq);
    Rope(k, hkv, d, inv_freq);
    Mat attn(T, std::vector<double>(hq * d, 0.0));
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    for (int64_t t = 0; t < T; ++t) {
      for (int head = 0; head < hq; ++head) {
        const int kvh = head / (hq / hkv);
        std::vector<double> s(t + 1);
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int i = 0; i < d; ++i) dot += q[t][head * d + i] * k[j][kvh * d + i];
          s[j] = dot * scale;
          m = std::max(m, s[j]);
        }
        double z = 0;
        for (double& e : s) z += (e = std::exp(e - m));
        for (int64_t j = 0; j <= t; ++j) {
          for (int i = 0; i < d; ++i) attn[t][head * d + i] += s[j] / z * v[j][kvh * d + i];
        }
      }
    }
    const Mat o = Linear(attn, L.o_proj, &L.o_bias);
    for (int64_t t = 0; t < T; ++t) {
      for (int i = 0; i < H; ++i) h[t][i] += o[t][i];
    }
    const Mat x2 = RmsNorm(h, L.post_attention_norm, c.rms_norm_eps);
    const Mat g = Linear(x2, L.gate_proj, nullptr);
    const Mat u = Linear(x2, L.up_proj, nullptr);
    Mat a = g;
    for (int64_t t = 0; t < T; ++t) {
      for (size_t i = 0; i < a[t].size(); ++i)
        a[t][i] = g[t][i] / (1 + std::exp(-g[t][i])) * u[t][i];
    }
    const Mat down = Linear(a, L.down_proj, nullptr);
    for (int64_t t = 0; t < T; ++t) {
      for (int i = 0; i < H; ++i) h[t][i] += down[t][i];
    }
  }
  const Mat final_h = RmsNorm(h, w.final_norm, c.rms_norm_eps);
  return Linear(final_h, w.lm_head, nullptr);
}

}  // namespace cpserve::reference
