#include "worker/comm/gloo_store.h"

#include <algorithm>
#include <utility>

#include "gloo/common/error.h"

namespace cpserve::comm {

GlooStore::GlooStore(RendezvousClient& client, std::string prefix,
                     std::chrono::milliseconds timeout)
    : client_(client), prefix_(std::move(prefix)), timeout_(timeout) {}

void GlooStore::Fail(absl::Status status) {
  last_error_ = std::move(status);
  throw gloo::IoException(std::string(last_error_.message()));
}

void GlooStore::set(const std::string& key, const std::vector<char>& data) {
  absl::Status s = client_.Set(prefix_ + key, std::string(data.begin(), data.end()));
  if (!s.ok()) Fail(std::move(s));
}

std::vector<char> GlooStore::get(const std::string& key) {
  absl::StatusOr<std::string> v = client_.Get(prefix_ + key, timeout_);
  if (!v.ok()) Fail(v.status());
  return std::vector<char>(v->begin(), v->end());
}

void GlooStore::wait(const std::vector<std::string>& keys) { wait(keys, timeout_); }

void GlooStore::wait(const std::vector<std::string>& keys,
                     const std::chrono::milliseconds& timeout) {
  std::vector<std::string> full;
  full.reserve(keys.size());
  for (const auto& k : keys) full.push_back(prefix_ + k);
  // Gloo passes its context timeout; never wait longer than ours.
  auto t = timeout.count() > 0 ? std::min(timeout, timeout_) : timeout_;
  absl::Status s = client_.Wait(full, t);
  if (!s.ok()) Fail(std::move(s));
}

}  // namespace cpserve::comm
