// Early-return helpers for absl::Status / absl::StatusOr, used across modules.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CPSERVE_STATUS_CONCAT_INNER(a, b) a##b
#define CPSERVE_STATUS_CONCAT(a, b) CPSERVE_STATUS_CONCAT_INNER(a, b)

// Returns the status of `expr` from the enclosing function when it is not OK.
#define CPSERVE_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    const ::absl::Status cpserve_status_ = (expr);     \
    if (!cpserve_status_.ok()) return cpserve_status_; \
  } while (0)

// `lhs = value of expr` (a StatusOr), or returns its status when it is not OK.
// lhs may declare a variable: CPSERVE_ASSIGN_OR_RETURN(Tensor t, backend.Alloc(...)).
#define CPSERVE_ASSIGN_OR_RETURN(lhs, expr) \
  CPSERVE_ASSIGN_OR_RETURN_IMPL(CPSERVE_STATUS_CONCAT(cpserve_statusor_, __LINE__), lhs, expr)
#define CPSERVE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()
