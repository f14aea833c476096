#include "tests/common/rank_tool.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"

namespace cpserve::testing {

std::string Arg(int argc, char** argv, const std::string& name, const std::string& def) {
  const std::string prefix = "--" + name + "=";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind(prefix, 0) == 0) return a.substr(prefix.size());
    if (a == "--" + name) return "1";
  }
  return def;
}

int IntArg(int argc, char** argv, const std::string& name, int def) {
  int v = def;
  const std::string s = Arg(argc, argv, name);
  if (!s.empty() && !absl::SimpleAtoi(s, &v)) std::exit(2);
  return v;
}

RankRequests ReadRankRequests(const std::string& path) {
  RankRequests r;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    int max_tokens = 0;
    ls >> max_tokens;
    std::vector<int32_t> ids;
    for (int32_t id; ls >> id;) ids.push_back(id);
    r.prompts.push_back(std::move(ids));
    r.max_tokens.push_back(max_tokens);
  }
  return r;
}

void WriteRankResult(std::ostream& out, const std::vector<int32_t>& tokens,
                     const std::vector<std::vector<float>>& logits) {
  out << "tokens";
  for (int32_t t : tokens) out << " " << t;
  out << "\n";
  out.precision(9);
  for (const auto& row : logits) {
    out << "logits";
    for (float v : row) out << " " << v;
    out << "\n";
  }
}

}  // namespace cpserve::testing
