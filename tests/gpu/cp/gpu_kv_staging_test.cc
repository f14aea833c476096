// KV transfer between engines whose KV caches live in GPU memory, through each path
// of worker/engine/rank_transfers.h: host staging ("ucx-pinned-staging": device → host
// mirror → UCX put → host mirror → device) and the direct copier ("cuda-ipc"; one
// process here, so the peer pointer itself, GPU 0 → GPU 1 over NVLink; across
// processes `cpserve up` on GPUs runs it through cudaIpcOpenMemHandle — see
// scripts/gpu/hf_check.py --up). A prefill engine on GPU 0 computes the
// prompt and pushes its KV to a decode engine on GPU 1 (GPU 0 when there is one),
// which continues. Same kernels and bits on both sides, so tokens must equal the
// single-GPU engine's exactly, and every block must be free afterwards. Skips
// without a GPU.
#include <filesystem>
#include <future>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_backend.h"
#include "worker/builtin/builtin_model.h"
#include "worker/engine/cuda_ipc_copier.h"
#include "worker/engine/engine.h"
#include "worker/pool/pool_backend.h"

namespace cpserve {
namespace {

constexpr int kBlocks = 256;

GenerationParams Greedy(int n) {
  GenerationParams p;
  p.max_tokens = n;
  p.ignore_eos = true;
  return p;
}

void WaitForFreeBlocks(Engine& e) {
  for (int i = 0; i < 2000 && e.Stats().free_kv_blocks != kBlocks; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(e.Stats().free_kv_blocks, kBlocks);
}

class GpuKvTransferTest : public ::testing::TestWithParam<bool> {};  // direct?

TEST_P(GpuKvTransferTest, PrefillOnOneGpuDecodeOnAnotherMatchesOneGpu) {
  const bool direct = GetParam();
  const int gpus = CudaDeviceCount();
  if (gpus == 0) GTEST_SKIP() << "no CUDA device";
  ::setenv("UCX_TLS", "tcp,self", 1);
  ::setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 1);
  const std::string dir = ::testing::TempDir() + "/gpu-staging-model";
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WriteBuiltinModel(dir, 5).ok());
  auto b0 = CreateRankBackend(Device::CUDA(0));
  auto b1 = CreateRankBackend(Device::CUDA(gpus > 1 ? 1 : 0));
  ASSERT_TRUE(b0.ok() && b1.ok()) << b0.status() << b1.status();
  auto w0 = LoadWeightsForBackend(dir, **b0);
  auto w1 = LoadWeightsForBackend(dir, **b1);
  ASSERT_TRUE(w0.ok() && w1.ok()) << w0.status() << w1.status();

  EngineOptions o;
  o.num_kv_blocks = kBlocks;
  auto reference = Engine::Create(*w0, **b0, o);
  ASSERT_TRUE(reference.ok()) << reference.status();
  o.enable_transfer = true;
  if (direct) o.kv_direct_copier = CudaIpcCopierFactory();
  o.partition_prefill = true;
  auto prefill = Engine::Create(*w0, **b0, o);
  o.partition_prefill = false;
  o.interleave = 1;
  auto decode = Engine::Create(*w1, **b1, o);
  ASSERT_TRUE(prefill.ok() && decode.ok()) << prefill.status() << decode.status();

  std::mt19937 rng(9);
  for (int n : {1, 17, 300, 1100}) {
    std::vector<int32_t> prompt(n);
    for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % 512);
    const std::string id = absl::StrCat("req-", n);
    const std::vector<int32_t> want = *(*reference)->Generate(prompt, Greedy(16));

    auto target = (*decode)->Reserve(id, n, 16, absl::Seconds(30));
    ASSERT_TRUE(target.ok()) << target.status();
    std::promise<PrefillResult> prefilled;
    ASSERT_TRUE((*prefill)
                    ->SubmitPrefill(id, prompt, Greedy(16), *target,
                                    absl::Now() + absl::Seconds(30),
                                    [&](const PrefillResult& r) { prefilled.set_value(r); })
                    .ok());
    const PrefillResult r = prefilled.get_future().get();
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.first_token, want[0]);
    EXPECT_GT(r.transfer_bytes, 0);
    if (direct) {
      EXPECT_EQ(r.transport, "cuda-ipc");
    } else {  // pinned unless the host refuses to page-lock the mirror
      EXPECT_TRUE(r.transport == "ucx-pinned-staging" || r.transport == "ucx-host-staging")
          << r.transport;
    }
    std::vector<int32_t> got = {r.first_token};
    absl::Notification done;
    absl::Status final_status;
    ASSERT_TRUE((*decode)
                    ->SubmitPrefilled(id, prompt, r.first_token, Greedy(16),
                                      [&](const TokenEvent& e) {
                                        if (e.token >= 0) got.push_back(e.token);
                                        if (e.finished) {
                                          final_status = e.status;
                                          done.Notify();
                                        }
                                      })
                    .ok());
    done.WaitForNotification();
    ASSERT_TRUE(final_status.ok()) << final_status;
    EXPECT_EQ(got, want) << "prompt of " << n << " tokens";
    std::cout << "prompt " << n << ": " << r.transfer_bytes << " KV bytes over " << r.transport
              << " in " << r.transfer_us << " us\n";
  }
  WaitForFreeBlocks(**decode);
  WaitForFreeBlocks(**prefill);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Paths, GpuKvTransferTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "CudaIpc" : "HostStaging"; });

}  // namespace
}  // namespace cpserve
