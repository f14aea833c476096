// Fuzzes the safetensors header parser (SafetensorsFile::Open) on arbitrary file bytes.
// The input is the whole file; it is written to an in-memory file (memfd) and opened by
// its /proc/self/fd path, since Open maps a file. When Open accepts the file, the checks
// below hold for every tensor: Find returns it, its byte range lies inside the file's data
// section with size numel * element size, and Read of a float tensor converts it to F32
// with numel elements.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/tensor.h"
#include "tests/fuzz/fuzz_check.h"
#include "worker/model/safetensors.h"

namespace {

// One memfd per process, rewritten for each input.
int MemFd() {
  static const int fd = [] {
    const int f = ::memfd_create("fuzz_safetensors", MFD_CLOEXEC);
    FUZZ_CHECK(f >= 0, "memfd_create failed");
    return f;
  }();
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = MemFd();
  FUZZ_CHECK(::ftruncate(fd, 0) == 0, "ftruncate");
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    FUZZ_CHECK(n > 0, "pwrite");
    done += static_cast<size_t>(n);
  }
  const std::string path = absl::StrCat("/proc/self/fd/", fd);
  auto file = cpserve::SafetensorsFile::Open(path);
  if (!file.ok()) {
    FUZZ_CHECK(!file.status().message().empty(), "error without a message");
    return 0;
  }
  FUZZ_CHECK(size >= 8, "accepted a file shorter than its header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  FUZZ_CHECK(header_len <= size - 8, "header beyond the file");
  const uint64_t data_size = size - 8 - header_len;
  const uint8_t* data_start = data + 8 + header_len;

  const cpserve::SafetensorsFile& f = **file;
  for (const cpserve::SafetensorsTensorInfo& t : f.tensors()) {
    FUZZ_CHECK(f.Find(t.name) == &t, absl::StrCat("Find(", t.name, ") is not its entry"));
    FUZZ_CHECK(t.begin <= t.end && t.end <= data_size,
               absl::StrCat(t.name, ": range [", t.begin, ", ", t.end, ") outside data section"));
    FUZZ_CHECK(t.element_size > 0, t.name);
    const int64_t numel = t.numel();
    FUZZ_CHECK(
        numel >= 0 && static_cast<uint64_t>(numel) * t.element_size == t.end - t.begin,
        absl::StrCat(t.name, ": numel ", numel, " does not fill [", t.begin, ", ", t.end, ")"));
    // The tensor's bytes are exactly the file's bytes at its range.
    const uint8_t* bytes = f.Data(t);
    for (uint64_t i = 0; i < t.end - t.begin; ++i) {
      FUZZ_CHECK(bytes[i] == data_start[t.begin + i], absl::StrCat(t.name, ": wrong bytes"));
    }
    if (cpserve::SafetensorsDTypeToDType(t.dtype).ok()) {
      absl::StatusOr<cpserve::Tensor> read = f.Read(t.name, cpserve::DType::kF32);
      FUZZ_CHECK(read.ok(), absl::StrCat(t.name, ": Read failed: ", read.status().ToString()));
      FUZZ_CHECK(read->numel() == numel, absl::StrCat(t.name, ": Read gave another numel"));
    }
  }
  FUZZ_CHECK(f.Find("\x01not a tensor name\x02") == nullptr ||
                 f.Find("\x01not a tensor name\x02")->name == "\x01not a tensor name\x02",
             "Find of an absent name");
  return 0;
}
