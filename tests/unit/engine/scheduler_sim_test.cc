// Randomized simulation of the scheduler driven like the engine drives it, with every
// invariant checked at every step against an independent model of each request.
#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "worker/engine/scheduler.h"

namespace cpserve {
namespace {

struct SimConfig {
  SchedulerConfig sched;
  int num_requests = 300;
  int64_t max_prompt = 100;
  int64_t max_gen = 30;
  double oversize_p = 0.03;        // requests drawn far too large (must be refused)
  double cancel_p = 0.02;          // per step: cancel a random live request
  double cancel_planned_p = 0.02;  // per step: cancel a planned request before Update
  double stop_p = 0.02;            // per sampled token: the engine saw EOS
  uint64_t seed = 1;
};

struct SimStats {
  std::string transcript;
  int64_t steps = 0, finished = 0, stopped = 0, cancelled = 0, refused = 0, preemptions = 0;
  int64_t finished_after_preemption = 0;
};

// Brute-force block count of rank r for a sequence of len tokens.
int64_t BruteBlocks(const CpLayout& l, int64_t len, int r) {
  int64_t owned = 0;
  for (int64_t p = 0; p < len; ++p) owned += (p / l.interleave) % l.world_size == r;
  return (owned + l.block_size - 1) / l.block_size;
}

bool ShouldRefuse(const SchedulerConfig& c, int64_t prompt, int64_t max_tokens) {
  if (prompt + max_tokens > c.max_model_len) return true;
  const int64_t kv = prompt + max_tokens - 1;
  for (int r = 0; r < c.layout.world_size; ++r) {
    if (BruteBlocks(c.layout, kv, r) > c.num_blocks[r]) return true;
    if (BruteBlocks(c.layout, std::min(kv, c.max_batch_tokens), r) + c.watermark_blocks >
        c.num_blocks[r]) {
      return true;
    }
  }
  return false;
}

struct Model {
  int64_t prompt, max_tokens;
  int64_t computed = 0, generated = 0;
  bool preempted_once = false;
};

void Simulate(const SimConfig& cfg, SimStats* st) {
  const SchedulerConfig& sc = cfg.sched;
  const int n = sc.layout.world_size;
  Scheduler s = *Scheduler::Create(sc);
  std::mt19937_64 rng(cfg.seed);
  auto coin = [&](double p) { return std::uniform_real_distribution<>(0, 1)(rng) < p; };
  std::map<std::string, Model> live;
  int added = 0;
  for (int64_t step = 0; step < 1'000'000; ++step) {
    // Arrivals: bursts of 0..3 requests.
    for (int k = static_cast<int>(rng() % 4); k > 0 && added < cfg.num_requests; --k, ++added) {
      Model m;
      const bool big = coin(cfg.oversize_p);
      m.prompt = 1 + static_cast<int64_t>(rng() % (big ? 20 * cfg.max_prompt : cfg.max_prompt));
      m.max_tokens = 1 + static_cast<int64_t>(rng() % (big ? 20 * cfg.max_gen : cfg.max_gen));
      const std::string id = absl::StrCat("r", added);
      const absl::Status a = s.Add({id, m.prompt, m.max_tokens, false});
      ASSERT_EQ(!a.ok(), ShouldRefuse(sc, m.prompt, m.max_tokens)) << a;
      if (a.ok()) {
        live.emplace(id, m);
      } else {
        ASSERT_TRUE(a.code() == absl::StatusCode::kInvalidArgument ||
                    a.code() == absl::StatusCode::kResourceExhausted)
            << a;
        ASSERT_NE(a.message().find(id), absl::string_view::npos) << a;
        ++st->refused;
      }
    }
    if (!live.empty() && coin(cfg.cancel_p)) {
      auto it = std::next(live.begin(), static_cast<int64_t>(rng() % live.size()));
      ASSERT_TRUE(s.Cancel(it->first).ok());
      live.erase(it);
      ++st->cancelled;
    }
    if (!s.HasWork()) {
      ASSERT_TRUE(live.empty());
      if (added == cfg.num_requests) break;
      continue;
    }
    const StepPlan plan = *s.Schedule();
    ++st->steps;
    ASSERT_FALSE(plan.empty()) << "step " << step << ": work pending but nothing planned";
    ASSERT_EQ(s.Schedule().status().code(), absl::StatusCode::kFailedPrecondition);
    absl::StrAppend(&st->transcript, "#", plan.step, ":");
    for (const std::string& id : plan.preempted) {
      ASSERT_TRUE(live.contains(id));
      live[id].computed = 0;
      live[id].preempted_once = true;
      ++st->preemptions;
      absl::StrAppend(&st->transcript, " P", id);
    }
    // Budget, uniqueness, order, contiguity, and slot ownership.
    int64_t tokens = 0;
    bool seen_prefill = false;
    std::set<std::string> ids;
    std::vector<std::set<int64_t>> slots(n);
    for (const ScheduledWork& w : plan.work) {
      ASSERT_TRUE(ids.insert(w.id).second) << w.id << " twice in step " << plan.step;
      ASSERT_TRUE(live.contains(w.id));
      const Model& m = live[w.id];
      const int64_t seq = m.prompt + m.generated;
      ASSERT_EQ(w.start, m.computed) << w.id;  // chunks contiguous, in order
      ASSERT_LT(w.start, w.end);
      ASSERT_LE(w.end, seq);
      ASSERT_EQ(w.samples, w.end == seq);
      if (w.kind == WorkKind::kDecode) {
        ASSERT_FALSE(seen_prefill) << "decodes come first";
        ASSERT_GE(m.generated, 1);
        ASSERT_EQ(w.start, seq - 1);
      } else {
        seen_prefill = true;
      }
      tokens += w.num_tokens();
      absl::StrAppend(&st->transcript, " ", w.id, w.kind == WorkKind::kDecode ? "d" : "p", w.start,
                      "-", w.end);
      std::vector<int> owners(w.num_tokens(), 0);
      for (int r = 0; r < n; ++r) {
        const std::vector<int64_t> map = *s.block_manager(r).SlotMapping(w.id, w.start, w.end);
        for (int64_t k = 0; k < w.num_tokens(); ++k) {
          if (map[k] < 0) continue;
          ++owners[k];
          ASSERT_TRUE(slots[r].insert(map[k]).second) << "slot reused in a step";
        }
        for (int32_t b : s.block_manager(r).Find(w.id)->blocks()) {
          absl::StrAppend(&st->transcript, r == 0 ? "[" : "|", b);
        }
      }
      ASSERT_TRUE(std::all_of(owners.begin(), owners.end(), [](int o) { return o == 1; }));
    }
    st->transcript += "\n";
    ASSERT_EQ(tokens, plan.num_tokens);
    ASSERT_LE(tokens, sc.max_batch_tokens);
    ASSERT_LE(s.num_running(), sc.max_running);
    // Blocks in use == blocks held by live requests, on every rank; waiting hold none.
    for (int r = 0; r < n; ++r) {
      int64_t held = 0;
      for (const auto& [id, m] : live) {
        const BlockTable* t = s.block_manager(r).Find(id);
        if (t != nullptr) {
          held += static_cast<int64_t>(t->blocks().size());
          ASSERT_EQ(static_cast<int64_t>(t->blocks().size()),
                    sc.layout.LocalBlocks(t->capacity(), r));
        }
      }
      ASSERT_EQ(held, s.block_manager(r).num_used());
    }
    for (const std::string& id : s.waiting()) {
      for (int r = 0; r < n; ++r) ASSERT_EQ(s.block_manager(r).Find(id), nullptr);
    }
    // The engine: maybe a cancel races the step; maybe EOS on sampled tokens.
    if (coin(cfg.cancel_planned_p)) {
      const std::string& id = plan.work[rng() % plan.work.size()].id;
      ASSERT_TRUE(s.Cancel(id).ok());
      live.erase(id);
      ++st->cancelled;
    }
    std::vector<std::string> stopped;
    for (const ScheduledWork& w : plan.work) {
      if (w.samples && live.contains(w.id) && coin(cfg.stop_p)) stopped.push_back(w.id);
    }
    const std::vector<FinishedRequest> finished = *s.Update(plan, stopped);
    for (const ScheduledWork& w : plan.work) {
      if (!live.contains(w.id)) continue;
      live[w.id].computed = w.end;
      live[w.id].generated += w.samples;
    }
    for (const FinishedRequest& f : finished) {
      const Model& m = live.at(f.id);
      const bool stop = std::count(stopped.begin(), stopped.end(), f.id) > 0;
      ASSERT_EQ(f.reason, stop ? FinishReason::kStop : FinishReason::kLength);
      if (!stop) {
        ASSERT_EQ(m.generated, m.max_tokens) << f.id;
      }
      ASSERT_EQ(f.num_generated, m.generated);
      ++st->finished;
      st->stopped += stop;
      st->finished_after_preemption += m.preempted_once && !stop;
      ASSERT_EQ(s.GetRequest(f.id).status().code(), absl::StatusCode::kNotFound);
      live.erase(f.id);
    }
    for (const auto& [id, m] : live) {
      const RequestInfo info = *s.GetRequest(id);
      ASSERT_LT(m.generated, m.max_tokens);
      ASSERT_EQ(info.num_generated, m.generated);
      ASSERT_EQ(info.num_computed, m.computed);
    }
  }
  ASSERT_TRUE(live.empty()) << "requests never finished";
  ASSERT_EQ(added, cfg.num_requests);
  ASSERT_EQ(s.num_requests(), 0);
  for (int r = 0; r < n; ++r) ASSERT_EQ(s.block_manager(r).num_free(), sc.num_blocks[r]);
  ASSERT_EQ(st->finished + st->cancelled + st->refused, cfg.num_requests);
}

SimConfig Config(int n, int i, int b, std::vector<int32_t> blocks, int64_t budget, int running,
                 int32_t watermark, uint64_t seed) {
  SimConfig c;
  c.sched.layout = CpLayout{n, i, b};
  c.sched.num_blocks = std::move(blocks);
  c.sched.max_batch_tokens = budget;
  c.sched.max_running = running;
  c.sched.max_model_len = 400;
  c.sched.watermark_blocks = watermark;
  c.seed = seed;
  return c;
}

std::vector<SimConfig> Configs() {
  return {
      Config(1, 16, 16, {24}, 64, 8, 0, 1),             // one rank, tight: preempts
      Config(1, 1, 1, {150}, 32, 16, 0, 2),             // B = 1
      Config(4, 1, 4, {40, 40, 40, 40}, 48, 12, 0, 3),  // token striping
      Config(3, 4, 8, {20, 26, 22}, 40, 10, 2, 4),      // uneven ranks, watermark
      Config(8, 2, 2, {30, 30, 30, 30, 30, 30, 30, 30}, 64, 16, 1, 5),
      Config(2, 16, 16, {200, 200}, 512, 32, 0, 6),  // roomy: little pressure
      Config(2, 4, 4, {30, 30}, 8, 8, 0, 7),         // budget == max_running
  };
}

TEST(SchedulerSimTest, RandomWorkloadsKeepAllInvariants) {
  int64_t preemptions = 0, resumed = 0;
  for (SimConfig c : Configs()) {
    for (uint64_t round = 0; round < 4; ++round) {
      c.seed += 1000 * round;
      SimStats st;
      Simulate(c, &st);
      ASSERT_FALSE(HasFatalFailure()) << "seed " << c.seed;
      EXPECT_GT(st.finished, 100) << "seed " << c.seed;
      EXPECT_GT(st.refused, 0) << "seed " << c.seed;
      EXPECT_GT(st.cancelled, 0) << "seed " << c.seed;
      EXPECT_GT(st.stopped, 0) << "seed " << c.seed;
      preemptions += st.preemptions;
      resumed += st.finished_after_preemption;
      std::printf(
          "seed %d: %lld steps, %lld finished (%lld stopped), %lld cancelled, %lld refused, "
          "%lld preemptions\n",
          static_cast<int>(c.seed), static_cast<long long>(st.steps),
          static_cast<long long>(st.finished), static_cast<long long>(st.stopped),
          static_cast<long long>(st.cancelled), static_cast<long long>(st.refused),
          static_cast<long long>(st.preemptions));
    }
  }
  EXPECT_GT(preemptions, 50);
  EXPECT_GT(resumed, 20);  // preempted requests still produced exactly max_tokens tokens
}

TEST(SchedulerSimTest, SameInputsGiveSamePlansAndBlocks) {
  for (const SimConfig& c : Configs()) {
    SimStats a, b, other;
    Simulate(c, &a);
    Simulate(c, &b);
    SimConfig c2 = c;
    c2.seed += 100;
    Simulate(c2, &other);
    ASSERT_FALSE(HasFatalFailure());
    EXPECT_EQ(a.transcript, b.transcript);
    EXPECT_NE(a.transcript, other.transcript);
  }
}

}  // namespace
}  // namespace cpserve
