#include "worker/transfer/kv_descriptor.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace cpserve::transfer {

absl::StatusOr<int> DTypeBytes(absl::string_view dtype) {
  if (dtype == "float32") return 4;
  if (dtype == "bfloat16" || dtype == "float16") return 2;
  return absl::InvalidArgumentError(absl::StrCat("unknown KV dtype '", dtype, "'"));
}

absl::Status KvPoolLayout::Validate() const {
  if (absl::Status st = cp.Validate(); !st.ok()) return absl::InvalidArgumentError(st.message());
  if (absl::Status st = geometry.Validate(); !st.ok()) return st;
  if (geometry.block_size != cp.block_size) {
    return absl::InvalidArgumentError("geometry and CP layout disagree on block size");
  }
  absl::StatusOr<int> bytes = DTypeBytes(dtype);
  if (!bytes.ok()) return bytes.status();
  if (*bytes != geometry.elem_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("dtype ", dtype, " is not ", geometry.elem_bytes, " bytes"));
  }
  return absl::OkStatus();
}

v1::KvLayout KvPoolLayout::ToProto() const {
  v1::KvLayout p;
  p.set_world_size(cp.world_size);
  p.set_interleave(cp.interleave);
  p.set_block_size(cp.block_size);
  p.set_num_layers(geometry.num_layers);
  p.set_num_kv_heads(geometry.num_kv_heads);
  p.set_head_dim(geometry.head_dim);
  p.set_dtype(dtype);
  return p;
}

absl::StatusOr<KvPoolLayout> KvPoolLayout::FromProto(const v1::KvLayout& p) {
  absl::StatusOr<int> bytes = DTypeBytes(p.dtype());
  if (!bytes.ok()) return bytes.status();
  KvPoolLayout l;
  l.cp = CpLayout{p.world_size(), p.interleave(), p.block_size()};
  l.geometry =
      KvBlockGeometry{p.block_size(), p.num_layers(), p.num_kv_heads(), p.head_dim(), *bytes};
  l.dtype = p.dtype();
  if (absl::Status st = l.Validate(); !st.ok()) return st;
  return l;
}

absl::StatusOr<TransferPlanInput> BuildPlanInput(const v1::KvTransferTarget& target,
                                                 const PushSource& src,
                                                 bool cuda_memory_supported) {
  if (target.transfer_id().empty()) return absl::InvalidArgumentError("empty transfer id");
  if (absl::Status st = src.layout.Validate(); !st.ok()) return st;
  absl::StatusOr<KvPoolLayout> dst = KvPoolLayout::FromProto(target.layout());
  if (!dst.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("decode layout: ", dst.status().message()));
  }
  const KvBlockGeometry& a = src.layout.geometry;
  const KvBlockGeometry& b = dst->geometry;
  if (a.block_size != b.block_size || a.num_layers != b.num_layers ||
      a.num_kv_heads != b.num_kv_heads || a.head_dim != b.head_dim ||
      src.layout.dtype != dst->dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV layouts disagree: prefill ", src.layout.ToProto().ShortDebugString(),
                     " vs decode ", target.layout().ShortDebugString()));
  }
  const int D = dst->cp.world_size;
  if (target.destinations_size() != D) {
    return absl::InvalidArgumentError(
        absl::StrCat(target.destinations_size(), " destinations for ", D, " decode ranks"));
  }
  TransferPlanInput in;
  in.geometry = a;
  in.prompt_len = src.prompt_len;
  in.src.layout = src.layout.cp;
  in.src.block_ids.resize(src.layout.cp.world_size);
  if (src.rank < 0 || src.rank >= src.layout.cp.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("src rank ", src.rank, " out of range"));
  }
  in.src.block_ids[src.rank] = src.block_ids;
  in.src.block_stride_bytes = src.block_stride_bytes;
  in.src.region_bytes.assign(src.layout.cp.world_size, src.region_bytes);
  in.dst.layout = dst->cp;
  in.dst.block_stride_bytes = 0;
  for (int d = 0; d < D; ++d) {
    const v1::KvDestination& dest = target.destinations(d);
    if (dest.rank() != d) {
      return absl::InvalidArgumentError(
          absl::StrCat("destination ", d, " names rank ", dest.rank()));
    }
    if (dest.worker_address().empty() || dest.rkey().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("destination ", d, " lacks address/rkey"));
    }
    if (dest.memory() != "host" && !(dest.memory() == "cuda" && cuda_memory_supported)) {
      return absl::InvalidArgumentError(
          absl::StrCat("destination ", d, " memory '", dest.memory(), "' unsupported"));
    }
    if (dest.region_bytes() == 0 ||
        dest.remote_base() > std::numeric_limits<uint64_t>::max() - dest.region_bytes()) {
      return absl::InvalidArgumentError(absl::StrCat("destination ", d, " bad region"));
    }
    // The plan takes one dst stride; every decode rank of a pool shares it.
    if (d > 0 && dest.block_stride_bytes() != in.dst.block_stride_bytes) {
      return absl::InvalidArgumentError("decode ranks disagree on block stride");
    }
    in.dst.block_stride_bytes = dest.block_stride_bytes();
    in.dst.block_ids.emplace_back(dest.block_ids().begin(), dest.block_ids().end());
    in.dst.region_bytes.push_back(dest.region_bytes());
  }
  if (absl::Status st = ValidatePlanInput(in, src.rank); !st.ok()) return st;
  return in;
}

}  // namespace cpserve::transfer
