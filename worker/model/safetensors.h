// Safetensors reading (memory-mapped, strictly validated) and writing.
//
// Format: u64 little-endian header length N, then N bytes of JSON
//   {"name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// then the data section; offsets are relative to the data section's start.
// Every error names the file (and the tensor where there is one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/tensor.h"

namespace cpserve {

// A read-only (copy-on-write private) memory map of a whole file. Move-only RAII.
class MappedFile {
 public:
  static absl::StatusOr<MappedFile> Open(const std::string& path);
  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return static_cast<const uint8_t*>(addr_); }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void Reset();
  std::string path_;
  void* addr_ = nullptr;  // null for empty files
  size_t size_ = 0;
};

struct SafetensorsTensorInfo {
  std::string name;
  std::string dtype;        // as written: "F32", "BF16", "F16", "I64", ...
  size_t element_size = 0;  // bytes per element of `dtype`
  Shape shape;
  uint64_t begin = 0;  // byte offsets within the data section, [begin, end)
  uint64_t end = 0;
  int64_t numel() const;
};

// Maps a safetensors dtype name ("F32", "BF16", "F16") to DType; others are Unimplemented.
absl::StatusOr<DType> SafetensorsDTypeToDType(absl::string_view dtype);
// DType -> safetensors name ("F32", "BF16", "F16", "F64", "I32", "I64", "U8").
const char* DTypeToSafetensorsName(DType dtype);

// One opened .safetensors file. The header is fully validated by Open: offsets in range,
// contiguous and non-overlapping, each tensor's byte size = numel * dtype size, no
// duplicate names, known dtype names.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }  // file order
  // nullptr when absent.
  const SafetensorsTensorInfo* Find(absl::string_view name) const;
  // The raw little-endian bytes of a tensor (inside the map; valid while this lives).
  const uint8_t* Data(const SafetensorsTensorInfo& info) const {
    return file_.data() + data_start_ + info.begin;
  }
  // A new owned contiguous CPU tensor holding `name` converted to `target`
  // (F32/BF16/F16 storage; any of F32/BF16/F16/F64 target). NotFound if absent.
  absl::StatusOr<Tensor> Read(absl::string_view name, DType target) const;

 private:
  SafetensorsFile() = default;
  MappedFile file_;
  size_t data_start_ = 0;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// All the safetensors of a model directory: model.safetensors.index.json (weight_map naming
// the shard of every tensor) if present, else model.safetensors, else every *.safetensors
// in the directory (no name may appear twice).
class SafetensorsCheckpoint {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  std::vector<std::string> TensorNames() const;  // sorted
  bool Contains(absl::string_view name) const;
  // The file holding `name` and its entry, or NotFound naming the tensor (and the shard).
  absl::StatusOr<std::pair<const SafetensorsFile*, const SafetensorsTensorInfo*>> Find(
      absl::string_view name) const;
  absl::StatusOr<Tensor> Read(absl::string_view name, DType target) const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<size_t, const SafetensorsTensorInfo*>, std::less<>> where_;
};

// Writes `tensors` (contiguous CPU tensors of any DType, in the given order) and `metadata`
// as a safetensors file. The header is space-padded to a multiple of 8 bytes, like the
// reference implementation. Names must be unique and non-empty.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Writes model.safetensors.index.json: {"metadata": {"total_size": N}, "weight_map": {...}}.
absl::Status WriteSafetensorsIndex(const std::string& path,
                                   const std::map<std::string, std::string>& weight_map,
                                   uint64_t total_size);

}  // namespace cpserve
