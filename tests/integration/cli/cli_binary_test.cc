// Runs the real `cpserve` binary as a child process.
#include "gtest/gtest.h"
#include "tests/common/subprocess.h"

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

}  // namespace
}  // namespace cpserve
