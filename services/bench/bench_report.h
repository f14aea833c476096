// Results of one `cpserve bench` run: per-request records in, summary table and JSON out.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "services/bench/stats.h"

namespace cpserve::bench {

// What one measured request did. Times are milliseconds; start_s is seconds from the
// start of the measured phase.
struct RequestRecord {
  int64_t index = 0;
  int64_t prompt_tokens = 0;  // as sent
  int64_t max_tokens = 0;     // requested output length
  std::string status = "OK";  // gRPC status code name
  std::string error;          // the status message when not OK
  double start_s = 0;
  double ttft_ms = -1;  // -1: no token arrived
  double e2e_ms = 0;    // send to end of stream
  int64_t output_tokens = 0;
  int64_t server_prompt_tokens = -1;  // usage.prompt_tokens from the router; -1: not reported
  std::vector<double> itl_ms;         // gap before each token after the first
  // The router's timings of the request (disaggregated path; -1 / empty: not reported).
  double server_prefill_ms = -1;
  double transfer_ms = -1;
  int64_t transfer_bytes = 0;
  std::string transport;
};

// The run's settings, echoed in the report.
struct RunConfig {
  std::string target;   // "router" or "pool"
  std::string address;  // where requests went
  std::string mode;     // "closed" (concurrency) or "open" (Poisson request rate)
  int64_t concurrency = 0;
  double request_rate = 0;
  int64_t num_requests = 0;
  int64_t warmup_requests = 0;
  std::string prompt_tokens;  // length specs
  std::string output_tokens;
  std::string prompt_kind;  // "ids" or "text"
  double slo_ttft_ms = 0;
  double slo_itl_ms = 0;
};

struct BenchReport {
  RunConfig config;
  bool interrupted = false;  // stopped early (SIGINT): records hold only what was sent
  double duration_s = 0;     // first send to last stream end of the measured requests
  int64_t requests = 0;
  int64_t ok = 0;
  std::map<std::string, int64_t> by_status;
  int64_t peak_in_flight = 0;
  int64_t output_tokens = 0;  // of OK requests
  int64_t prompt_tokens = 0;  // of OK requests, as sent
  // Requests whose output length differs from max_tokens (OK ones) and whose server-side
  // prompt length differs from the one sent (when the server reports it).
  int64_t output_length_mismatches = 0;
  int64_t prompt_length_mismatches = 0;
  Summary ttft_ms;  // OK requests
  Summary itl_ms;   // every gap between consecutive tokens of OK requests
  Summary tpot_ms;  // per-request mean inter-token latency of OK requests
  Summary e2e_ms;   // OK requests
  // Disaggregated OK requests (router timings): prefill on the prefill pool, KV transfer
  // time and rate (bytes / transfer time, GB/s), and the transports used.
  Summary server_prefill_ms;
  Summary transfer_ms;
  Summary transfer_gb_per_s;
  std::map<std::string, int64_t> transports;
  double requests_per_s = 0;       // finished (any status) / duration
  double output_tokens_per_s = 0;  // output_tokens / duration
  Goodput goodput;
  std::vector<RequestRecord> records;
};

// Mean inter-token latency of a record (0 with fewer than two tokens).
double MeanItlMs(const RequestRecord& r);

BenchReport BuildReport(const RunConfig& config, std::vector<RequestRecord> records,
                        double duration_s, int64_t peak_in_flight);

// The report as JSON; per-request records under "requests" when `with_requests`.
nlohmann::json ReportToJson(const BenchReport& report, bool with_requests);

// The report as a human-readable table.
std::string FormatReport(const BenchReport& report);

}  // namespace cpserve::bench
