#include "worker/engine/cuda_graph_accelerator.h"

#include <utility>

#include "kernels/backend.h"
#include "kernels/status_macros.h"
#include "worker/engine/cuda_graph_decoder.h"

namespace cpserve {
namespace {

class CudaGraphAccelerator final : public DecodeStepAccelerator {
 public:
  CudaGraphAccelerator(std::unique_ptr<CudaGraphDecoder> decoder, GraphDecoderOptions options)
      : decoder_(std::move(decoder)), options_(std::move(options)) {}

  absl::StatusOr<Tensor> Decode(const DecodeBatch& batch) override {
    return decoder_->Step(batch, /*use_graph=*/true);
  }
  int64_t max_batch() const override { return options_.batch_buckets.back(); }
  int64_t max_context() const override { return options_.max_context; }
  int graphs_captured() const override { return decoder_->graphs_captured(); }

 private:
  std::unique_ptr<CudaGraphDecoder> decoder_;
  GraphDecoderOptions options_;
};

}  // namespace

DecodeAcceleratorFactory CudaGraphAcceleratorFactory(CudaGraphAcceleratorOptions options) {
  return [options](
             LlamaModel& model, Backend& backend,
             const KvCacheView& cache) -> absl::StatusOr<std::unique_ptr<DecodeStepAccelerator>> {
    if (backend.device().is_cpu()) return std::unique_ptr<DecodeStepAccelerator>();
    GraphDecoderOptions go;
    go.batch_buckets = options.batch_buckets;
    go.max_context = options.max_context;
    CPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<CudaGraphDecoder> decoder,
                             CudaGraphDecoder::Create(model, backend, cache, go));
    return std::unique_ptr<DecodeStepAccelerator>(
        std::make_unique<CudaGraphAccelerator>(std::move(decoder), go));
  };
}

}  // namespace cpserve
