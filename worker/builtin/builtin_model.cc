#include "worker/builtin/builtin_model.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>

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

namespace {

std::string CacheRoot() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') {
    return absl::StrCat(xdg, "/cpserve");
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return absl::StrCat(home, "/.cache/cpserve");
  }
  return "/tmp/cpserve-cache";
}

// `dir` under the cache, written by `write` (into a temporary directory, then renamed)
// unless it already holds a tokenizer.json.
absl::StatusOr<std::string> EnsureCached(
    const std::string& name, const std::function<absl::Status(const std::string&)>& write) {
  const std::string root = CacheRoot();
  const std::string dir = absl::StrCat(root, "/", name);
  std::error_code ec;
  if (fs::exists(fs::path(dir) / "tokenizer.json", ec)) return dir;
  fs::create_directories(root, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create the model cache ", root, ": ", ec.message()));
  }
  const std::string tmp = absl::StrCat(dir, ".tmp-", ::getpid());
  fs::remove_all(tmp, ec);
  CPSERVE_RETURN_IF_ERROR(write(tmp));
  fs::rename(tmp, dir, ec);
  if (ec) {
    // Another process won the race: its copy is identical (same seed).
    fs::remove_all(tmp, ec);
    if (!fs::exists(fs::path(dir) / "tokenizer.json")) {
      return absl::InternalError(absl::StrCat("cannot install the model at ", dir));
    }
  }
  return dir;
}

}  // namespace

absl::StatusOr<std::string> EnsureBuiltinModel() {
  return EnsureCached(kBuiltinModelName,
                      [](const std::string& dir) { return WriteBuiltinModel(dir); });
}

absl::Status WriteSyntheticModelDir(const std::string& dir, const SyntheticSpec& spec) {
  CPSERVE_ASSIGN_OR_RETURN(ModelConfig config, SyntheticSpecConfig(spec));
  CPSERVE_ASSIGN_OR_RETURN(SyntheticModelOptions tok, BuiltinModelOptions());
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  const fs::path d(dir);
  CPSERVE_RETURN_IF_ERROR(WriteStringToFile((d / "config.json").string(), config.ToJson()));
  // The built-in tokenizer, its vocabulary padded to the model's (decodable ids).
  CPSERVE_ASSIGN_OR_RETURN(
      const std::string tokenizer_json,
      tokenizer::PadTokenizerVocab(tok.tokenizer_json, static_cast<int>(config.vocab_size)));
  CPSERVE_RETURN_IF_ERROR(WriteStringToFile((d / "tokenizer.json").string(), tokenizer_json));
  CPSERVE_RETURN_IF_ERROR(
      WriteStringToFile((d / "tokenizer_config.json").string(), tok.tokenizer_config_json));
  return WriteStringToFile((d / kSyntheticMarkerFile).string(), SyntheticMarkerJson(spec));
}

absl::StatusOr<std::string> EnsureSyntheticModelDir(const SyntheticSpec& spec) {
  const std::string name =
      absl::StrCat("synthetic-", spec.preset, "-layers", spec.num_layers, "-seed", spec.seed,
                   "-v2");  // v2: tokenizer vocabulary padded to the model's
  return EnsureCached(
      name, [&spec](const std::string& dir) { return WriteSyntheticModelDir(dir, spec); });
}

absl::StatusOr<std::string> ResolveModelDir(const std::string& flag) {
  if (IsSyntheticModelName(flag)) {
    CPSERVE_ASSIGN_OR_RETURN(SyntheticSpec spec, ParseSyntheticModelName(flag));
    return EnsureSyntheticModelDir(spec);
  }
  if (!flag.empty()) return flag;
  return EnsureBuiltinModel();
}

}  // namespace cpserve
