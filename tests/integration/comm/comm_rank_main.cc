// One rank of a Gloo collective group in its own process, for the multi-process
// integration tests and for collectives_bench-style experiments.
//
//   comm_rank --rank=R --world=W (--port_file=F | --rendezvous=HOST:PORT)
//             --mode=checks|loop|hang [--timeout_ms=T] [--hang_after=N]
//             [--backend=gloo|nccl]   (nccl: built with CUDA only; one GPU per rank)
//
// Rank 0 hosts the rendezvous store (as a pool leader does) on 127.0.0.1:0 and
// writes its port to --port_file; the others connect to --rendezvous.
// Modes: checks = the full collective check suite, exit 0 on success;
// loop = all-reduce until an error, then one more call; exit 3 after printing
// "first_error=<CODE>" and "then=<CODE>" (used with a rank killed from outside);
// hang = like loop, but rank W-1 stops calling collectives after --hang_after ops.
// Exit 4: group formation failed ("init_failed=<CODE>").
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/unit/comm/collective_checks.h"
#include "worker/comm/gloo_group.h"
#include "worker/comm/rendezvous_client.h"
#include "worker/comm/rendezvous_service.h"
#ifdef CPSERVE_COMM_HAVE_NCCL
#include "tests/unit/comm/cuda_device_io.h"
#include "worker/comm/nccl_group.h"
#endif

namespace {

using namespace cpserve;
using namespace cpserve::comm;
using Clock = std::chrono::steady_clock;

std::map<std::string, std::string> ParseFlags(int argc, char** argv) {
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) continue;
    auto eq = a.find('=');
    flags[a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2)] =
        eq == std::string::npos ? "" : a.substr(eq + 1);
  }
  return flags;
}

int IntFlag(const std::map<std::string, std::string>& f, const std::string& name, int def) {
  auto it = f.find(name);
  int v = def;
  if (it != f.end() && !absl::SimpleAtoi(it->second, &v)) {
    std::fprintf(stderr, "bad --%s\n", name.c_str());
    std::exit(2);
  }
  return v;
}

void Say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

int RunLoop(CollectiveGroup& g, int hang_after, const testing::DeviceIO& io) {
  Tensor t = io.to_device(Tensor::Zeros({65536}, DType::kF32));
  absl::Status first;
  for (int i = 0;; ++i) {
    if (hang_after >= 0 && i == hang_after && g.rank() == g.world_size() - 1) {
      Say("hanging");
      std::this_thread::sleep_for(std::chrono::seconds(120));
      return 0;
    }
    if (i == 3) Say("running");
    first = g.AllReduce(t);
    if (!first.ok()) break;
  }
  auto broke = Clock::now();
  absl::Status then = g.Barrier();
  Say(absl::StrCat("first_error=", absl::StatusCodeToString(first.code())));
  Say(absl::StrCat("message=", first.message()));
  Say(absl::StrCat("then=", absl::StatusCodeToString(then.code())));
  Say(absl::StrCat(
      "then_ms=",
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - broke).count()));
  Say(absl::StrCat("healthy=", g.healthy()));
  return 3;
}

}  // namespace

int main(int argc, char** argv) {
  auto flags = ParseFlags(argc, argv);
  const int rank = IntFlag(flags, "rank", 0);
  const int world = IntFlag(flags, "world", 1);
  const int timeout_ms = IntFlag(flags, "timeout_ms", 10000);
  const std::string mode = flags.count("mode") ? flags["mode"] : "checks";

  std::unique_ptr<RendezvousServer> server;
  std::string address = flags["rendezvous"];
  if (rank == 0 && flags.count("port_file")) {
    auto s = RendezvousServer::Start("127.0.0.1:0");
    if (!s.ok()) {
      Say(absl::StrCat("server_failed=", s.status().ToString()));
      return 4;
    }
    server = std::move(*s);
    address = server->address();
    const std::string tmp = flags["port_file"] + ".tmp";
    std::ofstream(tmp) << server->port() << "\n";
    std::rename(tmp.c_str(), flags["port_file"].c_str());
  }
  auto client = RendezvousClient::Connect(address, std::chrono::milliseconds(timeout_ms));
  if (!client.ok()) {
    Say(absl::StrCat("init_failed=", absl::StatusCodeToString(client.status().code())));
    Say(absl::StrCat("message=", client.status().message()));
    return 4;
  }
  auto start = Clock::now();
  const std::string backend = flags.count("backend") ? flags["backend"] : "gloo";
  const auto timeout = std::chrono::milliseconds(timeout_ms);
  testing::DeviceIO io = testing::DeviceIO::Host();
  absl::StatusOr<std::unique_ptr<CollectiveGroup>> group =
      absl::InvalidArgumentError(absl::StrCat("backend ", backend, " not built"));
  if (backend == "gloo") {
    group =
        CreateGlooGroup(**client, RendezvousPrefix("itest", 1), rank, world, {.timeout = timeout});
  }
#ifdef CPSERVE_COMM_HAVE_NCCL
  if (backend == "nccl") {
    group = CreateNcclGroup(
        **client, RendezvousPrefix("itest", 1), rank, world,
        {.device = rank % std::max(1, testing::CudaDeviceCount()), .timeout = timeout});
    io = testing::CudaDeviceIO(rank % std::max(1, testing::CudaDeviceCount()));
  }
#endif
  if (!group.ok()) {
    Say(absl::StrCat("init_failed=", absl::StatusCodeToString(group.status().code())));
    Say(absl::StrCat("message=", group.status().message()));
    Say(absl::StrCat(
        "init_ms=",
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()));
    return 4;
  }
  Say("connected");
  if (mode == "checks") {
    testing::CheckOptions options;
    options.rows = {0, 1, 33};
    absl::Status s = testing::RunCollectiveChecks(**group, 1234, io, options);
    if (s.ok()) s = testing::CheckRealAllReduce(**group, 99, io, 50001);
    Say(s.ok() ? "checks=OK" : absl::StrCat("checks_failed=", s.ToString()));
    return s.ok() ? 0 : 1;
  }
  if (mode == "loop") return RunLoop(**group, -1, io);
  if (mode == "hang") return RunLoop(**group, IntFlag(flags, "hang_after", 5), io);
  Say("unknown mode");
  return 2;
}
