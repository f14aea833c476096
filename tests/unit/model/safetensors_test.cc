#include "worker/model/safetensors.h"

#include <cstring>
#include <filesystem>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/model/temp_dir.h"
#include "worker/model/model_config.h"

namespace cpserve {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// A file made of a given header text and data section (header length written as-is unless
// `header_len` overrides it).
std::string RawFile(const std::string& header, const std::string& data,
                    std::optional<uint64_t> header_len = std::nullopt) {
  const uint64_t n = header_len.value_or(header.size());
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

Tensor Filled(const Shape& shape, DType dtype, float base) {
  Tensor t = Tensor::Zeros(shape, dtype);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = base + 0.25f * static_cast<float>(i) - 3.0f;
    switch (dtype) {
      case DType::kF32:
        t.data<float>()[i] = v;
        break;
      case DType::kBF16:
        t.data<uint16_t>()[i] = FloatToBF16(v);
        break;
      case DType::kF16:
        t.data<uint16_t>()[i] = FloatToF16(v);
        break;
      case DType::kI64:
        t.data<int64_t>()[i] = i;
        break;
      default:
        break;
    }
  }
  return t;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string p = dir_.file(name);
    EXPECT_TRUE(WriteStringToFile(p, bytes).ok());
    return p;
  }
  absl::Status OpenStatus(const std::string& name, const std::string& bytes) {
    return SafetensorsFile::Open(Write(name, bytes)).status();
  }
  // A small valid file's bytes: three tensors of the three supported dtypes.
  std::string ValidBytes() {
    const std::string p = dir_.file("valid_src.safetensors");
    EXPECT_TRUE(WriteSafetensors(p,
                                 {{"a.f32", Filled({3, 5}, DType::kF32, 1)},
                                  {"b.bf16", Filled({7}, DType::kBF16, 2)},
                                  {"c.f16", Filled({2, 2, 3}, DType::kF16, 3)}},
                                 {{"format", "pt"}})
                    .ok());
    return *ReadFileToString(p);
  }
  testing::TempDir dir_;
};

TEST_F(SafetensorsTest, RoundTripAllSupportedDtypesWithMetadata) {
  const std::string p = dir_.file("m.safetensors");
  const Tensor a = Filled({3, 5}, DType::kF32, 1), b = Filled({7}, DType::kBF16, 2),
               c = Filled({2, 2, 3}, DType::kF16, 3), s = Filled({}, DType::kF32, 9),
               z = Filled({0, 4}, DType::kF32, 0);
  ASSERT_TRUE(WriteSafetensors(p, {{"a", a}, {"b", b}, {"c", c}, {"scalar", s}, {"empty", z}},
                               {{"format", "pt"}, {"k", "v"}})
                  .ok());
  const std::string bytes = *ReadFileToString(p);
  uint64_t hlen = 0;
  std::memcpy(&hlen, bytes.data(), 8);
  EXPECT_EQ(hlen % 8, 0u);  // padded like the reference writer

  auto f = SafetensorsFile::Open(p);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  EXPECT_EQ((*f)->metadata().at("k"), "v");
  ASSERT_EQ((*f)->tensors().size(), 5u);
  const SafetensorsTensorInfo* info = (*f)->Find("c");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->dtype, "F16");
  EXPECT_EQ(info->shape, (Shape{2, 2, 3}));
  EXPECT_EQ((*f)->Find("nope"), nullptr);

  for (const auto& [name, src] :
       std::vector<std::pair<std::string, Tensor>>{{"a", a}, {"b", b}, {"c", c}, {"scalar", s}}) {
    // Same dtype: bit-exact.
    auto same = (*f)->Read(name, src.dtype());
    ASSERT_TRUE(same.ok()) << same.status();
    EXPECT_EQ(same->shape(), src.shape());
    EXPECT_EQ(std::memcmp(same->raw(), src.raw(), src.nbytes()), 0) << name;
    // To F32: the exactly representable values come back exactly.
    auto f32 = (*f)->Read(name, DType::kF32);
    ASSERT_TRUE(f32.ok());
    for (int64_t i = 0; i < src.numel(); ++i) {
      const float base = name == "a" ? 1.0f : name == "b" ? 2.0f : name == "c" ? 3.0f : 9.0f;
      const float expect = base + 0.25f * static_cast<float>(i) - 3.0f;
      EXPECT_EQ(f32->data<float>()[i], expect) << name << "[" << i << "]";
    }
    // And to BF16 (all values are bf16-exact).
    auto bf = (*f)->Read(name, DType::kBF16);
    ASSERT_TRUE(bf.ok());
    for (int64_t i = 0; i < src.numel(); ++i) {
      EXPECT_EQ(BF16ToFloat(bf->data<uint16_t>()[i]), f32->data<float>()[i]);
    }
  }
  auto empty = (*f)->Read("empty", DType::kF32);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->numel(), 0);
  EXPECT_EQ((*f)->Read("nope", DType::kF32).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, KnownButUnsupportedDtypeOpensButDoesNotRead) {
  const std::string p = dir_.file("i64.safetensors");
  ASSERT_TRUE(WriteSafetensors(p, {{"ids", Filled({4}, DType::kI64, 0)}}).ok());
  auto f = SafetensorsFile::Open(p);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::Status s = (*f)->Read("ids", DType::kF32).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(p), HasSubstr("'ids'"), HasSubstr("I64")));
}

TEST_F(SafetensorsTest, WriterRejectsDuplicateNames) {
  absl::Status s =
      WriteSafetensors(dir_.file("d.safetensors"),
                       {{"x", Filled({1}, DType::kF32, 0)}, {"x", Filled({1}, DType::kF32, 0)}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

struct CorruptCase {
  const char* label;
  std::string bytes;
  const char* expect_substr;  // besides the file path
  const char* tensor;         // must be named, or nullptr
};

TEST_F(SafetensorsTest, CorruptFilesGiveClearErrors) {
  const std::string f32x2(8, '\0');  // two F32 zeros
  const std::vector<CorruptCase> cases = {
      {"empty", "", "truncated", nullptr},
      {"short", "abc", "truncated", nullptr},
      {"header too long", RawFile("{}", "", 1000), "beyond the file", nullptr},
      {"header huge", RawFile("{}", "", uint64_t{1} << 40), "exceeds", nullptr},
      {"bad json", RawFile("{\"w\": {\"dtype\": \"F32\",", ""), "malformed JSON", nullptr},
      {"not object", RawFile("[1, 2]", ""), "not a JSON object", nullptr},
      {"out of range",
       RawFile(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", f32x2),
       "out of range", "w"},
      {"size mismatch",
       RawFile(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", f32x2),
       "does not match shape", "w"},
      {"unknown dtype",
       RawFile(R"({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}})", f32x2),
       "unknown dtype 'Q4'", "w"},
      {"overlap",
       RawFile(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "v": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
               f32x2),
       "overlap", "v"},
      {"gap", RawFile(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", f32x2),
       "gap", "w"},
      {"trailing bytes",
       RawFile(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", f32x2),
       "cover only", nullptr},
      {"reversed",
       RawFile(R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}})", f32x2),
       "reversed", "w"},
      {"negative shape",
       RawFile(R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", f32x2),
       "bad shape", "w"},
      {"overflowing shape",
       RawFile(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296],
                         "data_offsets": [0, 8]}})",
               f32x2),
       "too large", "w"},
      {"missing offsets", RawFile(R"({"w": {"dtype": "F32", "shape": [2]}})", f32x2),
       "data_offsets", "w"},
      {"duplicate",
       RawFile(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                   "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
               f32x2),
       "duplicate", "w"},
      {"bad metadata",
       RawFile(R"({"__metadata__": {"a": 1},
                   "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
               f32x2),
       "__metadata__", nullptr},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const CorruptCase& c = cases[i];
    const std::string name = "corrupt" + std::to_string(i) + ".safetensors";
    absl::Status s = OpenStatus(name, c.bytes);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.label << ": " << s;
    EXPECT_THAT(s.message(), AllOf(HasSubstr(name), HasSubstr(c.expect_substr)))
        << c.label << ": " << s;
    if (c.tensor != nullptr) {
      EXPECT_THAT(s.message(), HasSubstr(std::string("'") + c.tensor + "'")) << c.label;
    }
  }
}

TEST_F(SafetensorsTest, EveryTruncationOfAValidFileIsAnError) {
  const std::string valid = ValidBytes();
  ASSERT_TRUE(SafetensorsFile::Open(Write("ok.safetensors", valid)).ok());
  for (size_t len = 0; len < valid.size(); ++len) {
    absl::Status s = OpenStatus("t.safetensors", valid.substr(0, len));
    EXPECT_FALSE(s.ok()) << "length " << len;
    EXPECT_THAT(s.message(), HasSubstr("t.safetensors")) << "length " << len;
  }
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  absl::Status s = SafetensorsFile::Open(dir_.file("absent.safetensors")).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("absent.safetensors"));
}

// Random byte flips, splices and truncations of a valid file: never a crash; when Open
// succeeds every tensor either reads or fails cleanly.
TEST_F(SafetensorsTest, FuzzedFilesNeverCrash) {
  const std::string valid = ValidBytes();
  std::mt19937_64 rng(12345);
  int opened = 0, rejected = 0;
  for (int iter = 0; iter < 600; ++iter) {
    std::string b = valid;
    const int kind = static_cast<int>(rng() % 4);
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      // Bias flips toward the header, where the parser lives.
      const size_t limit = (rng() % 2 == 0) ? std::min<size_t>(b.size(), 200) : b.size();
      const size_t pos = rng() % limit;
      if (kind == 0) {
        b[pos] = static_cast<char>(b[pos] ^ (1u << (rng() % 8)));
      } else if (kind == 1) {
        b[pos] = "{}[]\",:0123456789-e. \\"[rng() % 22];
      } else if (kind == 2) {
        b[pos] = static_cast<char>(rng() & 0xff);
      }
    }
    if (kind == 3 || rng() % 4 == 0) b.resize(rng() % (b.size() + 1));
    const std::string p = Write("fuzz.safetensors", b);
    auto f = SafetensorsFile::Open(p);
    if (!f.ok()) {
      ++rejected;
      EXPECT_THAT(f.status().message(), HasSubstr("fuzz.safetensors"));
      continue;
    }
    ++opened;
    for (const auto& info : (*f)->tensors()) {
      auto t = (*f)->Read(info.name, DType::kF32);
      if (t.ok()) {
        EXPECT_EQ(t->numel(), info.numel());
      }
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(opened, 0);  // flips in the data section keep the file valid
}

// --- directories: index, shards, several files.

class CheckpointTest : public SafetensorsTest {};

TEST_F(CheckpointTest, IndexedShardsResolveEveryTensor) {
  ASSERT_TRUE(WriteSafetensors(dir_.file("s1.safetensors"), {{"a", Filled({2}, DType::kF32, 1)},
                                                             {"b", Filled({3}, DType::kBF16, 2)}})
                  .ok());
  ASSERT_TRUE(
      WriteSafetensors(dir_.file("s2.safetensors"), {{"c", Filled({4}, DType::kF16, 3)}}).ok());
  ASSERT_TRUE(WriteSafetensorsIndex(
                  dir_.file("model.safetensors.index.json"),
                  {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"c", "s2.safetensors"}}, 22)
                  .ok());
  auto ck = SafetensorsCheckpoint::Open(dir_.path());
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ((*ck)->files().size(), 2u);
  EXPECT_EQ((*ck)->TensorNames(), (std::vector<std::string>{"a", "b", "c"}));
  auto c = (*ck)->Read("c", DType::kF32);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->data<float>()[3], 3.0f + 0.75f - 3.0f);
  absl::Status s = (*ck)->Read("zz", DType::kF32).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("'zz'"));
}

TEST_F(CheckpointTest, IndexNamingMissingShard) {
  ASSERT_TRUE(WriteSafetensorsIndex(dir_.file("model.safetensors.index.json"),
                                    {{"w", "model-00002-of-00002.safetensors"}}, 8)
                  .ok());
  absl::Status s = SafetensorsCheckpoint::Open(dir_.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("model.safetensors.index.json"),
                                 HasSubstr("model-00002-of-00002.safetensors"), HasSubstr("'w'")));
}

TEST_F(CheckpointTest, IndexNamingTensorAbsentFromShard) {
  ASSERT_TRUE(
      WriteSafetensors(dir_.file("s1.safetensors"), {{"a", Filled({2}, DType::kF32, 1)}}).ok());
  ASSERT_TRUE(WriteSafetensorsIndex(dir_.file("model.safetensors.index.json"),
                                    {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}}, 8)
                  .ok());
  absl::Status s = SafetensorsCheckpoint::Open(dir_.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("s1.safetensors"), HasSubstr("'b'")));
}

TEST_F(CheckpointTest, MalformedIndex) {
  ASSERT_TRUE(
      WriteStringToFile(dir_.file("model.safetensors.index.json"), "{\"weight_map\": 3}").ok());
  absl::Status s = SafetensorsCheckpoint::Open(dir_.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("weight_map"));
}

TEST_F(CheckpointTest, UnindexedFilesAreMergedAndDuplicatesRejected) {
  ASSERT_TRUE(
      WriteSafetensors(dir_.file("x1.safetensors"), {{"a", Filled({2}, DType::kF32, 1)}}).ok());
  ASSERT_TRUE(
      WriteSafetensors(dir_.file("x2.safetensors"), {{"b", Filled({2}, DType::kF32, 1)}}).ok());
  auto ck = SafetensorsCheckpoint::Open(dir_.path());
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_TRUE((*ck)->Contains("a"));
  EXPECT_TRUE((*ck)->Contains("b"));
  ASSERT_TRUE(
      WriteSafetensors(dir_.file("x3.safetensors"), {{"a", Filled({2}, DType::kF32, 1)}}).ok());
  absl::Status s = SafetensorsCheckpoint::Open(dir_.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("'a'"), HasSubstr("x3.safetensors")));
}

TEST_F(CheckpointTest, EmptyOrMissingDirectory) {
  EXPECT_EQ(SafetensorsCheckpoint::Open(dir_.path()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(SafetensorsCheckpoint::Open(dir_.file("nope")).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace cpserve
