// The NCCL group's host-tensor staging (NcclGroupOptions::host_staging), which
// carries a CUDA pool's control traffic: the backend-independent collective check
// suite with host tensors — every collective, dtype and size (empty included),
// exact against a double reference — on 1 rank and on 2 ranks (threads, one GPU
// each), interleaved with device-tensor collectives on the same communicator.
// Without staging, host tensors stay INVALID_ARGUMENT. Skips without GPUs.
#include <chrono>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/unit/comm/collective_checks.h"
#include "tests/unit/comm/cuda_device_io.h"
#include "worker/comm/nccl_group.h"
#include "worker/comm/rendezvous_client.h"
#include "worker/comm/rendezvous_service.h"

namespace cpserve::comm {
namespace {

using std::chrono::milliseconds;

// Runs `world` ranks as threads (rank r on GPU r) and the checks on each.
void RunRanks(int world, const std::string& name) {
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  auto server = RendezvousServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();
  std::vector<absl::Status> results(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto client = RendezvousClient::Connect((*server)->address(), milliseconds(10000));
      if (!client.ok()) {
        results[r] = client.status();
        return;
      }
      NcclGroupOptions o;
      o.device = r;
      o.timeout = milliseconds(60000);
      o.host_staging = true;
      auto group = CreateNcclGroup(**client, RendezvousPrefix(name, 0), r, world, o);
      if (!group.ok()) {
        results[r] = group.status();
        return;
      }
      testing::CheckOptions small;
      small.large_elements = 20000;
      absl::Status s = testing::RunCollectiveChecks(**group, 7, testing::DeviceIO::Host(), small);
      // The same communicator still serves device tensors, then host ones again.
      if (s.ok()) s = testing::RunCollectiveChecks(**group, 8, testing::CudaDeviceIO(r), small);
      if (s.ok()) s = testing::CheckRealAllReduce(**group, 9, testing::DeviceIO::Host(), 1000);
      if (s.ok() && !(*group)->healthy()) s = (*group)->broken_status();
      results[r] = s;
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r)
    EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
}

TEST(NcclHostStagingTest, OneRank) {
  if (testing::CudaDeviceCount() < 1) GTEST_SKIP() << "no CUDA device";
  RunRanks(1, "staging-1");
}

TEST(NcclHostStagingTest, TwoRanksOnTwoGpus) {
  if (testing::CudaDeviceCount() < 2) GTEST_SKIP() << "needs 2 CUDA devices";
  RunRanks(2, "staging-2");
}

TEST(NcclHostStagingTest, OffByDefault) {
  if (testing::CudaDeviceCount() < 1) GTEST_SKIP() << "no CUDA device";
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  auto server = RendezvousServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok());
  auto client = RendezvousClient::Connect((*server)->address(), milliseconds(10000));
  ASSERT_TRUE(client.ok());
  auto group = CreateNcclGroup(**client, RendezvousPrefix("staging-off", 0), 0, 1,
                               {.device = 0, .timeout = milliseconds(30000)});
  ASSERT_TRUE(group.ok()) << group.status();
  Tensor host = Tensor::Zeros({4}, DType::kF32);
  EXPECT_EQ((*group)->AllReduce(host).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*group)->healthy());
}

}  // namespace
}  // namespace cpserve::comm
