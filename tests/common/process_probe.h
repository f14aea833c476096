// Probes of a running service for the integration tests: wait for a line in a child's
// output, read a Prometheus endpoint.
#pragma once

#include <chrono>
#include <string>

#include "tests/common/subprocess.h"

namespace cpserve::testing {

// Polls p.Output() for the regex `pattern` for up to `limit`; returns its first group,
// or "" when it did not appear (or the child exited first).
std::string WaitForLine(Subprocess& p, const std::string& pattern,
                        std::chrono::milliseconds limit = std::chrono::seconds(60));

// GET http://127.0.0.1:port/metrics; the whole HTTP response, "" when unreachable.
std::string HttpGetMetrics(int port);

}  // namespace cpserve::testing
