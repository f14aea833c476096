#include "tests/gpu/hf/hf_runner.h"

#include <algorithm>
#include <memory>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kernels/status_macros.h"
#include "worker/engine/engine.h"
#include "worker/model/attention_layer.h"
#include "worker/model/llama_model.h"

namespace cpserve::hfcheck {
namespace {

// Causal self-attention of one whole sequence, nothing cached: one PrefillSegment.
class DenseCausalAttention final : public AttentionLayer {
 public:
  explicit DenseCausalAttention(Backend& backend) : backend_(backend) {}

  absl::Status Forward(int64_t /*layer*/, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& out) override {
    const int64_t t = q.shape()[0];
    if (!lse_.defined() || lse_.shape()[0] != t) {
      CPSERVE_ASSIGN_OR_RETURN(lse_, backend_.Alloc({t, q.shape()[1]}, DType::kF32));
    }
    const PrefillSegment segment{0, t, 0, t, 0, {}};
    return backend_.PrefillAttention(q, k, v, {&segment, 1}, nullptr, 0, AttentionOptions{}, out,
                                     lse_);
  }

 private:
  Backend& backend_;
  Tensor lse_;
};

}  // namespace

absl::StatusOr<std::vector<float>> PromptLogits(const ModelWeights& weights, Backend& backend,
                                                const std::vector<int32_t>& prompt) {
  LlamaModel model(weights, backend);
  ForwardInput in;
  in.tokens = prompt;
  in.positions.resize(prompt.size());
  std::iota(in.positions.begin(), in.positions.end(), 0);
  in.logit_rows = in.positions;
  DenseCausalAttention attention(backend);
  CPSERVE_ASSIGN_OR_RETURN(Tensor logits, model.Forward(in, attention));
  std::vector<float> host(static_cast<size_t>(logits.numel()));
  Tensor dst = Tensor::Borrow(host.data(), logits.shape(), DType::kF32);
  if (logits.device().type == DeviceType::kCPU) {
    std::copy(logits.data<float>(), logits.data<float>() + logits.numel(), host.begin());
  } else {
    CPSERVE_RETURN_IF_ERROR(backend.CopyToHost(logits, dst));
    CPSERVE_RETURN_IF_ERROR(backend.Synchronize());
  }
  return host;
}

absl::StatusOr<std::vector<PromptResult>> RunPrompts(
    const ModelWeights& weights, Backend& backend, const std::vector<std::vector<int32_t>>& prompts,
    const RunOptions& options) {
  std::vector<PromptResult> results(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    results[i].prompt = prompts[i];
    if (options.prefill_logits) {
      CPSERVE_ASSIGN_OR_RETURN(results[i].prefill_logits,
                               PromptLogits(weights, backend, prompts[i]));
    }
  }

  absl::Mutex mu;  // outlives the engine, whose callbacks take it
  size_t finished = 0;
  EngineOptions eo;
  eo.max_batch_tokens = options.max_batch_tokens;
  int64_t blocks = 16;
  for (const auto& p : prompts) {
    blocks += (static_cast<int64_t>(p.size()) + options.steps + eo.block_size) / eo.block_size;
  }
  eo.num_kv_blocks = static_cast<int32_t>(blocks);
  eo.max_running = static_cast<int32_t>(std::max<size_t>(prompts.size(), 1));
  CPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::Create(weights, backend, eo));

  GenerationParams params;
  params.max_tokens = options.steps;
  params.ignore_eos = true;
  params.return_logits = true;
  params.sampling.temperature = 0.0f;
  for (size_t i = 0; i < prompts.size(); ++i) {
    PromptResult* r = &results[i];
    const absl::Status submitted =
        engine->Submit(absl::StrCat("p", i), prompts[i], params, [&, r](const TokenEvent& e) {
          absl::MutexLock lock(&mu);
          if (e.token >= 0) {
            r->tokens.push_back(e.token);
            r->step_logits.insert(r->step_logits.end(), e.logits.begin(), e.logits.end());
          }
          if (e.finished) {
            r->finish = !e.status.ok()                      ? e.status.ToString()
                        : e.reason == FinishReason::kLength ? "length"
                                                            : "stop";
            ++finished;
          }
        });
    if (!submitted.ok()) {
      return absl::Status(submitted.code(), absl::StrCat("prompt ", i, ": ", submitted.message()));
    }
  }
  std::pair<size_t*, size_t> wait_for{&finished, prompts.size()};
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(
      +[](std::pair<size_t*, size_t>* s) { return *s->first == s->second; }, &wait_for));
  return results;
}

}  // namespace cpserve::hfcheck
