// The gRPC rendezvous store: a real server on loopback and real clients.
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "worker/comm/rendezvous_client.h"
#include "worker/comm/rendezvous_service.h"

namespace cpserve::comm {
namespace {

using std::chrono::milliseconds;

class RendezvousTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = RendezvousServer::Start("127.0.0.1:0");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    client_ = Connect();
  }
  std::unique_ptr<RendezvousClient> Connect() {
    auto c = RendezvousClient::Connect(server_->address(), milliseconds(5000));
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }
  std::unique_ptr<RendezvousServer> server_;
  std::unique_ptr<RendezvousClient> client_;
};

TEST_F(RendezvousTest, SetThenGet) {
  EXPECT_NE(client_->incarnation(), 0u);
  EXPECT_EQ(client_->incarnation(), server_->service().incarnation());
  ASSERT_TRUE(client_->Set("a", std::string("x\0y", 3)).ok());
  auto v = client_->Get("a", milliseconds(0));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, std::string("x\0y", 3));
  ASSERT_TRUE(client_->Set("a", "overwritten").ok());
  EXPECT_EQ(*client_->Get("a", milliseconds(100)), "overwritten");
  ASSERT_TRUE(client_->Set("empty", "").ok());
  EXPECT_EQ(*client_->Get("empty", milliseconds(0)), "");
}

TEST_F(RendezvousTest, GetWithoutWaitingIsNotFound) {
  auto v = client_->Get("missing", milliseconds(0));
  EXPECT_EQ(v.status().code(), absl::StatusCode::kNotFound) << v.status();
}

TEST_F(RendezvousTest, GetWaitsForSetFromAnotherClient) {
  auto other = Connect();
  std::thread setter([&] {
    std::this_thread::sleep_for(milliseconds(200));
    ASSERT_TRUE(other->Set("late", "value").ok());
  });
  auto v = client_->Get("late", milliseconds(10000));
  setter.join();
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, "value");
  EXPECT_EQ(server_->service().num_waiters(), 0u);
}

TEST_F(RendezvousTest, GetTimesOutWithKeyInMessage) {
  auto v = client_->Get("never", milliseconds(300));
  EXPECT_EQ(v.status().code(), absl::StatusCode::kDeadlineExceeded) << v.status();
  EXPECT_NE(v.status().message().find("never"), std::string::npos) << v.status();
  EXPECT_EQ(server_->service().num_waiters(), 0u);
}

TEST_F(RendezvousTest, WaitForSeveralKeys) {
  std::vector<std::thread> setters;
  for (int i = 0; i < 4; ++i) {
    setters.emplace_back([&, i] {
      auto c = Connect();
      std::this_thread::sleep_for(milliseconds(50 * i));
      ASSERT_TRUE(c->Set(absl::StrCat("k", i), "v").ok());
    });
  }
  EXPECT_TRUE(client_->Wait({"k0", "k1", "k2", "k3"}, milliseconds(10000)).ok());
  for (auto& t : setters) t.join();
  EXPECT_TRUE(client_->Wait({}, milliseconds(0)).ok());
}

TEST_F(RendezvousTest, WaitTimeoutNamesOnlyMissingKeys) {
  ASSERT_TRUE(client_->Set("present", "1").ok());
  absl::Status s = client_->Wait({"present", "absent"}, milliseconds(300));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_NE(s.message().find("key(s) absent not set"), std::string::npos) << s;
}

TEST_F(RendezvousTest, ManyParkedWaitersReleasedByOneSet) {
  constexpr int kWaiters = 24;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kWaiters; ++i) {
    threads.emplace_back([&] {
      auto v = client_->Get("go", milliseconds(20000));
      if (v.ok() && *v == "now") ok.fetch_add(1);
    });
  }
  while (server_->service().num_waiters() < kWaiters) std::this_thread::sleep_for(milliseconds(5));
  ASSERT_TRUE(client_->Set("go", "now").ok());
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kWaiters);
  EXPECT_EQ(server_->service().num_waiters(), 0u);
}

TEST_F(RendezvousTest, AddIsAtomicAcrossClients) {
  constexpr int kThreads = 4, kAdds = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      auto c = Connect();
      for (int i = 0; i < kAdds; ++i) ASSERT_TRUE(c->Add("counter", 2).ok());
    });
  }
  for (auto& t : threads) t.join();
  auto v = client_->Add("counter", 0);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 2 * kThreads * kAdds);
  EXPECT_EQ(*client_->Get("counter", milliseconds(0)), absl::StrCat(2 * kThreads * kAdds));
  EXPECT_EQ(*client_->Add("counter", -200), 0);
}

TEST_F(RendezvousTest, AddWakesWaiterAndRejectsNonIntegers) {
  std::thread adder([&] {
    std::this_thread::sleep_for(milliseconds(100));
    ASSERT_TRUE(Connect()->Add("arrived", 1).ok());
  });
  EXPECT_EQ(*client_->Get("arrived", milliseconds(10000)), "1");
  adder.join();
  ASSERT_TRUE(client_->Set("text", "abc").ok());
  EXPECT_EQ(client_->Add("text", 1).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(RendezvousTest, PrefixesSeparatePoolsAndGenerations) {
  const std::string a = RendezvousPrefix("prefill-0", 1);
  const std::string b = RendezvousPrefix("prefill-0", 2);
  const std::string c = RendezvousPrefix("decode-0", 1);
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  ASSERT_TRUE(client_->Set(a + "0", "gen1").ok());
  EXPECT_EQ(client_->Get(b + "0", milliseconds(0)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->Get(c + "0", milliseconds(0)).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(client_->Set(a + "1", "gen1").ok());
  ASSERT_TRUE(client_->Set(b + "0", "gen2").ok());
  auto deleted = client_->DeletePrefix(a);
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 2);
  EXPECT_EQ(client_->Get(a + "0", milliseconds(0)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*client_->Get(b + "0", milliseconds(0)), "gen2");
}

TEST_F(RendezvousTest, RestartedServerIsNeverReadThroughAnOldClient) {
  ASSERT_TRUE(client_->Set("k", "old").ok());
  const int port = server_->port();
  const uint64_t old_incarnation = client_->incarnation();
  server_.reset();
  auto restarted = RendezvousServer::Start(absl::StrCat("127.0.0.1:", port));
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  server_ = std::move(*restarted);
  ASSERT_NE(server_->service().incarnation(), old_incarnation);
  // The old client is refused, whether it reads or writes.
  EXPECT_EQ(client_->Set("k", "stale").code(), absl::StatusCode::kFailedPrecondition);
  auto v = client_->Get("k", milliseconds(100));
  EXPECT_EQ(v.status().code(), absl::StatusCode::kFailedPrecondition) << v.status();
  EXPECT_NE(v.status().message().find("restarted"), std::string::npos);
  // A new client sees the new, empty store.
  auto fresh = Connect();
  EXPECT_EQ(fresh->Get("k", milliseconds(0)).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RendezvousTest, ShutdownReleasesParkedWaiters) {
  std::thread waiter([&] {
    auto v = client_->Get("never", milliseconds(60000));
    EXPECT_EQ(v.status().code(), absl::StatusCode::kUnavailable) << v.status();
  });
  while (server_->service().num_waiters() < 1) std::this_thread::sleep_for(milliseconds(5));
  server_.reset();
  waiter.join();
}

TEST(RendezvousClientTest, ConnectToNothingFailsWithinTimeout) {
  // Reserve a port by starting and stopping a server, so nothing listens there.
  int port = 0;
  {
    auto s = RendezvousServer::Start("127.0.0.1:0");
    ASSERT_TRUE(s.ok());
    port = (*s)->port();
  }
  auto c = RendezvousClient::Connect(absl::StrCat("127.0.0.1:", port), milliseconds(500));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDeadlineExceeded) << c.status();
}

TEST(RendezvousClientTest, ConnectWaitsForALateServer) {
  int port = 0;
  {
    auto s = RendezvousServer::Start("127.0.0.1:0");
    ASSERT_TRUE(s.ok());
    port = (*s)->port();
  }
  std::unique_ptr<RendezvousServer> late;
  std::thread starter([&] {
    std::this_thread::sleep_for(milliseconds(300));
    auto s = RendezvousServer::Start(absl::StrCat("127.0.0.1:", port));
    ASSERT_TRUE(s.ok()) << s.status();
    late = std::move(*s);
  });
  auto c = RendezvousClient::Connect(absl::StrCat("127.0.0.1:", port), milliseconds(10000));
  starter.join();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->incarnation(), late->service().incarnation());
}

}  // namespace
}  // namespace cpserve::comm
