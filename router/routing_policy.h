// Routing policy (DESIGN §6). Pure function of the prompt length, the threshold and the
// live pools:
//  - prompt_tokens >= long_prompt_tokens and a usable prefill pool -> disaggregated: the
//    least-loaded prefill pool prefills (PCP) and transfers to the least-loaded decode pool;
//  - otherwise local: the least-loaded decode pool prefills and decodes;
//  - no live decode pool -> UNAVAILABLE.
// "Least loaded" orders by (RoutingLoad() ascending, free KV blocks descending, name
// ascending), so the choice is deterministic.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "router/pool_registry.h"

namespace cpserve::router {

enum class RoutePath { kLocal, kDisaggregated };
const char* RoutePathName(RoutePath path);  // "local" | "disaggregated"

struct RouteDecision {
  RoutePath path = RoutePath::kLocal;
  std::string prefill_pool;  // empty on the local path
  std::string decode_pool;
};

// True when `a` should be preferred over `b`.
bool LessLoaded(const PoolState& a, const PoolState& b);

// The least-loaded pool of `pools` whose name is not in `excluded`; null if none.
const PoolState* PickLeastLoaded(const std::vector<PoolState>& pools,
                                 const std::set<std::string>& excluded = {});

// `prefill` and `decode`: the live pools of each role. `excluded_prefill`: prefill
// pools that already failed this request (never chosen again).
absl::StatusOr<RouteDecision> ChooseRoute(int64_t prompt_tokens, int64_t long_prompt_tokens,
                                          const std::vector<PoolState>& prefill,
                                          const std::vector<PoolState>& decode,
                                          const std::set<std::string>& excluded_prefill = {});

}  // namespace cpserve::router
