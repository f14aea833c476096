// Admission control: the router holds at most `max_requests` requests at once (waiting
// for a pool or streaming); beyond that it answers RESOURCE_EXHAUSTED instead of
// queueing without bound. Pure counter; the caller serializes access.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace cpserve::router {

class AdmissionController {
 public:
  explicit AdmissionController(int64_t max_requests) : max_(max_requests) {}

  // OK and counts the request, or RESOURCE_EXHAUSTED (nothing counted) when full.
  absl::Status TryAdmit();
  // Ends an admitted request.
  void Release();

  int64_t in_flight() const { return in_flight_; }
  int64_t max_requests() const { return max_; }

 private:
  int64_t max_;
  int64_t in_flight_ = 0;
};

}  // namespace cpserve::router
