#include "worker/builtin/builtin_model.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "worker/tokenizer/synthetic_tokenizer.h"

namespace cpserve {
namespace fs = std::filesystem;

absl::StatusOr<SyntheticModelOptions> BuiltinModelOptions(uint64_t seed) {
  SyntheticModelOptions o = TinyModelOptions();
  o.seed = seed;
  o.bos_token_id = tokenizer::kSyntheticBosId;
  o.eos_token_id = tokenizer::kSyntheticEosId;
  CPSERVE_ASSIGN_OR_RETURN(o.tokenizer_json,
                           tokenizer::BuildSyntheticTokenizerJson(static_cast<int>(o.vocab_size)));
  o.tokenizer_config_json = absl::StrCat(
      "{\n  \"bos_token\": \"", tokenizer::kSyntheticBosToken, "\",\n  \"eos_token\": \"",
      tokenizer::kSyntheticEosToken, "\",\n  \"pad_token\": \"", tokenizer::kSyntheticPadToken,
      "\",\n  \"model_max_length\": ", o.max_position_embeddings,
      ",\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n");
  return o;
}

absl::Status WriteBuiltinModel(const std::string& dir, uint64_t seed) {
  CPSERVE_ASSIGN_OR_RETURN(SyntheticModelOptions o, BuiltinModelOptions(seed));
  return WriteSyntheticModel(dir, o);
}

absl::StatusOr<std::string> EnsureBuiltinModel() {
  std::string root;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') {
    root = absl::StrCat(xdg, "/cpserve");
  } else if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    root = absl::StrCat(home, "/.cache/cpserve");
  } else {
    root = "/tmp/cpserve-cache";
  }
  const std::string dir = absl::StrCat(root, "/", kBuiltinModelName);
  std::error_code ec;
  if (fs::exists(fs::path(dir) / "tokenizer.json", ec)) return dir;
  fs::create_directories(root, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create the model cache ", root, ": ", ec.message()));
  }
  const std::string tmp = absl::StrCat(dir, ".tmp-", ::getpid());
  fs::remove_all(tmp, ec);
  CPSERVE_RETURN_IF_ERROR(WriteBuiltinModel(tmp));
  fs::rename(tmp, dir, ec);
  if (ec) {
    // Another process won the race: its copy is identical (same seed).
    fs::remove_all(tmp, ec);
    if (!fs::exists(fs::path(dir) / "tokenizer.json")) {
      return absl::InternalError(absl::StrCat("cannot install the built-in model at ", dir));
    }
  }
  return dir;
}

absl::StatusOr<std::string> ResolveModelDir(const std::string& flag) {
  if (!flag.empty()) return flag;
  return EnsureBuiltinModel();
}

}  // namespace cpserve
