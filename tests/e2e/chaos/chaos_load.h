// The client side of a chaos run: many concurrent streaming Generate calls with mixed
// prompts, output lengths, deadlines and client cancels (after some tokens or after
// some time), each recorded with how and when it ended.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace cpserve::chaos {

using Clock = std::chrono::steady_clock;

enum class CancelMode { kNone, kAfterTokens, kAfterTime };

struct RequestSpec {
  std::string id;  // request_id sent to the router (names the request in every log)
  int prompt = 0;  // index into the prompt set
  int max_tokens = 1;
  std::chrono::milliseconds deadline{0};
  CancelMode cancel = CancelMode::kNone;
  int cancel_after_tokens = 0;
  std::chrono::milliseconds cancel_after{0};
};

struct RequestResult {
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  std::string message;
  std::vector<int32_t> tokens;
  std::string path;               // timings.path of the last message ("local" / "disaggregated")
  bool finished = false;          // a finish_reason arrived
  bool client_cancelled = false;  // this client called TryCancel before the call ended
  Clock::time_point start, end, deadline;
};

struct LoadOptions {
  int requests = 300;
  int concurrency = 16;
  uint32_t seed = 1;
  int max_tokens = 24;  // output lengths are drawn from [1, max_tokens]
  double cancel_fraction = 0.15;
  double short_deadline_fraction = 0.15;
  std::chrono::milliseconds short_deadline_max{1500};
  std::chrono::milliseconds long_deadline{60000};
};

// Draws the request mix (deterministic for a seed).
std::vector<RequestSpec> MakeRequests(const LoadOptions& options, int num_prompts);

// Runs every request against `address` with `concurrency` client threads; results in
// request order. Every call ends (its deadline bounds it). A client thread whose
// request ended UNAVAILABLE waits 100-300 ms before its next one.
std::vector<RequestResult> RunLoad(const std::string& address,
                                   const std::vector<std::vector<int32_t>>& prompts,
                                   const std::vector<RequestSpec>& requests, int concurrency);

}  // namespace cpserve::chaos
