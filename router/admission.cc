#include "router/admission.h"

#include "absl/strings/str_cat.h"

namespace cpserve::router {

absl::Status AdmissionController::TryAdmit() {
  if (in_flight_ >= max_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("router is full: ", in_flight_,
                     " requests in flight (max_queued_requests=", max_, "); retry later"));
  }
  ++in_flight_;
  return absl::OkStatus();
}

void AdmissionController::Release() {
  if (in_flight_ > 0) --in_flight_;
}

}  // namespace cpserve::router
