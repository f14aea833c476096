// Writes the committed seed corpora of the fuzz harnesses: a few valid and a few broken
// inputs per target, each in the input layout its harness documents. Deterministic.
//   fuzz_gen_seed_corpus <out_dir>   (writes <out_dir>/<target>/<name>)
// Regenerate with: cmake --build build --target fuzz_gen_seed_corpus &&
//   build/bin/fuzz_gen_seed_corpus tests/fuzz/corpus
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cpserve/v1/generation.pb.h"
#include "cpserve/v1/kv_transfer.pb.h"
#include "kernels/tensor.h"
#include "worker/kv/cp_layout.h"
#include "worker/model/model_config.h"
#include "worker/model/safetensors.h"
#include "worker/tokenizer/synthetic_tokenizer.h"

namespace {

namespace fs = std::filesystem;
using cpserve::DType;
using cpserve::Tensor;

std::string g_out;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = fs::path(g_out) / target;
  fs::create_directories(dir);
  const absl::Status st = cpserve::WriteStringToFile((dir / name).string(), bytes);
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    std::exit(1);
  }
}

std::string ReadAll(const std::string& path) {
  absl::StatusOr<std::string> s = cpserve::ReadFileToString(path);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
    std::exit(1);
  }
  return *s;
}

// A safetensors file from a header JSON and a data section.
std::string RawSafetensors(const std::string& header, const std::string& payload) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + payload;
}

void Safetensors() {
  const std::string t = "fuzz_safetensors";
  const std::string tmp = (fs::temp_directory_path() / "cpserve_fuzz_seed.safetensors").string();
  Tensor w = Tensor::Zeros({2, 3}, DType::kF32);
  for (int i = 0; i < 6; ++i) w.data<float>()[i] = 0.5f * static_cast<float>(i) - 1.0f;
  Tensor b = Tensor::Zeros({4}, DType::kBF16);
  for (int i = 0; i < 4; ++i) b.data<uint16_t>()[i] = static_cast<uint16_t>(0x3f80 + i);
  Tensor h = Tensor::Zeros({1, 2}, DType::kF16);
  h.data<uint16_t>()[0] = 0x3c00;
  Tensor ids = Tensor::Zeros({3}, DType::kI64);
  Tensor empty = Tensor::Zeros({0, 4}, DType::kF32);
  auto write = [&](const std::string& name, const std::vector<std::pair<std::string, Tensor>>& ts,
                   const std::map<std::string, std::string>& meta) {
    const absl::Status st = cpserve::WriteSafetensors(tmp, ts, meta);
    if (!st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      std::exit(1);
    }
    Write(t, name, ReadAll(tmp));
  };
  write("valid_mixed", {{"w", w}, {"b", b}, {"h", h}, {"ids", ids}}, {{"format", "pt"}});
  write("valid_one_f32", {{"model.embed_tokens.weight", w}}, {});
  write("valid_empty_tensor", {{"e", empty}, {"w", w}}, {});
  write("valid_no_tensors", {}, {{"k", "v"}});
  fs::remove(tmp);

  const std::string p8(8, '\x01');
  Write(t, "bad_truncated_length", std::string("\x10\x00\x00", 3));
  Write(t, "bad_header_past_end", RawSafetensors("{}", "").substr(0, 8) + "{");
  Write(t, "bad_json", RawSafetensors("{\"w\": {\"dtype\": \"F32\", ", ""));
  Write(t, "bad_not_object", RawSafetensors("[1, 2, 3]", ""));
  Write(t, "bad_unknown_dtype",
        RawSafetensors(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", p8));
  Write(t, "bad_size_mismatch",
        RawSafetensors(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", p8));
  Write(t, "bad_out_of_range",
        RawSafetensors(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", p8));
  Write(t, "bad_overlap",
        RawSafetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                       p8));
  Write(t, "bad_negative_shape",
        RawSafetensors(R"({"w":{"dtype":"BF16","shape":[-4],"data_offsets":[0,8]}})", p8));
  Write(t, "bad_huge_shape",
        RawSafetensors(
            R"({"w":{"dtype":"F16","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", p8));
  Write(t, "bad_duplicate",
        RawSafetensors(R"({"w":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                       R"("w":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})",
                       p8));
  Write(t, "bad_metadata",
        RawSafetensors(R"({"__metadata__":{"a":1},"w":{"dtype":"U8","shape":[8],)"
                       R"("data_offsets":[0,8]}})",
                       p8));
}

void ModelConfigs() {
  const std::string t = "fuzz_model_config";
  cpserve::ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 512;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.bos_token_id = 256;
  c.eos_token_ids = {257};
  c.torch_dtype = "bfloat16";
  Write(t, "valid_llama", c.ToJson());
  c.rope_scaling.type = cpserve::RopeScalingType::kLlama3;
  c.rope_scaling.factor = 8;
  c.eos_token_ids = {257, 258};
  c.rope_theta = 500000;
  c.max_position_embeddings = 131072;
  c.tie_word_embeddings = true;
  Write(t, "valid_llama3_rope", c.ToJson());
  c.architecture = "Qwen2ForCausalLM";
  c.model_type = "qwen2";
  c.qkv_bias = true;
  c.rope_scaling = {};
  c.sliding_window = 4096;
  Write(t, "valid_qwen2_sliding", c.ToJson());
  c = {};
  c.architecture = "MistralForCausalLM";
  c.model_type = "mistral";
  c.vocab_size = 32000;
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_hidden_layers = 32;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 8;
  c.head_dim = 128;
  c.rope_scaling.type = cpserve::RopeScalingType::kLinear;
  c.rope_scaling.factor = 2;
  Write(t, "valid_mistral_linear", c.ToJson());
  Write(t, "valid_minimal_hf",
        R"({"architectures":["LlamaForCausalLM"],"vocab_size":100,"hidden_size":32,)"
        R"("intermediate_size":64,"num_hidden_layers":1,"num_attention_heads":2})");
  Write(t, "bad_json", R"({"architectures": ["LlamaForCausalLM"], "vocab_size": )");
  Write(t, "bad_arch", R"({"architectures":["GPT2LMHeadModel"],"model_type":"gpt2"})");
  Write(t, "bad_types",
        R"({"architectures":["LlamaForCausalLM"],"vocab_size":"100","hidden_size":32.5,)"
        R"("intermediate_size":-1,"num_hidden_layers":1e300,"num_attention_heads":[2]})");
  Write(t, "bad_gqa",
        R"({"architectures":["LlamaForCausalLM"],"vocab_size":100,"hidden_size":48,)"
        R"("intermediate_size":64,"num_hidden_layers":1,"num_attention_heads":3,)"
        R"("num_key_value_heads":2,"rope_scaling":{"rope_type":"llama3","factor":0}})");
  Write(t, "bad_not_object", "[]");
}

void Tokenizers() {
  const std::string t = "fuzz_tokenizer_json";
  absl::StatusOr<std::string> json =
      cpserve::tokenizer::BuildSyntheticTokenizerJson(cpserve::tokenizer::kSyntheticMinVocabSize);
  if (!json.ok()) std::exit(1);
  auto with_text = [&](uint8_t flags, const std::string& text) {
    return *json + std::string(1, '\0') + std::string(1, static_cast<char>(flags)) + text;
  };
  Write(t, "valid_plain", with_text(3, "The quick brown fox jumps over the lazy dog."));
  Write(t, "valid_special",
        with_text(7, "<|begin_of_text|>hi<|end_of_text|> <|pad|>\n\t 1234567 caf\xc3\xa9"));
  Write(t, "valid_bad_utf8", with_text(0, "a\xff\xfe\xc3 b\xe2\x82 \xf0\x9f\x98\x80!"));
  Write(t, "valid_no_text", *json);
  Write(t, "bad_truncated", json->substr(0, json->size() / 2) + std::string(1, '\0') + "\x03hi");
  Write(t, "bad_wordpiece",
        std::string(R"({"model":{"type":"WordPiece","vocab":{"a":0}}})") + '\0' + "\x01" + "a");
  Write(t, "bad_merge_unknown",
        std::string(R"({"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":["a c"]},)"
                    R"("pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false}})") +
            '\0' + "\x01" + "ab");
}

std::string Limits(uint16_t ctx_minus_1, uint8_t stops, uint8_t stop_bytes_minus_1) {
  std::string s(4, '\0');
  s[0] = static_cast<char>(ctx_minus_1 & 0xff);
  s[1] = static_cast<char>(ctx_minus_1 >> 8);
  s[2] = static_cast<char>(stops);
  s[3] = static_cast<char>(stop_bytes_minus_1);
  return s;
}

void Requests() {
  const std::string t = "fuzz_request_validation";
  const std::string lim = Limits(2047, 16, 255);
  cpserve::v1::GenerateRequest r;
  r.mutable_prompt()->set_text("Once upon a time, the end. Stop here: END and beyond");
  r.mutable_sampling()->set_max_tokens(32);
  r.mutable_sampling()->set_temperature(0.7f);
  r.mutable_sampling()->set_top_k(40);
  r.mutable_sampling()->set_top_p(0.9f);
  r.mutable_sampling()->add_stop("END");
  r.mutable_sampling()->add_stop("the e");
  r.mutable_sampling()->add_stop_token_ids(257);
  Write(t, "valid_text_stops", lim + r.SerializeAsString());
  r.Clear();
  for (int id : {256, 72, 101, 108, 108, 111, 300, 301}) {
    r.mutable_prompt()->mutable_token_ids()->add_ids(id);
  }
  r.set_request_id("req-1");
  r.set_stream_text(false);
  Write(t, "valid_token_ids_default_max", lim + r.SerializeAsString());
  Write(t, "valid_small_context", Limits(8, 1, 3) + r.SerializeAsString());
  Write(t, "bad_prompt_fills_context", Limits(7, 1, 3) + r.SerializeAsString());
  r.mutable_prompt()->mutable_token_ids()->add_ids(512);
  Write(t, "bad_id_out_of_range", lim + r.SerializeAsString());
  r.Clear();
  r.mutable_prompt()->set_text("hello");
  r.mutable_sampling()->set_top_p(1.5f);
  Write(t, "bad_top_p", lim + r.SerializeAsString());
  r.mutable_sampling()->set_top_p(0);
  r.mutable_sampling()->set_temperature(std::numeric_limits<float>::quiet_NaN());
  Write(t, "bad_temperature_nan", lim + r.SerializeAsString());
  r.mutable_sampling()->set_temperature(0);
  r.mutable_sampling()->set_max_tokens(-3);
  Write(t, "bad_negative_max_tokens", lim + r.SerializeAsString());
  r.mutable_sampling()->set_max_tokens(0);
  r.mutable_sampling()->add_stop("");
  Write(t, "bad_empty_stop", lim + r.SerializeAsString());
  r.Clear();
  Write(t, "bad_empty_prompt", lim + r.SerializeAsString());
  Write(t, "bad_not_a_proto", lim + "\xff\xff\xff\xff\x0f");
}

// Header bytes of fuzz_kv_descriptor (see its comment).
std::string KvHeader(int world, int interleave_choice, int rank, int prompt_len, int first_id,
                     int step, int extra, int stride_mult, int flags) {
  std::string h;
  for (int v : {world - 1, interleave_choice, rank + 1, prompt_len & 0xff, prompt_len >> 8,
                first_id, step - 1, extra, stride_mult - 1, flags}) {
    h.push_back(static_cast<char>(v));
  }
  return h;
}

cpserve::v1::KvTransferTarget Target(int D, int I, int B, int layers, int heads, int head_dim,
                                     const std::string& dtype, int prompt_len, int elem) {
  cpserve::v1::KvTransferTarget t;
  t.set_transfer_id("xfer-1");
  t.set_decode_epoch(7);
  auto* l = t.mutable_layout();
  l->set_world_size(D);
  l->set_interleave(I);
  l->set_block_size(B);
  l->set_num_layers(layers);
  l->set_num_kv_heads(heads);
  l->set_head_dim(head_dim);
  l->set_dtype(dtype);
  const cpserve::CpLayout cp{D, I, B};
  const uint64_t block_bytes = static_cast<uint64_t>(layers) * 2 * B * heads * head_dim * elem;
  for (int d = 0; d < D; ++d) {
    auto* dest = t.add_destinations();
    dest->set_rank(d);
    dest->set_worker_address("addr");
    dest->set_rkey("rkey");
    dest->set_memory("host");
    dest->set_block_stride_bytes(block_bytes);
    dest->set_agent_epoch(11);
    const int64_t n = cp.LocalBlocks(prompt_len, d);
    for (int64_t k = 0; k < n; ++k) dest->add_block_ids(static_cast<int32_t>(3 + 2 * k));
    dest->set_remote_base(1 << 20);
    dest->set_region_bytes((3 + 2 * n + 1) * block_bytes);
  }
  return t;
}

void KvDescriptors() {
  const std::string t = "fuzz_kv_descriptor";
  // P=2 (I=B=16) -> D=2 (I=16), 100 tokens.
  Write(t, "valid_p2_d2",
        KvHeader(2, 4, 0, 100, 0, 1, 0, 1, 0) +
            Target(2, 16, 16, 2, 2, 4, "float32", 100, 4).SerializeAsString());
  // P=2 (I=4) -> D=3 (I=2), bf16, rank 1, 77 tokens, strided source blocks.
  Write(t, "valid_p2_d3_interleaved",
        KvHeader(2, 2, 1, 77, 5, 3, 2, 2, 0) +
            Target(3, 2, 8, 3, 1, 8, "bfloat16", 77, 2).SerializeAsString());
  // P=1 -> D=1, fp16, exact region, empty prompt.
  Write(t, "valid_p1_d1_empty",
        KvHeader(1, 0, 0, 0, 0, 1, 1, 1, 32) +
            Target(1, 4, 4, 1, 1, 2, "float16", 0, 2).SerializeAsString());
  Write(
      t, "valid_cuda", KvHeader(4, 1, 3, 33, 1, 2, 0, 1, 1) + [] {
        auto tt = Target(2, 4, 4, 1, 2, 2, "float32", 33, 4);
        for (auto& d : *tt.mutable_destinations()) d.set_memory("cuda");
        return tt.SerializeAsString();
      }());
  auto bad = [&](const std::string& name, int flags, auto mutate) {
    auto tt = Target(2, 16, 16, 2, 2, 4, "float32", 100, 4);
    mutate(tt);
    Write(t, name, KvHeader(2, 4, 0, 100, 0, 1, 0, 1, flags) + tt.SerializeAsString());
  };
  bad("bad_rank_order", 0, [](auto& tt) { tt.mutable_destinations(1)->set_rank(0); });
  bad("bad_no_rkey", 0, [](auto& tt) { tt.mutable_destinations(0)->clear_rkey(); });
  bad("bad_cuda_unsupported", 0, [](auto& tt) { tt.mutable_destinations(0)->set_memory("cuda"); });
  bad("bad_region_overflow", 0,
      [](auto& tt) { tt.mutable_destinations(1)->set_remote_base(~uint64_t{0} - 10); });
  bad("bad_block_outside_region", 0,
      [](auto& tt) { tt.mutable_destinations(0)->set_region_bytes(1024); });
  bad("bad_too_few_blocks", 0, [](auto& tt) { tt.mutable_destinations(1)->clear_block_ids(); });
  bad("bad_repeated_block", 0, [](auto& tt) {
    auto* d = tt.mutable_destinations(0);
    d->set_block_ids(1, d->block_ids(0));
  });
  bad("bad_stride_disagrees", 0,
      [](auto& tt) { tt.mutable_destinations(1)->set_block_stride_bytes(99999); });
  bad("bad_geometry_mismatch", 8, [](auto&) {});
  bad("bad_dtype_mismatch", 16, [](auto&) {});
  bad("bad_src_repeat", 2, [](auto&) {});
  bad("bad_interleave", 0, [](auto& tt) { tt.mutable_layout()->set_interleave(5); });
  bad("bad_no_transfer_id", 0, [](auto& tt) { tt.clear_transfer_id(); });
  Write(t, "bad_not_a_proto", KvHeader(2, 4, 0, 100, 0, 1, 0, 1, 0) + "\xff\xff\xff");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus_dir>\n", argv[0]);
    return 2;
  }
  g_out = argv[1];
  Safetensors();
  ModelConfigs();
  Tokenizers();
  Requests();
  KvDescriptors();
  std::printf("wrote seed corpora under %s\n", g_out.c_str());
  return 0;
}
