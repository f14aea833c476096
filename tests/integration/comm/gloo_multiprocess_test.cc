// Gloo groups of real processes (comm_rank) on loopback: rank 0 hosts the rendezvous
// store like a pool leader. Collectives must be exact; a rank killed with SIGKILL or
// one that stops calling collectives must make the others fail with a clear status
// (and fail fast afterwards) instead of hanging; a rank that never starts must make
// group formation fail.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/common/subprocess.h"

namespace cpserve {
namespace {

using ::cpserve::testing::BinaryPath;
using ::cpserve::testing::Subprocess;
using std::chrono::milliseconds;

// Generous bound for "did not hang": far above every configured timeout.
constexpr milliseconds kNoHang(60000);

class GlooProcessGroup {
 public:
  // Starts `started` of `world` ranks (rank 0 first; it publishes its port).
  GlooProcessGroup(int world, int started, const std::string& mode, int timeout_ms,
                   std::vector<std::string> extra = {}) {
    port_file_ = std::filesystem::temp_directory_path() /
                 absl::StrCat("cpserve_comm_port_", getpid(), "_", counter_++);
    std::filesystem::remove(port_file_);
    for (int r = 0; r < started; ++r) {
      std::vector<std::string> argv = {
          BinaryPath("comm_rank"), absl::StrCat("--rank=", r), absl::StrCat("--world=", world),
          absl::StrCat("--mode=", mode), absl::StrCat("--timeout_ms=", timeout_ms)};
      argv.insert(argv.end(), extra.begin(), extra.end());
      if (r == 0) {
        argv.push_back("--port_file=" + port_file_.string());
      } else {
        argv.push_back(absl::StrCat("--rendezvous=127.0.0.1:", WaitForPort()));
      }
      auto p = std::make_unique<Subprocess>();
      EXPECT_TRUE(p->Start(argv, {"NCCL_NVLS_ENABLE=0"}));
      procs_.push_back(std::move(p));
    }
  }
  ~GlooProcessGroup() { std::filesystem::remove(port_file_); }

  Subprocess& proc(int r) { return *procs_[r]; }

  bool WaitForOutput(int r, const std::string& needle) {
    auto until = std::chrono::steady_clock::now() + kNoHang;
    while (std::chrono::steady_clock::now() < until) {
      if (procs_[r]->Output().find(needle) != std::string::npos) return true;
      if (!procs_[r]->Running()) return procs_[r]->Output().find(needle) != std::string::npos;
      std::this_thread::sleep_for(milliseconds(20));
    }
    return false;
  }

 private:
  int WaitForPort() {
    auto until = std::chrono::steady_clock::now() + kNoHang;
    while (std::chrono::steady_clock::now() < until) {
      std::ifstream in(port_file_);
      int port = 0;
      if (in >> port && port > 0) return port;
      std::this_thread::sleep_for(milliseconds(10));
    }
    ADD_FAILURE() << "rank 0 never published its rendezvous port: " << procs_[0]->Output();
    return 1;
  }

  static inline int counter_ = 0;
  std::filesystem::path port_file_;
  std::vector<std::unique_ptr<Subprocess>> procs_;
};

class GlooMultiprocessTest : public ::testing::TestWithParam<int> {};

TEST_P(GlooMultiprocessTest, CollectivesAreExact) {
  const int world = GetParam();
  GlooProcessGroup group(world, world, "checks", 20000);
  for (int r = 0; r < world; ++r) {
    auto code = group.proc(r).Wait(kNoHang);
    ASSERT_TRUE(code.has_value()) << "rank " << r << " hung";
    EXPECT_EQ(*code, 0) << "rank " << r << ":\n" << group.proc(r).Output();
    EXPECT_NE(group.proc(r).Output().find("checks=OK"), std::string::npos);
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, GlooMultiprocessTest, ::testing::Values(2, 3, 4),
                         [](const auto& info) { return absl::StrCat("N", info.param); });

TEST(GlooFailureProcessTest, KilledRankMakesOthersFailThenFailFast) {
  constexpr int kWorld = 3;
  GlooProcessGroup group(kWorld, kWorld, "loop", 2000);
  for (int r = 0; r < kWorld; ++r) ASSERT_TRUE(group.WaitForOutput(r, "running")) << r;
  group.proc(kWorld - 1).Kill(SIGKILL);
  for (int r = 0; r < kWorld - 1; ++r) {
    auto code = group.proc(r).Wait(kNoHang);
    ASSERT_TRUE(code.has_value()) << "rank " << r << " hung after a peer died";
    const std::string out = group.proc(r).Output();
    EXPECT_EQ(*code, 3) << out;
    const bool clear = out.find("first_error=UNAVAILABLE") != std::string::npos ||
                       out.find("first_error=DEADLINE_EXCEEDED") != std::string::npos;
    EXPECT_TRUE(clear) << out;
    EXPECT_NE(out.find("gloo AllReduce failed on rank"), std::string::npos) << out;
    EXPECT_NE(out.find("then=FAILED_PRECONDITION"), std::string::npos) << out;
    EXPECT_NE(out.find("healthy=0"), std::string::npos) << out;
    std::printf("rank %d after SIGKILL of rank %d:\n%s", r, kWorld - 1, out.c_str());
  }
}

TEST(GlooFailureProcessTest, RankThatStopsCallingTimesOut) {
  constexpr int kWorld = 3;
  GlooProcessGroup group(kWorld, kWorld, "hang", 2000, {"--hang_after=5"});
  ASSERT_TRUE(group.WaitForOutput(kWorld - 1, "hanging"));
  bool any_deadline = false;
  for (int r = 0; r < kWorld - 1; ++r) {
    auto code = group.proc(r).Wait(kNoHang);
    ASSERT_TRUE(code.has_value()) << "rank " << r << " hung";
    const std::string out = group.proc(r).Output();
    EXPECT_EQ(*code, 3) << out;
    any_deadline |= out.find("first_error=DEADLINE_EXCEEDED") != std::string::npos;
    EXPECT_NE(out.find("then=FAILED_PRECONDITION"), std::string::npos) << out;
  }
  // The rank that stalled is seen as a timeout by at least one peer (the others may see
  // that peer drop its connections first).
  EXPECT_TRUE(any_deadline) << group.proc(0).Output() << group.proc(1).Output();
  group.proc(kWorld - 1).Kill(SIGKILL);
}

TEST(GlooFailureProcessTest, RankThatNeverStartsFailsInit) {
  GlooProcessGroup group(/*world=*/3, /*started=*/2, "checks", 1000);
  for (int r = 0; r < 2; ++r) {
    auto code = group.proc(r).Wait(kNoHang);
    ASSERT_TRUE(code.has_value()) << "rank " << r << " hung in init";
    const std::string out = group.proc(r).Output();
    EXPECT_EQ(*code, 4) << out;
    EXPECT_NE(out.find("init_failed=DEADLINE_EXCEEDED"), std::string::npos) << out;
    std::printf("rank %d without rank 2:\n%s", r, out.c_str());
  }
}

}  // namespace
}  // namespace cpserve
