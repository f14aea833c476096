// A minimal tensor: shape, strides (in elements), dtype, device, and an owned or
// borrowed buffer. It is the currency between the model code, the backends, the
// collective groups and the transfer agent — not a general tensor framework: it
// has no arithmetic, only views.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace cpserve {

enum class DType : uint8_t { kF32, kF64, kBF16, kF16, kI32, kI64, kU8 };
enum class DeviceType : uint8_t { kCPU, kCUDA };

size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);
// Parses "float32"/"f32"/"F32", "bfloat16"/"bf16"/"BF16", "float16"/"f16"/"F16", ...
absl::StatusOr<DType> ParseDType(absl::string_view name);

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;
  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool operator==(const Device&) const = default;
  static Device CPU() { return {}; }
  static Device CUDA(int index) { return {DeviceType::kCUDA, index}; }
};

// bf16 / fp16 <-> fp32 conversions (round to nearest even; NaN stays NaN).
uint16_t FloatToBF16(float f);
float BF16ToFloat(uint16_t h);
uint16_t FloatToF16(float f);
float F16ToFloat(uint16_t h);

using Shape = absl::InlinedVector<int64_t, 6>;

// Allocates and frees device memory for owned tensors. The CPU allocator is
// built in; a backend (CUDA) installs its own for its device type.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual absl::StatusOr<void*> Allocate(size_t bytes, Device device) = 0;
  virtual void Free(void* ptr, Device device) = 0;
};
void SetAllocator(DeviceType type, Allocator* allocator);  // not owned
Allocator* GetAllocator(DeviceType type);

class Tensor {
 public:
  Tensor() = default;

  // A new contiguous tensor; CPU memory is zeroed and 64-byte aligned.
  static absl::StatusOr<Tensor> Empty(const Shape& shape, DType dtype,
                                      Device device = Device::CPU());
  // Like Empty, but dies on allocation failure; for tests and small host buffers.
  static Tensor Zeros(const Shape& shape, DType dtype);
  // A contiguous view of memory owned elsewhere; the caller keeps it alive.
  static Tensor Borrow(void* data, const Shape& shape, DType dtype, Device device = Device::CPU());

  bool defined() const { return defined_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t stride(int i) const { return strides_[i < 0 ? i + rank() : i]; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }
  bool is_contiguous() const;

  void* raw() const { return data_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(data_);
  }
  template <typename T>
  absl::Span<T> span() const {  // contiguous tensors only
    return absl::Span<T>(data<T>(), static_cast<size_t>(numel()));
  }

  // Views sharing the buffer (and its ownership).
  Tensor Slice(int dim, int64_t begin, int64_t end) const;   // [begin, end) along dim
  Tensor Select(int dim, int64_t index) const;               // drops dim
  absl::StatusOr<Tensor> Reshape(const Shape& shape) const;  // contiguous only

  std::string DebugString() const;

 private:
  std::shared_ptr<void> owner_;  // null for borrowed tensors
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Device device_;
  Shape shape_;
  Shape strides_;
  bool defined_ = false;
};

Shape ContiguousStrides(const Shape& shape);

}  // namespace cpserve
