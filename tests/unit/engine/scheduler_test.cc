// Exact plans of the scheduler on small hand-checked scenarios, and its error statuses.
#include "worker/engine/scheduler.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace cpserve {
namespace {

SchedulerConfig MakeConfig(CpLayout layout, std::vector<int32_t> blocks, int64_t budget,
                           int32_t running) {
  SchedulerConfig c;
  c.layout = layout;
  c.num_blocks = std::move(blocks);
  c.max_batch_tokens = budget;
  c.max_running = running;
  c.max_model_len = 1000;
  return c;
}

// "id:p0-4" for a prefill chunk, "id:d10" for a decode, "+" when it samples; "!id" preempted.
std::string Describe(const StepPlan& plan) {
  std::string out;
  for (const std::string& id : plan.preempted) absl::StrAppend(&out, "!", id, " ");
  for (const ScheduledWork& w : plan.work) {
    if (w.kind == WorkKind::kDecode) {
      absl::StrAppend(&out, w.id, ":d", w.start, w.samples ? "+" : "", " ");
    } else {
      absl::StrAppend(&out, w.id, ":p", w.start, "-", w.end, w.samples ? "+" : "", " ");
    }
  }
  return out;
}

// Runs one step with no EOS; returns the plan's description.
std::string Step(Scheduler& s, std::vector<FinishedRequest>* finished = nullptr) {
  const StepPlan plan = *s.Schedule();
  std::vector<FinishedRequest> f = *s.Update(plan, {});
  if (finished != nullptr) *finished = f;
  return Describe(plan);
}

TEST(SchedulerTest, ChunkedPrefillThenDecode) {
  Scheduler s = *Scheduler::Create(MakeConfig({1, 4, 4}, {100}, 4, 4));
  ASSERT_TRUE(s.Add({"a", 10, 3}).ok());
  EXPECT_EQ(Step(s), "a:p0-4 ");
  EXPECT_EQ(Step(s), "a:p4-8 ");
  EXPECT_EQ(Step(s), "a:p8-10+ ");
  EXPECT_EQ(s.GetRequest("a")->num_generated, 1);
  EXPECT_EQ(Step(s), "a:d10+ ");
  std::vector<FinishedRequest> f;
  EXPECT_EQ(Step(s, &f), "a:d11+ ");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].id, "a");
  EXPECT_EQ(f[0].reason, FinishReason::kLength);
  EXPECT_EQ(f[0].num_generated, 3);
  EXPECT_FALSE(s.HasWork());
  EXPECT_EQ(s.block_manager(0).num_free(), 100);
  EXPECT_TRUE(s.Schedule()->empty());
}

TEST(SchedulerTest, DecodesFirstThenPrefillsFillTheBudget) {
  Scheduler s = *Scheduler::Create(MakeConfig({1, 4, 4}, {100}, 5, 4));
  ASSERT_TRUE(s.Add({"a", 2, 4}).ok());
  ASSERT_TRUE(s.Add({"b", 10, 2}).ok());
  ASSERT_TRUE(s.Add({"c", 3, 1}).ok());
  EXPECT_EQ(Step(s), "a:p0-2+ b:p0-3 ");  // c waits: FIFO, budget spent
  EXPECT_EQ(Step(s), "a:d2+ b:p3-7 ");
  EXPECT_EQ(Step(s), "a:d3+ b:p7-10+ c:p0-1 ");  // c admitted with the 1 token left
  EXPECT_EQ(Step(s), "a:d4+ b:d10+ c:p1-3+ ");   // a, b and c finish
  EXPECT_FALSE(s.HasWork());
}

TEST(SchedulerTest, DecodePreemptsYoungestAndItResumesByRecompute) {
  // One rank, B = 1: a block per token, 6 blocks in all.
  Scheduler s = *Scheduler::Create(MakeConfig({1, 1, 1}, {6}, 16, 4));
  ASSERT_TRUE(s.Add({"a", 3, 4}).ok());
  ASSERT_TRUE(s.Add({"b", 3, 4}).ok());
  EXPECT_EQ(Step(s), "a:p0-3+ b:p0-3+ ");
  EXPECT_EQ(s.block_manager(0).num_free(), 0);
  // a's decode needs a block: b (youngest) is preempted; nothing new is admitted.
  EXPECT_EQ(Step(s), "!b a:d3+ ");
  EXPECT_EQ(s.waiting().front(), "b");
  EXPECT_EQ(s.GetRequest("b")->num_preemptions, 1);
  EXPECT_EQ(s.GetRequest("b")->num_generated, 1);  // kept for recompute
  EXPECT_EQ(Step(s), "a:d4+ ");                    // b needs 4 blocks to recompute, 1 free
  EXPECT_EQ(Step(s), "a:d5+ ");                    // a finishes with 4 tokens
  // b recomputes prompt + its first token, then samples its second.
  EXPECT_EQ(Step(s), "b:p0-4+ ");
  EXPECT_EQ(Step(s), "b:d4+ ");
  std::vector<FinishedRequest> f;
  EXPECT_EQ(Step(s, &f), "b:d5+ ");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].num_generated, 4);
  EXPECT_EQ(s.block_manager(0).num_free(), 6);
}

TEST(SchedulerTest, LonelyDecodePreemptsItselfLast) {
  // Two ranks, I = B = 2. a holds rank 0's blocks; b's decode cannot grow and b is the
  // youngest, so b preempts itself rather than a.
  Scheduler s = *Scheduler::Create(MakeConfig({2, 2, 2}, {3, 3}, 16, 4));
  ASSERT_TRUE(s.Add({"a", 4, 2}).ok());  // rank 0: 0,1 -> 1 block; rank 1: 2,3 -> 1 block
  ASSERT_TRUE(s.Add({"b", 8, 2}).ok());  // rank 0: 0,1,4,5 -> 2 blocks; rank 1: 2 blocks
  EXPECT_EQ(Step(s), "a:p0-4+ b:p0-8+ ");
  // a decodes position 4 (rank 0 needs a 2nd block: none free) -> b preempted.
  EXPECT_EQ(Step(s), "!b a:d4+ ");
  EXPECT_EQ(Step(s), "b:p0-9+ ");
}

TEST(SchedulerTest, RefusesRequestsThatCanNeverRun) {
  SchedulerConfig c = MakeConfig({2, 4, 4}, {4, 3}, 64, 8);
  c.max_model_len = 100;
  Scheduler s = *Scheduler::Create(c);
  // Rank 1 has 3 blocks = 12 tokens (4-7, 12-15, 20-23), so at most 28 tokens of KV.
  EXPECT_TRUE(s.Add({"fits", 28, 1}).ok());
  const absl::Status big = s.Add({"big", 28, 2});  // 29 tokens: position 28 is rank 1's 13th
  EXPECT_EQ(big.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(big.message().find("rank 1"), absl::string_view::npos) << big;
  EXPECT_NE(big.message().find("can never run"), absl::string_view::npos) << big;
  const absl::Status ctx = s.Add({"ctx", 60, 41});
  EXPECT_EQ(ctx.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ctx.message().find("maximum context of 100"), absl::string_view::npos) << ctx;
  EXPECT_EQ(s.Add({"zero", 0, 5}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.Add({"nogen", 5, 0}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.Add({"", 5, 5}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.Add({"fits", 2, 2}).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s.num_requests(), 1);
  // The watermark also counts: a first chunk must fit with it on an empty pool.
  c.watermark_blocks = 1;
  Scheduler w = *Scheduler::Create(c);
  EXPECT_EQ(w.Add({"fits", 28, 1}).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(w.Add({"ok", 16, 1}).ok());
}

TEST(SchedulerTest, InvalidConfigs) {
  EXPECT_EQ(Scheduler::Create(MakeConfig({2, 4, 4}, {4}, 64, 8)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Scheduler::Create(MakeConfig({1, 3, 4}, {4}, 64, 8)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Scheduler::Create(MakeConfig({1, 4, 4}, {4}, 4, 8)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Scheduler::Create(MakeConfig({1, 4, 4}, {-1}, 64, 8)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SchedulerTest, HeldKvStaysUntilFinish) {
  Scheduler s = *Scheduler::Create(MakeConfig({2, 2, 2}, {10, 10}, 64, 8));
  RequestSpec spec{"p", 7, 1, /*hold_kv_on_finish=*/true};
  ASSERT_TRUE(s.Add(spec).ok());
  std::vector<FinishedRequest> f;
  EXPECT_EQ(Step(s, &f), "p:p0-7+ ");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_TRUE(f[0].kv_held);
  EXPECT_EQ(s.GetRequest("p")->phase, RequestPhase::kFinished);
  EXPECT_FALSE(s.HasWork());
  // Rank 0 owns 0,1,4,5 (2 blocks), rank 1 owns 2,3,6 (2 blocks): the transfer reads them.
  EXPECT_EQ(s.block_manager(0).Find("p")->blocks().size(), 2u);
  EXPECT_EQ(s.block_manager(1).Find("p")->blocks().size(), 2u);
  ASSERT_TRUE(s.Finish("p").ok());
  EXPECT_EQ(s.block_manager(0).num_free(), 10);
  EXPECT_EQ(s.block_manager(1).num_free(), 10);
  EXPECT_EQ(s.Finish("p").code(), absl::StatusCode::kNotFound);
}

TEST(SchedulerTest, PrefilledRequestDecodesAfterKvArrives) {
  Scheduler s = *Scheduler::Create(MakeConfig({2, 4, 4}, {3, 3}, 64, 2));
  EXPECT_EQ(s.AddPrefilled({"x", 8, 1}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.AddPrefilled({"x", 25, 3}).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(s.AddPrefilled({"x", 8, 3}).ok());
  // Fits an empty pool (rank 0: 0-3, 8-11, 16 = 3 blocks) but not now (2 free).
  const absl::Status now = s.AddPrefilled({"w", 17, 2});
  EXPECT_EQ(now.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(now.message().find("now"), absl::string_view::npos) << now;
  EXPECT_EQ(s.block_manager(0).num_used(), 1);  // positions 0-3
  EXPECT_EQ(s.block_manager(1).num_used(), 1);  // positions 4-7
  EXPECT_EQ(s.GetRequest("x")->phase, RequestPhase::kAwaitingKv);
  EXPECT_TRUE(s.Schedule()->empty());  // nothing to run until the KV is in
  ASSERT_TRUE(s.AddPrefilled({"y", 4, 2}).ok());
  EXPECT_EQ(s.AddPrefilled({"z", 4, 2}).code(), absl::StatusCode::kResourceExhausted);  // slots
  ASSERT_TRUE(s.MarkKvReady("x").ok());
  EXPECT_EQ(s.MarkKvReady("x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.MarkKvReady("q").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Step(s), "x:d8+ ");  // the first token (position 8) came from the prefill pool
  std::vector<FinishedRequest> f;
  EXPECT_EQ(Step(s, &f), "x:d9+ ");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].num_generated, 3);
  ASSERT_TRUE(s.Cancel("y").ok());
  EXPECT_EQ(s.block_manager(0).num_free(), 3);
  EXPECT_EQ(s.block_manager(1).num_free(), 3);
}

TEST(SchedulerTest, StopCancelAndProtocolErrors) {
  Scheduler s = *Scheduler::Create(MakeConfig({1, 2, 2}, {50}, 8, 4));
  ASSERT_TRUE(s.Add({"a", 3, 10}).ok());
  ASSERT_TRUE(s.Add({"b", 12, 10}).ok());
  StepPlan plan = *s.Schedule();
  EXPECT_EQ(Describe(plan), "a:p0-3+ b:p0-5 ");
  EXPECT_EQ(s.Schedule().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.Update(plan, {"b"}).status().code(), absl::StatusCode::kInvalidArgument);
  StepPlan wrong = plan;
  wrong.step += 1;
  EXPECT_EQ(s.Update(wrong, {}).status().code(), absl::StatusCode::kFailedPrecondition);
  // b is cancelled while its step runs: its result is dropped, its blocks freed.
  ASSERT_TRUE(s.Cancel("b").ok());
  std::vector<FinishedRequest> f = *s.Update(plan, {"a"});
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].reason, FinishReason::kStop);
  EXPECT_EQ(f[0].num_generated, 1);
  EXPECT_EQ(s.num_requests(), 0);
  EXPECT_EQ(s.block_manager(0).num_free(), 50);
  EXPECT_EQ(s.Cancel("b").code(), absl::StatusCode::kNotFound);
  // Cancel from the waiting queue and from the running set.
  ASSERT_TRUE(s.Add({"c", 20, 2}).ok());
  ASSERT_TRUE(s.Add({"d", 2, 2}).ok());
  EXPECT_EQ(Step(s), "c:p0-8 ");
  ASSERT_TRUE(s.Cancel("d").ok());
  ASSERT_TRUE(s.Cancel("c").ok());
  EXPECT_FALSE(s.HasWork());
  EXPECT_EQ(s.block_manager(0).num_free(), 50);
}

TEST(SchedulerTest, ShortOfBlocksPrefillShrinksAndStopsAdmissions) {
  // One rank, B = 2, 6 blocks = 12 tokens, budget 8.
  Scheduler s = *Scheduler::Create(MakeConfig({1, 2, 2}, {6}, 8, 4));
  ASSERT_TRUE(s.Add({"a", 5, 3}).ok());
  ASSERT_TRUE(s.Add({"b", 9, 1}).ok());
  EXPECT_EQ(Step(s), "a:p0-5+ b:p0-3 ");  // 3 + 2 blocks, 1 free
  ASSERT_TRUE(s.Add({"c", 1, 1}).ok());
  // a decodes 5 inside its 3rd block; b's chunk [3, 10) is cut to the 6 tokens that fit in
  // 3 blocks, and c is not admitted past stalled work.
  EXPECT_EQ(Step(s), "a:d5+ b:p3-6 ");
  // a needs a 4th block for 6: b, the youngest, is preempted; a finishes.
  EXPECT_EQ(Step(s), "!b a:d6+ ");
  EXPECT_EQ(Step(s), "b:p0-8 ");  // the whole budget
  EXPECT_EQ(Step(s), "b:p8-9+ c:p0-1+ ");
  EXPECT_FALSE(s.HasWork());
  EXPECT_EQ(s.block_manager(0).num_free(), 6);
}

}  // namespace
}  // namespace cpserve
