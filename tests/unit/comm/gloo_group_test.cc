// Gloo collective groups of N in-process ranks (threads) bootstrapped through a real
// gRPC rendezvous server on loopback.
#include "worker/comm/gloo_group.h"

#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/unit/comm/collective_checks.h"
#include "worker/comm/rendezvous_client.h"
#include "worker/comm/rendezvous_service.h"
#include "worker/comm/split_group.h"

namespace cpserve::comm {
namespace {

using std::chrono::milliseconds;

class GlooGroupTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    auto server = RendezvousServer::Start("127.0.0.1:0");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  // Forms a group of `world` threads under `prefix` and runs body(group) on each;
  // returns each rank's status.
  std::vector<absl::Status> RunRanks(int world, const std::string& prefix, milliseconds timeout,
                                     const std::function<absl::Status(CollectiveGroup&)>& body) {
    std::vector<absl::Status> result(world);
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r) {
      threads.emplace_back([&, r] {
        auto client = RendezvousClient::Connect(server_->address(), milliseconds(5000));
        if (!client.ok()) {
          result[r] = client.status();
          return;
        }
        auto group = CreateGlooGroup(**client, prefix, r, world, {.timeout = timeout});
        if (!group.ok()) {
          result[r] = group.status();
          return;
        }
        EXPECT_EQ((*group)->rank(), r);
        EXPECT_EQ((*group)->world_size(), world);
        result[r] = body(**group);
      });
    }
    for (auto& t : threads) t.join();
    return result;
  }

  std::unique_ptr<RendezvousServer> server_;
};

TEST_P(GlooGroupTest, AllCollectivesExact) {
  const int world = GetParam();
  auto results =
      RunRanks(world, RendezvousPrefix("pool", 1), milliseconds(20000), [](CollectiveGroup& g) {
        return testing::RunCollectiveChecks(g, /*seed=*/42, testing::DeviceIO::Host());
      });
  for (int r = 0; r < world; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << results[r];
}

TEST_P(GlooGroupTest, RealValuedAllReduceAgreesAcrossRanks) {
  const int world = GetParam();
  auto results =
      RunRanks(world, RendezvousPrefix("pool", 1), milliseconds(20000), [](CollectiveGroup& g) {
        return testing::CheckRealAllReduce(g, 7, testing::DeviceIO::Host(), 100003);
      });
  for (int r = 0; r < world; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << results[r];
}

TEST_P(GlooGroupTest, ArgumentErrorsDoNotBreakTheGroup) {
  const int world = GetParam();
  auto results = RunRanks(
      world, RendezvousPrefix("pool", 1), milliseconds(20000), [world](CollectiveGroup& g) {
        Tensor in = Tensor::Zeros({4, 2}, DType::kF32);
        Tensor wrong = Tensor::Zeros({4 * world + 1, 2}, DType::kF32);
        EXPECT_EQ(g.AllGather(in, wrong).code(), absl::StatusCode::kInvalidArgument);
        Tensor other = Tensor::Zeros({4 * world, 2}, DType::kI32);
        EXPECT_EQ(g.AllGather(in, other).code(), absl::StatusCode::kInvalidArgument);
        Tensor strided = Tensor::Zeros({4, 4}, DType::kF32).Slice(1, 0, 2);
        EXPECT_EQ(g.AllReduce(strided).code(), absl::StatusCode::kInvalidArgument);
        EXPECT_EQ(g.Broadcast(in, world).code(), absl::StatusCode::kInvalidArgument);
        Tensor small = Tensor::Zeros({3, 2}, DType::kF32);
        EXPECT_EQ(g.ReduceScatter(in, small).code(), absl::StatusCode::kInvalidArgument);
        std::vector<int64_t> counts(world, 4);
        counts[0] = 3;
        EXPECT_EQ(g.AllGatherV(in, other, counts).code(), absl::StatusCode::kInvalidArgument);
        float fake = 0;
        Tensor device = Tensor::Borrow(&fake, {1}, DType::kF32, Device::CUDA(0));
        EXPECT_EQ(g.AllReduce(device).code(), absl::StatusCode::kInvalidArgument);
        EXPECT_TRUE(g.healthy());
        // Still usable.
        Tensor one = Tensor::Zeros({1}, DType::kI64);
        one.data<int64_t>()[0] = 1;
        if (auto s = g.AllReduce(one); !s.ok()) return s;
        EXPECT_EQ(one.data<int64_t>()[0], world);
        return absl::OkStatus();
      });
  for (int r = 0; r < world; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << results[r];
}

INSTANTIATE_TEST_SUITE_P(Worlds, GlooGroupTest, ::testing::Values(1, 2, 3, 4),
                         [](const auto& info) { return absl::StrCat("N", info.param); });

class GlooFailureTest : public GlooGroupTest {};

TEST_F(GlooFailureTest, RankThatNeverArrivesFailsInitWithinTimeout) {
  auto client = RendezvousClient::Connect(server_->address(), milliseconds(5000));
  ASSERT_TRUE(client.ok());
  auto group =
      CreateGlooGroup(**client, RendezvousPrefix("pool", 1), 0, 2, {.timeout = milliseconds(500)});
  ASSERT_FALSE(group.ok());
  EXPECT_EQ(group.status().code(), absl::StatusCode::kDeadlineExceeded) << group.status();
  EXPECT_NE(group.status().message().find("rank 0 of 2"), std::string::npos) << group.status();
}

TEST_F(GlooFailureTest, RankThatSkipsACollectiveBreaksTheGroup) {
  auto results = RunRanks(2, RendezvousPrefix("pool", 1), milliseconds(500),
                          [](CollectiveGroup& g) -> absl::Status {
                            Tensor t = Tensor::Zeros({1000}, DType::kF32);
                            if (auto s = g.AllReduce(t); !s.ok()) return s;
                            if (g.rank() == 1) {
                              // Rank 1 never arrives at the second all-reduce.
                              std::this_thread::sleep_for(milliseconds(1500));
                              return absl::OkStatus();
                            }
                            absl::Status s = g.AllReduce(t);
                            EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
                            EXPECT_NE(s.message().find("AllReduce"), std::string::npos) << s;
                            EXPECT_FALSE(g.healthy());
                            EXPECT_EQ(g.broken_status().code(), s.code());
                            absl::Status later = g.Barrier();
                            EXPECT_EQ(later.code(), absl::StatusCode::kFailedPrecondition) << later;
                            EXPECT_NE(later.message().find("broken"), std::string::npos);
                            return absl::OkStatus();
                          });
  EXPECT_TRUE(results[0].ok()) << results[0];
  EXPECT_TRUE(results[1].ok()) << results[1];
}

TEST_F(GlooFailureTest, GenerationsAreIndependent) {
  // A first group of 2 forms and is abandoned; a second generation forms on the same
  // store with new connections, never reading the first one's addresses.
  for (int gen = 1; gen <= 2; ++gen) {
    auto results = RunRanks(2, RendezvousPrefix("pool", gen), milliseconds(5000),
                            [](CollectiveGroup& g) { return g.Barrier(); });
    EXPECT_TRUE(results[0].ok()) << results[0];
    EXPECT_TRUE(results[1].ok()) << results[1];
  }
}

// The split group (split_group.h) over two Gloo groups: host tensors take the host
// group and every collective stays exact; groups of other ranks are refused.
TEST_P(GlooGroupTest, SplitGroupOverTwoGlooGroups) {
  const int world = GetParam();
  std::vector<std::unique_ptr<CollectiveGroup>> control(world);
  std::vector<absl::Status> made(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto client = RendezvousClient::Connect(server_->address(), milliseconds(5000));
      auto a = client.ok() ? CreateGlooGroup(**client, "split/a", r, world, {}) : client.status();
      auto b = client.ok() ? CreateGlooGroup(**client, "split/b", r, world, {}) : client.status();
      if (!a.ok() || !b.ok()) {
        made[r] = a.ok() ? b.status() : a.status();
        return;
      }
      auto g = CreateSplitGroup(*std::move(a), *std::move(b));
      if (!g.ok()) {
        made[r] = g.status();
        return;
      }
      EXPECT_EQ(std::string((*g)->backend()), "gloo+gloo");
      made[r] = testing::RunCollectiveChecks(**g, 11, testing::DeviceIO::Host());
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) EXPECT_TRUE(made[r].ok()) << "rank " << r << made[r];
  EXPECT_EQ(CreateSplitGroup(nullptr, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpserve::comm
