// `cpserve make-model`: writes the built-in synthetic model to --out.
#include <iostream>

#include "absl/flags/flag.h"
#include "services/cli/flags.h"
#include "services/cli/subcommand.h"
#include "worker/builtin/builtin_model.h"
#include "worker/model/weights.h"

namespace cpserve::cli {

int RunMakeModel(const std::vector<std::string>& args) {
  if (!args.empty()) {
    std::cerr << "cpserve make-model: unexpected argument '" << args[0] << "'\n";
    return 2;
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::cerr << "cpserve make-model: --out is required\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_preset) != "tiny") {
    std::cerr << "cpserve make-model: unknown --preset '" << absl::GetFlag(FLAGS_preset)
              << "' (known: tiny)\n";
    return 2;
  }
  const int64_t seed = absl::GetFlag(FLAGS_seed);
  const absl::Status written = WriteBuiltinModel(out, seed < 0 ? 0 : static_cast<uint64_t>(seed));
  if (!written.ok()) {
    std::cerr << "cpserve make-model: " << written << "\n";
    return 1;
  }
  // Load it back: what we wrote must be a valid model.
  absl::StatusOr<ModelWeights> loaded = LoadModel(out, DType::kF32);
  if (!loaded.ok()) {
    std::cerr << "cpserve make-model: wrote " << out << " but cannot load it: " << loaded.status()
              << "\n";
    return 1;
  }
  const ModelConfig& c = loaded->config;
  std::cout << "wrote " << out << ": " << c.architecture << ", " << c.num_hidden_layers
            << " layers, hidden " << c.hidden_size << ", " << c.num_attention_heads << " heads / "
            << c.num_key_value_heads << " KV heads, head dim " << c.head_dim << ", vocab "
            << c.vocab_size << " (config.json, model.safetensors, tokenizer.json)\n";
  return 0;
}

}  // namespace cpserve::cli
