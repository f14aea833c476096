#include "worker/pool/pool_engine.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "worker/comm/rendezvous_client.h"
#include "worker/engine/engine.h"
#ifdef CPSERVE_POOL_HAVE_CUDA_GRAPHS
#include "worker/engine/cuda_graph_accelerator.h"
#include "worker/engine/cuda_ipc_copier.h"
#endif
#include "worker/model/weights.h"
#include "worker/pool/pool_backend.h"

namespace cpserve {
namespace {

EngineOptions ToEngineOptions(const PoolEngineOptions& o) {
  EngineOptions eo;
  eo.block_size = o.block_size;
  eo.interleave = o.interleave;
  eo.num_kv_blocks = o.num_kv_blocks > 0 ? o.num_kv_blocks : 4096;
  eo.max_batch_tokens = o.max_batch_tokens;
  eo.max_running = static_cast<int32_t>(std::min<int64_t>(o.max_running, o.max_batch_tokens));
  eo.partition_prefill = o.role == PoolRole::kPrefill;
  // Pools hand KV over (DESIGN §5): a host KV cache directly, a GPU one through CUDA
  // IPC on one host, else a (pinned) host mirror (worker/engine/rank_transfers.h).
  eo.enable_transfer = true;
#ifdef CPSERVE_POOL_HAVE_CUDA_GRAPHS
  // GPU caches of ranks on one host exchange KV through CUDA IPC (cuda-ipc), others
  // through host staging; --kv_direct=false keeps host staging everywhere.
  if (o.kv_direct) eo.kv_direct_copier = CudaIpcCopierFactory();
  // Decode steps of a one-GPU pool replay CUDA graphs (the engine applies it only
  // with one rank and a CUDA backend).
  eo.decode_accelerator = CudaGraphAcceleratorFactory();
  eo.cuda_graphs = o.cuda_graphs;
#endif
  return eo;
}

// One rank of a pool: owns the model, the backend and the collective group. Rank 0
// runs the Engine (scheduler + steps, broadcast to the others); ranks > 0 run the
// follower loop on a thread and take no requests.
class PoolEngineImpl final : public GenerationEngine {
 public:
  static absl::StatusOr<std::unique_ptr<GenerationEngine>> Create(const PoolEngineOptions& o) {
    if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", o.rank, " outside a pool of ", o.world_size));
    }
    CPSERVE_ASSIGN_OR_RETURN(const Device device, PoolRankDevice(o.device, o.rank));
    auto self = std::unique_ptr<PoolEngineImpl>(new PoolEngineImpl());
    self->rank_ = o.rank;
    CPSERVE_ASSIGN_OR_RETURN(self->backend_, CreateRankBackend(device));
    CPSERVE_ASSIGN_OR_RETURN(self->weights_, LoadWeightsForBackend(o.model_dir, *self->backend_));
    const EngineOptions eo = ToEngineOptions(o);
    if (o.world_size > 1) {
      const auto timeout =
          std::chrono::milliseconds(absl::ToInt64Milliseconds(o.collective_timeout));
      CPSERVE_ASSIGN_OR_RETURN(auto client,
                               comm::RendezvousClient::Connect(o.leader_address, timeout));
      self->client_ = std::move(client);
      CPSERVE_ASSIGN_OR_RETURN(
          self->group_,
          CreateRankGroup(*self->backend_, *self->client_, comm::RendezvousPrefix(o.pool, 0),
                          o.rank, o.world_size, o.listen_host, timeout));
    }
    if (o.rank == 0) {
      CPSERVE_ASSIGN_OR_RETURN(
          self->engine_, Engine::Create(self->weights_, *self->backend_, eo, self->group_.get()));
    } else {
      PoolEngineImpl* raw = self.get();
      self->follower_ = std::thread([raw, eo] {
        const absl::Status s = RunFollower(raw->weights_, *raw->backend_, eo, *raw->group_);
        raw->follower_status_ = s;
        raw->follower_done_.store(true);
      });
    }
    return std::unique_ptr<GenerationEngine>(std::move(self));
  }

  ~PoolEngineImpl() override {
    engine_.reset();  // rank 0: tells the followers to stop
    if (follower_.joinable()) follower_.join();
  }

  const ModelConfig& config() const override { return weights_.config; }
  EngineStats Stats() const override { return engine_ ? engine_->Stats() : EngineStats{}; }
  bool healthy() const override {
    if (engine_) return engine_->healthy();
    return !follower_done_.load() || follower_status_.ok();
  }
  absl::Status Submit(const std::string& id, std::vector<int32_t> prompt,
                      const GenerationParams& params, TokenCallback callback) override {
    CPSERVE_RETURN_IF_ERROR(CheckLeader());
    return engine_->Submit(id, std::move(prompt), params, std::move(callback));
  }
  void Cancel(const std::string& id) override {
    if (engine_) engine_->Cancel(id);
  }
  absl::StatusOr<v1::KvTransferTarget> Reserve(const std::string& id, int64_t prompt_len,
                                               int64_t max_tokens, absl::Duration ttl) override {
    CPSERVE_RETURN_IF_ERROR(CheckLeader());
    return engine_->Reserve(id, prompt_len, max_tokens, ttl);
  }
  absl::Status SubmitPrefilled(const std::string& id, std::vector<int32_t> prompt,
                               int32_t first_token, const GenerationParams& params,
                               TokenCallback callback) override {
    CPSERVE_RETURN_IF_ERROR(CheckLeader());
    return engine_->SubmitPrefilled(id, std::move(prompt), first_token, params,
                                    std::move(callback));
  }
  absl::Status SubmitPrefill(const std::string& id, std::vector<int32_t> prompt,
                             const GenerationParams& params, const v1::KvTransferTarget& target,
                             absl::Time deadline, PrefillCallback callback) override {
    CPSERVE_RETURN_IF_ERROR(CheckLeader());
    return engine_->SubmitPrefill(id, std::move(prompt), params, target, deadline,
                                  std::move(callback));
  }

 private:
  PoolEngineImpl() = default;
  absl::Status CheckLeader() const {
    if (engine_) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", rank_, " takes no requests: send them to rank 0 of the pool"));
  }

  int rank_ = 0;
  ModelWeights weights_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<comm::RendezvousClient> client_;
  std::unique_ptr<comm::CollectiveGroup> group_;
  std::unique_ptr<Engine> engine_;  // rank 0; destroyed before the group it uses
  std::thread follower_;            // ranks > 0
  std::atomic<bool> follower_done_{false};
  absl::Status follower_status_;  // written before follower_done_ turns true
};

}  // namespace

absl::StatusOr<std::unique_ptr<GenerationEngine>> CreatePoolEngine(
    const PoolEngineOptions& options) {
  return PoolEngineImpl::Create(options);
}

}  // namespace cpserve
