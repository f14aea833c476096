#include "worker/pool/pool_engine.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/status_macros.h"
#include "worker/engine/engine.h"
#include "worker/model/weights.h"

namespace cpserve {
namespace {

// A single-rank pool: the in-process engine plus the model and backend it needs.
// (Multi-rank pools and KV transfer: worker/cp, in progress.)
class SingleRankPoolEngine final : public GenerationEngine {
 public:
  static absl::StatusOr<std::unique_ptr<GenerationEngine>> Create(const PoolEngineOptions& o) {
    auto self = std::unique_ptr<SingleRankPoolEngine>(new SingleRankPoolEngine());
    CPSERVE_ASSIGN_OR_RETURN(self->weights_, LoadModel(o.model_dir, DType::kF32));
    self->backend_ = MakeCpuBackend();
    EngineOptions eo;
    eo.block_size = o.block_size;
    eo.num_kv_blocks = o.num_kv_blocks > 0 ? o.num_kv_blocks : 4096;
    eo.max_batch_tokens = o.max_batch_tokens;
    eo.max_running = o.max_running;
    CPSERVE_ASSIGN_OR_RETURN(self->engine_, Engine::Create(self->weights_, *self->backend_, eo));
    return std::unique_ptr<GenerationEngine>(std::move(self));
  }

  const ModelConfig& config() const override { return engine_->config(); }
  EngineStats Stats() const override { return engine_->Stats(); }
  bool healthy() const override { return engine_->healthy(); }
  absl::Status Submit(const std::string& id, std::vector<int32_t> prompt,
                      const GenerationParams& params, TokenCallback callback) override {
    return engine_->Submit(id, std::move(prompt), params, std::move(callback));
  }
  void Cancel(const std::string& id) override { engine_->Cancel(id); }
  absl::StatusOr<v1::KvTransferTarget> Reserve(const std::string& id, int64_t prompt_len,
                                               int64_t max_tokens, absl::Duration ttl) override {
    return engine_->Reserve(id, prompt_len, max_tokens, ttl);
  }
  absl::Status SubmitPrefilled(const std::string& id, std::vector<int32_t> prompt,
                               int32_t first_token, const GenerationParams& params,
                               TokenCallback callback) override {
    return engine_->SubmitPrefilled(id, std::move(prompt), first_token, params,
                                    std::move(callback));
  }
  absl::Status SubmitPrefill(const std::string& id, std::vector<int32_t> prompt,
                             const GenerationParams& params, const v1::KvTransferTarget& target,
                             absl::Time deadline, PrefillCallback callback) override {
    return engine_->SubmitPrefill(id, std::move(prompt), params, target, deadline,
                                  std::move(callback));
  }

 private:
  SingleRankPoolEngine() = default;
  ModelWeights weights_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Engine> engine_;  // destroyed first: it references weights_ and backend_
};

}  // namespace

absl::StatusOr<std::unique_ptr<GenerationEngine>> CreatePoolEngine(
    const PoolEngineOptions& options) {
  if (options.world_size == 1 && options.device == "cpu") {
    return SingleRankPoolEngine::Create(options);
  }
  return absl::UnimplementedError(
      absl::StrCat("pool engine with world_size ", options.world_size, " on ", options.device,
                   " is not built yet (context-parallel pool engine in progress)"));
}

}  // namespace cpserve
