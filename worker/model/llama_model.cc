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
  const int64_t hq = c.num_attention_heads, hkv = c.num_key_value_heads, d = c.head_dim;
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

  CPSERVE_ASSIGN_OR_RETURN(ForwardBuffers b, AllocForward(T, S));
  CPSERVE_RETURN_IF_ERROR(backend_.CopyFromHost(
      Tensor::Borrow(const_cast<int32_t*>(in.tokens.data()), {T}, DType::kI32), b.ids));
  CPSERVE_RETURN_IF_ERROR(backend_.CopyFromHost(
      Tensor::Borrow(const_cast<int64_t*>(in.positions.data()), {T}, DType::kI64), b.positions));
  if (S > 0) {
    CPSERVE_RETURN_IF_ERROR(backend_.CopyFromHost(
        Tensor::Borrow(const_cast<int64_t*>(in.logit_rows.data()), {S}, DType::kI64),
        b.logit_rows));
  }
  CPSERVE_RETURN_IF_ERROR(ForwardOn(b, attention));
  return b.logits;
}

absl::StatusOr<ForwardBuffers> LlamaModel::AllocForward(int64_t T, int64_t S) {
  const ModelConfig& c = weights_.config;
  if (T < 1 || S < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("forward buffers: ", T, " tokens, ", S, " rows"));
  }
  const DType dt = backend_.ComputeDType();
  const int64_t H = c.hidden_size, hq = c.num_attention_heads, hkv = c.num_key_value_heads;
  const int64_t d = c.head_dim, ffn = c.intermediate_size;
  ForwardBuffers b;
  struct Want {
    Tensor* t;
    Shape shape;
    DType dtype;
  };
  for (const Want& w :
       {Want{&b.ids, {T}, DType::kI32}, Want{&b.positions, {T}, DType::kI64},
        Want{&b.logit_rows, {S}, DType::kI64}, Want{&b.h, {T, H}, dt}, Want{&b.x, {T, H}, dt},
        Want{&b.q, {T, hq, d}, dt}, Want{&b.k, {T, hkv, d}, dt}, Want{&b.v, {T, hkv, d}, dt},
        Want{&b.attn, {T, hq, d}, dt}, Want{&b.proj, {T, H}, dt}, Want{&b.gate, {T, ffn}, dt},
        Want{&b.up, {T, ffn}, dt}, Want{&b.picked, {S, H}, dt},
        Want{&b.logits, {S, c.vocab_size}, DType::kF32}}) {
    CPSERVE_ASSIGN_OR_RETURN(*w.t, backend_.Alloc(w.shape, w.dtype));
  }
  return b;
}

absl::Status LlamaModel::ForwardOn(const ForwardBuffers& b, AttentionLayer& attention) {
  const ModelConfig& c = weights_.config;
  const int64_t T = b.h.dim(0), S = b.logits.dim(0);
  const int64_t hq = c.num_attention_heads, hkv = c.num_key_value_heads, d = c.head_dim;
  // 2-D views [T, heads * D] of the same buffers for the projections.
  CPSERVE_ASSIGN_OR_RETURN(const Tensor q2, b.q.Reshape({T, hq * d}));
  CPSERVE_ASSIGN_OR_RETURN(const Tensor k2, b.k.Reshape({T, hkv * d}));
  CPSERVE_ASSIGN_OR_RETURN(const Tensor v2, b.v.Reshape({T, hkv * d}));
  CPSERVE_ASSIGN_OR_RETURN(const Tensor attn2, b.attn.Reshape({T, hq * d}));

  CPSERVE_RETURN_IF_ERROR(backend_.Embedding(weights_.embed_tokens, b.ids, b.h));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& L = weights_.layers[l];
    CPSERVE_RETURN_IF_ERROR(backend_.RmsNorm(b.h, L.input_norm, c.rms_norm_eps, b.x));
    CPSERVE_RETURN_IF_ERROR(backend_.Linear(b.x, L.q_proj, L.q_bias, q2));
    CPSERVE_RETURN_IF_ERROR(backend_.Linear(b.x, L.k_proj, L.k_bias, k2));
    CPSERVE_RETURN_IF_ERROR(backend_.Linear(b.x, L.v_proj, L.v_bias, v2));
    CPSERVE_RETURN_IF_ERROR(backend_.Rope(b.q, b.k, b.positions, rope_));
    CPSERVE_RETURN_IF_ERROR(attention.Forward(l, b.q, b.k, b.v, b.attn));
    CPSERVE_RETURN_IF_ERROR(backend_.Linear(attn2, L.o_proj, L.o_bias, b.proj));
    CPSERVE_RETURN_IF_ERROR(
        backend_.AddRmsNorm(b.h, b.proj, L.post_attention_norm, c.rms_norm_eps, b.x));
    CPSERVE_RETURN_IF_ERROR(backend_.Linear(b.x, L.gate_proj, Tensor(), b.gate));
    CPSERVE_RETURN_IF_ERROR(backend_.Linear(b.x, L.up_proj, Tensor(), b.up));
    CPSERVE_RETURN_IF_ERROR(backend_.SiluMul(b.gate, b.up, b.gate));
    CPSERVE_RETURN_IF_ERROR(backend_.Linear(b.gate, L.down_proj, Tensor(), b.proj));
    CPSERVE_RETURN_IF_ERROR(backend_.Add(b.h, b.proj, b.h));
  }
  if (S == 0) return absl::OkStatus();
  // Final norm and LM head only on the rows that need logits.
  CPSERVE_RETURN_IF_ERROR(backend_.GatherRows(b.h, b.logit_rows, b.picked));
  CPSERVE_RETURN_IF_ERROR(
      backend_.RmsNorm(b.picked, weights_.final_norm, c.rms_norm_eps, b.picked));
  return backend_.Linear(b.picked, weights_.lm_head, Tensor(), b.logits);
}

}  // namespace cpserve
