// The router's view of the pools (DESIGN §6): pools register, heartbeat their load,
// and are marked down when their heartbeat is more than `heartbeat_timeout` late.
// Pure logic: the caller passes the current time (an injectable clock) and guards the
// registry with its own mutex.
//
// Identity: a pool is its name. Registering a name again with the same epoch (a
// retried Register) refreshes the entry and keeps its registration id; a new epoch (the
// pool restarted) replaces the entry and issues a new id, so heartbeats of the old
// incarnation are answered "unknown". A pool that stayed silent for `forget_after` is
// removed (its heartbeats become unknown too, telling it to register again).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cpserve::router {

enum class PoolRole { kPrefill, kDecode };
const char* PoolRoleName(PoolRole role);  // "prefill" | "decode"

struct PoolLoadReport {
  int32_t queued_requests = 0;
  int32_t running_requests = 0;
  int64_t free_kv_blocks = 0;
  int64_t total_kv_blocks = 0;
};

struct PoolRegistration {
  std::string name;
  PoolRole role = PoolRole::kDecode;
  std::string address;  // host:port of the leader
  int32_t world_size = 1;
  uint64_t epoch = 0;
  int32_t heartbeat_interval_ms = 0;
};

struct PoolState {
  PoolRegistration reg;
  std::string registration_id;
  PoolLoadReport load;
  absl::Time last_seen;         // registration or last heartbeat
  bool marked_down = false;     // MarkDown() until the next heartbeat or registration
  int64_t router_inflight = 0;  // requests the router has outstanding on this pool
  bool healthy = false;         // filled in by snapshots

  // Load used for routing: the larger of what the pool last reported (queued +
  // running) and what the router has sent it since (its own in-flight count), so
  // that requests spread out between heartbeats.
  int64_t RoutingLoad() const;
};

class PoolRegistry {
 public:
  explicit PoolRegistry(absl::Duration heartbeat_timeout,
                        absl::Duration forget_after = absl::InfiniteDuration());

  // INVALID_ARGUMENT for an empty name or address, or world_size < 1. Returns the
  // registration id to send with heartbeats.
  absl::StatusOr<std::string> Register(const PoolRegistration& reg, absl::Time now);
  // False when `registration_id` is unknown (never issued, replaced or forgotten).
  bool Heartbeat(const std::string& registration_id, const PoolLoadReport& load, absl::Time now);
  // Marks a pool down after a failed call (until its next heartbeat or registration).
  void MarkDown(const std::string& name);
  // Adjusts the router's in-flight count on a pool (+1 when a request is sent to it,
  // -1 when it ends). Unknown names are ignored (the pool may have been replaced).
  void AddInflight(const std::string& name, int64_t delta);

  bool IsLive(const PoolState& pool, absl::Time now) const;
  // Every known pool (healthy filled in), ordered by name.
  std::vector<PoolState> Snapshot(absl::Time now) const;
  // Live pools of one role, ordered by name.
  std::vector<PoolState> Live(PoolRole role, absl::Time now) const;
  std::optional<PoolState> Find(const std::string& name) const;
  // Removes pools silent for longer than forget_after; returns their names.
  std::vector<std::string> Expire(absl::Time now);

  size_t size() const { return pools_.size(); }

 private:
  absl::Duration heartbeat_timeout_;
  absl::Duration forget_after_;
  uint64_t next_id_ = 1;
  std::map<std::string, PoolState> pools_;              // by name
  std::map<std::string, std::string> by_registration_;  // registration id -> name
};

}  // namespace cpserve::router
