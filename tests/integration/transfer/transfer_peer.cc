// One rank of a loopback transfer test: a decode receiver ("recv") or a prefill
// sender ("send"). Peers meet through files in --dir: each receiver writes its
// KvDestination to dst_<rank>.pb; senders wait for all of them and push.
// KV values are synthetic and deterministic per (layer, kv, position, head, dim);
// the receiver checks its region against the placement CpLayout predicts, byte
// for byte, and that no other byte changed. Exit 0 = outcome as --expect says.
#include <glog/logging.h>
#include <signal.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "worker/transfer/transfer_agent.h"

namespace cpserve::transfer {
namespace {

std::map<std::string, std::string> args;
std::string Arg(const std::string& k, const std::string& def = "") {
  auto it = args.find(k);
  return it == args.end() ? def : it->second;
}
int64_t IntArg(const std::string& k, int64_t def = 0) {
  auto it = args.find(k);
  return it == args.end() ? def : std::stoll(it->second);
}

#define CHECK_OK(expr) CHECK((expr).ok()) << #expr

constexpr uint8_t kPoison = 0xA5;

uint32_t Value(int layer, int kv, int64_t pos, int head, int dim) {
  uint64_t x = (((static_cast<uint64_t>(pos) * 131 + layer) * 7 + kv) * 97 + head) * 1031 + dim;
  x ^= x >> 17;
  x *= 0x9E3779B97F4A7C15ull;
  return static_cast<uint32_t>(x >> 29);
}

KvPoolLayout Layout(int world, int interleave) {
  KvPoolLayout l;
  const int B = static_cast<int>(IntArg("block", 4));
  l.cp = CpLayout{world, interleave, B};
  l.geometry = KvBlockGeometry{B, static_cast<int>(IntArg("layers", 2)),
                               static_cast<int>(IntArg("heads", 2)),
                               static_cast<int>(IntArg("head_dim", 4)), 4};
  l.dtype = "float32";
  return l;
}

// Writes the values of every position `rank` owns under `layout` into `region`.
void Place(const KvPoolLayout& layout, int rank, int64_t len, const std::vector<int32_t>& ids,
           uint64_t stride, std::vector<uint8_t>& region) {
  const KvBlockGeometry& g = layout.geometry;
  for (int64_t p = 0; p < len; ++p) {
    if (layout.cp.Owner(p) != rank) continue;
    const int64_t l = layout.cp.LocalIndex(p);
    for (int layer = 0; layer < g.num_layers; ++layer) {
      for (int kv = 0; kv < 2; ++kv) {
        uint8_t* t = region.data() + ids[l / g.block_size] * stride +
                     g.OffsetInBlock(layer, kv, static_cast<int>(l % g.block_size));
        for (int h = 0; h < g.num_kv_heads; ++h) {
          for (int d = 0; d < g.head_dim; ++d) {
            const uint32_t v = Value(layer, kv, p, h, d);
            std::memcpy(t + (h * g.head_dim + d) * 4, &v, 4);
          }
        }
      }
    }
  }
}

bool WaitCountersZero(TransferAgent& agent) {
  for (int i = 0; i < 1000; ++i) {
    AgentCounters c = agent.counters();
    if (c.pushes_in_flight == 0 && c.receives_live == 0 && c.reserved_blocks == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  AgentCounters c = agent.counters();
  LOG(ERROR) << "leak: pushes=" << c.pushes_in_flight << " receives=" << c.receives_live
             << " reserved_blocks=" << c.reserved_blocks;
  return false;
}

int Finish(const absl::Status& st, bool extra_ok, TransferAgent& agent) {
  const std::string want = Arg("expect", "OK");
  const bool zero = WaitCountersZero(agent);
  const AgentCounters c = agent.counters();
  LOG(INFO) << Arg("role") << " " << Arg("rank") << ": status " << st << " (expected " << want
            << "), check " << extra_ok << ", counters zero " << zero << ", endpoints "
            << c.endpoints;
  return absl::StatusCodeToString(st.code()) == want && extra_ok && zero ? 0 : 1;
}

int Receive() {
  const int rank = static_cast<int>(IntArg("rank"));
  const KvPoolLayout layout = Layout(static_cast<int>(IntArg("D")), static_cast<int>(IntArg("Id")));
  const int64_t len = IntArg("len");
  const KvBlockGeometry& g = layout.geometry;
  const int64_t need = layout.cp.LocalBlocks(len, rank);
  const int64_t filler = IntArg("seed") % 3;
  const int64_t num_blocks = need + filler + 2;
  const uint64_t stride = g.BlockBytes() + 64;
  std::vector<uint8_t> region(num_blocks * stride, kPoison);

  AgentOptions options;
  options.name = "recv";
  options.peer_failure_detection = Arg("peer_detect", "1") == "1";
  auto agent = TransferAgent::Create(options);
  CHECK_OK(agent.status());
  KvRegion kv{region.data(), region.size(), num_blocks,        stride,
              layout,        rank,          MemoryKind::kHost, nullptr};
  CHECK_OK((*agent)->RegisterKvRegion(kv));
  // A filler reservation makes the request's block ids start past 0.
  CHECK_OK((*agent)->Reserve("filler", filler, absl::InfiniteFuture()).status());
  const std::string id = Arg("id");
  auto dest =
      (*agent)->Reserve(id, need, absl::Now() + absl::Milliseconds(IntArg("deadline_ms", 20000)));
  CHECK_OK(dest.status());
  CHECK_OK((*agent)->CancelReceive("filler"));
  CHECK_OK((*agent)->Release("filler"));
  const std::string path = absl::StrCat(Arg("dir"), "/dst_", rank, ".pb");
  std::ofstream(path + ".tmp", std::ios::binary) << dest->SerializeAsString();
  std::filesystem::rename(path + ".tmp", path);

  if (Arg("mode") == "cancel") CHECK_OK((*agent)->CancelReceive(id));
  if (Arg("mode") == "die_on_data") {
    // Dies as soon as the first byte of the first reserved block changes.
    const uint8_t* first = region.data() + dest->block_ids(0) * stride;
    std::thread([first, bytes = g.BlockBytes()] {
      while (true) {
        for (uint64_t i = 0; i < bytes; ++i) {
          if (reinterpret_cast<const volatile uint8_t*>(first)[i] != kPoison) raise(SIGKILL);
        }
      }
    }).detach();
  }
  const absl::Status st = (*agent)->WaitReceived(id, absl::InfiniteFuture());
  std::vector<uint8_t> want(region.size(), kPoison);
  bool check = true;
  if (st.ok()) {
    Place(layout, rank, len, {dest->block_ids().begin(), dest->block_ids().end()}, stride, want);
    check = want == region;
  } else if (Arg("untouched") == "1") {
    check = want == region;  // nothing may have been written
  }
  if (!check) LOG(ERROR) << "region differs from the expected placement";
  (void)(*agent)->Release(id);
  // Stay reachable so that late senders get a refusal, not a refused connection.
  std::this_thread::sleep_for(std::chrono::milliseconds(IntArg("linger_ms")));
  return Finish(st, check, **agent);
}

int Send() {
  const int rank = static_cast<int>(IntArg("rank"));
  const KvPoolLayout layout = Layout(static_cast<int>(IntArg("P")), static_cast<int>(IntArg("Ip")));
  const int D = static_cast<int>(IntArg("D"));
  const int64_t len = IntArg("len");
  const int64_t need = layout.cp.LocalBlocks(len, rank);
  const int64_t num_blocks = need + 3;
  const uint64_t stride = layout.geometry.BlockBytes();
  std::vector<uint8_t> region(num_blocks * stride, 0x5A);
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(IntArg("seed") * 31 + rank));
  ids.resize(need);
  Place(layout, rank, len, ids, stride, region);

  AgentOptions options;
  options.name = "send";
  options.peer_failure_detection = Arg("peer_detect", "1") == "1";
  if (Arg("mode") == "die_before_puts") {
    options.before_puts_for_test = [](const std::string&) { raise(SIGKILL); };
  }
  auto agent = TransferAgent::Create(options);
  CHECK_OK(agent.status());
  CHECK_OK((*agent)->RegisterKvRegion(KvRegion{region.data(), region.size(), num_blocks, stride,
                                               layout, rank, MemoryKind::kHost, nullptr}));

  PushRequest req;
  req.target.set_transfer_id(Arg("id"));
  *req.target.mutable_layout() = Layout(D, static_cast<int>(IntArg("Id"))).ToProto();
  for (int d = 0; d < D; ++d) {
    const std::string path = absl::StrCat(Arg("dir"), "/dst_", d, ".pb");
    for (int i = 0; i < 4000 && !std::filesystem::exists(path); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    CHECK(req.target.add_destinations()->ParseFromString(ss.str())) << path;
  }
  if (Arg("mode") == "corrupt") {
    req.target.mutable_destinations(0)->set_region_bytes(
        req.target.destinations(0).block_stride_bytes());  // blocks now lie past the region
  }
  req.prompt_len = len;
  req.block_ids = ids;
  req.deadline = absl::Now() + absl::Milliseconds(IntArg("deadline_ms", 20000));
  if (IntArg("delay_ms") > 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(IntArg("delay_ms")));
  std::future<absl::Status> f = (*agent)->PushAsync(std::move(req));
  if (Arg("mode") == "cancel") (*agent)->CancelPush(Arg("id"));
  return Finish(f.get(), true, **agent);
}

}  // namespace
}  // namespace cpserve::transfer

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) continue;
    const size_t eq = a.find('=');
    cpserve::transfer::args[a.substr(2, eq - 2)] = eq == std::string::npos ? "1" : a.substr(eq + 1);
  }
  const std::string role = cpserve::transfer::Arg("role");
  if (role == "recv") return cpserve::transfer::Receive();
  if (role == "send") return cpserve::transfer::Send();
  LOG(ERROR) << "--role=recv|send";
  return 2;
}
