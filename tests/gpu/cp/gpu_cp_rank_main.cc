// One rank of a context-parallel pool on a GPU, as a real process (the GPU twin of
// tests/integration/cp/cp_rank_main.cc):
//   gpu_cp_rank --rank=R --world=N --rdzv=host:port --model=DIR --requests=FILE --out=FILE
//               [--device=cuda] [--interleave=I] [--block=B] [--partition]
//               [--batch_tokens=T] [--kv_blocks=K] [--timeout_ms=MS] [--logits=0]
//               [--serve_rdzv] [--cuda_graphs]
// --model is resolved like the pools' flag (a directory, or "synthetic:llama3-8b").
// --serve_rdzv: rank 0 serves the rendezvous store on --rdzv itself (benchmarks run
// without the test harness). --logits=0: no logits lines (large vocabularies).
// --cuda_graphs: decode steps through CUDA graphs, as one-GPU pools run them (world 1).
// Rank r runs on the GPU that --device gives it (worker/pool/pool_backend.h: "cuda"
// = GPU r), with the model in bf16 and the pool's NCCL group on the backend's stream
// (host control traffic staged) — the setup the pool engine uses. Rank 0 runs the
// engine on the requests (one per line: "max_tokens id id ...", greedy, logits
// returned) and writes per request "tokens t t ..." and one "logits ..." line per
// generated token, then "seconds S" (submit to last token) and "first_token_s S"
// (the slowest request's time to first token), and "full_batch_step_ms S" (median
// gap between the tokens of the last request to start decoding while no request has
// finished yet: the decode step time at the full batch; 0 when no such gap); ranks
// > 0 follow. World 1 is the single-GPU reference.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "tests/common/rank_tool.h"
#include "worker/builtin/builtin_model.h"
#include "worker/comm/rendezvous_client.h"
#include "worker/comm/rendezvous_service.h"
#include "worker/engine/cuda_graph_accelerator.h"
#include "worker/engine/engine.h"
#include "worker/pool/pool_backend.h"

namespace {

using cpserve::testing::Arg;
using cpserve::testing::IntArg;

int Fail(const std::string& what, const absl::Status& s) {
  std::cerr << "gpu_cp_rank: " << what << ": " << s << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace cpserve;
  const int rank = IntArg(argc, argv, "rank", 0);
  const int world = IntArg(argc, argv, "world", 1);
  const auto timeout = std::chrono::milliseconds(IntArg(argc, argv, "timeout_ms", 60000));

  absl::StatusOr<Device> device = PoolRankDevice(Arg(argc, argv, "device", "cuda"), rank);
  if (!device.ok()) return Fail("device", device.status());
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateRankBackend(*device);
  if (!backend.ok()) return Fail("backend", backend.status());
  absl::StatusOr<std::string> model_dir = ResolveModelDir(Arg(argc, argv, "model"));
  if (!model_dir.ok()) return Fail("model", model_dir.status());
  absl::StatusOr<ModelWeights> weights = LoadWeightsForBackend(*model_dir, **backend);
  if (!weights.ok()) return Fail("load", weights.status());
  const bool want_logits = Arg(argc, argv, "logits", "1") != "0";

  EngineOptions options;
  options.block_size = IntArg(argc, argv, "block", 16);
  options.interleave = IntArg(argc, argv, "interleave", 0);
  options.partition_prefill = Arg(argc, argv, "partition") == "1";
  options.max_batch_tokens = IntArg(argc, argv, "batch_tokens", 2048);
  options.num_kv_blocks = IntArg(argc, argv, "kv_blocks", 1024);
  options.max_running = std::min<int>(64, static_cast<int>(options.max_batch_tokens));
  if (Arg(argc, argv, "cuda_graphs") == "1")
    options.decode_accelerator = CudaGraphAcceleratorFactory();

  std::unique_ptr<comm::RendezvousServer> server;
  std::unique_ptr<comm::RendezvousClient> client;
  std::unique_ptr<comm::CollectiveGroup> group;
  if (world > 1 && rank == 0 && Arg(argc, argv, "serve_rdzv") == "1") {
    auto s = comm::RendezvousServer::Start(Arg(argc, argv, "rdzv"));
    if (!s.ok()) return Fail("rendezvous server", s.status());
    server = *std::move(s);
  }
  if (world > 1) {
    auto c = comm::RendezvousClient::Connect(Arg(argc, argv, "rdzv"), timeout);
    if (!c.ok()) return Fail("rendezvous", c.status());
    client = *std::move(c);
    auto g = CreateRankGroup(**backend, *client, comm::RendezvousPrefix("gpu-cp-test", 0), rank,
                             world, "127.0.0.1", timeout);
    if (!g.ok()) return Fail("group", g.status());
    group = *std::move(g);
    std::cerr << "rank " << rank << ": " << group->backend() << " group on GPU " << device->index
              << "\n";
  }
  if (rank > 0) {
    const absl::Status s = RunFollower(*weights, **backend, options, *group);
    if (!s.ok()) return Fail("follower", s);
    return 0;
  }

  cpserve::testing::RankRequests requests =
      cpserve::testing::ReadRankRequests(Arg(argc, argv, "requests"));
  std::vector<std::vector<int32_t>>& prompts = requests.prompts;
  std::vector<int>& max_tokens = requests.max_tokens;
  auto engine = Engine::Create(*weights, **backend, options, group.get());
  if (!engine.ok()) return Fail("engine", engine.status());
  const size_t n = prompts.size();
  std::vector<std::vector<int32_t>> tokens(n);
  std::vector<std::vector<std::vector<float>>> logits(n);
  std::vector<absl::Status> status(n);
  std::vector<double> first_token_s(n, 0);
  std::vector<std::vector<double>> token_s(n);  // time of each token
  std::vector<double> finish_s(n, 0);
  std::vector<absl::Notification> done(n);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < n; ++i) {
    GenerationParams p;
    p.max_tokens = max_tokens[i];
    p.ignore_eos = true;
    p.return_logits = want_logits;
    const absl::Status s =
        (*engine)->Submit(absl::StrCat("r", i), prompts[i], p, [&, i](const TokenEvent& e) {
          const double now =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          if (e.token >= 0 && tokens[i].empty()) first_token_s[i] = now;
          if (e.token >= 0) token_s[i].push_back(now);
          if (e.finished) finish_s[i] = now;
          if (e.token >= 0) {
            tokens[i].push_back(e.token);
            logits[i].push_back(e.logits);
          }
          if (e.finished) {
            status[i] = e.status;
            done[i].Notify();
          }
        });
    if (!s.ok()) return Fail("submit", s);
  }
  for (auto& d : done) d.WaitForNotification();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::ofstream out(Arg(argc, argv, "out"));
  for (size_t i = 0; i < n; ++i) {
    if (!status[i].ok()) return Fail(absl::StrCat("request ", i), status[i]);
    cpserve::testing::WriteRankResult(out, tokens[i], logits[i]);
  }
  out << "seconds " << seconds << "\n";
  out << "first_token_s " << *std::max_element(first_token_s.begin(), first_token_s.end()) << "\n";
  // Decode steps at the full batch: gaps of the last request to start, before the
  // first finish.
  const size_t last = static_cast<size_t>(
      std::max_element(first_token_s.begin(), first_token_s.end()) - first_token_s.begin());
  const double first_finish = *std::min_element(finish_s.begin(), finish_s.end());
  std::vector<double> gaps;
  for (size_t k = 1; k < token_s[last].size() && token_s[last][k] <= first_finish; ++k) {
    gaps.push_back(token_s[last][k] - token_s[last][k - 1]);
  }
  std::sort(gaps.begin(), gaps.end());
  const double full_batch_step_ms = gaps.empty() ? 0 : 1e3 * gaps[gaps.size() / 2];
  out << "full_batch_step_ms " << full_batch_step_ms << " (" << gaps.size() << " steps)\n";
  std::cout << "world " << world << ": " << n << " requests, first tokens after";
  for (double t : first_token_s) std::cout << " " << t;
  std::cout << " s, all done after " << seconds << " s; decode step at the full batch of " << n
            << ": " << full_batch_step_ms << " ms (median of " << gaps.size() << ")\n";
  return 0;
}
