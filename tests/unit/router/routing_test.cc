// Pool registry, routing policy and admission control (router/): exhaustive small cases
// plus randomized routing choices against a brute-force reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include "router/admission.h"
#include "router/pool_registry.h"
#include "router/routing_policy.h"

namespace cpserve::router {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000000);

PoolRegistration Reg(std::string name, PoolRole role, uint64_t epoch = 1, int world = 2) {
  return {std::move(name), role, "127.0.0.1:1", world, epoch, 500};
}

TEST(PoolRegistryTest, RegisterValidates) {
  PoolRegistry r(absl::Seconds(3));
  EXPECT_EQ(r.Register(Reg("", PoolRole::kDecode), kT0).status().code(),
            absl::StatusCode::kInvalidArgument);
  PoolRegistration no_addr = Reg("d", PoolRole::kDecode);
  no_addr.address = "";
  EXPECT_EQ(r.Register(no_addr, kT0).status().code(), absl::StatusCode::kInvalidArgument);
  auto bad_world = r.Register(Reg("d", PoolRole::kDecode, 1, 0), kT0);
  EXPECT_EQ(bad_world.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_world.status().message().find("world_size"), std::string::npos);
  EXPECT_EQ(r.size(), 0u);
}

TEST(PoolRegistryTest, LivenessFollowsHeartbeatsExactlyAtTheTimeout) {
  PoolRegistry r(absl::Milliseconds(3000));
  auto id = r.Register(Reg("decode-0", PoolRole::kDecode), kT0);
  ASSERT_TRUE(id.ok());
  // Sweep time in 250 ms steps: live up to and including the timeout, down after.
  for (int ms = 0; ms <= 6000; ms += 250) {
    const absl::Time now = kT0 + absl::Milliseconds(ms);
    EXPECT_EQ(r.Live(PoolRole::kDecode, now).size(), ms <= 3000 ? 1u : 0u) << ms;
    EXPECT_TRUE(r.Live(PoolRole::kPrefill, now).empty());
  }
  // A heartbeat revives it and carries the load.
  const absl::Time t1 = kT0 + absl::Seconds(10);
  EXPECT_TRUE(r.Heartbeat(*id, {3, 4, 100, 200}, t1));
  auto live = r.Live(PoolRole::kDecode, t1 + absl::Seconds(3));
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].load.queued_requests, 3);
  EXPECT_EQ(live[0].load.running_requests, 4);
  EXPECT_EQ(live[0].load.free_kv_blocks, 100);
  EXPECT_EQ(live[0].load.total_kv_blocks, 200);
  EXPECT_TRUE(live[0].healthy);
  EXPECT_TRUE(r.Live(PoolRole::kDecode, t1 + absl::Milliseconds(3001)).empty());
  EXPECT_FALSE(r.Heartbeat("nope", {}, t1));
}

TEST(PoolRegistryTest, ReRegistrationSameEpochKeepsIdNewEpochReplaces) {
  PoolRegistry r(absl::Seconds(3));
  auto a = r.Register(Reg("p", PoolRole::kPrefill, 7), kT0);
  auto b = r.Register(Reg("p", PoolRole::kPrefill, 7), kT0 + absl::Seconds(1));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(r.size(), 1u);
  r.AddInflight("p", 2);
  auto c = r.Register(Reg("p", PoolRole::kPrefill, 8, 4), kT0 + absl::Seconds(2));
  ASSERT_TRUE(c.ok());
  EXPECT_NE(*a, *c);
  EXPECT_EQ(r.size(), 1u);
  EXPECT_FALSE(r.Heartbeat(*a, {}, kT0 + absl::Seconds(2)));  // old incarnation
  EXPECT_TRUE(r.Heartbeat(*c, {}, kT0 + absl::Seconds(2)));
  auto p = r.Find("p");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->reg.epoch, 8u);
  EXPECT_EQ(p->reg.world_size, 4);
  EXPECT_EQ(p->router_inflight, 2);  // requests still out on the old incarnation
  // A role change is a new registration too.
  auto d = r.Register(Reg("p", PoolRole::kDecode, 8), kT0 + absl::Seconds(2));
  ASSERT_TRUE(d.ok());
  EXPECT_NE(*c, *d);
  EXPECT_EQ(r.Live(PoolRole::kDecode, kT0 + absl::Seconds(2)).size(), 1u);
  EXPECT_TRUE(r.Live(PoolRole::kPrefill, kT0 + absl::Seconds(2)).empty());
}

TEST(PoolRegistryTest, MarkDownUntilNextHeartbeatAndForget) {
  PoolRegistry r(absl::Seconds(3), absl::Seconds(30));
  auto id = r.Register(Reg("d", PoolRole::kDecode), kT0);
  ASSERT_TRUE(id.ok());
  r.MarkDown("d");
  r.MarkDown("unknown");
  EXPECT_TRUE(r.Live(PoolRole::kDecode, kT0).empty());
  auto snap = r.Snapshot(kT0);
  ASSERT_EQ(snap.size(), 1u);
  EXPECT_FALSE(snap[0].healthy);
  EXPECT_TRUE(r.Heartbeat(*id, {}, kT0 + absl::Seconds(1)));
  EXPECT_EQ(r.Live(PoolRole::kDecode, kT0 + absl::Seconds(1)).size(), 1u);
  EXPECT_TRUE(r.Expire(kT0 + absl::Seconds(31)).empty());
  EXPECT_EQ(r.Expire(kT0 + absl::Seconds(32)), std::vector<std::string>{"d"});
  EXPECT_EQ(r.size(), 0u);
  EXPECT_FALSE(r.Heartbeat(*id, {}, kT0 + absl::Seconds(33)));
}

TEST(PoolRegistryTest, InflightCountsNeverNegativeAndDriveLoad) {
  PoolRegistry r(absl::Seconds(3));
  auto id = r.Register(Reg("d", PoolRole::kDecode), kT0);
  ASSERT_TRUE(id.ok());
  r.AddInflight("d", -1);
  EXPECT_EQ(r.Find("d")->router_inflight, 0);
  for (int i = 0; i < 5; ++i) r.AddInflight("d", 1);
  r.AddInflight("ghost", 1);
  EXPECT_EQ(r.Find("d")->RoutingLoad(), 5);
  ASSERT_TRUE(r.Heartbeat(*id, {4, 3, 0, 0}, kT0));
  EXPECT_EQ(r.Find("d")->RoutingLoad(), 7);
  ASSERT_TRUE(r.Heartbeat(*id, {0, 1, 0, 0}, kT0));
  EXPECT_EQ(r.Find("d")->RoutingLoad(), 5);
}

PoolState Pool(std::string name, int64_t inflight, int64_t free_blocks, int32_t queued = 0) {
  PoolState p;
  p.reg.name = std::move(name);
  p.router_inflight = inflight;
  p.load.free_kv_blocks = free_blocks;
  p.load.queued_requests = queued;
  return p;
}

TEST(RoutingPolicyTest, NoDecodePoolIsUnavailable) {
  auto r = ChooseRoute(1000, 256, {Pool("p", 0, 0)}, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
}

TEST(RoutingPolicyTest, ThresholdAndPrefillAvailabilityPickThePath) {
  const std::vector<PoolState> prefill = {Pool("p0", 0, 0)};
  const std::vector<PoolState> decode = {Pool("d0", 0, 0)};
  for (int64_t len = 1; len <= 12; ++len) {
    for (int64_t threshold = 1; threshold <= 12; ++threshold) {
      auto r = ChooseRoute(len, threshold, prefill, decode);
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(r->path, len >= threshold ? RoutePath::kDisaggregated : RoutePath::kLocal);
      EXPECT_EQ(r->prefill_pool, len >= threshold ? "p0" : "");
      EXPECT_EQ(r->decode_pool, "d0");
      auto no_prefill = ChooseRoute(len, threshold, {}, decode);
      ASSERT_TRUE(no_prefill.ok());
      EXPECT_EQ(no_prefill->path, RoutePath::kLocal);
      auto excluded = ChooseRoute(len, threshold, prefill, decode, {"p0"});
      ASSERT_TRUE(excluded.ok());
      EXPECT_EQ(excluded->path, RoutePath::kLocal);
    }
  }
  EXPECT_STREQ(RoutePathName(RoutePath::kLocal), "local");
  EXPECT_STREQ(RoutePathName(RoutePath::kDisaggregated), "disaggregated");
}

TEST(RoutingPolicyTest, TieBreaksByFreeBlocksThenName) {
  std::vector<PoolState> d = {Pool("b", 1, 10), Pool("a", 1, 10), Pool("c", 1, 11)};
  EXPECT_EQ(PickLeastLoaded(d)->reg.name, "c");
  d[2].router_inflight = 2;
  EXPECT_EQ(PickLeastLoaded(d)->reg.name, "a");
  EXPECT_EQ(PickLeastLoaded(d, {"a"})->reg.name, "b");
  EXPECT_EQ(PickLeastLoaded(d, {"a", "b", "c"}), nullptr);
  // Reported load counts when larger than the router's own count.
  d[1].load.queued_requests = 5;
  EXPECT_EQ(PickLeastLoaded(d)->reg.name, "b");
}

// Reference: minimum load, then maximum free blocks among those, then smallest name.
const PoolState* Reference(const std::vector<PoolState>& pools, const std::set<std::string>& ex) {
  std::vector<const PoolState*> c;
  for (const auto& p : pools) {
    if (!ex.count(p.reg.name)) c.push_back(&p);
  }
  if (c.empty()) return nullptr;
  int64_t min_load = INT64_MAX;
  for (auto* p : c) min_load = std::min(min_load, p->RoutingLoad());
  std::erase_if(c, [&](const PoolState* p) { return p->RoutingLoad() != min_load; });
  int64_t max_free = INT64_MIN;
  for (auto* p : c) max_free = std::max(max_free, p->load.free_kv_blocks);
  std::erase_if(c, [&](const PoolState* p) { return p->load.free_kv_blocks != max_free; });
  const PoolState* best = c[0];
  for (auto* p : c) {
    if (p->reg.name < best->reg.name) best = p;
  }
  return best;
}

TEST(RoutingPolicyTest, RandomizedMatchesBruteForce) {
  std::mt19937_64 rng(42);
  for (int iter = 0; iter < 5000; ++iter) {
    auto make = [&](const char* prefix) {
      std::vector<PoolState> v;
      const int n = static_cast<int>(rng() % 5);
      for (int i = 0; i < n; ++i) {
        v.push_back(Pool(prefix + std::to_string(rng() % 6), rng() % 4, rng() % 3,
                         static_cast<int32_t>(rng() % 4)));
        v.back().load.running_requests = static_cast<int32_t>(rng() % 3);
      }
      // Names are unique in a registry.
      std::sort(v.begin(), v.end(),
                [](const PoolState& a, const PoolState& b) { return a.reg.name < b.reg.name; });
      v.erase(std::unique(
                  v.begin(), v.end(),
                  [](const PoolState& a, const PoolState& b) { return a.reg.name == b.reg.name; }),
              v.end());
      std::shuffle(v.begin(), v.end(), rng);
      return v;
    };
    const auto prefill = make("p");
    const auto decode = make("d");
    std::set<std::string> excluded;
    if (rng() % 2 && !prefill.empty()) excluded.insert(prefill[rng() % prefill.size()].reg.name);
    const int64_t len = rng() % 8, threshold = 1 + rng() % 8;
    auto got = ChooseRoute(len, threshold, prefill, decode, excluded);
    const PoolState* d = Reference(decode, {});
    if (d == nullptr) {
      EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
      continue;
    }
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got->decode_pool, d->reg.name);
    const PoolState* p = len >= threshold ? Reference(prefill, excluded) : nullptr;
    EXPECT_EQ(got->path, p ? RoutePath::kDisaggregated : RoutePath::kLocal);
    EXPECT_EQ(got->prefill_pool, p ? p->reg.name : "");
  }
}

TEST(AdmissionTest, BoundsInFlightRequests) {
  for (int64_t max = 0; max <= 4; ++max) {
    AdmissionController a(max);
    for (int64_t i = 0; i < max; ++i) ASSERT_TRUE(a.TryAdmit().ok());
    const absl::Status full = a.TryAdmit();
    EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(full.message().find("max_queued_requests"), std::string::npos);
    EXPECT_EQ(a.in_flight(), max);
    if (max > 0) {
      a.Release();
      EXPECT_TRUE(a.TryAdmit().ok());
    }
    for (int64_t i = 0; i < max + 2; ++i) a.Release();
    EXPECT_EQ(a.in_flight(), 0);
  }
}

}  // namespace
}  // namespace cpserve::router
