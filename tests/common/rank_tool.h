// Shared plumbing of the CP rank test tools (tests/integration/cp/cp_rank_main.cc,
// tests/gpu/cp/gpu_cp_rank_main.cc): "--name=value" arguments, the requests file
// ("max_tokens id id ..." per line) and the results file ("tokens t t ..." per request,
// then one "logits v v ..." line per generated token).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace cpserve::testing {

// The value of --name=value (or "1" for a bare --name), else `def`.
std::string Arg(int argc, char** argv, const std::string& name, const std::string& def = "");
// Arg as an int; exits with status 2 on a non-integer.
int IntArg(int argc, char** argv, const std::string& name, int def);

struct RankRequests {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int> max_tokens;
};
RankRequests ReadRankRequests(const std::string& path);

// One request's generated tokens and their logits rows, in the results format.
void WriteRankResult(std::ostream& out, const std::vector<int32_t>& tokens,
                     const std::vector<std::vector<float>>& logits);

}  // namespace cpserve::testing
