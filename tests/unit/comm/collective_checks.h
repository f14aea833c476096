// A backend-independent check suite for CollectiveGroup, run by every rank of a real
// group (threads in unit tests, processes in integration and GPU tests). Each rank
// generates every rank's inputs from a shared seed, so it computes the expected
// result on its own (in double, independently of the backend's reduce code) and
// compares exactly: data are integer-valued so every summation order is exact.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "kernels/tensor.h"
#include "worker/comm/collective_group.h"

namespace cpserve::comm::testing {

// Moves tensors between the host and the group's device (identity for Gloo).
struct DeviceIO {
  std::function<Tensor(const Tensor& host)> to_device;
  std::function<Tensor(const Tensor& device)> to_host;
  static DeviceIO Host();
};

// Deterministic integer-valued data for (seed, rank, case): floats in [-8, 8],
// integers in [-1000, 1000], u8 in [0, 255].
Tensor RandomTensor(const Shape& shape, DType dtype, uint64_t seed, int rank, int case_id);
double GetAsDouble(const Tensor& t, int64_t i);
void SetFromDouble(const Tensor& t, int64_t i, double v);

struct CheckOptions {
  std::vector<DType> dtypes = {DType::kF32, DType::kF64, DType::kBF16, DType::kF16,
                               DType::kI32, DType::kI64, DType::kU8};
  // Rows of dim 0 per rank; each row is [3, 5] elements. 0 exercises empty tensors.
  std::vector<int64_t> rows = {0, 1, 7, 100};
  // One large f32 case (elements per rank) to cross transport segment sizes.
  int64_t large_elements = 300000;
  bool all_gather_v = true;
};

// Runs every collective over every dtype and size; the first mismatch is returned as
// an INTERNAL status naming the op, dtype, size and element.
absl::Status RunCollectiveChecks(CollectiveGroup& group, uint64_t seed, const DeviceIO& io,
                                 const CheckOptions& options = {});

// fp32 all-reduce of real-valued random data: within 1e-5 relative of a double sum,
// and bitwise identical on every rank (checked with an all-gather of the results).
absl::Status CheckRealAllReduce(CollectiveGroup& group, uint64_t seed, const DeviceIO& io,
                                int64_t elements);

}  // namespace cpserve::comm::testing
