// Copies host model weights to a backend's device in its compute dtype (e.g. fp32
// host tensors -> bf16 on a GPU). Tied embeddings stay tied (one device buffer).
#pragma once

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "worker/model/weights.h"

namespace cpserve {

absl::StatusOr<ModelWeights> UploadWeights(const ModelWeights& host, Backend& backend);

}  // namespace cpserve
