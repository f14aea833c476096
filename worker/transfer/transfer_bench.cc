// transfer_bench: KV push bandwidth of TransferAgent vs. a plain UCX put loop,
// two processes on loopback, per transport (tcp; shared memory sm,self).
//
// The decode process (a fork of this binary, driven over pipes) runs one agent
// with a registered region and reserves blocks per transfer. The prefill side
// pushes a plan of N runs of S bytes each (one block per run, P = D = 1, I = B,
// src and dst block orders opposite so runs never merge): ours = Push() (BEGIN/ACCEPT, puts,
// flush, DONE). Plain = its own ucp context/worker/endpoint to the same remote
// worker and rkey: ucp_put_nbx per run + ucp_ep_flush_nbx, busy progress.
#include <glog/logging.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/transfer/transfer_agent.h"
#include "worker/transfer/ucx_handles.h"

namespace cpserve::transfer {
namespace {

constexpr uint64_t kTotalBytes = 64ull << 20;  // per transfer
constexpr uint64_t kMaxBlock = 8ull << 20;

KvPoolLayout LayoutFor(uint64_t block_bytes) {
  KvPoolLayout l;
  l.cp = CpLayout{1, 16, 16};
  // 1 layer x 2 x 16 tokens x 1 head x head_dim x 4 bytes = block_bytes.
  l.geometry = KvBlockGeometry{16, 1, 1, static_cast<int>(block_bytes / 128), 4};
  l.dtype = "float32";
  return l;
}

bool WriteAll(int fd, const std::string& s) {
  uint64_t n = s.size();
  return write(fd, &n, 8) == 8 && write(fd, s.data(), n) == static_cast<ssize_t>(n);
}
std::string ReadAll(int fd) {
  uint64_t n = 0;
  if (read(fd, &n, 8) != 8) return "";
  std::string s(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, s.data() + got, n - got);
    if (r <= 0) return "";
    got += r;
  }
  return s;
}

// Decode side: commands "<block_bytes> <id>" -> reserves kTotalBytes / block_bytes
// blocks (its region is re-registered when the block size changes) and answers
// the destination; "wait <id>" -> waits, releases, answers "ok".
int RunReceiver(int in, int out, bool peer_detect) {
  AgentOptions options;
  options.name = "bench-recv";
  options.peer_failure_detection = peer_detect;
  std::vector<char> region(kTotalBytes + kMaxBlock);
  std::unique_ptr<TransferAgent> agent;
  uint64_t current = 0;
  while (true) {
    std::string cmd = ReadAll(in);
    if (cmd.empty()) return 0;
    if (cmd.rfind("wait ", 0) == 0) {
      const std::string id = cmd.substr(5);
      absl::Status st = agent->WaitReceived(id, absl::Now() + absl::Seconds(60));
      (void)agent->Release(id);
      WriteAll(out, st.ok() ? "ok" : std::string(st.message()));
      continue;
    }
    const uint64_t bytes = std::stoull(cmd.substr(0, cmd.find(' ')));
    if (bytes != current) {
      agent.reset();
      agent = *TransferAgent::Create(options);
      const int64_t blocks = kTotalBytes / bytes;
      CHECK(agent
                ->RegisterKvRegion(KvRegion{region.data(), blocks * bytes, blocks, bytes,
                                            LayoutFor(bytes), 0, MemoryKind::kHost, nullptr})
                .ok());
      current = bytes;
      WriteAll(out, agent->worker_address());
      continue;
    }
    auto dest = agent->Reserve(cmd.substr(cmd.find(' ') + 1), kTotalBytes / bytes,
                               absl::Now() + absl::Seconds(60));
    CHECK(dest.ok()) << dest.status();
    WriteAll(out, dest->SerializeAsString());
  }
}

double Seconds(std::chrono::steady_clock::time_point a) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
}

// Plain UCX: puts of `runs` + flush on a dedicated worker, busy progress.
double PlainPut(ucp_worker_h worker, ucp_ep_h ep, ucp_rkey_h rkey, ucp_mem_h memh, char* src,
                const std::vector<TransferRun>& runs, uint64_t remote_base) {
  const auto t0 = std::chrono::steady_clock::now();
  for (const TransferRun& r : runs) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_MEMH;
    p.memh = memh;
    void* req = ucp_put_nbx(ep, src + r.src_offset, r.bytes, remote_base + r.dst_offset, rkey, &p);
    CHECK(!UCS_PTR_IS_ERR(req));
    if (req != nullptr) ucp_request_free(req);
  }
  ucp_request_param_t p{};
  void* req = ucp_ep_flush_nbx(ep, &p);
  CHECK(!UCS_PTR_IS_ERR(req));
  if (req != nullptr) {
    while (ucp_request_check_status(req) == UCS_INPROGRESS) ucp_worker_progress(worker);
    ucp_request_free(req);
  }
  return Seconds(t0);
}

void RunTransport(const std::string& label, const std::string& tls, bool peer_detect) {
  setenv("UCX_TLS", tls.c_str(), 1);
  int to_child[2], from_child[2];
  CHECK(pipe(to_child) == 0 && pipe(from_child) == 0);
  const pid_t pid = fork();
  if (pid == 0) {
    close(to_child[1]);
    close(from_child[0]);
    _exit(RunReceiver(to_child[0], from_child[1], peer_detect));
  }
  close(to_child[0]);
  close(from_child[1]);
  const int out = to_child[1], in = from_child[0];

  std::vector<char> src(kTotalBytes);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<char>(i * 7);
  printf("\n%s (UCX_TLS=%s), %llu MiB per transfer, best of 5\n", label.c_str(), tls.c_str(),
         static_cast<unsigned long long>(kTotalBytes >> 20));
  printf("%10s %8s %12s %12s %8s\n", "run bytes", "runs", "ours GB/s", "plain GB/s", "ratio");
  int seq = 0;
  for (uint64_t bytes = 16 << 10; bytes <= kMaxBlock; bytes *= 2) {
    const int64_t blocks = kTotalBytes / bytes;
    WriteAll(out, absl::StrCat(bytes, " region"));
    const std::string remote_address = ReadAll(in);
    AgentOptions options;
    options.name = "bench-send";
    options.peer_failure_detection = peer_detect;
    auto agent = *TransferAgent::Create(options);
    CHECK(agent
              ->RegisterKvRegion(KvRegion{src.data(), blocks * bytes, blocks, bytes,
                                          LayoutFor(bytes), 0, MemoryKind::kHost, nullptr})
              .ok());
    // Plain UCX resources: own context, worker, memh, endpoint.
    UcpContext ctx = *CreateUcpContext("bench-plain");
    UcpWorker worker = *CreateUcpWorker(ctx.get());
    auto memh = *MapMemory(ctx.get(), src.data(), blocks * bytes);
    ucp_ep_params_t ep_params{};
    ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep_params.address = reinterpret_cast<const ucp_address_t*>(remote_address.data());
    ep_params.err_mode = peer_detect ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    ucp_ep_h ep = nullptr;
    CHECK(ucp_ep_create(worker.get(), &ep_params, &ep) == UCS_OK);

    double best_ours = 1e9, best_plain = 1e9;
    size_t num_runs = 0;
    for (int rep = 0; rep < 5; ++rep) {
      const std::string id = absl::StrCat("b", seq++);
      WriteAll(out, absl::StrCat(bytes, " ", id));
      v1::KvDestination dest;
      CHECK(dest.ParseFromString(ReadAll(in)));
      std::vector<int32_t> src_ids(blocks);
      for (int64_t b = 0; b < blocks; ++b) src_ids[b] = static_cast<int32_t>(b);
      // The receiver hands out descending ids; src ids ascend: runs stay one block each.
      std::vector<int32_t> dst_ids(dest.block_ids().begin(), dest.block_ids().end());
      PushRequest req;
      req.target.set_transfer_id(id);
      *req.target.mutable_layout() = LayoutFor(bytes).ToProto();
      *req.target.add_destinations() = dest;
      req.prompt_len = blocks * 16;
      req.block_ids = src_ids;
      // The same runs for the plain loop.
      TransferPlanInput in_plan;
      in_plan.geometry = LayoutFor(bytes).geometry;
      in_plan.prompt_len = req.prompt_len;
      in_plan.src = TransferSide{LayoutFor(bytes).cp, {src_ids}, bytes, {}};
      in_plan.dst = TransferSide{LayoutFor(bytes).cp, {dst_ids}, bytes, {}};
      std::vector<TransferRun> runs = *PlanTransfer(in_plan, 0);
      num_runs = runs.size();

      auto t0 = std::chrono::steady_clock::now();
      absl::Status st = agent->Push(std::move(req));
      best_ours = std::min(best_ours, Seconds(t0));
      CHECK(st.ok()) << st;
      WriteAll(out, "wait " + id);
      CHECK_EQ(ReadAll(in), "ok");

      ucp_rkey_h rkey = nullptr;
      CHECK(ucp_ep_rkey_unpack(ep, dest.rkey().data(), &rkey) == UCS_OK);
      best_plain = std::min(best_plain, PlainPut(worker.get(), ep, rkey, memh->get(), src.data(),
                                                 runs, dest.remote_base()));
      ucp_rkey_destroy(rkey);
    }
    ucp_request_param_t close_params{};
    close_params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    close_params.flags = UCP_EP_CLOSE_FLAG_FORCE;
    void* req = ucp_ep_close_nbx(ep, &close_params);
    if (req != nullptr && !UCS_PTR_IS_ERR(req)) {
      while (ucp_request_check_status(req) == UCS_INPROGRESS) ucp_worker_progress(worker.get());
      ucp_request_free(req);
    }
    const double ours = kTotalBytes / best_ours / 1e9, plain = kTotalBytes / best_plain / 1e9;
    printf("%10llu %8zu %12.2f %12.2f %7.0f%%\n", static_cast<unsigned long long>(bytes), num_runs,
           ours, plain, 100 * ours / plain);
    fflush(stdout);
  }
  close(out);
  close(in);
  waitpid(pid, nullptr, 0);
}

}  // namespace
}  // namespace cpserve::transfer

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  const std::string only = argc > 1 ? argv[1] : "";
  if (only.empty() || only == "tcp") cpserve::transfer::RunTransport("tcp", "tcp", true);
  if (only.empty() || only == "sm")
    cpserve::transfer::RunTransport("shared memory", "sm,self", false);
  return 0;
}
