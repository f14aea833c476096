#include "worker/engine/rank_transfers.h"

#include <glog/logging.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/status_macros.h"
#include "worker/transfer/kv_descriptor.h"

namespace cpserve {
namespace {

int32_t Failed(const absl::Status& s) {
  return kTransferFailedBase + static_cast<int32_t>(s.code());
}

absl::Time Deadline(int64_t unix_us) {
  return unix_us > 0 ? absl::FromUnixMicros(unix_us) : absl::InfiniteFuture();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RankTransfers>> RankTransfers::Create(
    const KvCacheView& cache, const CpLayout& layout, int rank, Backend* backend,
    const KvDirectCopierFactory& direct) {
  auto self = std::unique_ptr<RankTransfers>(new RankTransfers());
  transfer::AgentOptions options;
  options.name = absl::StrCat("cpserve-rank-", rank);
  CPSERVE_ASSIGN_OR_RETURN(self->agent_, transfer::TransferAgent::Create(options));
  void* base = cache.base;
  transfer::MemoryKind memory = transfer::MemoryKind::kHost;
  if (!cache.device.is_cpu()) {
    if (backend == nullptr || !(backend->device() == cache.device)) {
      return absl::InvalidArgumentError("a GPU KV cache needs its backend for host staging");
    }
    self->backend_ = backend;
    if (self->agent_->cuda_memory_supported()) {
      memory = transfer::MemoryKind::kCuda;  // UCX moves GPU memory itself
    } else {
      const int64_t block_elems = cache.block_stride;
      if (block_elems !=
          cache.num_layers * 2 * cache.block_size * cache.num_kv_heads * cache.head_dim) {
        return absl::UnimplementedError("host staging needs one contiguous region per KV block");
      }
      self->device_blocks_ =
          Tensor::Borrow(cache.base, {cache.num_blocks, block_elems}, cache.dtype, cache.device);
      CPSERVE_ASSIGN_OR_RETURN(self->mirror_,
                               Tensor::Empty({cache.num_blocks, block_elems}, cache.dtype));
      base = self->mirror_.raw();  // untouched, so it costs no memory until staging runs
      self->rank_ = rank;
    }
    if (direct) {
      absl::StatusOr<std::shared_ptr<transfer::DirectCopier>> copier = direct(cache);
      if (copier.ok()) {
        self->direct_ = *std::move(copier);
      } else {
        LOG(WARNING) << "rank " << rank << ": no direct KV copies (" << copier.status()
                     << "); using " << self->path();
      }
    }
  }
  transfer::KvRegion region;
  region.base = base;
  region.num_blocks = cache.num_blocks;
  region.block_stride_bytes = static_cast<uint64_t>(cache.block_stride) * cache.element_size();
  region.bytes = region.block_stride_bytes * static_cast<uint64_t>(cache.num_blocks);
  region.layout.cp = layout;
  region.layout.geometry = transfer::KvBlockGeometry{
      static_cast<int>(cache.block_size), static_cast<int>(cache.num_layers),
      static_cast<int>(cache.num_kv_heads), static_cast<int>(cache.head_dim),
      static_cast<int>(cache.element_size())};
  region.layout.dtype = DTypeName(cache.dtype);
  region.rank = rank;
  region.memory = memory;
  region.direct = self->direct_;
  CPSERVE_RETURN_IF_ERROR(self->agent_->RegisterKvRegion(region));
  // A zero-block reservation yields the destination fields of this rank.
  const std::string probe = absl::StrCat("template-", rank);
  CPSERVE_ASSIGN_OR_RETURN(self->template_,
                           self->agent_->ReserveBlocks(probe, {}, absl::InfiniteFuture()));
  (void)self->agent_->CancelReceive(probe);
  (void)self->agent_->Release(probe);
  LOG(INFO) << "rank " << rank << ": KV transfer path "
            << (self->direct_ != nullptr
                    ? absl::StrCat(self->direct_->name(), " on this host, else ", self->path())
                    : self->path())
            << " (" << region.bytes / (1 << 20) << " MiB region)";
  return self;
}

void RankTransfers::PinMirrorOnce() {
  if (pin_tried_) return;
  pin_tried_ = true;
  void* base = mirror_.raw();
  if (const absl::Status pin = backend_->PinHostMemory(base, mirror_.nbytes()); pin.ok()) {
    Backend* backend = backend_;
    pinned_ = std::unique_ptr<void, std::function<void(void*)>>(
        base, [backend](void* p) { backend->UnpinHostMemory(p); });
    LOG(INFO) << "rank " << rank_ << ": KV staging mirror page-locked (" << (mirror_.nbytes() >> 20)
              << " MiB)";
  } else {
    LOG(WARNING) << "rank " << rank_ << ": KV staging mirror stays pageable: " << pin;
  }
}

absl::Status RankTransfers::CopyBlocks(std::vector<int32_t> ids, bool to_host) {
  PinMirrorOnce();
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  const int64_t n = device_blocks_.dim(0);
  for (size_t i = 0; i < ids.size();) {
    size_t j = i + 1;
    while (j < ids.size() && ids[j] == ids[j - 1] + 1) ++j;
    const int64_t first = ids[i], end = int64_t{ids[j - 1]} + 1;
    if (first < 0 || end > n) {
      return absl::InvalidArgumentError(
          absl::StrCat("block ", first, "..", end - 1, " outside the KV cache of ", n, " blocks"));
    }
    const Tensor dev = device_blocks_.Slice(0, first, end);
    const Tensor host = mirror_.Slice(0, first, end);
    CPSERVE_RETURN_IF_ERROR(to_host ? backend_->CopyToHost(dev, host)
                                    : backend_->CopyFromHost(host, dev));
    i = j;
  }
  return absl::OkStatus();
}

v1::KvDestination RankTransfers::DestinationTemplate() const { return template_; }

std::string RankTransfers::PushPath(const std::string& transfer_id) const {
  auto it = push_direct_.find(transfer_id);
  return it != push_direct_.end() && it->second ? direct_->name() : path();
}

int32_t RankTransfers::RunOne(const v1::TransferOp& op, int rank) {
  transfer::TransferAgent& a = *agent_;
  const auto& ids =
      op.blocks_size() > rank ? op.blocks(rank).ids() : google::protobuf::RepeatedField<int32_t>();
  switch (op.kind()) {
    case v1::TransferOp::KIND_RESERVE: {
      auto d = a.ReserveBlocks(op.transfer_id(), {ids.begin(), ids.end()},
                               Deadline(op.deadline_unix_us()));
      if (d.ok() && staged()) receiving_[op.transfer_id()].assign(ids.begin(), ids.end());
      return d.ok() ? kTransferDone : Failed(d.status());
    }
    case v1::TransferOp::KIND_POLL_RECEIVE: {
      std::optional<absl::Status> s = a.PollReceived(op.transfer_id());
      if (!s.has_value()) return kTransferPending;
      if (s->ok() && staged()) {
        // Every put has landed in the mirror: move the blocks to the GPU (once) —
        // unless the senders wrote the GPU cache directly.
        const bool direct = a.ReceivedDirect(op.transfer_id());
        if (auto it = receiving_.find(op.transfer_id()); it != receiving_.end() && direct) {
          receiving_.erase(it);
        } else if (it != receiving_.end()) {
          const absl::Status up = CopyBlocks(it->second, /*to_host=*/false);
          receiving_.erase(it);
          if (!up.ok()) return Failed(up);
        }
      }
      return s->ok() ? kTransferDone : Failed(*s);
    }
    case v1::TransferOp::KIND_RELEASE: {
      receiving_.erase(op.transfer_id());
      if (!a.PollReceived(op.transfer_id()).has_value()) (void)a.CancelReceive(op.transfer_id());
      const absl::Status released = a.Release(op.transfer_id());
      if (absl::IsNotFound(released)) return kTransferDone;  // gone: no sender can write
      if (!released.ok()) return kTransferPending;           // still live: cancelling
      // Released: it is forgotten once every accepted sender confirmed or died.
      const auto left = a.PollReceived(op.transfer_id());
      return left.has_value() && absl::IsNotFound(*left) ? kTransferDone : kTransferPending;
    }
    case v1::TransferOp::KIND_PUSH: {
      transfer::PushRequest req;
      req.target = op.target();
      req.prompt_len = op.prompt_len();
      req.block_ids.assign(ids.begin(), ids.end());
      req.deadline = Deadline(op.deadline_unix_us());
      req.direct = direct_ != nullptr && a.CanPushDirect(op.target());
      if (req.direct || ucx_cuda()) {
        // The prefill that wrote these blocks ran on the backend's stream; the
        // direct copies (another stream) or UCX start after it has finished.
        if (const absl::Status sync = backend_->Synchronize(); !sync.ok()) return Failed(sync);
      } else if (staged()) {
        // The copy follows the prefill on the backend's stream and returns once the
        // mirror holds the blocks.
        if (const absl::Status down = CopyBlocks(req.block_ids, /*to_host=*/true); !down.ok()) {
          return Failed(down);
        }
      }
      push_direct_[op.transfer_id()] = req.direct;
      pushes_[op.transfer_id()] = a.PushAsync(std::move(req));
      return kTransferPending;
    }
    case v1::TransferOp::KIND_POLL_PUSH: {
      // Other ranks may still be pushing, so the leader polls again: remember a
      // finished push's status until it falls out of a bounded history.
      if (auto done = finished_pushes_.find(op.transfer_id()); done != finished_pushes_.end()) {
        return done->second.ok() ? kTransferDone : Failed(done->second);
      }
      auto it = pushes_.find(op.transfer_id());
      if (it == pushes_.end()) return Failed(absl::NotFoundError("no push"));
      if (it->second.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
        return kTransferPending;
      }
      const absl::Status s = it->second.get();
      pushes_.erase(it);
      if (!s.ok()) LOG(WARNING) << "rank " << rank << ": push " << op.transfer_id() << ": " << s;
      finished_pushes_[op.transfer_id()] = s;
      finished_order_.push_back(op.transfer_id());
      if (finished_order_.size() > 4096) {
        finished_pushes_.erase(finished_order_.front());
        push_direct_.erase(finished_order_.front());
        finished_order_.pop_front();
      }
      return s.ok() ? kTransferDone : Failed(s);
    }
    default:
      return Failed(absl::InvalidArgumentError("unknown transfer op"));
  }
}

absl::StatusOr<std::vector<int32_t>> RankTransfers::Run(const v1::StepCommand& command, int rank,
                                                        comm::CollectiveGroup* group) {
  std::vector<int32_t> codes;
  for (const v1::TransferOp& op : command.transfers()) {
    codes.push_back(RunOne(op, rank));
    if (codes.back() >= kTransferFailedBase) {
      LOG(WARNING) << "rank " << rank << ": transfer op " << v1::TransferOp::Kind_Name(op.kind())
                   << " of " << op.transfer_id() << " failed with code "
                   << absl::StatusCodeToString(
                          static_cast<absl::StatusCode>(codes.back() - kTransferFailedBase));
    }
  }
  if (group != nullptr && !codes.empty()) {
    Tensor t = Tensor::Borrow(codes.data(), {static_cast<int64_t>(codes.size())}, DType::kI32);
    CPSERVE_RETURN_IF_ERROR(group->AllReduce(t, comm::ReduceOp::kMax));
  }
  return codes;
}

absl::StatusOr<std::vector<v1::KvDestination>> ExchangeDestinations(const v1::KvDestination& mine,
                                                                    comm::CollectiveGroup* group) {
  if (group == nullptr) return std::vector<v1::KvDestination>{mine};
  const int world = group->world_size();
  std::string bytes = mine.SerializeAsString();
  int64_t size = static_cast<int64_t>(bytes.size());
  std::vector<int64_t> sizes(world);
  Tensor in = Tensor::Borrow(&size, {1}, DType::kI64);
  Tensor out = Tensor::Borrow(sizes.data(), {world}, DType::kI64);
  CPSERVE_RETURN_IF_ERROR(group->AllGather(in, out));
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  std::string all(static_cast<size_t>(total), '\0');
  Tensor send = Tensor::Borrow(bytes.data(), {size}, DType::kU8);
  Tensor recv = Tensor::Borrow(all.data(), {total}, DType::kU8);
  CPSERVE_RETURN_IF_ERROR(group->AllGatherV(send, recv, sizes));
  std::vector<v1::KvDestination> result(world);
  int64_t offset = 0;
  for (int r = 0; r < world; ++r) {
    if (!result[r].ParseFromArray(all.data() + offset, static_cast<int>(sizes[r]))) {
      return absl::InternalError(absl::StrCat("corrupt destination of rank ", r));
    }
    offset += sizes[r];
  }
  return result;
}

absl::Status TransferOutcome(int32_t code, const std::string& what) {
  if (code == kTransferDone) return absl::OkStatus();
  if (code == kTransferPending) return absl::UnavailableError(what + ": still in flight");
  return absl::Status(static_cast<absl::StatusCode>(code - kTransferFailedBase),
                      absl::StrCat(what, " failed on at least one rank"));
}

}  // namespace cpserve
