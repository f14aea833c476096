#include "worker/pool/pool_backend.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/status_macros.h"
#include "worker/comm/gloo_group.h"
#include "worker/comm/split_group.h"
#include "worker/model/synthetic_weights.h"
#include "worker/model/weights_upload.h"

#ifdef CPSERVE_POOL_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_backend_impl.h"
#include "worker/comm/nccl_group.h"
#include "worker/model/synthetic_weights_cuda.h"
#endif

namespace cpserve {

absl::StatusOr<Device> PoolRankDevice(const std::string& device, int rank) {
  if (device == "cpu") return Device::CPU();
  if (rank < 0) return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " < 0"));
  if (device == "cuda") return Device::CUDA(rank);
  const auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "device '", device, "': expected cpu, cuda, cuda:<first gpu> or cuda:<gpu>,<gpu>,..."));
  };
  if (!absl::StartsWith(device, "cuda:")) return bad();
  const std::vector<std::string> ids = absl::StrSplit(device.substr(5), ',');
  std::vector<int> gpus;
  for (const std::string& id : ids) {
    int g = 0;
    if (!absl::SimpleAtoi(id, &g) || g < 0) return bad();
    gpus.push_back(g);
  }
  if (gpus.size() == 1) return Device::CUDA(gpus[0] + rank);
  if (rank >= static_cast<int>(gpus.size())) {
    return absl::InvalidArgumentError(absl::StrCat("device '", device, "' lists ", gpus.size(),
                                                   " GPUs; rank ", rank, " has none"));
  }
  return Device::CUDA(gpus[rank]);
}

bool PoolHasCuda() {
#ifdef CPSERVE_POOL_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Backend>> CreateRankBackend(const Device& device) {
  if (device.is_cpu()) return MakeCpuBackend();
#ifdef CPSERVE_POOL_HAVE_CUDA
  // A pool rank runs all device work on its backend's stream (the NCCL group too).
  EnableCudaBlockCache(device.index);
  return MakeCudaBackend(device.index);
#else
  return absl::UnimplementedError("this build has no CUDA backend (configure -DCPSERVE_CUDA=ON)");
#endif
}

absl::StatusOr<ModelWeights> LoadWeightsForBackend(const std::string& dir, Backend& backend) {
  const bool cuda = backend.device().type == DeviceType::kCUDA;
  absl::StatusOr<SyntheticSpec> spec = ReadSyntheticMarker(dir);
  if (spec.ok()) {
    if (!cuda) return GenerateSyntheticWeightsHost(*spec, DType::kF32);
#ifdef CPSERVE_POOL_HAVE_CUDA
    return GenerateSyntheticWeightsCuda(*spec, backend);
#endif
  } else if (spec.status().code() != absl::StatusCode::kNotFound) {
    return spec.status();
  }
  CPSERVE_ASSIGN_OR_RETURN(ModelWeights host, LoadModel(dir, DType::kF32));
  if (!cuda) return host;
  return UploadWeights(host, backend);
}

absl::StatusOr<std::unique_ptr<comm::CollectiveGroup>> CreateRankGroup(
    Backend& backend, comm::RendezvousClient& client, const std::string& prefix, int rank,
    int world_size, const std::string& listen_host, std::chrono::milliseconds timeout) {
  if (backend.device().is_cpu()) {
    return comm::CreateGlooGroup(client, prefix, rank, world_size, {listen_host, timeout});
  }
#ifdef CPSERVE_POOL_HAVE_CUDA
  auto* cuda_backend = dynamic_cast<cuda::CudaBackend*>(&backend);
  if (cuda_backend == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("CreateRankGroup: backend '", backend.name(), "' is not the CUDA backend"));
  }
  // Data over NCCL, control (host tensors) over Gloo: see worker/comm/split_group.h.
  comm::NcclGroupOptions options;
  options.device = backend.device().index;
  options.timeout = timeout;
  options.stream = cuda_backend->stream();
  options.host_staging = true;
  CPSERVE_ASSIGN_OR_RETURN(auto device,
                           comm::CreateNcclGroup(client, prefix, rank, world_size, options));
  CPSERVE_ASSIGN_OR_RETURN(auto host, comm::CreateGlooGroup(client, prefix + "/control", rank,
                                                            world_size, {listen_host, timeout}));
  return comm::CreateSplitGroup(std::move(host), std::move(device));
#else
  return absl::UnimplementedError("this build has no NCCL (configure -DCPSERVE_CUDA=ON)");
#endif
}

}  // namespace cpserve
