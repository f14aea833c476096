// cpserve_hf_dump: the cpserve side of scripts/gpu/hf_check.py.
//
//   cpserve_hf_dump run --model=DIR --device=cpu|cuda --prompts=IN.json --steps=N --out=PREFIX
//     IN.json: {"prompts": [[ids...], ...]}. Writes PREFIX.bin (float32, little endian) and
//     PREFIX.json: {"device", "compute_dtype", "vocab_size", "steps", "bin", "results": [
//       {"prompt_len", "tokens", "finish", "prefill_offset", "prefill_rows",
//        "step_offset", "step_rows"}]}  (offsets and sizes in floats; rows of vocab_size).
//     compute_dtype is DTypeName (e.g. "float32"). cpu runs fp32 (weights widened), cuda runs bf16
//     (the CUDA backend's compute dtype).
//   cpserve_hf_dump tokenizer --vocab_size=N --out=DIR
//     Writes the built-in model's synthetic tokenizer for N ids as DIR/tokenizer.json and
//     DIR/tokenizer_config.json (bos 256, eos 257, pad 258).
//   cpserve_hf_dump tokenize --model=DIR --texts=IN.json --out=OUT.json
//     IN.json: {"texts": [...]}; OUT.json: {"ids": [[...], ...]}: what the router feeds the
//     pools for each text (Encode with special tokens, as generate_reactor does).
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "nlohmann/json.hpp"
#include "tests/gpu/hf/hf_runner.h"
#include "worker/model/model_config.h"
#include "worker/model/weights_upload.h"
#include "worker/tokenizer/synthetic_tokenizer.h"
#include "worker/tokenizer/tokenizer.h"
#ifdef CPSERVE_HF_DUMP_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

ABSL_FLAG(std::string, model, "", "Hugging Face model directory");
ABSL_FLAG(std::string, device, "cpu", "cpu (fp32) or cuda (bf16)");
ABSL_FLAG(std::string, prompts, "", "JSON file {\"prompts\": [[ids...], ...]}");
ABSL_FLAG(std::string, texts, "", "JSON file {\"texts\": [...]}");
ABSL_FLAG(std::string, out, "", "output prefix (run), directory (tokenizer) or file (tokenize)");
ABSL_FLAG(int64_t, steps, 32, "greedy tokens per prompt");
ABSL_FLAG(int64_t, max_batch_tokens, 2048, "engine prefill chunk budget");
ABSL_FLAG(int32_t, vocab_size, 1024, "tokenizer vocabulary size");
ABSL_FLAG(bool, prefill_logits, true, "also dump the logits of every prompt position");

namespace cpserve::hfcheck {
namespace {

using nlohmann::json;

absl::StatusOr<json> ReadJson(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not JSON"));
  return j;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const std::string& device) {
  if (device == "cpu") return MakeCpuBackend();
#ifdef CPSERVE_HF_DUMP_CUDA
  if (device == "cuda") return MakeCudaBackend(0);
#endif
  return absl::InvalidArgumentError(
      absl::StrCat("--device: '", device, "' is not available (cpu, or cuda in a CUDA build)"));
}

absl::Status Run() {
  absl::StatusOr<json> in = ReadJson(absl::GetFlag(FLAGS_prompts));
  if (!in.ok()) return in.status();
  std::vector<std::vector<int32_t>> prompts;
  if (!in->contains("prompts") || !(*in)["prompts"].is_array()) {
    return absl::InvalidArgumentError("--prompts: expected {\"prompts\": [[ids...], ...]}");
  }
  for (const json& p : (*in)["prompts"]) prompts.push_back(p.get<std::vector<int32_t>>());

  absl::StatusOr<std::unique_ptr<Backend>> backend = MakeBackend(absl::GetFlag(FLAGS_device));
  if (!backend.ok()) return backend.status();
  absl::StatusOr<ModelWeights> host = LoadModel(absl::GetFlag(FLAGS_model), DType::kF32);
  if (!host.ok()) return host.status();
  for (const std::string& note : host->config.notes) std::cerr << "model note: " << note << "\n";
  ModelWeights device_weights;
  const ModelWeights* weights = &*host;
  if ((*backend)->device().type != DeviceType::kCPU) {
    absl::StatusOr<ModelWeights> up = UploadWeights(*host, **backend);
    if (!up.ok()) return up.status();
    device_weights = *std::move(up);
    weights = &device_weights;
  }

  RunOptions o;
  o.steps = absl::GetFlag(FLAGS_steps);
  o.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  o.prefill_logits = absl::GetFlag(FLAGS_prefill_logits);
  absl::StatusOr<std::vector<PromptResult>> results = RunPrompts(*weights, **backend, prompts, o);
  if (!results.ok()) return results.status();

  const std::string prefix = absl::GetFlag(FLAGS_out);
  const int64_t vocab = host->config.vocab_size;
  std::ofstream bin(prefix + ".bin", std::ios::binary | std::ios::trunc);
  int64_t offset = 0;
  json header = {{"device", absl::GetFlag(FLAGS_device)},
                 {"compute_dtype", DTypeName((*backend)->ComputeDType())},
                 {"vocab_size", vocab},
                 {"steps", o.steps},
                 {"bin", prefix + ".bin"},
                 {"results", json::array()}};
  auto write = [&](const std::vector<float>& v) {
    bin.write(reinterpret_cast<const char*>(v.data()),
              static_cast<std::streamsize>(v.size() * sizeof(float)));
    const int64_t at = offset;
    offset += static_cast<int64_t>(v.size());
    return at;
  };
  for (const PromptResult& r : *results) {
    json e = {{"prompt_len", r.prompt.size()}, {"tokens", r.tokens}, {"finish", r.finish}};
    e["prefill_offset"] = write(r.prefill_logits);
    e["prefill_rows"] = static_cast<int64_t>(r.prefill_logits.size()) / vocab;
    e["step_offset"] = write(r.step_logits);
    e["step_rows"] = static_cast<int64_t>(r.step_logits.size()) / vocab;
    header["results"].push_back(std::move(e));
  }
  bin.close();
  if (!bin) return absl::InternalError(absl::StrCat("cannot write ", prefix, ".bin"));
  return WriteStringToFile(prefix + ".json", header.dump(1));
}

absl::Status WriteTokenizer() {
  const std::string dir = absl::GetFlag(FLAGS_out);
  absl::StatusOr<std::string> tok =
      tokenizer::BuildSyntheticTokenizerJson(absl::GetFlag(FLAGS_vocab_size));
  if (!tok.ok()) return tok.status();
  if (absl::Status s = WriteStringToFile(dir + "/tokenizer.json", *tok); !s.ok()) return s;
  return WriteStringToFile(
      dir + "/tokenizer_config.json",
      absl::StrCat("{\n  \"bos_token\": \"", tokenizer::kSyntheticBosToken,
                   "\",\n  \"eos_token\": \"", tokenizer::kSyntheticEosToken,
                   "\",\n  \"pad_token\": \"", tokenizer::kSyntheticPadToken,
                   "\",\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n"));
}

absl::Status Tokenize() {
  absl::StatusOr<tokenizer::Tokenizer> tok =
      tokenizer::Tokenizer::FromFile(absl::GetFlag(FLAGS_model) + "/tokenizer.json");
  if (!tok.ok()) return tok.status();
  absl::StatusOr<json> in = ReadJson(absl::GetFlag(FLAGS_texts));
  if (!in.ok()) return in.status();
  if (!in->contains("texts") || !(*in)["texts"].is_array()) {
    return absl::InvalidArgumentError("--texts: expected {\"texts\": [...]}");
  }
  json out = {{"ids", json::array()}};
  for (const json& t : (*in)["texts"]) {
    out["ids"].push_back(tok->Encode(t.get<std::string>(), /*add_special=*/true));
  }
  return WriteStringToFile(absl::GetFlag(FLAGS_out), out.dump());
}

}  // namespace
}  // namespace cpserve::hfcheck

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("cpserve_hf_dump run|tokenizer|tokenize --flags (see the source)");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::cerr << "usage: cpserve_hf_dump run|tokenizer|tokenize [--flags]\n";
    return 2;
  }
  const std::string mode = args[1];
  absl::Status s;
  if (mode == "run") {
    s = cpserve::hfcheck::Run();
  } else if (mode == "tokenizer") {
    s = cpserve::hfcheck::WriteTokenizer();
  } else if (mode == "tokenize") {
    s = cpserve::hfcheck::Tokenize();
  } else {
    std::cerr << "cpserve_hf_dump: unknown mode '" << mode << "'\n";
    return 2;
  }
  if (!s.ok()) {
    std::cerr << "cpserve_hf_dump " << mode << ": " << s << "\n";
    return 1;
  }
  return 0;
}
