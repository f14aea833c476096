#include "worker/comm/gloo_group.h"

#include <signal.h>

#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "gloo/allgather.h"
#include "gloo/allgatherv.h"
#include "gloo/allreduce.h"
#include "gloo/alltoall.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/rendezvous/context.h"
#include "gloo/transport/tcp/device.h"
#include "worker/comm/gloo_store.h"
#include "worker/comm/reduce_ops.h"

namespace cpserve::comm {
namespace {

// Gloo reports a timeout as "Timed out waiting ..." and a dead peer as a socket
// error ("Connection closed by peer", "Connection reset", ...).
absl::Status FromGlooError(const std::string& what, const std::string& context) {
  std::string msg = absl::StrCat(context, ": ", what);
  if (absl::StrContains(what, "Timed out") || absl::StrContains(what, "timeout")) {
    return absl::DeadlineExceededError(msg);
  }
  return absl::UnavailableError(msg);
}

absl::Status CheckHost(const char* op, const Tensor& t) {
  if (t.defined() && !t.device().is_cpu()) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": the Gloo group takes host tensors, got ", t.DebugString()));
  }
  return absl::OkStatus();
}

class GlooGroup final : public CollectiveGroup {
 public:
  GlooGroup(std::shared_ptr<gloo::Context> context, int rank, int world,
            std::chrono::milliseconds timeout)
      : context_(std::move(context)), rank_(rank), world_(world), timeout_(timeout) {}

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  const char* backend() const override { return "gloo"; }
  bool healthy() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return broken_.ok();
  }
  absl::Status broken_status() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return broken_;
  }

  absl::Status AllGather(const Tensor& input, Tensor& output) override {
    const char* op = "AllGather";
    if (auto s = CheckBuffers(op, input, output); !s.ok()) return s;
    if (auto s = internal::CheckAllGatherShapes(op, input, output, world_); !s.ok()) return s;
    const size_t bytes = input.nbytes();
    return Run(op, [&](uint32_t tag) {
      if (world_ == 1 || bytes == 0) {
        if (bytes > 0) std::memcpy(output.raw(), input.raw(), bytes);
        return;
      }
      gloo::AllgatherOptions opts(context_);
      opts.setInput(input.data<uint8_t>(), bytes);
      opts.setOutput(output.data<uint8_t>(), bytes * world_);
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      gloo::allgather(opts);
    });
  }

  absl::Status AllGatherV(const Tensor& input, Tensor& output,
                          absl::Span<const int64_t> counts) override {
    const char* op = "AllGatherV";
    if (auto s = CheckBuffers(op, input, output); !s.ok()) return s;
    if (auto s = internal::CheckAllGatherVShapes(input, output, counts, rank_, world_); !s.ok()) {
      return s;
    }
    const size_t row = internal::RowBytes(output);
    std::vector<size_t> bytes(world_);
    for (int r = 0; r < world_; ++r) bytes[r] = static_cast<size_t>(counts[r]) * row;
    return Run(op, [&](uint32_t tag) {
      if (world_ == 1 || output.nbytes() == 0) {
        if (input.nbytes() > 0) std::memcpy(output.raw(), input.raw(), input.nbytes());
        return;
      }
      gloo::AllgathervOptions opts(context_);
      opts.setInput(input.data<uint8_t>(), input.nbytes());
      opts.setOutput(output.data<uint8_t>(), bytes);
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      gloo::allgatherv(opts);
    });
  }

  absl::Status AllReduce(Tensor& tensor, ReduceOp op) override {
    const char* name = "AllReduce";
    if (auto s = CheckBuffers(name, tensor, tensor); !s.ok()) return s;
    const size_t n = static_cast<size_t>(tensor.numel());
    const size_t esize = DTypeSize(tensor.dtype());
    ReduceFn fn = GetReduceFn(tensor.dtype(), op);
    return Run(name, [&](uint32_t tag) {
      if (world_ == 1 || n == 0) return;
      gloo::AllreduceOptions opts(context_);
      // The output doubles as the input (in place). Gloo only needs the element size.
      std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>> out;
      out.push_back(context_->createUnboundBuffer(tensor.raw(), n * esize));
      SetOutputs(opts, std::move(out), esize);
      opts.setReduceFunction(fn);
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      gloo::allreduce(opts);
    });
  }

  absl::Status ReduceScatter(const Tensor& input, Tensor& output, ReduceOp op) override {
    const char* name = "ReduceScatter";
    if (auto s = CheckBuffers(name, input, output); !s.ok()) return s;
    if (auto s = internal::CheckReduceScatterShapes(input, output, world_); !s.ok()) return s;
    const size_t block = output.nbytes();
    const size_t n = static_cast<size_t>(output.numel());
    ReduceFn fn = GetReduceFn(input.dtype(), op);
    return Run(name, [&](uint32_t tag) {
      if (world_ == 1 || block == 0) {
        if (block > 0) std::memcpy(output.raw(), input.raw(), block);
        return;
      }
      // recv[q] = input_q[rank block]; then output = recv[0] op recv[1] op ... in rank order.
      std::vector<uint8_t> recv(block * world_);
      gloo::AlltoallOptions opts(context_);
      opts.setInput(input.data<uint8_t>(), block * world_);
      opts.setOutput(recv.data(), block * world_);
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      gloo::alltoall(opts);
      std::memcpy(output.raw(), recv.data(), block);
      for (int q = 1; q < world_; ++q) fn(output.raw(), output.raw(), recv.data() + q * block, n);
    });
  }

  absl::Status Broadcast(Tensor& tensor, int root) override {
    const char* name = "Broadcast";
    if (auto s = CheckBuffers(name, tensor, tensor); !s.ok()) return s;
    if (root < 0 || root >= world_) {
      return absl::InvalidArgumentError(
          absl::StrCat("Broadcast: root ", root, " outside world of ", world_));
    }
    const size_t bytes = tensor.nbytes();
    return Run(name, [&](uint32_t tag) {
      if (world_ == 1 || bytes == 0) return;
      gloo::BroadcastOptions opts(context_);
      opts.setOutput(tensor.data<uint8_t>(), bytes);
      opts.setRoot(root);
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      gloo::broadcast(opts);
    });
  }

  absl::Status Barrier() override {
    return Run("Barrier", [&](uint32_t tag) {
      if (world_ == 1) return;
      gloo::BarrierOptions opts(context_);
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      gloo::barrier(opts);
    });
  }

 private:
  // AllreduceOptions only exposes typed setters; pick the type by element size.
  static void SetOutputs(gloo::AllreduceOptions& opts,
                         std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>> bufs,
                         size_t esize) {
    switch (esize) {
      case 1:
        opts.setOutputs<uint8_t>(std::move(bufs));
        break;
      case 2:
        opts.setOutputs<uint16_t>(std::move(bufs));
        break;
      case 4:
        opts.setOutputs<uint32_t>(std::move(bufs));
        break;
      default:
        CHECK_EQ(esize, 8u);
        opts.setOutputs<uint64_t>(std::move(bufs));
        break;
    }
  }

  absl::Status CheckBuffers(const char* op, const Tensor& in, const Tensor& out) const {
    if (auto s = internal::CheckContiguous(op, "input", in); !s.ok()) return s;
    if (auto s = internal::CheckContiguous(op, "output", out); !s.ok()) return s;
    if (auto s = CheckHost(op, in); !s.ok()) return s;
    return CheckHost(op, out);
  }

  // Runs one collective under the group's mutex; a Gloo failure breaks the group.
  absl::Status Run(const char* op, const std::function<void(uint32_t)>& fn) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!broken_.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("gloo ", op, " on rank ", rank_,
                                                        ": collective group is broken (",
                                                        broken_.message(), ")"));
    }
    const uint32_t tag = next_tag_++;
    std::string error;
    try {
      fn(tag);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      error = e.what();
    }
    broken_ = FromGlooError(error, absl::StrCat("gloo ", op, " failed on rank ", rank_, " of ",
                                                world_, " (timeout ", timeout_.count(), " ms)"));
    LOG(ERROR) << broken_;
    // Drop the connections so that peers still inside a collective with us fail fast
    // instead of waiting for their own timeout.
    try {
      context_->closeConnections();
    } catch (const std::exception& e) {
      LOG(WARNING) << "gloo closeConnections: " << e.what();
    }
    return broken_;
  }

  std::shared_ptr<gloo::Context> context_;
  const int rank_;
  const int world_;
  const std::chrono::milliseconds timeout_;
  mutable std::mutex mu_;
  absl::Status broken_;
  uint32_t next_tag_ = 0;
};

// Gloo 0.5.0 writes to its sockets without MSG_NOSIGNAL: a write to a peer that has
// died raises SIGPIPE, whose default action kills this rank instead of letting Gloo
// report EPIPE. Ignore it process-wide, unless the program installed its own handler.
void IgnoreSigpipeOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      signal(SIGPIPE, SIG_IGN);
    }
  });
}

}  // namespace

absl::StatusOr<std::unique_ptr<CollectiveGroup>> CreateGlooGroup(RendezvousClient& client,
                                                                 const std::string& prefix,
                                                                 int rank, int world_size,
                                                                 const GlooGroupOptions& options) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("CreateGlooGroup: rank ", rank, " outside world of ", world_size));
  }
  if (options.timeout.count() <= 0) {
    return absl::InvalidArgumentError("CreateGlooGroup: timeout must be positive");
  }
  IgnoreSigpipeOnce();
  GlooStore store(client, prefix + "gloo/", options.timeout);
  const std::string where =
      absl::StrCat("gloo rendezvous of rank ", rank, " of ", world_size, " under '", prefix,
                   "' (timeout ", options.timeout.count(), " ms)");
  try {
    gloo::transport::tcp::attr attr(options.hostname.c_str());
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, world_size);
    context->setTimeout(options.timeout);
    context->connectFullMesh(store, device);
    return std::unique_ptr<CollectiveGroup>(
        new GlooGroup(std::move(context), rank, world_size, options.timeout));
  } catch (const std::exception& e) {
    if (!store.last_error().ok()) {
      return absl::Status(store.last_error().code(),
                          absl::StrCat(where, ": ", store.last_error().message()));
    }
    return FromGlooError(e.what(), where);
  }
}

}  // namespace cpserve::comm
