// NCCL collective groups on real GPUs. World 1 runs in-process; world 2 runs one
// comm_rank process per GPU (rank 0 hosts the rendezvous store). Every child gets
// NCCL_NVLS_ENABLE=0 (NVLink multicast must stay off on the GPU machines).
// Skipped cleanly when there are not enough GPUs.
#include "worker/comm/nccl_group.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/common/subprocess.h"
#include "tests/unit/comm/collective_checks.h"
#include "tests/unit/comm/cuda_device_io.h"
#include "worker/comm/gloo_group.h"
#include "worker/comm/rendezvous_client.h"
#include "worker/comm/rendezvous_service.h"
#include "worker/comm/split_group.h"

namespace cpserve::comm {
namespace {

using ::cpserve::testing::BinaryPath;
using ::cpserve::testing::Subprocess;
using std::chrono::milliseconds;

constexpr milliseconds kNoHang(120000);

// A rendezvous store on loopback and a client of it, for in-process groups.
struct InProcessRendezvous {
  void Start() {
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    auto s = RendezvousServer::Start("127.0.0.1:0");
    ASSERT_TRUE(s.ok()) << s.status();
    server = *std::move(s);
    auto c = RendezvousClient::Connect(server->address(), milliseconds(5000));
    ASSERT_TRUE(c.ok()) << c.status();
    client = *std::move(c);
  }
  std::unique_ptr<RendezvousServer> server;
  std::unique_ptr<RendezvousClient> client;
};

TEST(NcclGroupTest, SingleRankInProcess) {
  if (testing::CudaDeviceCount() < 1) GTEST_SKIP() << "no CUDA device";
  InProcessRendezvous rdzv;
  ASSERT_NO_FATAL_FAILURE(rdzv.Start());
  RendezvousClient* client = rdzv.client.get();
  auto group = CreateNcclGroup(*client, RendezvousPrefix("gpu", 1), 0, 1,
                               {.device = 0, .timeout = milliseconds(30000)});
  ASSERT_TRUE(group.ok()) << group.status();
  EXPECT_STREQ((*group)->backend(), "nccl");
  auto io = testing::CudaDeviceIO(0);
  EXPECT_TRUE(testing::RunCollectiveChecks(**group, 5, io).ok());
  // Host tensors are refused without breaking the group.
  Tensor host = Tensor::Zeros({4}, DType::kF32);
  EXPECT_EQ((*group)->AllReduce(host).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*group)->healthy());
}

// A GPU pool's group (worker/pool/pool_backend.cc): Gloo for host tensors, NCCL for
// device tensors — every collective is exact on both sides, and mixing the sides in
// one collective is refused without breaking the group.
TEST(NcclGroupTest, SplitGroupRoutesHostToGlooAndDeviceToNccl) {
  if (testing::CudaDeviceCount() < 1) GTEST_SKIP() << "no CUDA device";
  InProcessRendezvous rdzv;
  ASSERT_NO_FATAL_FAILURE(rdzv.Start());
  RendezvousClient* client = rdzv.client.get();
  auto device = CreateNcclGroup(*client, RendezvousPrefix("split", 1), 0, 1,
                                {.device = 0, .timeout = milliseconds(30000)});
  auto host = CreateGlooGroup(*client, RendezvousPrefix("split", 1) + "/control", 0, 1,
                              {.timeout = milliseconds(30000)});
  ASSERT_TRUE(device.ok() && host.ok()) << device.status() << host.status();
  auto group = CreateSplitGroup(*std::move(host), *std::move(device));
  ASSERT_TRUE(group.ok()) << group.status();
  EXPECT_STREQ((*group)->backend(), "nccl+gloo");
  auto io = testing::CudaDeviceIO(0);
  EXPECT_TRUE(testing::RunCollectiveChecks(**group, 6, io).ok());
  EXPECT_TRUE(testing::RunCollectiveChecks(**group, 7, testing::DeviceIO::Host()).ok());
  Tensor h = Tensor::Zeros({4}, DType::kF32);
  auto d = Tensor::Empty({4}, DType::kF32, Device::CUDA(0));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ((*group)->AllGather(h, *d).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*group)->healthy());
}

// Starts one comm_rank --backend=nccl per rank; rank 0 publishes its port.
std::vector<std::unique_ptr<Subprocess>> StartRanks(int world, const std::string& mode,
                                                    int timeout_ms) {
  auto port_file = std::filesystem::temp_directory_path() /
                   absl::StrCat("cpserve_nccl_port_", getpid(), "_", mode);
  std::filesystem::remove(port_file);
  std::vector<std::unique_ptr<Subprocess>> procs;
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> argv = {
        BinaryPath("comm_rank"),         absl::StrCat("--rank=", r),
        absl::StrCat("--world=", world), "--backend=nccl",
        absl::StrCat("--mode=", mode),   absl::StrCat("--timeout_ms=", timeout_ms)};
    if (r == 0) {
      argv.push_back("--port_file=" + port_file.string());
    } else {
      int port = 0;
      auto until = std::chrono::steady_clock::now() + kNoHang;
      while (port == 0 && std::chrono::steady_clock::now() < until) {
        std::ifstream in(port_file);
        if (!(in >> port)) std::this_thread::sleep_for(milliseconds(10));
      }
      argv.push_back(absl::StrCat("--rendezvous=127.0.0.1:", port));
    }
    auto p = std::make_unique<Subprocess>();
    EXPECT_TRUE(p->Start(argv, {"NCCL_NVLS_ENABLE=0"}));
    procs.push_back(std::move(p));
  }
  return procs;
}

TEST(NcclGroupTest, TwoProcessesOneGpuEach) {
  if (testing::CudaDeviceCount() < 2) GTEST_SKIP() << "needs 2 CUDA devices";
  auto procs = StartRanks(2, "checks", 60000);
  for (int r = 0; r < 2; ++r) {
    auto code = procs[r]->Wait(kNoHang);
    ASSERT_TRUE(code.has_value()) << "rank " << r << " hung";
    EXPECT_EQ(*code, 0) << procs[r]->Output();
    EXPECT_NE(procs[r]->Output().find("checks=OK"), std::string::npos) << procs[r]->Output();
  }
}

TEST(NcclGroupTest, KilledPeerAbortsInsteadOfHanging) {
  if (testing::CudaDeviceCount() < 2) GTEST_SKIP() << "needs 2 CUDA devices";
  auto procs = StartRanks(2, "loop", 3000);
  auto until = std::chrono::steady_clock::now() + kNoHang;
  while (std::chrono::steady_clock::now() < until &&
         (procs[0]->Output().find("running") == std::string::npos ||
          procs[1]->Output().find("running") == std::string::npos)) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  procs[1]->Kill(SIGKILL);
  auto code = procs[0]->Wait(kNoHang);
  ASSERT_TRUE(code.has_value()) << "rank 0 hung after its peer died";
  const std::string out = procs[0]->Output();
  EXPECT_EQ(*code, 3) << out;
  const bool clear = out.find("first_error=UNAVAILABLE") != std::string::npos ||
                     out.find("first_error=DEADLINE_EXCEEDED") != std::string::npos;
  EXPECT_TRUE(clear) << out;
  EXPECT_NE(out.find("then=FAILED_PRECONDITION"), std::string::npos) << out;
  std::printf("%s", out.c_str());
}

}  // namespace
}  // namespace cpserve::comm
