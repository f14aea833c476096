// Context parallelism end to end with real processes: a pool of N `cp_rank`
// processes (Gloo over loopback, rendezvous served by this test) generates for a
// batch of mixed requests, and its tokens and logits must equal the single-rank
// engine's: PCP (partitioned prefill, then decode) for P in {1,2,3,4} and DCP
// (replicated) for D in {1,2,4}, interleave I in {1, B}, chunked prefill with
// sharded context included. Also: a rank killed mid-generation makes the leader
// fail with a clear status within the collective timeout and report unhealthy.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/common/subprocess.h"
#include "worker/builtin/builtin_model.h"
#include "worker/comm/rendezvous_service.h"
#include "worker/engine/engine.h"
#include "worker/model/weights.h"

namespace cpserve {
namespace {

constexpr int kBlock = 16;
constexpr int kNewTokens = 64;

struct Result {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
};

class CpEquivalenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(::testing::TempDir() + "/cp-equivalence-model");
    std::filesystem::remove_all(*dir_);
    ASSERT_TRUE(WriteBuiltinModel(*dir_, 7).ok());
    weights_ = new ModelWeights(*LoadModel(*dir_));
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete weights_;
    delete dir_;
  }

  // Prompts of lengths 1, 2P−1, 2P, B·P+1 and random ones up to 2000.
  static std::vector<std::vector<int32_t>> Prompts(int p, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<int> lengths = {1,
                                2 * p - 1,
                                2 * p,
                                kBlock * p + 1,
                                static_cast<int>(rng() % 300) + 2,
                                static_cast<int>(rng() % 2000) + 1};
    std::vector<std::vector<int32_t>> prompts;
    for (int n : lengths) {
      std::vector<int32_t> t(std::max(n, 1));
      for (int32_t& x : t) x = static_cast<int32_t>(rng() % weights_->config.vocab_size);
      prompts.push_back(t);
    }
    return prompts;
  }

  // The single-rank engine's results (in process), the reference.
  static std::vector<Result> Reference(const std::vector<std::vector<int32_t>>& prompts) {
    std::unique_ptr<Backend> backend = MakeCpuBackend();
    EngineOptions o;
    o.block_size = kBlock;
    auto engine = *Engine::Create(*weights_, *backend, o);
    std::vector<Result> results(prompts.size());
    std::vector<absl::Notification> done(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      GenerationParams p;
      p.max_tokens = kNewTokens;
      p.ignore_eos = true;
      p.return_logits = true;
      EXPECT_TRUE(engine
                      ->Submit(absl::StrCat("ref", i), prompts[i], p,
                               [&, i](const TokenEvent& e) {
                                 if (e.token >= 0) {
                                   results[i].tokens.push_back(e.token);
                                   results[i].logits.push_back(e.logits);
                                 }
                                 if (e.finished) done[i].Notify();
                               })
                      .ok());
    }
    for (auto& d : done) d.WaitForNotification();
    return results;
  }

  struct PoolRun {
    std::vector<Result> results;
    std::string unhealthy;  // set when the leader reported a broken pool
    double seconds = 0;
    std::string logs;
  };

  // Runs a pool of `world` cp_rank processes on the prompts.
  static PoolRun RunPool(int world, const std::vector<std::vector<int32_t>>& prompts,
                         std::vector<std::string> extra) {
    const std::string base = absl::StrCat(::testing::TempDir(), "/cp-run-", ::getpid());
    const std::string requests = base + "-requests.txt", out = base + "-out.txt";
    {
      std::ofstream f(requests);
      for (const auto& p : prompts) {
        f << kNewTokens;
        for (int32_t t : p) f << " " << t;
        f << "\n";
      }
    }
    std::filesystem::remove(out);
    auto server = comm::RendezvousServer::Start("127.0.0.1:0");
    EXPECT_TRUE(server.ok()) << server.status();
    std::vector<testing::Subprocess> ranks(world);
    for (int r = 0; r < world; ++r) {
      std::vector<std::string> args = {testing::BinaryPath("../tests/cp_rank"),
                                       absl::StrCat("--rank=", r),
                                       absl::StrCat("--world=", world),
                                       "--rdzv=" + (*server)->address(),
                                       "--model=" + *dir_,
                                       "--requests=" + requests,
                                       "--out=" + out,
                                       absl::StrCat("--block=", kBlock)};
      args.insert(args.end(), extra.begin(), extra.end());
      EXPECT_TRUE(ranks[r].Start(args, {"OPENBLAS_NUM_THREADS=1"}));
    }
    PoolRun run;
    for (int r = 0; r < world; ++r) {
      const auto code = ranks[r].Wait(std::chrono::seconds(240));
      run.logs +=
          absl::StrCat("--- rank ", r, " exit ", code.value_or(-1), "\n", ranks[r].Output());
      if (r == 0) {
        EXPECT_EQ(code.value_or(-1), 0) << run.logs;
      }
    }
    std::ifstream f(out);
    for (std::string line; std::getline(f, line);) {
      std::istringstream ls(line);
      std::string kind;
      ls >> kind;
      if (kind == "tokens") {
        run.results.emplace_back();
        for (int32_t t; ls >> t;) run.results.back().tokens.push_back(t);
      } else if (kind == "logits") {
        std::vector<float> row;
        for (float v; ls >> v;) row.push_back(v);
        run.results.back().logits.push_back(row);
      } else if (kind == "unhealthy") {
        std::getline(ls, run.unhealthy);
      } else if (kind == "seconds") {
        ls >> run.seconds;
      }
    }
    std::filesystem::remove(requests);
    std::filesystem::remove(out);
    return run;
  }

  static void ExpectEqual(const std::vector<Result>& want, const PoolRun& got,
                          const std::string& what) {
    ASSERT_EQ(got.results.size(), want.size()) << what << "\n" << got.logs;
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got.results[i].tokens, want[i].tokens) << what << " request " << i;
      ASSERT_EQ(got.results[i].logits.size(), want[i].logits.size());
      double worst = 0;
      for (size_t k = 0; k < want[i].logits.size(); ++k) {
        double diff = 0, scale = 1e-30;
        for (size_t v = 0; v < want[i].logits[k].size(); ++v) {
          diff =
              std::max(diff, std::fabs(double{got.results[i].logits[k][v]} - want[i].logits[k][v]));
          scale = std::max(scale, std::fabs(double{want[i].logits[k][v]}));
        }
        worst = std::max(worst, diff / scale);
      }
      EXPECT_LT(worst, 1e-4) << what << " request " << i;
    }
  }

  static std::string* dir_;
  static ModelWeights* weights_;
};
std::string* CpEquivalenceTest::dir_ = nullptr;
ModelWeights* CpEquivalenceTest::weights_ = nullptr;

TEST_F(CpEquivalenceTest, PcpPrefillPoolsMatchOneRank) {
  for (int p : {1, 2, 3, 4}) {
    const auto prompts = Prompts(p, 100 + p);
    const auto want = Reference(prompts);
    for (int interleave : {1, kBlock}) {
      // A step budget of 256 tokens chunks the long prompts: PCP with sharded context.
      const PoolRun run =
          RunPool(p, prompts,
                  {"--partition", absl::StrCat("--interleave=", interleave), "--batch_tokens=256"});
      ExpectEqual(want, run, absl::StrCat("PCP P=", p, " I=", interleave));
    }
  }
}

TEST_F(CpEquivalenceTest, DcpDecodePoolsMatchOneRank) {
  for (int d : {1, 2, 4}) {
    const auto prompts = Prompts(d, 200 + d);
    const auto want = Reference(prompts);
    for (int interleave : {1, kBlock}) {
      const PoolRun run =
          RunPool(d, prompts, {absl::StrCat("--interleave=", interleave), "--batch_tokens=512"});
      ExpectEqual(want, run, absl::StrCat("DCP D=", d, " I=", interleave));
    }
  }
}

TEST_F(CpEquivalenceTest, KilledRankBreaksThePoolWithinTheTimeout) {
  std::vector<std::vector<int32_t>> prompts = {std::vector<int32_t>(40, 5)};
  // 64 tokens take well over a second; rank 1 dies after 300 ms; timeout 2 s.
  const PoolRun run = RunPool(
      2, prompts, {"--partition", "--die_after_ms=300", "--timeout_ms=2000", "--kv_blocks=64"});
  ASSERT_FALSE(run.unhealthy.empty()) << "the pool did not notice the dead rank\n" << run.logs;
  EXPECT_NE(run.unhealthy.find("UNAVAILABLE"), std::string::npos) << run.unhealthy;
  EXPECT_NE(run.unhealthy.find("pool broken"), std::string::npos) << run.unhealthy;
  EXPECT_LT(run.seconds, 10.0) << "failure surfaced too late";
  std::cout << "dead rank surfaced after " << run.seconds << " s as: " << run.unhealthy << "\n";
}

}  // namespace
}  // namespace cpserve
