#include "worker/model/llama_model.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace cpserve {

RopeConfig RopeConfigOf(const ModelConfig& c) {
  RopeConfig r;
  r.theta = c.rope_theta;
  r.factor = c.rope_scaling.factor;
  r.low_freq_factor = c.rope_scaling.low_freq_factor;
  r.high_freq_factor = c.rope_scaling.high_freq_factor;
  r.original_max_position_embeddings =
      static_cast<double>(c.rope_scaling.original_max_position_embeddings);
  switch (c.rope_scaling.type) {
    case RopeScalingType::kNone:
      r.scaling = RopeScaling::kNone;
      break;
    case RopeScalingType::kLinear:
      r.scaling = RopeScaling::kLinear;
      break;
    case RopeScalingType::kLlama3:
      r.scaling = RopeScaling::kLlama3;
      break;
  }
  return r;
}

LlamaModel::LlamaModel(const ModelWeights& weights, Backend& backend)
    : weights_(weights), backend_(backend), rope_(RopeConfigOf(weights.config)) {}

absl::StatusOr<Tensor> LlamaModel::Forward(const ForwardInput& in, AttentionLayer& attention) {
  const ModelConfig& c = weights_.config;
  const int64_t T = static_cast<int64_t>(in.tokens.size());
  if (static_cast<int64_t>(in.positions.size()) != T) {
    return absl::InvalidArgumentError(
        absl::StrCat("forward: ", T, " tokens but ", in.positions.size(), " positions"));
  }
  const DType dt = backend_.ComputeDType();
  const int64_t H = c.hidden_size, hq = c.num_attention_heads, hkv = c.num_key_value_heads;
  const int64_t d = c.head_dim, ffn = c.intermediate_size;
  for (int64_t row : in.logit_rows) {
    if (row < 0 || row >= T) return absl::InvalidArgumentError("forward: logit row out of range");
  }
  const int64_t S = static_cast<int64_t>(in.logit_rows.size());
  if (T == 0) {
    // No tokens on this rank, but the attention layer may still take part in its
    // group's collectives: call it for every layer with empty tensors.
    CPSERVE_ASSIGN_OR_RETURN(Tensor q, backend_.Alloc({0, hq, d}, dt));
    CPSERVE_ASSIGN_OR_RETURN(Tensor kv, backend_.Alloc({0, hkv, d}, dt));
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      CPSERVE_RETURN_IF_ERROR(attention.Forward(l, q, kv, kv, q));
    }
    return backend_.Alloc({S, c.vocab_size}, DType::kF32);
  }

  // Inputs to the device.
  absl::StatusOr<Tensor> ids = backend_.Alloc({T}, DType::kI32);
  absl::StatusOr<Tensor> pos = backend_.Alloc({T}, DType::kI64);
  if (!ids.ok()) return ids.status();
  if (!pos.ok()) return pos.status();
  CPSERVE_RETURN_IF_ERROR(backend_.CopyFromHost(
      Tensor::Borrow(const_cast<int32_t*>(in.tokens.data()), {T}, DType::kI32), *ids));
  CPSERVE_RETURN_IF_ERROR(backend_.CopyFromHost(
      Tensor::Borrow(const_cast<int64_t*>(in.positions.data()), {T}, DType::kI64), *pos));

  // Activations: residual stream h, normed x, q/k/v, attention out, MLP.
  auto alloc = [&](Shape s) { return backend_.Alloc(s, dt); };
  absl::StatusOr<Tensor> h = alloc({T, H}), x = alloc({T, H}), q = alloc({T, hq, d}),
                         k = alloc({T, hkv, d}), v = alloc({T, hkv, d}), attn = alloc({T, hq, d}),
                         proj = alloc({T, H}), gate = alloc({T, ffn}), up = alloc({T, ffn});
  for (const auto* t : {&h, &x, &q, &k, &v, &attn, &proj, &gate, &up}) {
    if (!t->ok()) return t->status();
  }
  // 2-D views [T, heads * D] of the same buffers for the projections.
  const Tensor q2 = *q->Reshape({T, hq * d}), k2 = *k->Reshape({T, hkv * d}),
               v2 = *v->Reshape({T, hkv * d}), attn2 = *attn->Reshape({T, hq * d});

  CPSERVE_RETURN_IF_ERROR(backend_.Embedding(weights_.embed_tokens, *ids, *h));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& L = weights_.layers[l];
    CPSERVE_RETURN_IF_ERROR(backend_.RmsNorm(*h, L.input_norm, c.rms_norm_eps, *x));
    CPSERVE_RETURN_IF_ERROR(backend_.Linear(*x, L.q_proj, L.q_bias, q2));
    CPSERVE_RETURN_IF_ERROR(backend_.Linear(*x, L.k_proj, L.k_bias, k2));
    CPSERVE_RETURN_IF_ERROR(backend_.Linear(*x, L.v_proj, L.v_bias, v2));
    CPSERVE_RETURN_IF_ERROR(backend_.Rope(*q, *k, *pos, rope_));
    CPSERVE_RETURN_IF_ERROR(attention.Forward(l, *q, *k, *v, *attn));
    CPSERVE_RETURN_IF_ERROR(backend_.Linear(attn2, L.o_proj, L.o_bias, *proj));
    CPSERVE_RETURN_IF_ERROR(
        backend_.AddRmsNorm(*h, *proj, L.post_attention_norm, c.rms_norm_eps, *x));
    CPSERVE_RETURN_IF_ERROR(backend_.Linear(*x, L.gate_proj, Tensor(), *gate));
    CPSERVE_RETURN_IF_ERROR(backend_.Linear(*x, L.up_proj, Tensor(), *up));
    CPSERVE_RETURN_IF_ERROR(backend_.SiluMul(*gate, *up, *gate));
    CPSERVE_RETURN_IF_ERROR(backend_.Linear(*gate, L.down_proj, Tensor(), *proj));
    CPSERVE_RETURN_IF_ERROR(backend_.Add(*h, *proj, *h));
  }
  absl::StatusOr<Tensor> logits = backend_.Alloc({S, c.vocab_size}, DType::kF32);
  if (!logits.ok()) return logits.status();
  if (S == 0) return logits;
  // Final norm and LM head only on the rows that need logits.
  absl::StatusOr<Tensor> rows = backend_.Alloc({S}, DType::kI64);
  absl::StatusOr<Tensor> picked = alloc({S, H});
  if (!rows.ok()) return rows.status();
  if (!picked.ok()) return picked.status();
  CPSERVE_RETURN_IF_ERROR(backend_.CopyFromHost(
      Tensor::Borrow(const_cast<int64_t*>(in.logit_rows.data()), {S}, DType::kI64), *rows));
  CPSERVE_RETURN_IF_ERROR(backend_.GatherRows(*h, *rows, *picked));
  CPSERVE_RETURN_IF_ERROR(backend_.RmsNorm(*picked, weights_.final_norm, c.rms_norm_eps, *picked));
  CPSERVE_RETURN_IF_ERROR(backend_.Linear(*picked, weights_.lm_head, Tensor(), *logits));
  return logits;
}

}  // namespace cpserve
