// Decode step time on one GPU with and without CUDA graphs (CudaGraphDecoder), and
// of today's engine path (LlamaModel::Forward + CpAttention), for the built-in model
// and a bigger synthetic Llama (hidden 4096, 32 / 8 heads, head dim 128, MLP 14336,
// 8 layers, vocab 32000; constant weights: timing only) at batch 1 / 8 / 32, every
// sequence at `context` tokens (default 1024). A step = Step (or Forward) + stream
// sync, as the engine syncs to sample; wall-clock mean over 50 steps.
// Then the whole engine (Engine: scheduling, forward, sampling, token callbacks) with
// decode steps through CUDA graphs (EngineOptions::decode_accelerator) vs op by op
// (cuda_graphs = false): `batch` requests of `context` prompt tokens each, greedy,
// prefilled in chunks of 4096 tokens; the decode step time is the mean interval
// between the last-submitted request's tokens 8..47 (every request is prefilled by
// its first token and none has finished yet, so each step decodes the whole batch).
// Usage: cuda_graph_decoder_bench [context]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <numeric>

#include "absl/synchronization/mutex.h"
#include "kernels/cuda/cuda_backend.h"
#include "worker/builtin/builtin_model.h"
#include "worker/cp/cp_attention.h"
#include "worker/cp/cp_step.h"
#include "worker/engine/cuda_graph_accelerator.h"
#include "worker/engine/cuda_graph_decoder.h"
#include "worker/engine/engine.h"
#include "worker/model/synthetic_model.h"
#include "worker/model/weights_upload.h"

namespace cpserve {
namespace {

#define OK_OR_DIE(expr)                                                              \
  do {                                                                               \
    const absl::Status s_ = (expr);                                                  \
    if (!s_.ok()) {                                                                  \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, s_.ToString().c_str()); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

template <typename T>
T Must(absl::StatusOr<T> v) {
  OK_OR_DIE(v.status());
  return std::move(*v);
}

// Device weights of `config` filled with bf16 0x3c3c (~0.0115).
ModelWeights ConstantWeights(const ModelConfig& c, Backend& be) {
  auto alloc = [&](Shape s) {
    Tensor t = Must(be.Alloc(s, DType::kBF16));
    OK_OR_DIE(cudaMemset(t.raw(), 0x3c, t.nbytes()) == cudaSuccess
                  ? absl::OkStatus()
                  : absl::InternalError("cudaMemset"));
    return t;
  };
  ModelWeights w;
  w.config = c;
  const int64_t h = c.hidden_size, q = c.q_size(), kv = c.kv_size(), f = c.intermediate_size;
  w.embed_tokens = alloc({c.vocab_size, h});
  w.final_norm = alloc({h});
  w.lm_head = alloc({c.vocab_size, h});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights L;
    L.input_norm = alloc({h});
    L.q_proj = alloc({q, h});
    L.k_proj = alloc({kv, h});
    L.v_proj = alloc({kv, h});
    L.o_proj = alloc({h, q});
    L.post_attention_norm = alloc({h});
    L.gate_proj = alloc({f, h});
    L.up_proj = alloc({f, h});
    L.down_proj = alloc({h, f});
    w.layers.push_back(std::move(L));
  }
  OK_OR_DIE(be.Synchronize());
  return w;
}

double MsPerStep(int steps, const std::function<void()>& step) {
  for (int i = 0; i < 3; ++i) step();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step();
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::milli>(t1 - t0).count() / steps;
}

void Run(const char* name, const ModelWeights& w, Backend& be, int64_t context) {
  LlamaModel model(w, be);
  const ModelConfig& c = model.config();
  constexpr int64_t kBs = 16;
  for (int64_t batch : {1, 8, 32}) {
    const int64_t per_seq = (context + 1 + kBs - 1) / kBs;
    Tensor cache = Must(be.AllocKvCache(batch * per_seq, c.num_hidden_layers, kBs,
                                        c.num_key_value_heads, c.head_dim));
    OK_OR_DIE(cudaMemset(cache.raw(), 0x3c, cache.nbytes()) == cudaSuccess
                  ? absl::OkStatus()
                  : absl::InternalError("cudaMemset"));
    const KvCacheView view = Must(KvCacheView::FromTensor(cache));
    std::vector<std::vector<int32_t>> tables(batch);
    DecodeBatch db;
    std::vector<CpWork> works;
    ForwardInput in;
    for (int64_t i = 0; i < batch; ++i) {
      tables[i].resize(per_seq);
      std::iota(tables[i].begin(), tables[i].end(), static_cast<int32_t>(i * per_seq));
      db.tokens.push_back(static_cast<int32_t>(7 * i % c.vocab_size));
      db.positions.push_back(context);
      db.slots.push_back(int64_t{tables[i][context / kBs]} * kBs + context % kBs);
      works.push_back({context, 1, false});
      in.tokens.push_back(db.tokens.back());
      in.positions.push_back(context);
      in.logit_rows.push_back(i);
    }
    for (const auto& t : tables) db.block_tables.push_back(t);
    GraphDecoderOptions opts;
    opts.max_context = context + 1;
    auto dec = Must(CudaGraphDecoder::Create(model, be, view, opts));
    CpAttention attention(be, nullptr, view, CpLayout{1, 16, 16});
    const int kSteps = 50;
    const double eager = MsPerStep(kSteps, [&] {
      Must(dec->Step(db, false));
      OK_OR_DIE(be.Synchronize());
    });
    const double graph = MsPerStep(kSteps, [&] {
      Must(dec->Step(db, true));
      OK_OR_DIE(be.Synchronize());
    });
    const double engine = MsPerStep(kSteps, [&] {
      OK_OR_DIE(attention.SetStep(works, BuildCpStepLayout(works, 0, 1), tables, db.slots));
      Must(model.Forward(in, attention));
      OK_OR_DIE(be.Synchronize());
    });
    std::printf(
        "%-10s batch %3ld ctx %6ld: engine path %8.3f ms  op-by-op %8.3f ms  graph %8.3f ms"
        "  (graph speedup %.2fx vs op-by-op, %.2fx vs engine path)\n",
        name, static_cast<long>(batch), static_cast<long>(context), engine, eager, graph,
        eager / graph, engine / graph);
    std::fflush(stdout);
  }
}

// Mean ms between tokens kFirst..kLast of the last request, and the engine's
// accelerated steps.
std::pair<double, int64_t> EngineStepMs(const ModelWeights& w, Backend& be, int64_t batch,
                                        int64_t context, bool graphs) {
  constexpr int kFirst = 8, kLast = 47;
  constexpr int64_t kBs = 16;
  EngineOptions o;
  o.block_size = kBs;
  // Earlier requests run ahead by up to one token per prefill step: they must still
  // be decoding at the last request's token kLast.
  constexpr int kMaxTokens = kLast + 1 + 64;
  o.num_kv_blocks = static_cast<int32_t>(batch * ((context + kMaxTokens + 1 + kBs - 1) / kBs) + 8);
  o.max_batch_tokens = std::max<int64_t>(4096, context + 1);
  o.max_running = static_cast<int32_t>(batch);
  o.decode_accelerator = CudaGraphAcceleratorFactory();
  o.cuda_graphs = graphs;
  struct Progress {
    absl::Mutex mu;
    std::vector<std::chrono::steady_clock::time_point> times;
    int64_t finished = 0, batch = 0;
    absl::Status failed;
  } prog;
  prog.batch = batch;
  absl::Mutex& mu = prog.mu;
  auto& times = prog.times;
  int64_t& finished = prog.finished;
  absl::Status& failed = prog.failed;
  std::unique_ptr<Engine> engine = Must(Engine::Create(w, be, o));  // after prog: joins first
  GenerationParams p;
  p.max_tokens = kMaxTokens;
  p.ignore_eos = true;
  for (int64_t i = 0; i < batch; ++i) {
    std::vector<int32_t> prompt(context);
    for (int64_t t = 0; t < context; ++t) {
      prompt[t] = static_cast<int32_t>((7 * i + 3 * t) % w.config.vocab_size);
    }
    OK_OR_DIE(
        engine->Submit("b" + std::to_string(i), std::move(prompt), p, [&, i](const TokenEvent& ev) {
          const auto now = std::chrono::steady_clock::now();
          absl::MutexLock lock(&mu);
          if (i == batch - 1 && ev.token >= 0) times.push_back(now);
          if (ev.finished) {
            ++finished;
            if (!ev.status.ok()) failed = ev.status;
          }
        }));
  }
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(
      +[](Progress* x) { return x->finished == x->batch; }, &prog));
  OK_OR_DIE(failed);
  if (static_cast<int>(times.size()) <= kLast) {
    OK_OR_DIE(absl::InternalError("the last request got too few tokens"));
  }
  const double ms =
      std::chrono::duration<double, std::milli>(times[kLast] - times[kFirst]).count() /
      (kLast - kFirst);
  return {ms, engine->Stats().accelerated_steps};
}

void RunEngine(const char* name, const ModelWeights& w, Backend& be, int64_t context) {
  for (int64_t batch : {1, 8, 32}) {
    const auto [plain, plain_acc] = EngineStepMs(w, be, batch, context, false);
    const auto [graph, graph_acc] = EngineStepMs(w, be, batch, context, true);
    std::printf(
        "%-10s batch %3ld ctx %6ld: engine decode step op-by-op %8.3f ms  cuda graphs %8.3f ms"
        "  (speedup %.2fx; steps through graphs %ld vs %ld)\n",
        name, static_cast<long>(batch), static_cast<long>(context), plain, graph, plain / graph,
        static_cast<long>(graph_acc), static_cast<long>(plain_acc));
    std::fflush(stdout);
  }
}

int Main(int argc, char** argv) {
  if (CudaDeviceCount() == 0) {
    std::fprintf(stderr, "no CUDA device\n");
    return 1;
  }
  const int64_t context = argc > 1 ? std::atol(argv[1]) : 1024;
  std::unique_ptr<Backend> be = Must(MakeCudaBackend(0));
  {
    const std::string dir = std::filesystem::temp_directory_path() / "graph-bench-model";
    std::filesystem::remove_all(dir);
    OK_OR_DIE(WriteBuiltinModel(dir));
    const ModelWeights host = Must(LoadModel(dir, DType::kF32));
    const ModelWeights dev = Must(UploadWeights(host, *be));
    Run("builtin", dev, *be, context);
    RunEngine("builtin", dev, *be, context);
  }
  SyntheticModelOptions o;
  o.vocab_size = 32000;
  o.hidden_size = 4096;
  o.intermediate_size = 14336;
  o.num_hidden_layers = 8;
  o.num_attention_heads = 32;
  o.num_key_value_heads = 8;
  o.head_dim = 128;
  o.max_position_embeddings = 8192;
  const ModelWeights big = ConstantWeights(SyntheticModelConfig(o), *be);
  Run("llama-8L", big, *be, context);
  RunEngine("llama-8L", big, *be, context);
  return 0;
}

}  // namespace
}  // namespace cpserve

int main(int argc, char** argv) { return cpserve::Main(argc, argv); }
