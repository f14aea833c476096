// The transfer agent's direct path (transfer/direct_copier.h; CUDA IPC on GPUs) on CPU:
// prefill and decode agents of one process, each with a UCX-registered region (the
// host mirror of a GPU pool) and a separate "device" buffer behind it, moved by a
// DirectCopier over plain memory. UCX still carries BEGIN / ACCEPT / DONE.
//
// Checks (P = 2, I = B  →  D = 2, I = 1): a direct push lands byte for byte what a UCX
// push of the same source lands (the UCX path is checked against the §3 placement in
// transfer_loopback_test), only in the reserved blocks of the device buffers, and
// leaves the registered regions untouched; the receiver reports it as direct. Senders
// that mix the paths fail the transfer with FAILED_PRECONDITION and free its blocks.
// A peer on another host is not reachable directly (CanPushDirect false).
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "worker/transfer/transfer_agent.h"

namespace cpserve::transfer {
namespace {

constexpr uint8_t kPoison = 0xEE;
constexpr int kBlock = 4;
constexpr int64_t kLen = 37;
constexpr int64_t kBlocksPerRank = 24;

// A DirectCopier over host buffers of this process: Export names the buffer's address
// and a host tag; Open refuses another host tag.
class InProcessCopier final : public DirectCopier {
 public:
  InProcessCopier(std::vector<uint8_t>* memory, std::string host)
      : memory_(memory), host_(std::move(host)) {}
  const char* name() const override { return "in-process"; }
  std::string Export() const override {
    return absl::StrCat(host_, "|", reinterpret_cast<uintptr_t>(memory_->data()));
  }
  char* local_base() const override { return reinterpret_cast<char*>(memory_->data()); }
  absl::StatusOr<char*> Open(const std::string& exported) override {
    const std::vector<std::string> parts = absl::StrSplit(exported, '|');
    uint64_t address = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &address)) {
      return absl::UnavailableError("not an in-process export");
    }
    if (parts[0] != host_) return absl::UnavailableError("the peer is on another host");
    return reinterpret_cast<char*>(address);
  }
  absl::Status Copy(char* dst, const char* src, uint64_t bytes) override {
    std::memcpy(dst, src, bytes);
    ++copies;
    return absl::OkStatus();
  }
  absl::Status Wait() override { return absl::OkStatus(); }

  int copies = 0;

 private:
  std::vector<uint8_t>* memory_;
  std::string host_;
};

KvPoolLayout Layout(int world, int interleave) {
  KvPoolLayout l;
  l.cp = CpLayout{world, interleave, kBlock};
  l.geometry = KvBlockGeometry{kBlock, 2, 2, 8, 4};
  l.dtype = "float32";
  return l;
}

struct Agent {
  std::vector<uint8_t> region;  // registered with UCX (a GPU pool's host mirror)
  std::vector<uint8_t> device;  // the memory behind it, written by direct copies
  std::shared_ptr<InProcessCopier> copier;
  std::unique_ptr<TransferAgent> agent;
};

std::unique_ptr<Agent> MakeAgent(const KvPoolLayout& layout, int rank, uint8_t fill,
                                 const std::string& host) {
  auto a = std::make_unique<Agent>();
  const uint64_t stride = layout.geometry.BlockBytes();
  a->region.assign(kBlocksPerRank * stride, fill);
  a->device.assign(kBlocksPerRank * stride, fill);
  a->copier = std::make_shared<InProcessCopier>(&a->device, host);
  auto agent = TransferAgent::Create({});
  EXPECT_TRUE(agent.ok()) << agent.status();
  a->agent = *std::move(agent);
  EXPECT_TRUE(a->agent
                  ->RegisterKvRegion({a->region.data(), a->region.size(), kBlocksPerRank, stride,
                                      layout, rank, MemoryKind::kHost, a->copier})
                  .ok());
  return a;
}

class DirectTransferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937 rng(7);
    for (int r = 0; r < 2; ++r) {
      senders_.push_back(MakeAgent(Layout(2, kBlock), r, 0, "host-a"));
      Agent& s = *senders_.back();
      // The same random KV in the sender's device buffer and its mirror.
      for (size_t i = 0; i < s.device.size(); ++i) s.device[i] = s.region[i] = rng() & 0xFF;
      std::vector<int32_t> ids(kBlocksPerRank);
      std::iota(ids.begin(), ids.end(), 0);
      std::shuffle(ids.begin(), ids.end(), rng);
      ids.resize(Layout(2, kBlock).cp.LocalBlocks(kLen, r));
      blocks_.push_back(ids);
    }
    for (int r = 0; r < 2; ++r) receivers_.push_back(MakeAgent(Layout(2, 1), r, kPoison, "host-a"));
  }

  // Reserves on every receiver under `id`; returns the target.
  v1::KvTransferTarget Reserve(const std::string& id) {
    v1::KvTransferTarget t;
    t.set_transfer_id(id);
    *t.mutable_layout() = Layout(2, 1).ToProto();
    for (int r = 0; r < 2; ++r) {
      auto d = receivers_[r]->agent->Reserve(id, Layout(2, 1).cp.LocalBlocks(kLen, r),
                                             absl::Now() + absl::Seconds(20));
      EXPECT_TRUE(d.ok()) << d.status();
      *t.add_destinations() = *d;
    }
    return t;
  }

  // Every sender pushes to `target`, direct as `direct[r]` says; returns their statuses.
  std::vector<absl::Status> Push(const v1::KvTransferTarget& target, std::vector<bool> direct) {
    std::vector<std::future<absl::Status>> futures;
    for (int r = 0; r < 2; ++r) {
      PushRequest req;
      req.target = target;
      req.prompt_len = kLen;
      req.block_ids = blocks_[r];
      req.deadline = absl::Now() + absl::Seconds(20);
      req.direct = direct[r];
      futures.push_back(senders_[r]->agent->PushAsync(std::move(req)));
    }
    std::vector<absl::Status> out;
    for (auto& f : futures) out.push_back(f.get());
    return out;
  }

  std::vector<std::unique_ptr<Agent>> senders_, receivers_;
  std::vector<std::vector<int32_t>> blocks_;
};

TEST_F(DirectTransferTest, DirectPushLandsWhatAUcxPushLands) {
  const v1::KvTransferTarget direct = Reserve("direct");
  const v1::KvTransferTarget ucx = Reserve("ucx");
  for (const auto& d : direct.destinations()) EXPECT_FALSE(d.direct().empty());
  ASSERT_TRUE(senders_[0]->agent->CanPushDirect(direct));
  for (const absl::Status& s : Push(direct, {true, true})) EXPECT_TRUE(s.ok()) << s;
  for (const absl::Status& s : Push(ucx, {false, false})) EXPECT_TRUE(s.ok()) << s;
  const uint64_t stride = Layout(2, 1).geometry.BlockBytes();
  for (int r = 0; r < 2; ++r) {
    Agent& a = *receivers_[r];
    EXPECT_TRUE(a.agent->WaitReceived("direct", absl::Now() + absl::Seconds(20)).ok());
    EXPECT_TRUE(a.agent->WaitReceived("ucx", absl::Now() + absl::Seconds(20)).ok());
    EXPECT_TRUE(a.agent->ReceivedDirect("direct"));
    EXPECT_FALSE(a.agent->ReceivedDirect("ucx"));
    std::vector<uint8_t> want_device(a.device.size(), kPoison);
    const auto& d_ids = direct.destinations(r).block_ids();
    const auto& u_ids = ucx.destinations(r).block_ids();
    ASSERT_EQ(d_ids.size(), u_ids.size());
    for (int i = 0; i < d_ids.size(); ++i) {
      // Block i of the direct reservation equals block i of the UCX one.
      std::memcpy(want_device.data() + d_ids[i] * stride, a.region.data() + u_ids[i] * stride,
                  stride);
      for (uint64_t b = 0; b < stride; ++b) {
        ASSERT_EQ(a.region[d_ids[i] * stride + b], kPoison) << "direct push wrote the region";
      }
    }
    EXPECT_EQ(a.device, want_device) << "rank " << r;
    EXPECT_TRUE(a.agent->Release("direct").ok());
    EXPECT_TRUE(a.agent->Release("ucx").ok());
    EXPECT_EQ(a.agent->counters().free_blocks, kBlocksPerRank);
  }
  EXPECT_GT(senders_[0]->copier->copies + senders_[1]->copier->copies, 0);
}

TEST_F(DirectTransferTest, MixedPathsFailTheTransferAndFreeItsBlocks) {
  const v1::KvTransferTarget t = Reserve("mixed");
  Push(t, {true, false});
  for (int r = 0; r < 2; ++r) {
    Agent& a = *receivers_[r];
    const absl::Status s = a.agent->WaitReceived("mixed", absl::Now() + absl::Seconds(20));
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_FALSE(a.agent->ReceivedDirect("mixed"));
    EXPECT_TRUE(a.agent->Release("mixed").ok());
    EXPECT_EQ(a.agent->counters().free_blocks, kBlocksPerRank);
  }
}

TEST_F(DirectTransferTest, PeersOnAnotherHostAreNotReachedDirectly) {
  auto elsewhere = MakeAgent(Layout(2, kBlock), 0, 0, "host-b");
  const v1::KvTransferTarget t = Reserve("remote");
  EXPECT_FALSE(elsewhere->agent->CanPushDirect(t));
  EXPECT_TRUE(senders_[0]->agent->CanPushDirect(t));
  v1::KvTransferTarget no_export = t;
  no_export.mutable_destinations(1)->clear_direct();
  EXPECT_FALSE(senders_[0]->agent->CanPushDirect(no_export));
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(receivers_[r]->agent->CancelReceive("remote").ok());
    EXPECT_TRUE(receivers_[r]->agent->Release("remote").ok());
  }
}

}  // namespace
}  // namespace cpserve::transfer
