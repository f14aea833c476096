#include "worker/model/weights_upload.h"

#include "kernels/status_macros.h"

namespace cpserve {
namespace {

absl::Status Upload(const Tensor& src, Backend& backend, Tensor* dst) {
  if (!src.defined()) return absl::OkStatus();  // dst stays undefined (default-constructed)
  CPSERVE_ASSIGN_OR_RETURN(*dst, backend.Alloc(src.shape(), backend.ComputeDType()));
  return backend.CopyFromHost(src, *dst);
}

}  // namespace

absl::StatusOr<ModelWeights> UploadWeights(const ModelWeights& host, Backend& backend) {
  ModelWeights d;
  d.config = host.config;
  CPSERVE_RETURN_IF_ERROR(Upload(host.embed_tokens, backend, &d.embed_tokens));
  CPSERVE_RETURN_IF_ERROR(Upload(host.final_norm, backend, &d.final_norm));
  if (host.lm_head.raw() == host.embed_tokens.raw()) {
    d.lm_head = d.embed_tokens;  // tied
  } else {
    CPSERVE_RETURN_IF_ERROR(Upload(host.lm_head, backend, &d.lm_head));
  }
  for (const LayerWeights& h : host.layers) {
    LayerWeights l;
    for (auto [src, dst] : {std::pair{&h.input_norm, &l.input_norm},
                            {&h.q_proj, &l.q_proj},
                            {&h.k_proj, &l.k_proj},
                            {&h.v_proj, &l.v_proj},
                            {&h.o_proj, &l.o_proj},
                            {&h.q_bias, &l.q_bias},
                            {&h.k_bias, &l.k_bias},
                            {&h.v_bias, &l.v_bias},
                            {&h.o_bias, &l.o_bias},
                            {&h.post_attention_norm, &l.post_attention_norm},
                            {&h.gate_proj, &l.gate_proj},
                            {&h.up_proj, &l.up_proj},
                            {&h.down_proj, &l.down_proj}}) {
      CPSERVE_RETURN_IF_ERROR(Upload(*src, backend, dst));
    }
    d.layers.push_back(std::move(l));
  }
  CPSERVE_RETURN_IF_ERROR(backend.Synchronize());
  return d;
}

}  // namespace cpserve
