#include "worker/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "worker/model/dtype_convert.h"
#include "worker/model/model_config.h"

namespace cpserve {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // same bound as the reference library

// Element size of every dtype the format defines; 0 for unknown names.
size_t KnownDTypeSize(const std::string& d) {
  static const std::map<std::string, size_t> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8}};
  auto it = kSizes.find(d);
  return it == kSizes.end() ? 0 : it->second;
}

std::string Quote(absl::string_view name) { return absl::StrCat("'", name, "'"); }

absl::Status TensorError(const std::string& path, absl::string_view tensor,
                         absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", Quote(tensor), ": ", what));
}

}  // namespace

// ---------------------------------------------------------------- MappedFile

absl::StatusOr<MappedFile> MappedFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": file not found"));
    return absl::FailedPreconditionError(absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(path, ": not a regular file"));
  }
  MappedFile m;
  m.path_ = path;
  m.size_ = static_cast<size_t>(st.st_size);
  if (m.size_ > 0) {
    void* addr = ::mmap(nullptr, m.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::ResourceExhaustedError(
          absl::StrCat(path, ": mmap failed: ", std::strerror(err)));
    }
    m.addr_ = addr;
  }
  ::close(fd);  // the mapping stays valid
  return m;
}

MappedFile::MappedFile(MappedFile&& other) noexcept { *this = std::move(other); }

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    Reset();
    path_ = std::move(other.path_);
    addr_ = std::exchange(other.addr_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() { Reset(); }

void MappedFile::Reset() {
  if (addr_ != nullptr) ::munmap(addr_, size_);
  addr_ = nullptr;
  size_ = 0;
}

// ---------------------------------------------------------------- dtypes

int64_t SafetensorsTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<DType> SafetensorsDTypeToDType(absl::string_view dtype) {
  if (dtype == "F32") return DType::kF32;
  if (dtype == "BF16") return DType::kBF16;
  if (dtype == "F16") return DType::kF16;
  return absl::UnimplementedError(
      absl::StrCat("unsupported safetensors dtype ", Quote(dtype), " (supported: F32, BF16, F16)"));
}

const char* DTypeToSafetensorsName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF64:
      return "F64";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kU8:
      return "U8";
  }
  return "?";
}

// ---------------------------------------------------------------- SafetensorsFile

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto mapped = MappedFile::Open(path);
  if (!mapped.ok()) return mapped.status();
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->file_ = std::move(*mapped);
  const size_t size = f->file_.size();
  if (size < 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": truncated safetensors file: ", size,
                     " bytes, need at least 8 for the header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | f->file_.data()[i];
  if (header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_len,
                                                   " exceeds the limit of ", kMaxHeaderBytes));
  }
  if (header_len > size - 8) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_len,
                                                   " extends beyond the file (", size,
                                                   " bytes): truncated or corrupt"));
  }
  f->data_start_ = 8 + header_len;
  const char* hbegin = reinterpret_cast<const char*>(f->file_.data() + 8);
  const char* hend = hbegin + header_len;

  // The parser keeps the last of duplicate keys; the callback records top-level duplicates.
  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  json header = json::parse(hbegin, hend, cb, /*allow_exceptions=*/false);
  if (header.is_discarded()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": malformed JSON header (", header_len, " bytes)"));
  }
  if (!header.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header is not a JSON object"));
  }
  if (!duplicate.empty()) return TensorError(path, duplicate, "duplicate name in header");

  const uint64_t data_size = size - f->data_start_;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": __metadata__ is not an object"));
      }
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": __metadata__ value of ", Quote(k), " is not a string"));
        }
        f->metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) return TensorError(path, name, "entry is not an object");
    SafetensorsTensorInfo info;
    info.name = name;
    auto dt = entry.find("dtype");
    if (dt == entry.end() || !dt->is_string()) return TensorError(path, name, "missing dtype");
    info.dtype = dt->get<std::string>();
    info.element_size = KnownDTypeSize(info.dtype);
    if (info.element_size == 0) {
      return TensorError(path, name, absl::StrCat("unknown dtype ", Quote(info.dtype)));
    }
    auto sh = entry.find("shape");
    if (sh == entry.end() || !sh->is_array()) return TensorError(path, name, "missing shape");
    uint64_t numel = 1;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0)) {
        return TensorError(path, name, absl::StrCat("bad shape ", sh->dump()));
      }
      const uint64_t v = d.get<uint64_t>();
      if (v > (uint64_t{1} << 62) || __builtin_mul_overflow(numel, v, &numel) ||
          numel > (uint64_t{1} << 62)) {
        return TensorError(path, name, absl::StrCat("shape ", sh->dump(), " too large"));
      }
      info.shape.push_back(static_cast<int64_t>(v));
    }
    auto off = entry.find("data_offsets");
    if (off == entry.end() || !off->is_array() || off->size() != 2 ||
        !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned()) {
      return TensorError(path, name, "data_offsets must be two non-negative integers");
    }
    info.begin = (*off)[0].get<uint64_t>();
    info.end = (*off)[1].get<uint64_t>();
    if (info.begin > info.end) {
      return TensorError(
          path, name, absl::StrCat("data_offsets [", info.begin, ", ", info.end, ") are reversed"));
    }
    if (info.end > data_size) {
      return TensorError(
          path, name,
          absl::StrCat("data_offsets [", info.begin, ", ", info.end,
                       ") out of range: data section has ", data_size, " bytes (file truncated?)"));
    }
    uint64_t expected = 0;
    if (__builtin_mul_overflow(numel, info.element_size, &expected) ||
        expected != info.end - info.begin) {
      return TensorError(
          path, name,
          absl::StrCat("byte size ", info.end - info.begin, " does not match shape ", sh->dump(),
                       " x ", info.dtype, " (", info.element_size, " bytes) = ", expected));
    }
    f->tensors_.push_back(std::move(info));
  }

  // Offsets must tile the data section exactly: sorted, no overlap, no gap, no tail.
  std::vector<const SafetensorsTensorInfo*> order;
  for (const auto& t : f->tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  const SafetensorsTensorInfo* prev = nullptr;
  for (const auto* t : order) {
    if (t->begin < cursor) {
      return TensorError(path, t->name,
                         absl::StrCat("data_offsets [", t->begin, ", ", t->end, ") overlap tensor ",
                                      Quote(prev->name), " ending at ", cursor));
    }
    if (t->begin > cursor) {
      return TensorError(
          path, t->name,
          absl::StrCat("data_offsets start at ", t->begin, " leaving a gap after ", cursor));
    }
    cursor = t->end;
    prev = t;
  }
  if (cursor != data_size) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": data section has ", data_size,
                                                   " bytes but tensors cover only ", cursor));
  }
  // Keep file (offset) order; index by name.
  std::sort(f->tensors_.begin(), f->tensors_.end(),
            [](const auto& a, const auto& b) { return a.begin < b.begin; });
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_[f->tensors_[i].name] = i;
  return f;
}

const SafetensorsTensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<Tensor> SafetensorsFile::Read(absl::string_view name, DType target) const {
  const SafetensorsTensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat(path(), ": no tensor ", Quote(name)));
  }
  auto src = SafetensorsDTypeToDType(info->dtype);
  if (!src.ok()) {
    return absl::UnimplementedError(
        absl::StrCat(path(), ": tensor ", Quote(name), ": ", src.status().message()));
  }
  auto out = Tensor::Empty(info->shape, target);
  if (!out.ok()) return out.status();
  absl::Status s = ConvertElements(Data(*info), *src, out->raw(), target, info->numel());
  if (!s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat(path(), ": tensor ", Quote(name), ": ", s.message()));
  }
  return out;
}

// ---------------------------------------------------------------- SafetensorsCheckpoint

absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> SafetensorsCheckpoint::Open(
    const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": model directory not found"));
  }
  auto ckpt = std::make_unique<SafetensorsCheckpoint>();
  ckpt->dir_ = dir;
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  auto add_file = [&](const std::string& path) -> absl::StatusOr<size_t> {
    auto f = SafetensorsFile::Open(path);
    if (!f.ok()) return f.status();
    ckpt->files_.push_back(std::move(*f));
    return ckpt->files_.size() - 1;
  };

  if (fs::exists(index_path, ec)) {
    auto text = ReadFileToString(index_path);
    if (!text.ok()) return text.status();
    json index = json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": malformed JSON"));
    }
    auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": missing weight_map object"));
    }
    std::map<std::string, size_t> shard_file;  // shard name -> files_ index
    for (const auto& [tensor, shard_json] : wm->items()) {
      if (!shard_json.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": weight_map entry for ", Quote(tensor), " is not a string"));
      }
      const std::string shard = shard_json.get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "..") {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map entry for ",
                                                       Quote(tensor), " names bad shard ",
                                                       Quote(shard)));
      }
      auto it = shard_file.find(shard);
      if (it == shard_file.end()) {
        const std::string shard_path = (fs::path(dir) / shard).string();
        if (!fs::exists(shard_path, ec)) {
          return absl::NotFoundError(absl::StrCat(index_path, ": weight_map names shard ",
                                                  Quote(shard), " for tensor ", Quote(tensor),
                                                  " but ", shard_path, " does not exist"));
        }
        auto idx = add_file(shard_path);
        if (!idx.ok()) return idx.status();
        it = shard_file.emplace(shard, *idx).first;
      }
      const SafetensorsFile& f = *ckpt->files_[it->second];
      const SafetensorsTensorInfo* info = f.Find(tensor);
      if (info == nullptr) {
        return absl::NotFoundError(absl::StrCat(index_path, ": weight_map puts tensor ",
                                                Quote(tensor), " in ", f.path(),
                                                " but that file does not contain it"));
      }
      ckpt->where_[tensor] = {it->second, info};
    }
    return ckpt;
  }

  std::vector<std::string> paths;
  const std::string single = (fs::path(dir) / "model.safetensors").string();
  if (fs::exists(single, ec)) {
    paths.push_back(single);
  } else {
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.path().extension() == ".safetensors") paths.push_back(e.path().string());
    }
    std::sort(paths.begin(), paths.end());
  }
  if (paths.empty()) {
    return absl::NotFoundError(absl::StrCat(
        dir, ": no model.safetensors.index.json, model.safetensors or *.safetensors found"));
  }
  for (const std::string& p : paths) {
    auto idx = add_file(p);
    if (!idx.ok()) return idx.status();
    for (const auto& info : ckpt->files_[*idx]->tensors()) {
      auto [it, inserted] = ckpt->where_.try_emplace(info.name, *idx, &info);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(p, ": tensor ", Quote(info.name),
                                                       " also appears in ",
                                                       ckpt->files_[it->second.first]->path()));
      }
    }
  }
  return ckpt;
}

std::vector<std::string> SafetensorsCheckpoint::TensorNames() const {
  std::vector<std::string> names;
  for (const auto& [name, _] : where_) names.push_back(name);
  return names;
}

bool SafetensorsCheckpoint::Contains(absl::string_view name) const {
  return where_.find(name) != where_.end();
}

absl::StatusOr<std::pair<const SafetensorsFile*, const SafetensorsTensorInfo*>>
SafetensorsCheckpoint::Find(absl::string_view name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    std::vector<std::string> files;
    for (const auto& f : files_) files.push_back(f->path());
    return absl::NotFoundError(
        absl::StrCat("tensor ", Quote(name), " not found in ", absl::StrJoin(files, ", ")));
  }
  return std::make_pair(files_[it->second.first].get(), it->second.second);
}

absl::StatusOr<Tensor> SafetensorsCheckpoint::Read(absl::string_view name, DType target) const {
  auto found = Find(name);
  if (!found.ok()) return found.status();
  return found->first->Read(name, target);
}

// ---------------------------------------------------------------- writing

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__" || header.contains(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": bad or duplicate tensor name ", Quote(name)));
    }
    if (!t.defined() || !t.device().is_cpu() || !t.is_contiguous()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor ", Quote(name), " must be a defined contiguous CPU tensor"));
    }
    json shape = json::array();
    for (int64_t d : t.shape()) shape.push_back(d);
    header[name] = {{"dtype", DTypeToSafetensorsName(t.dtype())},
                    {"shape", shape},
                    {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot open for writing: ", std::strerror(errno)));
  }
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((uint64_t{h.size()} >> (8 * i)) & 0xff);
  out.write(len, 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (const auto& [name, t] : tensors) {
    out.write(static_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

absl::Status WriteSafetensorsIndex(const std::string& path,
                                   const std::map<std::string, std::string>& weight_map,
                                   uint64_t total_size) {
  json j = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  return WriteStringToFile(path, j.dump(2) + "\n");
}

}  // namespace cpserve
