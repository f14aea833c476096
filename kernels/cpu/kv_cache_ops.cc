// Writing new tokens' K/V into the paged cache and gathering them back.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/common.h"
#include "kernels/cpu/cpu_backend.h"

namespace cpserve {
namespace {

absl::Status CheckCache(const KvCacheView& cache, int64_t layer, const cpu::Heads& k,
                        const char* op) {
  if (absl::Status s = cache.Validate(); !s.ok()) return s;
  if (cache.dtype != DType::kF32 || !cache.device.is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": cache must be fp32 on the CPU"));
  }
  if (layer < 0 || layer >= cache.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": layer ", layer, " outside [0, ", cache.num_layers, ")"));
  }
  if (k.heads != cache.num_kv_heads || k.dim != cache.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": K/V have ", k.heads, " heads of ", k.dim,
                                                   ", cache has ", cache.num_kv_heads, " of ",
                                                   cache.head_dim));
  }
  return absl::OkStatus();
}

absl::Status SameHeads(const cpu::Heads& a, const cpu::Heads& b, const char* op) {
  if (a.tokens != b.tokens || a.heads != b.heads || a.dim != b.dim) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": K and V shapes differ"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CpuBackend::WriteKvCache(int64_t layer, const Tensor& k, const Tensor& v,
                                      const Tensor& slot_mapping, const KvCacheView& cache) {
  CPSERVE_ASSIGN_OR_RETURN(auto kh, cpu::AsHeads(k, "WriteKvCache k"));
  CPSERVE_ASSIGN_OR_RETURN(auto vh, cpu::AsHeads(v, "WriteKvCache v"));
  if (absl::Status s = SameHeads(kh, vh, "WriteKvCache"); !s.ok()) return s;
  if (absl::Status s = CheckCache(cache, layer, kh, "WriteKvCache"); !s.ok()) return s;
  if (absl::Status s = cpu::CheckTensor(slot_mapping, DType::kI64, "WriteKvCache slot_mapping");
      !s.ok()) {
    return s;
  }
  CPSERVE_ASSIGN_OR_RETURN(auto slots, cpu::ReadIndices(slot_mapping, "WriteKvCache slot_mapping"));
  if (static_cast<int64_t>(slots.size()) != kh.tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteKvCache: ", slots.size(), " slots for ", kh.tokens, " tokens"));
  }
  for (size_t t = 0; t < slots.size(); ++t) {
    if (slots[t] >= cache.num_slots()) {
      return absl::InvalidArgumentError(absl::StrCat("WriteKvCache: slot ", slots[t], " of token ",
                                                     t, " >= ", cache.num_slots()));
    }
  }
  const size_t row_bytes = sizeof(float) * kh.dim;
  for (int64_t t = 0; t < kh.tokens; ++t) {
    const int64_t slot = slots[t];
    if (slot < 0) continue;
    const int64_t block = slot / cache.block_size, off = slot % cache.block_size;
    for (int64_t h = 0; h < kh.heads; ++h) {
      std::memcpy(cache.Ptr<float>(block, layer, 0, off, h), kh.at(t, h), row_bytes);
      std::memcpy(cache.Ptr<float>(block, layer, 1, off, h), vh.at(t, h), row_bytes);
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::GatherKvCache(int64_t layer, absl::Span<const int32_t> block_table,
                                       int64_t len, const KvCacheView& cache, const Tensor& k_out,
                                       const Tensor& v_out) {
  CPSERVE_ASSIGN_OR_RETURN(auto kh, cpu::AsHeads(k_out, "GatherKvCache k_out"));
  CPSERVE_ASSIGN_OR_RETURN(auto vh, cpu::AsHeads(v_out, "GatherKvCache v_out"));
  if (absl::Status s = SameHeads(kh, vh, "GatherKvCache"); !s.ok()) return s;
  if (absl::Status s = CheckCache(cache, layer, kh, "GatherKvCache"); !s.ok()) return s;
  if (len < 0 || kh.tokens != len) {
    return absl::InvalidArgumentError(
        absl::StrCat("GatherKvCache: len ", len, " but outputs hold ", kh.tokens, " tokens"));
  }
  CPSERVE_RETURN_IF_ERROR(cache.CheckBlockTable(block_table, len, "GatherKvCache"));
  const size_t row_bytes = sizeof(float) * kh.dim;
  for (int64_t t = 0; t < len; ++t) {
    const int64_t block = block_table[t / cache.block_size], off = t % cache.block_size;
    for (int64_t h = 0; h < kh.heads; ++h) {
      std::memcpy(kh.at(t, h), cache.Ptr<float>(block, layer, 0, off, h), row_bytes);
      std::memcpy(vh.at(t, h), cache.Ptr<float>(block, layer, 1, off, h), row_bytes);
    }
  }
  return absl::OkStatus();
}

}  // namespace cpserve
