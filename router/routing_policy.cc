#include "router/routing_policy.h"

#include <tuple>

namespace cpserve::router {

const char* RoutePathName(RoutePath path) {
  return path == RoutePath::kDisaggregated ? "disaggregated" : "local";
}

bool LessLoaded(const PoolState& a, const PoolState& b) {
  return std::make_tuple(a.RoutingLoad(), -a.load.free_kv_blocks, a.reg.name) <
         std::make_tuple(b.RoutingLoad(), -b.load.free_kv_blocks, b.reg.name);
}

const PoolState* PickLeastLoaded(const std::vector<PoolState>& pools,
                                 const std::set<std::string>& excluded) {
  const PoolState* best = nullptr;
  for (const PoolState& p : pools) {
    if (excluded.count(p.reg.name) != 0) continue;
    if (best == nullptr || LessLoaded(p, *best)) best = &p;
  }
  return best;
}

absl::StatusOr<RouteDecision> ChooseRoute(int64_t prompt_tokens, int64_t long_prompt_tokens,
                                          const std::vector<PoolState>& prefill,
                                          const std::vector<PoolState>& decode,
                                          const std::set<std::string>& excluded_prefill) {
  const PoolState* d = PickLeastLoaded(decode);
  if (d == nullptr) {
    return absl::UnavailableError("no live decode pool is registered with the router");
  }
  RouteDecision decision;
  decision.decode_pool = d->reg.name;
  if (prompt_tokens >= long_prompt_tokens) {
    if (const PoolState* p = PickLeastLoaded(prefill, excluded_prefill); p != nullptr) {
      decision.path = RoutePath::kDisaggregated;
      decision.prefill_pool = p->reg.name;
    }
  }
  return decision;
}

}  // namespace cpserve::router
