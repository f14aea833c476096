// Context parallelism on GPUs with real processes: a pool of 2 `gpu_cp_rank`
// processes, one per GPU, in one NCCL group (host control traffic staged through
// the device, K/V/LSE collectives on device memory), generates for a batch of
// mixed-length prompts on the built-in model in bf16. Reference: the same binary as
// a single-rank pool on one GPU. PCP=2 (partitioned prefill, then decode) and DCP=2
// (replicated), interleave 1 and 16, step budgets that chunk the long prompts so
// later chunks attend sharded context.
//
// Contract (DESIGN §4, bf16): greedy tokens equal the single-GPU engine's, and the
// logits of every generated token stay within bf16 tolerance of the row's largest
// magnitude. bf16 CP adds roundings (each rank's partial attention output and its
// rescaled copy are bf16, and the all-reduce sums in bf16), which compound over 4
// layers and 32 decode steps whose KV came from earlier roundings: the whole-model
// bar is therefore the one gpu_engine_test holds the single-GPU engine to against
// fp32 (6e-2); first-token (prefill) errors are printed separately. Measured on 2
// H200s (2026-11-22): worst 3.0–3.7e-2 over all tokens, 2.0–2.5e-2 on first tokens;
// flips only at top-2 gaps of 0.9e-3–1.1e-2 (4–6 of 7 requests within 32 tokens;
// gpu_engine_test's bf16-vs-fp32 streams flip as often). A greedy token may flip
// only where the reference's top two logits are within 2e-2 of each other (a
// near-tie); such a flip is reported and the streams are compared up to it.
// Every child gets NCCL_NVLS_ENABLE=0. Skips cleanly with fewer than 2 GPUs.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/common/logits_compare.h"
#include "tests/common/subprocess.h"
#include "worker/builtin/builtin_model.h"
#include "worker/comm/rendezvous_service.h"

namespace cpserve {
namespace {

using testing::RowError;
using testing::TopTwoGap;

constexpr int kBlock = 16;
constexpr int kNewTokens = 32;
constexpr int kVocab = 512;          // the built-in model's
constexpr double kTolerance = 6e-2;  // whole-model bf16 logits (see above)
constexpr double kNearTie = 2e-2;    // top-2 logit gap / max |logit| of a near-tie

struct Result {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
};

struct PoolRun {
  std::vector<Result> results;
  double seconds = 0;
  std::string logs;
};

class GpuCpEquivalenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() < 2) GTEST_SKIP() << "needs 2 CUDA devices, found " << CudaDeviceCount();
    dir_ = ::testing::TempDir() + "/gpu-cp-model";
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(WriteBuiltinModel(dir_, 7).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Lengths 1, 3 (< 2P), 4 (= 2P), 33 (> B·P), a random one, and two longer than the
  // step budget (chunked prefill over sharded context).
  static std::vector<std::vector<int32_t>> Prompts(uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<int> lengths = {1,    3,   4, kBlock * 2 + 1, static_cast<int>(rng() % 300) + 2,
                                1000, 1537};
    std::vector<std::vector<int32_t>> prompts;
    for (int n : lengths) {
      std::vector<int32_t> t(n);
      for (int32_t& x : t) x = static_cast<int32_t>(rng() % kVocab);
      prompts.push_back(t);
    }
    return prompts;
  }

  PoolRun RunPool(int world, const std::vector<std::vector<int32_t>>& prompts,
                  const std::vector<std::string>& extra) {
    const std::string base = absl::StrCat(::testing::TempDir(), "/gpu-cp-run-", ::getpid());
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
      std::vector<std::string> args = {testing::BinaryPath("gpu_cp_rank"),
                                       absl::StrCat("--rank=", r),
                                       absl::StrCat("--world=", world),
                                       "--rdzv=" + (*server)->address(),
                                       "--model=" + dir_,
                                       "--device=cuda",
                                       "--requests=" + requests,
                                       "--out=" + out,
                                       absl::StrCat("--block=", kBlock)};
      args.insert(args.end(), extra.begin(), extra.end());
      EXPECT_TRUE(ranks[r].Start(args, {"NCCL_NVLS_ENABLE=0"}));
    }
    PoolRun run;
    for (int r = 0; r < world; ++r) {
      const auto code = ranks[r].Wait(std::chrono::seconds(120));
      run.logs +=
          absl::StrCat("--- rank ", r, " exit ", code.value_or(-1), "\n", ranks[r].Output());
      EXPECT_EQ(code.value_or(-1), 0) << "rank " << r;
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
      } else if (kind == "seconds") {
        ls >> run.seconds;
      }
    }
    std::filesystem::remove(requests);
    std::filesystem::remove(out);
    return run;
  }

  void ExpectEquivalent(const PoolRun& want, const PoolRun& got, const std::string& what) {
    ASSERT_EQ(got.results.size(), want.results.size()) << what << "\n" << got.logs;
    double worst = 0, worst_first = 0;
    int near_ties = 0;
    for (size_t i = 0; i < want.results.size(); ++i) {
      const Result& w = want.results[i];
      const Result& g = got.results[i];
      ASSERT_EQ(g.tokens.size(), w.tokens.size()) << what << " request " << i;
      ASSERT_EQ(g.logits.size(), w.logits.size()) << what << " request " << i;
      size_t k = 0;
      while (k < w.tokens.size() && g.tokens[k] == w.tokens[k]) ++k;
      // Logits are comparable up to and including the first differing token.
      for (size_t j = 0; j < std::min(k + 1, w.tokens.size()); ++j) {
        const double e = RowError(g.logits[j], w.logits[j]);
        worst = std::max(worst, e);
        if (j == 0) worst_first = std::max(worst_first, e);
        EXPECT_LT(e, kTolerance) << what << " request " << i << " token " << j;
      }
      if (k < w.tokens.size()) {
        const double gap = TopTwoGap(w.logits[k]);
        std::cout << what << " request " << i << ": tokens differ at " << k << " (top-2 gap " << gap
                  << ")\n";
        EXPECT_LT(gap, kNearTie) << what << " request " << i << ": greedy token " << k
                                 << " differs although the reference's top two logits are " << gap
                                 << " apart (not a near-tie)";
        ++near_ties;
      }
    }
    std::cout << what << ": worst logits error " << worst << " (first tokens " << worst_first
              << "), near-tie divergences " << near_ties << "/" << want.results.size() << ", "
              << got.seconds << " s (single GPU " << want.seconds << " s)\n";
  }

  std::string dir_;
};

TEST_F(GpuCpEquivalenceTest, PcpTwoGpusMatchOneGpu) {
  const auto prompts = Prompts(101);
  // A step budget of 256 tokens chunks the long prompts: PCP with sharded context.
  const PoolRun want = RunPool(1, prompts, {"--partition", "--batch_tokens=256"});
  ASSERT_EQ(want.results.size(), prompts.size()) << want.logs;
  for (int interleave : {1, kBlock}) {
    const PoolRun got =
        RunPool(2, prompts,
                {"--partition", absl::StrCat("--interleave=", interleave), "--batch_tokens=256"});
    ExpectEquivalent(want, got, absl::StrCat("PCP=2 I=", interleave));
  }
}

TEST_F(GpuCpEquivalenceTest, DcpTwoGpusMatchOneGpu) {
  const auto prompts = Prompts(202);
  const PoolRun want = RunPool(1, prompts, {"--batch_tokens=512"});
  ASSERT_EQ(want.results.size(), prompts.size()) << want.logs;
  for (int interleave : {1, kBlock}) {
    const PoolRun got =
        RunPool(2, prompts, {absl::StrCat("--interleave=", interleave), "--batch_tokens=512"});
    ExpectEquivalent(want, got, absl::StrCat("DCP=2 I=", interleave));
  }
}

}  // namespace
}  // namespace cpserve
