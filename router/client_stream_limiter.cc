#include "router/client_stream_limiter.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace cpserve::router {

absl::Status ClientStreamLimiter::TryAcquire(const std::string& client) {
  if (max_ <= 0) return absl::OkStatus();
  int64_t& n = open_[client];
  if (n >= max_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "client ", client, " already has ", n, " concurrent streams (max_streams_per_client=", max_,
        "); wait for one to end"));
  }
  ++n;
  return absl::OkStatus();
}

void ClientStreamLimiter::Release(const std::string& client) {
  if (max_ <= 0) return;
  auto it = open_.find(client);
  if (it == open_.end()) return;
  if (--it->second <= 0) open_.erase(it);
}

int64_t ClientStreamLimiter::open_streams(const std::string& client) const {
  auto it = open_.find(client);
  return it == open_.end() ? 0 : it->second;
}

std::string PeerHost(const std::string& peer) {
  absl::string_view p = peer;
  if (absl::ConsumePrefix(&p, "ipv4:")) {
    const size_t colon = p.rfind(':');
    return std::string(colon == absl::string_view::npos ? p : p.substr(0, colon));
  }
  if (absl::ConsumePrefix(&p, "ipv6:")) {
    if (!p.empty() && p.front() == '[') {
      const size_t close = p.find(']');
      if (close != absl::string_view::npos) return std::string(p.substr(1, close - 1));
    }
    return std::string(p);
  }
  return peer;
}

}  // namespace cpserve::router
