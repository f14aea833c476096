#include "worker/comm/nccl_group.h"

#include <nccl.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace cpserve::comm {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status CudaError(cudaError_t e, const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

absl::Status NcclError(ncclResult_t r, const std::string& what) {
  std::string msg = absl::StrCat(what, ": ", ncclGetErrorString(r));
  switch (r) {
    case ncclSystemError:
    case ncclRemoteError:
      return absl::UnavailableError(msg);
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return absl::InvalidArgumentError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::StatusOr<ncclDataType_t> ToNccl(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kF64:
      return ncclFloat64;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
    case DType::kU8:
      return ncclUint8;
  }
  return absl::InvalidArgumentError("unsupported dtype");
}

// Short spin, then 50 us sleeps: low latency for quick collectives without burning a
// core on long ones.
void Backoff(int& spins) {
  if (++spins < 200) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

// Owns the communicator; aborts it unless it was finalized cleanly.
struct CommDeleter {
  void operator()(ncclComm_t comm) const {
    if (comm != nullptr) ncclCommAbort(comm);
  }
};
using CommPtr = std::unique_ptr<std::remove_pointer_t<ncclComm_t>, CommDeleter>;

// Polls a non-blocking communicator until it leaves ncclInProgress or the deadline.
absl::Status WaitComm(ncclComm_t comm, Clock::time_point deadline, const std::string& what) {
  int spins = 0;
  for (;;) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess) return NcclError(r, what);
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) return NcclError(state, what);
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(what, ": not complete within timeout"));
    }
    Backoff(spins);
  }
}

class NcclGroup final : public CollectiveGroup {
 public:
  NcclGroup(CommPtr comm, int rank, int world, int device, cudaStream_t stream, bool own_stream,
            void* scratch, std::chrono::milliseconds timeout, bool host_staging)
      : comm_(std::move(comm)),
        rank_(rank),
        world_(world),
        device_(device),
        stream_(stream),
        own_stream_(own_stream),
        scratch_(scratch),
        timeout_(timeout),
        host_staging_(host_staging) {}

  ~NcclGroup() override {
    cudaSetDevice(device_);
    if (comm_ != nullptr && broken_.ok()) {
      // Flush and release cleanly when every rank still answers; abort otherwise.
      ncclResult_t r = ncclCommFinalize(comm_.get());
      if (r == ncclSuccess || r == ncclInProgress) {
        absl::Status s = WaitComm(comm_.get(), Clock::now() + timeout_, "ncclCommFinalize");
        if (s.ok() && ncclCommDestroy(comm_.get()) == ncclSuccess) comm_.release();
      }
    }
    comm_.reset();  // aborts if still held
    if (scratch_ != nullptr) cudaFree(scratch_);
    if (stage_ != nullptr) cudaFree(stage_);
    if (own_stream_ && stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  const char* backend() const override { return "nccl"; }
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
    if (IsHost(input, output)) {
      return Staged(op, input, output, [&](Tensor& in, Tensor& out) { return AllGather(in, out); });
    }
    if (auto s = CheckBuffers(op, input, output); !s.ok()) return s;
    if (auto s = internal::CheckAllGatherShapes(op, input, output, world_); !s.ok()) return s;
    const size_t bytes = input.nbytes();
    return Run(op, bytes, [&] {
      return ncclAllGather(input.raw(), output.raw(), bytes, ncclUint8, comm_.get(), stream_);
    });
  }

  absl::Status AllGatherV(const Tensor& input, Tensor& output,
                          absl::Span<const int64_t> counts) override {
    const char* op = "AllGatherV";
    if (IsHost(input, output)) {
      return Staged(op, input, output,
                    [&](Tensor& in, Tensor& out) { return AllGatherV(in, out, counts); });
    }
    if (auto s = CheckBuffers(op, input, output); !s.ok()) return s;
    if (auto s = internal::CheckAllGatherVShapes(input, output, counts, rank_, world_); !s.ok()) {
      return s;
    }
    const size_t row = internal::RowBytes(output);
    std::vector<int64_t> sizes(counts.begin(), counts.end());
    return Run(op, output.nbytes(), [&] {
      ncclResult_t r = ncclGroupStart();
      if (r != ncclSuccess) return r;
      size_t offset = 0;
      for (int q = 0; q < world_; ++q) {
        const size_t bytes = static_cast<size_t>(sizes[q]) * row;
        if (bytes > 0) {
          r = ncclBroadcast(q == rank_ ? input.raw() : nullptr,
                            static_cast<char*>(output.raw()) + offset, bytes, ncclUint8, q,
                            comm_.get(), stream_);
          if (r != ncclSuccess && r != ncclInProgress) break;
        }
        offset += bytes;
      }
      ncclResult_t e = ncclGroupEnd();
      return r != ncclSuccess && r != ncclInProgress ? r : e;
    });
  }

  absl::Status AllReduce(Tensor& tensor, ReduceOp op) override {
    const char* name = "AllReduce";
    if (IsHost(tensor, tensor)) {
      return Staged(name, tensor, tensor, [&](Tensor&, Tensor& t) { return AllReduce(t, op); });
    }
    if (auto s = CheckBuffers(name, tensor, tensor); !s.ok()) return s;
    auto dt = ToNccl(tensor.dtype());
    if (!dt.ok()) return dt.status();
    const size_t n = static_cast<size_t>(tensor.numel());
    return Run(name, n, [&] {
      return ncclAllReduce(tensor.raw(), tensor.raw(), n, *dt, ToNcclOp(op), comm_.get(), stream_);
    });
  }

  absl::Status ReduceScatter(const Tensor& input, Tensor& output, ReduceOp op) override {
    const char* name = "ReduceScatter";
    if (IsHost(input, output)) {
      return Staged(name, input, output,
                    [&](Tensor& in, Tensor& out) { return ReduceScatter(in, out, op); });
    }
    if (auto s = CheckBuffers(name, input, output); !s.ok()) return s;
    if (auto s = internal::CheckReduceScatterShapes(input, output, world_); !s.ok()) return s;
    auto dt = ToNccl(input.dtype());
    if (!dt.ok()) return dt.status();
    const size_t n = static_cast<size_t>(output.numel());
    return Run(name, n, [&] {
      return ncclReduceScatter(input.raw(), output.raw(), n, *dt, ToNcclOp(op), comm_.get(),
                               stream_);
    });
  }

  absl::Status Broadcast(Tensor& tensor, int root) override {
    const char* name = "Broadcast";
    if (IsHost(tensor, tensor)) {
      return Staged(name, tensor, tensor, [&](Tensor&, Tensor& t) { return Broadcast(t, root); });
    }
    if (auto s = CheckBuffers(name, tensor, tensor); !s.ok()) return s;
    if (root < 0 || root >= world_) {
      return absl::InvalidArgumentError(
          absl::StrCat("Broadcast: root ", root, " outside world of ", world_));
    }
    const size_t bytes = tensor.nbytes();
    return Run(name, bytes, [&] {
      return ncclBroadcast(tensor.raw(), tensor.raw(), bytes, ncclUint8, root, comm_.get(),
                           stream_);
    });
  }

  absl::Status Barrier() override {
    return Run("Barrier", 1, [&] {
      return ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, comm_.get(), stream_);
    });
  }

 private:
  static ncclRedOp_t ToNcclOp(ReduceOp op) { return op == ReduceOp::kSum ? ncclSum : ncclMax; }

  absl::Status CheckBuffers(const char* op, const Tensor& in, const Tensor& out) const {
    if (auto s = internal::CheckContiguous(op, "input", in); !s.ok()) return s;
    if (auto s = internal::CheckContiguous(op, "output", out); !s.ok()) return s;
    for (const Tensor* t : {&in, &out}) {
      if (t->device() != Device::CUDA(device_)) {
        return absl::InvalidArgumentError(
            absl::StrCat(op, ": the NCCL group of device ", device_, " got ", t->DebugString()));
      }
    }
    return absl::OkStatus();
  }

  // Both tensors in host memory and staging enabled: the op is staged through the
  // device (see Staged). Without staging, host tensors fail CheckBuffers.
  bool IsHost(const Tensor& a, const Tensor& b) const {
    return host_staging_ && a.device().is_cpu() && b.device().is_cpu();
  }

  // Runs `op` on device copies of host tensors: uploads `input` into a grow-only
  // device buffer on the group's stream, runs `device_op` on device views (it waits
  // for completion under the group timeout), then downloads `output`. In-place ops
  // pass the same tensor twice and use one region. The download happens only after
  // the collective completed, so a stalled peer still ends in DEADLINE_EXCEEDED
  // rather than a copy blocked forever.
  absl::Status Staged(const char* op, const Tensor& input, Tensor& output,
                      const std::function<absl::Status(Tensor&, Tensor&)>& device_op) {
    if (auto s = internal::CheckContiguous(op, "input", input); !s.ok()) return s;
    if (auto s = internal::CheckContiguous(op, "output", output); !s.ok()) return s;
    if (absl::Status broken = broken_status(); !broken.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("nccl ", op, " on rank ", rank_,
                                                        ": collective group is broken (",
                                                        broken.message(), ")"));
    }
    std::lock_guard<std::mutex> lock(stage_mu_);
    const bool in_place = input.raw() == output.raw();
    const size_t align = 256;
    const size_t in_bytes = in_place ? 0 : (input.nbytes() + align - 1) / align * align;
    const size_t need = in_bytes + output.nbytes();
    cudaSetDevice(device_);
    const std::string what = absl::StrCat("nccl ", op, " (host staging) on rank ", rank_);
    if (need > stage_bytes_) {
      if (stage_ != nullptr) cudaFree(stage_);
      stage_ = nullptr;
      stage_bytes_ = 0;
      const size_t bytes = std::max<size_t>(need, 1 << 16);
      if (cudaError_t e = cudaMalloc(&stage_, bytes); e != cudaSuccess) {
        return CudaError(e, absl::StrCat(what, ": cudaMalloc(", bytes, ")"));
      }
      stage_bytes_ = bytes;
    }
    char* base = static_cast<char*>(stage_);
    Tensor din = Tensor::Borrow(base, input.shape(), input.dtype(), Device::CUDA(device_));
    Tensor dout =
        Tensor::Borrow(base + in_bytes, output.shape(), output.dtype(), Device::CUDA(device_));
    // In-place ops read their input from the output region.
    void* upload_dst = in_place ? dout.raw() : din.raw();
    if (input.nbytes() > 0) {
      if (cudaError_t e = cudaMemcpyAsync(upload_dst, input.raw(), input.nbytes(),
                                          cudaMemcpyHostToDevice, stream_);
          e != cudaSuccess) {
        return CudaError(e, absl::StrCat(what, ": upload"));
      }
    }
    if (auto s = device_op(in_place ? dout : din, dout); !s.ok()) return s;
    if (output.nbytes() > 0) {
      cudaError_t e = cudaMemcpyAsync(output.raw(), dout.raw(), output.nbytes(),
                                      cudaMemcpyDeviceToHost, stream_);
      if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);
      if (e != cudaSuccess) return CudaError(e, absl::StrCat(what, ": download"));
    }
    return absl::OkStatus();
  }

  // Enqueues `launch` and waits for it on the stream; a failure aborts the
  // communicator and breaks the group. `elements` 0 skips communication.
  absl::Status Run(const char* op, size_t elements, const std::function<ncclResult_t()>& launch) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!broken_.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("nccl ", op, " on rank ", rank_,
                                                        ": collective group is broken (",
                                                        broken_.message(), ")"));
    }
    if (elements == 0) return absl::OkStatus();
    const std::string what = absl::StrCat("nccl ", op, " on rank ", rank_, " of ", world_,
                                          " (timeout ", timeout_.count(), " ms)");
    cudaSetDevice(device_);
    const auto deadline = Clock::now() + timeout_;
    absl::Status status;
    ncclResult_t r = launch();
    if (r != ncclSuccess && r != ncclInProgress) {
      status = NcclError(r, what);
    } else {
      status = WaitComm(comm_.get(), deadline, what);  // enqueue finished
    }
    int spins = 0;
    while (status.ok()) {
      cudaError_t e = cudaStreamQuery(stream_);
      if (e == cudaSuccess) return absl::OkStatus();
      if (e != cudaErrorNotReady) {
        status = CudaError(e, what);
        break;
      }
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_.get(), &state);
      if (state != ncclSuccess && state != ncclInProgress) {
        status = NcclError(state, what);
        break;
      }
      if (Clock::now() >= deadline) {
        status = absl::DeadlineExceededError(
            absl::StrCat(what, ": not complete within timeout (a peer died or stalled)"));
        break;
      }
      Backoff(spins);
    }
    broken_ = status;
    LOG(ERROR) << broken_ << "; aborting the communicator";
    comm_.reset();  // ncclCommAbort: stops the kernels and frees the communicator
    return broken_;
  }

  CommPtr comm_;
  const int rank_;
  const int world_;
  const int device_;
  cudaStream_t stream_;
  const bool own_stream_;
  void* scratch_;          // one int32 on the device, for Barrier
  std::mutex stage_mu_;    // guards the staging buffer across one staged op
  void* stage_ = nullptr;  // device staging buffer for host tensors (grow-only)
  size_t stage_bytes_ = 0;
  const std::chrono::milliseconds timeout_;
  const bool host_staging_;
  mutable std::mutex mu_;
  absl::Status broken_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CollectiveGroup>> CreateNcclGroup(RendezvousClient& client,
                                                                 const std::string& prefix,
                                                                 int rank, int world_size,
                                                                 const NcclGroupOptions& options) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("CreateNcclGroup: rank ", rank, " outside world of ", world_size));
  }
  const std::string where = absl::StrCat("nccl init of rank ", rank, " of ", world_size, " under '",
                                         prefix, "' (timeout ", options.timeout.count(), " ms)");
  int devices = 0;
  if (cudaError_t e = cudaGetDeviceCount(&devices); e != cudaSuccess || devices == 0) {
    return absl::FailedPreconditionError(absl::StrCat(where, ": no CUDA device"));
  }
  const int device = options.device >= 0 ? options.device : rank % devices;
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
    return CudaError(e, absl::StrCat(where, ": cudaSetDevice(", device, ")"));
  }
  const std::string key = prefix + "nccl/unique_id";
  ncclUniqueId id;
  if (rank == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
      return NcclError(r, absl::StrCat(where, ": ncclGetUniqueId"));
    }
    if (auto s = client.Set(key, std::string(id.internal, sizeof(id.internal))); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
    }
  } else {
    auto v = client.Get(key, options.timeout);
    if (!v.ok())
      return absl::Status(v.status().code(), absl::StrCat(where, ": ", v.status().message()));
    if (v->size() != sizeof(id.internal)) {
      return absl::InternalError(absl::StrCat(where, ": malformed unique id"));
    }
    std::memcpy(id.internal, v->data(), sizeof(id.internal));
  }

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  const std::string name = absl::StrCat("cpserve:", prefix);
  config.commName = name.c_str();
  ncclComm_t raw = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&raw, world_size, id, rank, &config);
  CommPtr comm(raw);
  if (r != ncclSuccess && r != ncclInProgress) {
    return NcclError(r, absl::StrCat(where, ": ncclCommInitRankConfig"));
  }
  if (auto s = WaitComm(comm.get(), Clock::now() + options.timeout,
                        absl::StrCat(where, ": ncclCommInitRankConfig"));
      !s.ok()) {
    return s;  // comm's deleter aborts the half-made communicator
  }

  cudaStream_t stream = options.stream;
  const bool own_stream = stream == nullptr;
  if (own_stream) {
    if (cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
        e != cudaSuccess) {
      return CudaError(e, absl::StrCat(where, ": cudaStreamCreate"));
    }
  }
  void* scratch = nullptr;
  if (cudaError_t e = cudaMalloc(&scratch, sizeof(int32_t)); e != cudaSuccess) {
    if (own_stream) cudaStreamDestroy(stream);
    return CudaError(e, absl::StrCat(where, ": cudaMalloc"));
  }
  cudaMemset(scratch, 0, sizeof(int32_t));
  cudaDeviceSynchronize();
  return std::unique_ptr<CollectiveGroup>(new NcclGroup(std::move(comm), rank, world_size, device,
                                                        stream, own_stream, scratch,
                                                        options.timeout, options.host_staging));
}

}  // namespace cpserve::comm
