// `cpserve up` with every protection on (TLS public API, mTLS between router and pools,
// bearer tokens): a decode pool of two ranks (its rendezvous store on a separate port) and
// `cpserve generate --tls_ca --token` end to end; the tokens equal those of a plain
// `cpserve generate` against an insecure `cpserve up`.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tests/common/subprocess.h"

namespace cpserve {
namespace {

using testing::BinaryPath;
using testing::RunCommand;
using testing::Subprocess;
using namespace std::chrono_literals;

std::string StartCluster(Subprocess& up, const std::vector<std::string>& flags) {
  std::vector<std::string> argv = {BinaryPath("cpserve"), "up", "--prefill_ranks=0",
                                   "--decode_ranks=2", "--num_kv_blocks=256"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  if (!up.Start(argv)) return "";
  const std::regex re(R"(router listening on ([0-9.]+:[0-9]+))");
  const auto deadline = std::chrono::steady_clock::now() + 180s;
  while (std::chrono::steady_clock::now() < deadline && up.Running()) {
    std::smatch m;
    const std::string out = up.Output();
    if (std::regex_search(out, m, re)) return m[1];
    std::this_thread::sleep_for(50ms);
  }
  return "";
}

void Stop(Subprocess& up) {
  up.Kill(SIGTERM);
  if (!up.Wait(60s)) up.Kill(SIGKILL);
}

// The token ids of `cpserve generate --json` output.
std::string TokenIds(const std::string& output) {
  std::string ids;
  const std::regex re(R"re("token_ids":\[([0-9,]*)\])re");
  for (auto it = std::sregex_iterator(output.begin(), output.end(), re);
       it != std::sregex_iterator(); ++it) {
    ids += (*it)[1].str() + ",";
  }
  return ids;
}

TEST(SecurityUpTest, SecuredClusterGeneratesWhatTheInsecureOneDoes) {
  char templ[] = "/tmp/cpserve-security-up-XXXXXX";
  ASSERT_NE(mkdtemp(templ), nullptr);
  const std::string dir = templ;
  const char* src = getenv("CPSERVE_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  const testing::RunResult certs =
      RunCommand({"/bin/bash", absl::StrCat(src, "/scripts/make-certs.sh"), dir + "/certs"}, 60s);
  ASSERT_EQ(certs.exit_code, 0) << certs.output;
  std::ofstream(dir + "/tokens") << "demo-token\n";
  const std::string c = dir + "/certs/";
  const std::vector<std::string> generate = {BinaryPath("cpserve"), "generate",
                                             "--max_tokens=8",      "--json",
                                             "--timeout_ms=60000",  "--prompt=The fox jumps"};

  std::string secure_ids;
  {
    Subprocess up;
    const std::string address = StartCluster(
        up, {"--tls_cert=" + c + "server.pem", "--tls_key=" + c + "server.key",
             "--tls_ca=" + c + "ca.pem", "--mtls_cert=" + c + "server.pem",
             "--mtls_key=" + c + "server.key", "--mtls_ca=" + c + "ca.pem",
             "--auth_token_file=" + dir + "/tokens", "--cluster_log_dir=" + dir + "/logs-secure"});
    ASSERT_FALSE(address.empty()) << up.Output();
    std::vector<std::string> argv = generate;
    argv.push_back("--address=" + address);
    argv.push_back("--tls_ca=" + c + "ca.pem");
    argv.push_back("--token=demo-token");
    const testing::RunResult r = RunCommand(argv, 120s);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    secure_ids = TokenIds(r.output);
    argv.pop_back();  // no token
    EXPECT_NE(RunCommand(argv, 60s).output.find("UNAUTHENTICATED"), std::string::npos);
    // `cpserve bench` speaks TLS + token too: every request OK ...
    const std::vector<std::string> bench = {BinaryPath("cpserve"),
                                            "bench",
                                            "--address=" + address,
                                            "--tls_ca=" + c + "ca.pem",
                                            "--num_requests=6",
                                            "--concurrency=3",
                                            "--warmup_requests=0",
                                            "--prompt_tokens=8",
                                            "--output_tokens=4",
                                            "--ignore_eos",
                                            "--json"};
    std::vector<std::string> with_token = bench;
    with_token.push_back("--token=demo-token");
    const testing::RunResult b = RunCommand(with_token, 120s);
    EXPECT_EQ(b.exit_code, 0) << b.output;
    EXPECT_NE(b.output.find(R"("ok": 6)"), std::string::npos) << b.output;
    // ... and without the token every request ends UNAUTHENTICATED.
    const testing::RunResult nb = RunCommand(bench, 120s);
    EXPECT_NE(nb.output.find("UNAUTHENTICATED"), std::string::npos) << nb.output;
    Stop(up);
    const std::string logs = up.Output();
    EXPECT_NE(logs.find("cluster ready"), std::string::npos) << logs;
    std::ifstream rank0(dir + "/logs-secure/decode-0.rank0.log");
    const std::string rank0_log((std::istreambuf_iterator<char>(rank0)),
                                std::istreambuf_iterator<char>());
    EXPECT_NE(rank0_log.find("rendezvous store on"), std::string::npos) << rank0_log;
  }
  std::string plain_ids;
  {
    Subprocess up;
    const std::string address = StartCluster(up, {"--cluster_log_dir=" + dir + "/logs-plain"});
    ASSERT_FALSE(address.empty()) << up.Output();
    std::vector<std::string> argv = generate;
    argv.push_back("--address=" + address);
    const testing::RunResult r = RunCommand(argv, 120s);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    plain_ids = TokenIds(r.output);
    Stop(up);
  }
  EXPECT_FALSE(secure_ids.empty());
  EXPECT_EQ(secure_ids, plain_ids);
  (void)RunCommand({"/bin/rm", "-rf", dir}, 20s);
}

}  // namespace
}  // namespace cpserve
