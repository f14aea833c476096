// Multi-process KV transfer over UCX on loopback (DESIGN §5): real prefill and
// decode processes (transfer_peer), real endpoints, synthetic deterministic KV.
// Each peer checks its own outcome (bytes, status, counters back to zero) and
// exits 0 when it matches what the scenario expects.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/common/subprocess.h"

namespace cpserve::transfer {
namespace {

using cpserve::testing::BinaryPath;
using cpserve::testing::Subprocess;

struct Peer {
  std::string role;
  int rank;
  std::vector<std::string> extra;  // --key=value
  int want_exit = 0;               // 137 for a peer that kills itself
};

void RunScenario(int P, int Ip, int D, int Id, int64_t len, const std::vector<Peer>& peers,
                 const std::string& tls = "tcp", bool peer_detect = true) {
  static int counter = 0;
  const std::string dir = absl::StrCat(std::filesystem::temp_directory_path().string(),
                                       "/cpserve_xfer_", getpid(), "_", counter++);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::vector<std::string> common = {absl::StrCat("--P=", P),
                                           absl::StrCat("--Ip=", Ip),
                                           absl::StrCat("--D=", D),
                                           absl::StrCat("--Id=", Id),
                                           absl::StrCat("--len=", len),
                                           "--id=req-" + std::to_string(counter),
                                           "--dir=" + dir,
                                           absl::StrCat("--seed=", counter),
                                           absl::StrCat("--peer_detect=", peer_detect ? 1 : 0)};
  std::vector<std::unique_ptr<Subprocess>> procs;
  for (const Peer& p : peers) {
    std::vector<std::string> argv = {BinaryPath("transfer_peer"), "--role=" + p.role,
                                     absl::StrCat("--rank=", p.rank)};
    argv.insert(argv.end(), common.begin(), common.end());
    argv.insert(argv.end(), p.extra.begin(), p.extra.end());
    procs.push_back(std::make_unique<Subprocess>());
    ASSERT_TRUE(procs.back()->Start(argv, {"UCX_TLS=" + tls, "UCX_WARN_UNUSED_ENV_VARS=n"}));
  }
  for (size_t i = 0; i < procs.size(); ++i) {
    std::optional<int> code = procs[i]->Wait(std::chrono::seconds(40));
    EXPECT_EQ(code.value_or(-1), peers[i].want_exit)
        << peers[i].role << " " << peers[i].rank << " (P=" << P << " Ip=" << Ip << " D=" << D
        << " Id=" << Id << " len=" << len << ")\n"
        << procs[i]->Output();
  }
  std::filesystem::remove_all(dir);
}

std::vector<Peer> AllRanks(int P, int D, std::vector<std::string> recv_extra = {},
                           std::vector<std::string> send_extra = {}) {
  std::vector<Peer> peers;
  for (int d = 0; d < D; ++d) peers.push_back({"recv", d, recv_extra});
  for (int r = 0; r < P; ++r) peers.push_back({"send", r, send_extra});
  return peers;
}

// Every P x D in {1,2,4}^2, interleave 1 and B (=4) on each side, random lengths:
// every decode rank's blocks equal the D-rank placement of the same values.
TEST(TransferLoopbackTest, AnyPrefillToAnyDecodeIsByteExact) {
  std::mt19937 rng(11);
  const int B = 4;
  for (int P : {1, 2, 4}) {
    for (int D : {1, 2, 4}) {
      const int Ip = rng() % 2 ? 1 : B;
      const int Id = rng() % 2 ? 1 : B;
      const int64_t len = 1 + rng() % 200;
      RunScenario(P, Ip, D, Id, len, AllRanks(P, D));
      if (HasFailure()) return;
    }
  }
}

TEST(TransferLoopbackTest, SharedMemoryTransport) {
  RunScenario(2, 1, 2, 4, 77, AllRanks(2, 2), "sm,self", /*peer_detect=*/false);
  RunScenario(1, 4, 4, 4, 150, AllRanks(1, 4), "sm,self", /*peer_detect=*/false);
}

TEST(TransferLoopbackTest, CorruptedDescriptorWritesNothing) {
  // The sender refuses (INVALID_ARGUMENT) before any put; the receiver's region
  // stays untouched and its reservation expires.
  RunScenario(1, 4, 1, 4, 40,
              {{"recv", 0, {"--expect=DEADLINE_EXCEEDED", "--untouched=1", "--deadline_ms=1500"}},
               {"send", 0, {"--mode=corrupt", "--expect=INVALID_ARGUMENT"}}});
}

TEST(TransferLoopbackTest, ReceiverDeadlineExceeded) {
  // The sender comes after the reservation expired: refused, nothing written.
  RunScenario(
      2, 4, 1, 4, 64,
      {{"recv",
        0,
        {"--expect=DEADLINE_EXCEEDED", "--untouched=1", "--deadline_ms=300", "--linger_ms=2500"}},
       {"send", 0, {"--delay_ms=1500", "--expect=DEADLINE_EXCEEDED"}},
       {"send", 1, {"--delay_ms=1500", "--expect=DEADLINE_EXCEEDED"}}});
}

TEST(TransferLoopbackTest, SenderDeadlineExceeded) {
  RunScenario(1, 4, 1, 4, 64,
              {{"recv", 0, {"--expect=DEADLINE_EXCEEDED"}},
               {"send", 0, {"--deadline_ms=0", "--expect=DEADLINE_EXCEEDED"}}});
}

TEST(TransferLoopbackTest, CancelByReceiver) {
  RunScenario(
      1, 4, 2, 4, 64,
      {{"recv", 0, {"--mode=cancel", "--expect=CANCELLED", "--untouched=1", "--linger_ms=1500"}},
       {"recv", 1, {"--expect=CANCELLED"}},
       {"send", 0, {"--expect=CANCELLED"}}});
}

TEST(TransferLoopbackTest, CancelBySender) {
  RunScenario(1, 4, 2, 4, 64,
              {{"recv", 0, {"--expect=CANCELLED"}},
               {"recv", 1, {"--expect=CANCELLED"}},
               {"send", 0, {"--mode=cancel", "--expect=CANCELLED"}}});
}

TEST(TransferLoopbackTest, ReceiverKilledMidTransfer) {
#if defined(__SANITIZE_THREAD__)
  // Under TSan's slowdown the sender's deadline fires before the receiver's watcher sees
  // the first bytes, so the scenario under test (death mid-transfer) does not happen.
  GTEST_SKIP() << "timing-dependent scenario; not meaningful under ThreadSanitizer";
#endif
  // A large transfer; the receiver dies when the first bytes land.
  const std::vector<std::string> big = {"--layers=16", "--heads=8", "--head_dim=64", "--block=16"};
  std::vector<std::string> recv = big, send = big;
  recv.push_back("--mode=die_on_data");
  send.push_back("--expect=UNAVAILABLE");
  RunScenario(1, 16, 1, 16, 4096, {{"recv", 0, recv, 137}, {"send", 0, send}});
}

TEST(TransferLoopbackTest, SenderKilledMidTransfer) {
  // The sender dies after the handshake (receiver accepted), before its puts.
  // (Killing it while tcp puts are in flight makes UCX 1.13 abort the receiver
  // process inside ucp_put_handler: "unexpected error: Endpoint timeout".)
  RunScenario(
      1, 4, 1, 4, 256,
      {{"recv", 0, {"--expect=UNAVAILABLE"}}, {"send", 0, {"--mode=die_before_puts"}, 137}});
}

}  // namespace
}  // namespace cpserve::transfer
