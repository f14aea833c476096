#include "worker/engine/cuda_graph_decoder.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention_decode_arena.h"
#include "kernels/cuda/cuda_backend_impl.h"
#include "kernels/status_macros.h"
#include "worker/model/attention_layer.h"

namespace cpserve {
namespace {

absl::Status CudaError(cudaError_t err, const char* what) {
  return absl::InternalError(absl::StrCat("CudaGraphDecoder: ", what, ": ", cudaGetErrorName(err),
                                          " (", cudaGetErrorString(err), ")"));
}
#define DECODER_CUDA(expr, what)                      \
  do {                                                \
    if (cudaError_t e_ = (expr); e_ != cudaSuccess) { \
      return CudaError(e_, what);                     \
    }                                                 \
  } while (0)

size_t Align(size_t n) { return (n + 255) / 256 * 256; }

// Per layer: store the new tokens' K/V, then paged attention over the whole
// context (the new token included) from the arena's device metadata.
class GraphAttention final : public AttentionLayer {
 public:
  GraphAttention(Backend& backend, const KvCacheView& cache, cuda::DecodeAttentionArena& arena,
                 Tensor slots, Tensor lse, cudaStream_t stream)
      : backend_(backend),
        cache_(cache),
        arena_(arena),
        slots_(std::move(slots)),
        lse_(std::move(lse)),
        stream_(stream) {}

  absl::Status Forward(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& out) override {
    CPSERVE_RETURN_IF_ERROR(backend_.WriteKvCache(layer, k, v, slots_, cache_));
    AttentionOptions options;
    options.causal = false;
    return arena_.Launch(q, cache_, layer, options, out, lse_, stream_);
  }

 private:
  Backend& backend_;
  KvCacheView cache_;
  cuda::DecodeAttentionArena& arena_;
  Tensor slots_, lse_;
  cudaStream_t stream_;
};

}  // namespace

struct CudaGraphDecoder::Bucket {
  int64_t size = 0;
  ForwardBuffers buffers;
  Tensor inputs;           // device block: ids i32 | positions i64 | rows i64 | slots i64
  char* pinned = nullptr;  // host block of the same layout
  size_t bytes = 0, off_pos = 0, off_rows = 0, off_slots = 0;
  std::unique_ptr<cuda::DecodeAttentionArena> arena;
  std::unique_ptr<GraphAttention> attention;
  cudaEvent_t inputs_read = nullptr;  // recorded after the input copy
  cudaGraphExec_t exec = nullptr;
  bool warmed_up = false;

  ~Bucket() {
    if (inputs_read != nullptr) {
      cudaEventSynchronize(inputs_read);
      cudaEventDestroy(inputs_read);
    }
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (pinned != nullptr) cudaFreeHost(pinned);
  }
};

absl::StatusOr<std::unique_ptr<CudaGraphDecoder>> CudaGraphDecoder::Create(
    LlamaModel& model, Backend& backend, const KvCacheView& cache,
    const GraphDecoderOptions& options) {
  auto* cuda_backend = dynamic_cast<cuda::CudaBackend*>(&backend);
  if (cuda_backend == nullptr) {
    return absl::InvalidArgumentError("CudaGraphDecoder: needs the CUDA backend");
  }
  if (options.batch_buckets.empty() || options.batch_buckets.front() < 1 ||
      !std::is_sorted(options.batch_buckets.begin(), options.batch_buckets.end()) ||
      options.max_context < 1) {
    return absl::InvalidArgumentError("CudaGraphDecoder: bad bucket list or max_context");
  }
  const ModelConfig& c = model.config();
  if (cache.num_kv_heads != c.num_key_value_heads || cache.head_dim != c.head_dim ||
      cache.num_layers < c.num_hidden_layers || cache.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("CudaGraphDecoder: cache does not fit the model");
  }
  return std::unique_ptr<CudaGraphDecoder>(
      new CudaGraphDecoder(model, backend, cache, options, cuda_backend->stream()));
}

CudaGraphDecoder::CudaGraphDecoder(LlamaModel& model, Backend& backend, const KvCacheView& cache,
                                   const GraphDecoderOptions& options, cudaStream_t stream)
    : model_(model), backend_(backend), cache_(cache), options_(options), stream_(stream) {}

CudaGraphDecoder::~CudaGraphDecoder() { cudaStreamSynchronize(stream_); }

int CudaGraphDecoder::graphs_captured() const {
  int n = 0;
  for (const auto& [size, b] : buckets_) n += b->exec != nullptr;
  return n;
}

absl::StatusOr<CudaGraphDecoder::Bucket*> CudaGraphDecoder::GetBucket(int64_t batch) {
  auto it = std::lower_bound(options_.batch_buckets.begin(), options_.batch_buckets.end(), batch);
  if (it == options_.batch_buckets.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CudaGraphDecoder: batch ", batch, " > largest bucket ", options_.batch_buckets.back()));
  }
  const int64_t n = *it;
  if (auto found = buckets_.find(n); found != buckets_.end()) return found->second.get();
  const ModelConfig& c = model_.config();
  auto b = std::make_unique<Bucket>();
  b->size = n;
  CPSERVE_ASSIGN_OR_RETURN(b->buffers, model_.AllocForward(n, n));
  b->off_pos = Align(n * sizeof(int32_t));
  b->off_rows = b->off_pos + Align(n * sizeof(int64_t));
  b->off_slots = b->off_rows + Align(n * sizeof(int64_t));
  b->bytes = b->off_slots + Align(n * sizeof(int64_t));
  CPSERVE_ASSIGN_OR_RETURN(b->inputs, backend_.Alloc({static_cast<int64_t>(b->bytes)}, DType::kU8));
  DECODER_CUDA(cudaMallocHost(reinterpret_cast<void**>(&b->pinned), b->bytes), "cudaMallocHost");
  std::memset(b->pinned, 0, b->bytes);
  char* dev = static_cast<char*>(b->inputs.raw());
  const Device d = backend_.device();
  b->buffers.ids = Tensor::Borrow(dev, {n}, DType::kI32, d);
  b->buffers.positions = Tensor::Borrow(dev + b->off_pos, {n}, DType::kI64, d);
  b->buffers.logit_rows = Tensor::Borrow(dev + b->off_rows, {n}, DType::kI64, d);
  const Tensor slots = Tensor::Borrow(dev + b->off_slots, {n}, DType::kI64, d);
  // Padded rows never get attention output: keep them finite.
  DECODER_CUDA(cudaMemsetAsync(b->buffers.attn.raw(), 0, b->buffers.attn.nbytes(), stream_),
               "cudaMemset");
  CPSERVE_ASSIGN_OR_RETURN(Tensor lse, backend_.Alloc({n, c.num_attention_heads}, DType::kF32));
  cuda::DecodeArenaConfig ac;
  ac.max_seqs = n;
  ac.max_tokens = n;
  ac.max_q_len = 1;
  ac.max_blocks_per_seq = (options_.max_context + cache_.block_size - 1) / cache_.block_size;
  ac.num_q_heads = c.num_attention_heads;
  ac.num_kv_heads = c.num_key_value_heads;
  ac.head_dim = c.head_dim;
  ac.block_size = cache_.block_size;
  CPSERVE_ASSIGN_OR_RETURN(b->arena, cuda::DecodeAttentionArena::Create(ac));
  b->attention = std::make_unique<GraphAttention>(backend_, cache_, *b->arena, slots, lse, stream_);
  DECODER_CUDA(cudaEventCreateWithFlags(&b->inputs_read, cudaEventDisableTiming),
               "cudaEventCreate");
  Bucket* raw = b.get();
  buckets_[n] = std::move(b);
  return raw;
}

absl::Status CudaGraphDecoder::Enqueue(Bucket& b) {
  DECODER_CUDA(cudaMemcpyAsync(b.inputs.raw(), b.pinned, b.bytes, cudaMemcpyHostToDevice, stream_),
               "input copy");
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  DECODER_CUDA(cudaStreamIsCapturing(stream_, &capture), "cudaStreamIsCapturing");
  DECODER_CUDA(
      cudaEventRecordWithFlags(b.inputs_read, stream_,
                               capture == cudaStreamCaptureStatusActive ? cudaEventRecordExternal
                                                                        : cudaEventRecordDefault),
      "cudaEventRecord");
  CPSERVE_RETURN_IF_ERROR(b.arena->Upload(stream_));
  return model_.ForwardOn(b.buffers, *b.attention);
}

absl::StatusOr<Tensor> CudaGraphDecoder::Step(const DecodeBatch& batch, bool use_graph) {
  const int64_t n = static_cast<int64_t>(batch.tokens.size());
  if (n < 1 || static_cast<int64_t>(batch.positions.size()) != n ||
      static_cast<int64_t>(batch.slots.size()) != n ||
      static_cast<int64_t>(batch.block_tables.size()) != n) {
    return absl::InvalidArgumentError("CudaGraphDecoder::Step: empty batch or ragged fields");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (batch.positions[i] < 0 || batch.positions[i] + 1 > options_.max_context ||
        batch.slots[i] < 0 || batch.slots[i] >= cache_.num_slots()) {
      return absl::InvalidArgumentError(
          absl::StrCat("CudaGraphDecoder::Step: sequence ", i, " position ", batch.positions[i],
                       " slot ", batch.slots[i], " outside max_context ", options_.max_context,
                       " / cache slots ", cache_.num_slots()));
    }
  }
  CPSERVE_ASSIGN_OR_RETURN(Bucket * b, GetBucket(n));
  std::vector<PagedSegment> segs(n);
  for (int64_t i = 0; i < n; ++i) {
    segs[i] = {i, 1, batch.positions[i] + 1, batch.block_tables[i]};
  }
  CPSERVE_RETURN_IF_ERROR(b->arena->Stage(segs, cache_));  // waits for the last metadata copy
  DECODER_CUDA(cudaEventSynchronize(b->inputs_read), "cudaEventSynchronize");
  auto* ids = reinterpret_cast<int32_t*>(b->pinned);
  auto* pos = reinterpret_cast<int64_t*>(b->pinned + b->off_pos);
  auto* rows = reinterpret_cast<int64_t*>(b->pinned + b->off_rows);
  auto* slots = reinterpret_cast<int64_t*>(b->pinned + b->off_slots);
  for (int64_t i = 0; i < b->size; ++i) {
    const bool real = i < n;
    ids[i] = real ? batch.tokens[i] : 0;
    pos[i] = real ? batch.positions[i] : 0;
    rows[i] = i;
    slots[i] = real ? batch.slots[i] : -1;
  }
  if (!use_graph || !b->warmed_up) {
    // Op by op; also the warm-up that fills lazy per-shape state (GEMM algorithms,
    // RoPE tables) before a capture.
    CPSERVE_RETURN_IF_ERROR(Enqueue(*b));
    b->warmed_up = true;
  } else {
    if (b->exec == nullptr) {
      DECODER_CUDA(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
      DECODER_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                   "cudaStreamBeginCapture");
      const absl::Status s = Enqueue(*b);
      cudaGraph_t graph = nullptr;
      const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
      if (!s.ok()) {
        if (graph != nullptr) cudaGraphDestroy(graph);
        return s;
      }
      DECODER_CUDA(end, "cudaStreamEndCapture");
      const cudaError_t inst = cudaGraphInstantiate(&b->exec, graph, 0);
      cudaGraphDestroy(graph);
      if (inst != cudaSuccess) {
        b->exec = nullptr;
        return CudaError(inst, "cudaGraphInstantiate");
      }
    }
    DECODER_CUDA(cudaGraphLaunch(b->exec, stream_), "cudaGraphLaunch");
  }
  return b->buffers.logits.Slice(0, 0, n);
}

}  // namespace cpserve
