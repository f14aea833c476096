// Helpers for tests that need the synthetic model on disk and loaded.
#pragma once

#include <memory>
#include <string>

#include "worker/model/synthetic_model.h"
#include "worker/model/weights.h"

namespace cpserve::testing {

// Writes the model described by `options` into a fresh temporary directory and
// loads it in fp32. Dies (test failure) on error.
ModelWeights WriteAndLoad(const SyntheticModelOptions& options);

}  // namespace cpserve::testing
