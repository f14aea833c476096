#include "tests/unit/generation/test_model.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace cpserve::testing {

ModelWeights WriteAndLoad(const SyntheticModelOptions& options) {
  static int counter = 0;
  const std::string dir = absl::StrCat(std::filesystem::temp_directory_path().string(),
                                       "/cpserve-model-", ::getpid(), "-", counter++);
  const absl::Status written = WriteSyntheticModel(dir, options);
  if (!written.ok()) {
    ADD_FAILURE() << written;
    std::abort();
  }
  absl::StatusOr<ModelWeights> w = LoadModel(dir, DType::kF32);
  std::filesystem::remove_all(dir);
  if (!w.ok()) {
    ADD_FAILURE() << w.status();
    std::abort();
  }
  return *std::move(w);
}

}  // namespace cpserve::testing
