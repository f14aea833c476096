// One rank of a context-parallel pool for the CP integration tests, as a real process:
//   cp_rank --rank=R --world=N --rdzv=host:port --model=DIR --requests=FILE --out=FILE
//           [--interleave=I] [--block=B] [--partition] [--batch_tokens=T] [--kv_blocks=K]
//           [--die_after_ms=MS] [--timeout_ms=MS]
// Rank 0 runs the engine on the requests (one per line: "max_tokens id id id ...",
// greedy, logits returned) and writes, per request, "tokens t t t" then "logits"
// lines with the logits row of every generated token; ranks > 0 follow.
// With --die_after_steps, rank 1 kills itself (SIGKILL) after MS milliseconds (mid-generation), and
// rank 0 writes "unhealthy <status>" and how long the failure took to surface.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/common/rank_tool.h"
#include "worker/comm/gloo_group.h"
#include "worker/comm/rendezvous_client.h"
#include "worker/engine/engine.h"
#include "worker/model/weights.h"

namespace {

using cpserve::testing::Arg;
using cpserve::testing::IntArg;

int Fail(const std::string& what, const absl::Status& s) {
  std::cerr << "cp_rank: " << what << ": " << s << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace cpserve;
  const int rank = IntArg(argc, argv, "rank", 0);
  const int world = IntArg(argc, argv, "world", 1);
  const int die_after = IntArg(argc, argv, "die_after_ms", -1);
  const auto timeout = std::chrono::milliseconds(IntArg(argc, argv, "timeout_ms", 20000));

  absl::StatusOr<ModelWeights> weights = LoadModel(Arg(argc, argv, "model"), DType::kF32);
  if (!weights.ok()) return Fail("load", weights.status());
  std::unique_ptr<Backend> backend = MakeCpuBackend();

  EngineOptions options;
  options.block_size = IntArg(argc, argv, "block", 16);
  options.interleave = IntArg(argc, argv, "interleave", 0);
  options.partition_prefill = Arg(argc, argv, "partition") == "1";
  options.max_batch_tokens = IntArg(argc, argv, "batch_tokens", 2048);
  options.num_kv_blocks = IntArg(argc, argv, "kv_blocks", 1024);
  options.max_running = std::min<int>(64, static_cast<int>(options.max_batch_tokens));

  std::unique_ptr<comm::CollectiveGroup> group;
  if (world > 1) {
    auto client = comm::RendezvousClient::Connect(Arg(argc, argv, "rdzv"), timeout);
    if (!client.ok()) return Fail("rendezvous", client.status());
    auto g = comm::CreateGlooGroup(**client, comm::RendezvousPrefix("cp-test", 0), rank, world,
                                   {"127.0.0.1", timeout});
    if (!g.ok()) return Fail("group", g.status());
    group = *std::move(g);
  }
  if (rank > 0) {
    if (die_after >= 0 && rank == 1) {
      // Follow for a while, then die without a word.
      std::thread killer([die_after] {
        std::this_thread::sleep_for(std::chrono::milliseconds(die_after));
        ::kill(::getpid(), SIGKILL);
      });
      killer.detach();
    }
    const absl::Status s = RunFollower(*weights, *backend, options, *group);
    if (!s.ok()) return Fail("follower", s);
    return 0;
  }

  // Rank 0: the requests.
  cpserve::testing::RankRequests requests =
      cpserve::testing::ReadRankRequests(Arg(argc, argv, "requests"));
  std::vector<std::vector<int32_t>>& prompts = requests.prompts;
  std::vector<int>& max_tokens = requests.max_tokens;
  auto engine = Engine::Create(*weights, *backend, options, group.get());
  if (!engine.ok()) return Fail("engine", engine.status());
  const size_t n = prompts.size();
  std::vector<std::vector<int32_t>> tokens(n);
  std::vector<std::vector<std::vector<float>>> logits(n);
  std::vector<absl::Status> status(n);
  std::vector<absl::Notification> done(n);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < n; ++i) {
    GenerationParams p;
    p.max_tokens = max_tokens[i];
    p.ignore_eos = true;
    p.return_logits = true;
    const absl::Status s =
        (*engine)->Submit(absl::StrCat("r", i), prompts[i], p, [&, i](const TokenEvent& e) {
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
  if (!(*engine)->healthy()) {
    out << "unhealthy " << status[0] << "\nseconds " << seconds << "\n";
    return 0;
  }
  for (size_t i = 0; i < n; ++i) {
    if (!status[i].ok()) return Fail(absl::StrCat("request ", i), status[i]);
    cpserve::testing::WriteRankResult(out, tokens[i], logits[i]);
  }
  return 0;
}
