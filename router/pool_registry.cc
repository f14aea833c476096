#include "router/pool_registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace cpserve::router {

const char* PoolRoleName(PoolRole role) {
  return role == PoolRole::kPrefill ? "prefill" : "decode";
}

int64_t PoolState::RoutingLoad() const {
  const int64_t reported =
      static_cast<int64_t>(load.queued_requests) + static_cast<int64_t>(load.running_requests);
  return std::max(reported, router_inflight);
}

PoolRegistry::PoolRegistry(absl::Duration heartbeat_timeout, absl::Duration forget_after)
    : heartbeat_timeout_(heartbeat_timeout), forget_after_(forget_after) {}

absl::StatusOr<std::string> PoolRegistry::Register(const PoolRegistration& reg, absl::Time now) {
  if (reg.name.empty()) return absl::InvalidArgumentError("pool: name is empty");
  if (reg.address.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("address: empty for pool '", reg.name, "'"));
  }
  if (reg.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("world_size: ", reg.world_size, " for pool '", reg.name, "' (must be >= 1)"));
  }
  auto it = pools_.find(reg.name);
  if (it != pools_.end() && it->second.reg.epoch == reg.epoch && it->second.reg.role == reg.role) {
    // The same incarnation registering again: refresh, keep the id and the counts.
    it->second.reg = reg;
    it->second.last_seen = now;
    it->second.marked_down = false;
    return it->second.registration_id;
  }
  PoolState state;
  if (it != pools_.end()) {
    by_registration_.erase(it->second.registration_id);
    // Requests the router still has on the old incarnation will fail and release
    // their count against the new entry; start from that count so it never goes < 0.
    state.router_inflight = it->second.router_inflight;
  }
  state.reg = reg;
  state.registration_id = absl::StrCat(reg.name, "/", next_id_++);
  state.last_seen = now;
  by_registration_[state.registration_id] = reg.name;
  pools_[reg.name] = state;
  return state.registration_id;
}

bool PoolRegistry::Heartbeat(const std::string& registration_id, const PoolLoadReport& load,
                             absl::Time now) {
  auto id = by_registration_.find(registration_id);
  if (id == by_registration_.end()) return false;
  PoolState& pool = pools_.at(id->second);
  pool.load = load;
  pool.last_seen = now;
  pool.marked_down = false;
  return true;
}

void PoolRegistry::MarkDown(const std::string& name) {
  auto it = pools_.find(name);
  if (it != pools_.end()) it->second.marked_down = true;
}

void PoolRegistry::AddInflight(const std::string& name, int64_t delta) {
  auto it = pools_.find(name);
  if (it == pools_.end()) return;
  it->second.router_inflight = std::max<int64_t>(0, it->second.router_inflight + delta);
}

bool PoolRegistry::IsLive(const PoolState& pool, absl::Time now) const {
  return !pool.marked_down && now - pool.last_seen <= heartbeat_timeout_;
}

std::vector<PoolState> PoolRegistry::Snapshot(absl::Time now) const {
  std::vector<PoolState> out;
  out.reserve(pools_.size());
  for (const auto& [name, pool] : pools_) {
    out.push_back(pool);
    out.back().healthy = IsLive(pool, now);
  }
  return out;
}

std::vector<PoolState> PoolRegistry::Live(PoolRole role, absl::Time now) const {
  std::vector<PoolState> out;
  for (const auto& [name, pool] : pools_) {
    if (pool.reg.role != role || !IsLive(pool, now)) continue;
    out.push_back(pool);
    out.back().healthy = true;
  }
  return out;
}

std::optional<PoolState> PoolRegistry::Find(const std::string& name) const {
  auto it = pools_.find(name);
  if (it == pools_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> PoolRegistry::Expire(absl::Time now) {
  std::vector<std::string> gone;
  for (auto it = pools_.begin(); it != pools_.end();) {
    if (now - it->second.last_seen > forget_after_) {
      gone.push_back(it->first);
      by_registration_.erase(it->second.registration_id);
      it = pools_.erase(it);
    } else {
      ++it;
    }
  }
  return gone;
}

}  // namespace cpserve::router
