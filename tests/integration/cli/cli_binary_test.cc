// Runs the real `cpserve` binary as a child process.
#include <filesystem>

#include "gtest/gtest.h"
#include "tests/common/subprocess.h"
#include "worker/model/weights.h"
#include "worker/tokenizer/tokenizer.h"

namespace cpserve {
namespace {

using testing::BinaryPath;
using testing::RunCommand;

TEST(CliBinaryTest, HelpListsSubcommands) {
  const auto r = RunCommand({BinaryPath("cpserve"), "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("usage: cpserve <subcommand>"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("make-model"), std::string::npos);
}

TEST(CliBinaryTest, SubcommandHelpShowsFlagsWithDefaults) {
  const auto r = RunCommand({BinaryPath("cpserve"), "prefill", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--world_size (default: 1)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--leader"), std::string::npos);
}

TEST(CliBinaryTest, BadFlagExitsWithUsageError) {
  const auto r = RunCommand({BinaryPath("cpserve"), "generate", "--world_size=2"});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown flag --world_size"), std::string::npos) << r.output;
}

TEST(CliBinaryTest, NoArgumentsIsAnError) {
  const auto r = RunCommand({BinaryPath("cpserve")});
  EXPECT_EQ(r.exit_code, 2);
}

TEST(CliBinaryTest, MakeModelWritesALoadableModelAndTokenizer) {
  const std::string dir = ::testing::TempDir() + "/cpserve-make-model-test";
  std::filesystem::remove_all(dir);
  const auto r = RunCommand({BinaryPath("cpserve"), "make-model", "--out=" + dir, "--seed=3"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("vocab 512"), std::string::npos) << r.output;
  absl::StatusOr<ModelWeights> w = LoadModel(dir);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->config.num_hidden_layers, 4);
  ASSERT_TRUE(w->config.bos_token_id.has_value());
  absl::StatusOr<tokenizer::Tokenizer> tok =
      tokenizer::Tokenizer::FromFile(dir + "/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->vocab_size(), w->config.vocab_size);
  EXPECT_EQ(tok->bos_id(), static_cast<int32_t>(*w->config.bos_token_id));
  const std::vector<int32_t> ids = tok->Encode("The quick brown fox.", /*add_special=*/false);
  EXPECT_EQ(*tok->Decode(ids), "The quick brown fox.");
  // Same seed, same bytes; another seed, other weights.
  const std::string again = dir + "-again";
  ASSERT_EQ(
      RunCommand({BinaryPath("cpserve"), "make-model", "--out=" + again, "--seed=3"}).exit_code, 0);
  EXPECT_EQ(RunCommand({"/usr/bin/cmp", dir + "/model.safetensors", again + "/model.safetensors"})
                .exit_code,
            0);
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(again);
}

TEST(CliBinaryTest, MakeModelWithoutOutIsAUsageError) {
  const auto r = RunCommand({BinaryPath("cpserve"), "make-model"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--out is required"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace cpserve
