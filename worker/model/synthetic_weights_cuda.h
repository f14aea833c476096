// The synthetic model's weights generated directly on a GPU (synthetic_weights.h):
// bf16 device tensors from the backend's allocator, filled by the random-fill kernel
// (kernels/cuda/random_fill.h) — no files and no host copy. Bit-identical to
// GenerateSyntheticWeightsHost(spec, DType::kBF16). CUDA builds only.
#pragma once

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "worker/model/synthetic_weights.h"

namespace cpserve {

// `backend` must be a CUDA backend (INVALID_ARGUMENT otherwise). Returns once every
// tensor is written (the device is synchronised).
absl::StatusOr<ModelWeights> GenerateSyntheticWeightsCuda(const SyntheticSpec& spec,
                                                          Backend& backend);

}  // namespace cpserve
