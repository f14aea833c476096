// Regressions found by the chaos run, reproduced deterministically in one process.
//
// A decode pool's Reserve runs on a blocking thread before it reaches the engine, so
// the router's Cancel of the same request (sent when the client gave up) can reach the
// engine first. The engine then knew nothing to cancel and the late Reserve stranded
// its KV blocks until the reservation's ttl (a minute). Now the early Cancel is
// remembered and the Reserve is refused with CANCELLED.
#include <cstdlib>
#include <thread>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "worker/builtin/builtin_model.h"
#include "worker/engine/engine.h"
#include "worker/model/weights.h"

namespace cpserve {
namespace {

constexpr int kBlocks = 64;

bool FreeBlocksBackTo(Engine& engine, int32_t want) {
  for (int i = 0; i < 5000 && engine.Stats().free_kv_blocks != want; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return engine.Stats().free_kv_blocks == want;
}

TEST(EngineRacesTest, ACancelThatOvertakesItsReserveLeavesNoKvReserved) {
  ::setenv("UCX_TLS", "tcp,self", 1);
  ::setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 1);
  absl::StatusOr<std::string> dir = EnsureBuiltinModel();
  ASSERT_TRUE(dir.ok()) << dir.status();
  absl::StatusOr<ModelWeights> weights = LoadModel(*dir, DType::kF32);
  ASSERT_TRUE(weights.ok()) << weights.status();
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  EngineOptions options;
  options.enable_transfer = true;
  options.num_kv_blocks = kBlocks;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(*weights, *backend, options);
  ASSERT_TRUE(engine.ok()) << engine.status();

  (*engine)->Cancel("r1");
  // A request submitted after the Cancel ends only after the engine handled the Cancel.
  GenerationParams one;
  one.max_tokens = 1;
  ASSERT_TRUE((*engine)->Generate({1, 2, 3}, one).ok());

  absl::StatusOr<v1::KvTransferTarget> late = (*engine)->Reserve("r1", 40, 8, absl::Seconds(30));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kCancelled) << late.status();
  EXPECT_EQ((*engine)->Stats().free_kv_blocks, kBlocks);

  // Only that one Reserve is refused: a retry under the same id is taken, and a Cancel
  // that comes after its Reserve frees it as before.
  absl::StatusOr<v1::KvTransferTarget> retry = (*engine)->Reserve("r1", 40, 8, absl::Seconds(30));
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_LT((*engine)->Stats().free_kv_blocks, kBlocks);
  (*engine)->Cancel("r1");
  EXPECT_TRUE(FreeBlocksBackTo(**engine, kBlocks));
}

}  // namespace
}  // namespace cpserve
