#include "worker/comm/split_group.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace cpserve::comm {
namespace {

class SplitGroup final : public CollectiveGroup {
 public:
  SplitGroup(std::unique_ptr<CollectiveGroup> host, std::unique_ptr<CollectiveGroup> device)
      : host_(std::move(host)),
        device_(std::move(device)),
        name_(absl::StrCat(device_->backend(), "+", host_->backend())) {}

  int rank() const override { return host_->rank(); }
  int world_size() const override { return host_->world_size(); }
  const char* backend() const override { return name_.c_str(); }
  bool healthy() const override { return host_->healthy() && device_->healthy(); }
  absl::Status broken_status() const override {
    absl::Status s = device_->broken_status();
    return s.ok() ? host_->broken_status() : s;
  }

  absl::Status AllGather(const Tensor& input, Tensor& output) override {
    CollectiveGroup* g = nullptr;
    if (absl::Status s = Pick("AllGather", {&input, &output}, &g); !s.ok()) return s;
    return g->AllGather(input, output);
  }
  absl::Status AllGatherV(const Tensor& input, Tensor& output,
                          absl::Span<const int64_t> counts) override {
    CollectiveGroup* g = nullptr;
    if (absl::Status s = Pick("AllGatherV", {&input, &output}, &g); !s.ok()) return s;
    return g->AllGatherV(input, output, counts);
  }
  absl::Status AllReduce(Tensor& tensor, ReduceOp op) override {
    CollectiveGroup* g = nullptr;
    if (absl::Status s = Pick("AllReduce", {&tensor}, &g); !s.ok()) return s;
    return g->AllReduce(tensor, op);
  }
  absl::Status ReduceScatter(const Tensor& input, Tensor& output, ReduceOp op) override {
    CollectiveGroup* g = nullptr;
    if (absl::Status s = Pick("ReduceScatter", {&input, &output}, &g); !s.ok()) return s;
    return g->ReduceScatter(input, output, op);
  }
  absl::Status Broadcast(Tensor& tensor, int root) override {
    CollectiveGroup* g = nullptr;
    if (absl::Status s = Pick("Broadcast", {&tensor}, &g); !s.ok()) return s;
    return g->Broadcast(tensor, root);
  }
  // Host-side: the device group's collectives complete before they return.
  absl::Status Barrier() override { return host_->Barrier(); }

 private:
  absl::Status Pick(const char* op, std::initializer_list<const Tensor*> tensors,
                    CollectiveGroup** group) {
    int host = 0, device = 0;
    for (const Tensor* t : tensors) {
      if (!t->defined()) continue;
      (t->device().is_cpu() ? host : device) += 1;
    }
    if (host > 0 && device > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": tensors on the host and on a device in one collective"));
    }
    *group = device > 0 ? device_.get() : host_.get();
    return absl::OkStatus();
  }

  std::unique_ptr<CollectiveGroup> host_;
  std::unique_ptr<CollectiveGroup> device_;
  std::string name_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CollectiveGroup>> CreateSplitGroup(
    std::unique_ptr<CollectiveGroup> host, std::unique_ptr<CollectiveGroup> device) {
  if (host == nullptr || device == nullptr || host->rank() != device->rank() ||
      host->world_size() != device->world_size()) {
    return absl::InvalidArgumentError("split group: two groups of the same ranks are needed");
  }
  return std::unique_ptr<CollectiveGroup>(new SplitGroup(std::move(host), std::move(device)));
}

}  // namespace cpserve::comm
