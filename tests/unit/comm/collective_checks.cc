#include "tests/unit/comm/collective_checks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cpserve::comm::testing {
namespace {

uint64_t Mix(uint64_t seed, int rank, int case_id) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(rank) << 32) ^
               static_cast<uint64_t>(case_id) * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 31;
  return x * 0x94D049BB133111EBull;
}

std::string Where(const char* op, DType dtype, const Shape& shape, int rank) {
  return absl::StrCat(op, " dtype=", DTypeName(dtype), " shape=[", absl::StrJoin(shape, ","),
                      "] rank=", rank);
}

// Compares `got` (host) with `want` element by element as doubles.
absl::Status Compare(const std::string& where, const Tensor& got, const std::vector<double>& want) {
  if (got.numel() != static_cast<int64_t>(want.size())) {
    return absl::InternalError(
        absl::StrCat(where, ": ", got.numel(), " elements, want ", want.size()));
  }
  for (int64_t i = 0; i < got.numel(); ++i) {
    double g = GetAsDouble(got, i);
    if (g != want[i]) {
      return absl::InternalError(
          absl::StrCat(where, ": element ", i, " is ", g, ", want ", want[i]));
    }
  }
  return absl::OkStatus();
}

// Reduction of every rank's value in double; u8 sums wrap like the uint8 arithmetic.
double Reduce(const std::vector<double>& vals, ReduceOp op, DType dtype) {
  double acc = vals[0];
  for (size_t i = 1; i < vals.size(); ++i) {
    acc = op == ReduceOp::kSum ? acc + vals[i] : std::max(acc, vals[i]);
  }
  if (dtype == DType::kU8) acc = std::fmod(acc, 256.0);
  return acc;
}

Shape RowsShape(int64_t rows) { return Shape{rows, 3, 5}; }

}  // namespace

DeviceIO DeviceIO::Host() {
  // A copy, so that in-place collectives never touch the caller's reference inputs.
  auto copy = [](const Tensor& t) {
    Tensor c = Tensor::Zeros(t.shape(), t.dtype());
    if (t.nbytes() > 0) std::memcpy(c.raw(), t.raw(), t.nbytes());
    return c;
  };
  return {copy, copy};
}

double GetAsDouble(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kF32:
      return t.data<float>()[i];
    case DType::kF64:
      return t.data<double>()[i];
    case DType::kBF16:
      return BF16ToFloat(t.data<uint16_t>()[i]);
    case DType::kF16:
      return F16ToFloat(t.data<uint16_t>()[i]);
    case DType::kI32:
      return t.data<int32_t>()[i];
    case DType::kI64:
      return static_cast<double>(t.data<int64_t>()[i]);
    case DType::kU8:
      return t.data<uint8_t>()[i];
  }
  return 0;
}

void SetFromDouble(const Tensor& t, int64_t i, double v) {
  switch (t.dtype()) {
    case DType::kF32:
      t.data<float>()[i] = static_cast<float>(v);
      break;
    case DType::kF64:
      t.data<double>()[i] = v;
      break;
    case DType::kBF16:
      t.data<uint16_t>()[i] = FloatToBF16(static_cast<float>(v));
      break;
    case DType::kF16:
      t.data<uint16_t>()[i] = FloatToF16(static_cast<float>(v));
      break;
    case DType::kI32:
      t.data<int32_t>()[i] = static_cast<int32_t>(v);
      break;
    case DType::kI64:
      t.data<int64_t>()[i] = static_cast<int64_t>(v);
      break;
    case DType::kU8:
      t.data<uint8_t>()[i] = static_cast<uint8_t>(v);
      break;
  }
}

Tensor RandomTensor(const Shape& shape, DType dtype, uint64_t seed, int rank, int case_id) {
  Tensor t = Tensor::Zeros(shape, dtype);
  std::mt19937_64 rng(Mix(seed, rank, case_id));
  int lo = -8, hi = 8;
  if (dtype == DType::kI32 || dtype == DType::kI64) lo = -1000, hi = 1000;
  if (dtype == DType::kU8) lo = 0, hi = 255;
  std::uniform_int_distribution<int> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) SetFromDouble(t, i, dist(rng));
  return t;
}

absl::Status RunCollectiveChecks(CollectiveGroup& group, uint64_t seed, const DeviceIO& io,
                                 const CheckOptions& options) {
  const int W = group.world_size();
  const int me = group.rank();
  int case_id = 0;
  for (DType dtype : options.dtypes) {
    for (int64_t rows : options.rows) {
      const Shape shape = RowsShape(rows);
      const int64_t n = rows * 15;
      // Everyone's inputs, generated locally.
      std::vector<Tensor> inputs;
      for (int q = 0; q < W; ++q) inputs.push_back(RandomTensor(shape, dtype, seed, q, case_id));
      ++case_id;

      {  // AllGather: rank-major concatenation.
        Tensor in = io.to_device(inputs[me]);
        Tensor out = io.to_device(Tensor::Zeros(RowsShape(rows * W), dtype));
        if (auto s = group.AllGather(in, out); !s.ok()) return s;
        std::vector<double> want;
        for (int q = 0; q < W; ++q) {
          for (int64_t i = 0; i < n; ++i) want.push_back(GetAsDouble(inputs[q], i));
        }
        if (auto s = Compare(Where("AllGather", dtype, shape, me), io.to_host(out), want);
            !s.ok()) {
          return s;
        }
      }
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
        Tensor t = io.to_device(inputs[me]);
        if (auto s = group.AllReduce(t, op); !s.ok()) return s;
        std::vector<double> want(n);
        for (int64_t i = 0; i < n; ++i) {
          std::vector<double> vals;
          for (int q = 0; q < W; ++q) vals.push_back(GetAsDouble(inputs[q], i));
          want[i] = Reduce(vals, op, dtype);
        }
        if (auto s = Compare(
                Where(op == ReduceOp::kSum ? "AllReduce(sum)" : "AllReduce(max)", dtype, shape, me),
                io.to_host(t), want);
            !s.ok()) {
          return s;
        }
      }
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
        // Input [W*rows, 3, 5] per rank; this rank's output is block `me` reduced.
        std::vector<Tensor> big;
        for (int q = 0; q < W; ++q) {
          big.push_back(RandomTensor(RowsShape(rows * W), dtype, seed, q, 1000 + case_id));
        }
        Tensor in = io.to_device(big[me]);
        Tensor out = io.to_device(Tensor::Zeros(shape, dtype));
        if (auto s = group.ReduceScatter(in, out, op); !s.ok()) return s;
        std::vector<double> want(n);
        for (int64_t i = 0; i < n; ++i) {
          std::vector<double> vals;
          for (int q = 0; q < W; ++q) vals.push_back(GetAsDouble(big[q], me * n + i));
          want[i] = Reduce(vals, op, dtype);
        }
        if (auto s = Compare(Where("ReduceScatter", dtype, shape, me), io.to_host(out), want);
            !s.ok()) {
          return s;
        }
      }
      for (int root = 0; root < W; ++root) {
        Tensor t = io.to_device(inputs[me]);
        if (auto s = group.Broadcast(t, root); !s.ok()) return s;
        std::vector<double> want(n);
        for (int64_t i = 0; i < n; ++i) want[i] = GetAsDouble(inputs[root], i);
        if (auto s = Compare(Where("Broadcast", dtype, shape, me), io.to_host(t), want); !s.ok()) {
          return s;
        }
      }
      if (options.all_gather_v) {
        // Rank q contributes a different row count (some zero) per case.
        std::vector<int64_t> counts(W);
        std::mt19937_64 rng(Mix(seed, -1, case_id));
        for (int q = 0; q < W; ++q) counts[q] = static_cast<int64_t>(rng() % (rows + 2));
        int64_t total = 0;
        std::vector<Tensor> vin;
        for (int q = 0; q < W; ++q) {
          vin.push_back(RandomTensor(RowsShape(counts[q]), dtype, seed, q, 2000 + case_id));
          total += counts[q];
        }
        Tensor in = io.to_device(vin[me]);
        Tensor out = io.to_device(Tensor::Zeros(RowsShape(total), dtype));
        if (auto s = group.AllGatherV(in, out, counts); !s.ok()) return s;
        std::vector<double> want;
        for (int q = 0; q < W; ++q) {
          for (int64_t i = 0; i < vin[q].numel(); ++i) want.push_back(GetAsDouble(vin[q], i));
        }
        if (auto s = Compare(Where("AllGatherV", dtype, RowsShape(counts[me]), me), io.to_host(out),
                             want);
            !s.ok()) {
          return s;
        }
      }
    }
  }
  if (options.large_elements > 0) {
    const int64_t n = options.large_elements;
    std::vector<Tensor> inputs;
    for (int q = 0; q < W; ++q) inputs.push_back(RandomTensor({n}, DType::kF32, seed, q, 9999));
    Tensor t = io.to_device(inputs[me]);
    if (auto s = group.AllReduce(t); !s.ok()) return s;
    std::vector<double> want(n);
    for (int64_t i = 0; i < n; ++i) {
      for (int q = 0; q < W; ++q) want[i] += GetAsDouble(inputs[q], i);
    }
    if (auto s = Compare(Where("AllReduce(large)", DType::kF32, {n}, me), io.to_host(t), want);
        !s.ok()) {
      return s;
    }
    Tensor in = io.to_device(inputs[me]);
    Tensor out = io.to_device(Tensor::Zeros({n * W}, DType::kF32));
    if (auto s = group.AllGather(in, out); !s.ok()) return s;
    want.clear();
    for (int q = 0; q < W; ++q) {
      for (int64_t i = 0; i < n; ++i) want.push_back(GetAsDouble(inputs[q], i));
    }
    if (auto s = Compare(Where("AllGather(large)", DType::kF32, {n}, me), io.to_host(out), want);
        !s.ok()) {
      return s;
    }
  }
  return group.Barrier();
}

absl::Status CheckRealAllReduce(CollectiveGroup& group, uint64_t seed, const DeviceIO& io,
                                int64_t elements) {
  const int W = group.world_size();
  std::vector<Tensor> inputs;
  for (int q = 0; q < W; ++q) {
    Tensor t = Tensor::Zeros({elements}, DType::kF32);
    std::mt19937_64 rng(Mix(seed, q, 7777));
    std::normal_distribution<float> dist(0.f, 1.f);
    for (float& v : t.span<float>()) v = dist(rng);
    inputs.push_back(t);
  }
  Tensor t = io.to_device(inputs[group.rank()]);
  if (auto s = group.AllReduce(t); !s.ok()) return s;
  Tensor got = io.to_host(t);
  for (int64_t i = 0; i < elements; ++i) {
    double want = 0, mag = 0;
    for (int q = 0; q < W; ++q) {
      want += inputs[q].data<float>()[i];
      mag += std::fabs(inputs[q].data<float>()[i]);
    }
    if (std::fabs(got.data<float>()[i] - want) > 1e-5 * std::max(mag, 1e-30) + 1e-30) {
      return absl::InternalError(absl::StrCat("real AllReduce: element ", i, " is ",
                                              got.data<float>()[i], ", want ", want));
    }
  }
  // Every rank must hold the same bits.
  Tensor all = io.to_device(Tensor::Zeros({elements * W}, DType::kF32));
  if (auto s = group.AllGather(t, all); !s.ok()) return s;
  Tensor host_all = io.to_host(all);
  for (int q = 1; q < W; ++q) {
    if (std::memcmp(host_all.data<float>(), host_all.data<float>() + q * elements,
                    elements * sizeof(float)) != 0) {
      return absl::InternalError(absl::StrCat("real AllReduce: rank ", q, " differs from rank 0"));
    }
  }
  return absl::OkStatus();
}

}  // namespace cpserve::comm::testing
