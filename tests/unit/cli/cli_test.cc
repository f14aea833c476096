#include <sstream>

#include "absl/flags/flag.h"
#include "gtest/gtest.h"
#include "services/cli/flags.h"
#include "services/cli/subcommand.h"

namespace cpserve::cli {
namespace {

TEST(ParseFlagsTest, AcceptsAllowedFlagsInEveryForm) {
  absl::SetFlag(&FLAGS_json, false);
  ParseResult r =
      ParseFlags({"--port=7001", "--world_size", "4", "--json", "pos1", "--", "--not-a-flag"},
                 {"port", "world_size", "json"});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_FALSE(r.help);
  EXPECT_EQ(absl::GetFlag(FLAGS_port), 7001);
  EXPECT_EQ(absl::GetFlag(FLAGS_world_size), 4);
  EXPECT_TRUE(absl::GetFlag(FLAGS_json));
  EXPECT_EQ(r.positional, (std::vector<std::string>{"pos1", "--not-a-flag"}));

  r = ParseFlags({"--nojson", "-temperature=0.5"}, {"json", "temperature"});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_FALSE(absl::GetFlag(FLAGS_json));
  EXPECT_DOUBLE_EQ(absl::GetFlag(FLAGS_temperature), 0.5);
}

TEST(ParseFlagsTest, RejectsFlagsTheSubcommandDoesNotTake) {
  ParseResult r = ParseFlags({"--rank=1"}, {"port"});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "unknown flag --rank");
  r = ParseFlags({"--no_such_flag"}, {"port"});
  EXPECT_FALSE(r.ok);
  r = ParseFlags({"--noport"}, {"port"});  // --noX only for booleans
  EXPECT_FALSE(r.ok);
}

TEST(ParseFlagsTest, RejectsBadValuesAndMissingValues) {
  ParseResult r = ParseFlags({"--port=abc"}, {"port"});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("bad value 'abc' for --port"), std::string::npos) << r.error;
  r = ParseFlags({"--port"}, {"port"});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "flag --port needs a value");
  r = ParseFlags({"--port=99999999999"}, {"port"});
  EXPECT_FALSE(r.ok);
}

TEST(ParseFlagsTest, HelpIsRecognised) {
  EXPECT_TRUE(ParseFlags({"--help"}, {}).help);
  EXPECT_TRUE(ParseFlags({"-h"}, {}).help);
}

TEST(CliMainTest, EverySubcommandHasHelpListingItsFlags) {
  for (const Subcommand& sub : Subcommands()) {
    std::ostringstream out, err;
    EXPECT_EQ(Main({"cpserve", sub.name, "--help"}, out, err), 0);
    EXPECT_NE(out.str().find("usage: cpserve " + sub.name), std::string::npos);
    for (const std::string& flag : sub.flags) {
      EXPECT_NE(out.str().find("--" + flag + " (default:"), std::string::npos)
          << sub.name << " --" << flag << " is not a defined flag";
    }
  }
}

TEST(CliMainTest, UnknownSubcommandAndFlagFailWithUsage) {
  std::ostringstream out, err;
  EXPECT_EQ(Main({"cpserve", "frobnicate"}, out, err), 2);
  EXPECT_NE(err.str().find("unknown subcommand 'frobnicate'"), std::string::npos);
  std::ostringstream out2, err2;
  EXPECT_EQ(Main({"cpserve", "router", "--rank=2"}, out2, err2), 2);
  EXPECT_NE(err2.str().find("unknown flag --rank"), std::string::npos);
  std::ostringstream out3, err3;
  EXPECT_EQ(Main({"cpserve"}, out3, err3), 2);
  EXPECT_NE(err3.str().find("subcommands:"), std::string::npos);
}

TEST(CliMainTest, TopLevelHelpListsEverySubcommand) {
  std::ostringstream out, err;
  EXPECT_EQ(Main({"cpserve", "--help"}, out, err), 0);
  for (const char* name : {"router", "prefill", "decode", "up", "generate", "make-model"}) {
    EXPECT_NE(out.str().find(std::string("  ") + name + " "), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace cpserve::cli
