#include "services/cli/subcommand.h"

#include <algorithm>
#include <ostream>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cpserve::cli {
namespace {

constexpr const char* kUsageHead =
    "cpserve — disaggregated LLM serving with prefill and decode context parallelism.\n"
    "\n"
    "usage: cpserve <subcommand> [--flag=value ...] [args]\n"
    "       cpserve <subcommand> --help   (that subcommand's flags)\n"
    "\n"
    "subcommands:\n";

bool IsAllowed(const std::vector<std::string>& allowed, absl::string_view name) {
  return std::find(allowed.begin(), allowed.end(), name) != allowed.end();
}

// Wraps `text` at 80 columns with the given indent.
void PrintWrapped(std::ostream& out, absl::string_view text, int indent) {
  const std::string pad(indent, ' ');
  int col = indent;
  out << pad;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find(' ', i);
    if (j == absl::string_view::npos) j = text.size();
    const absl::string_view word = text.substr(i, j - i);
    if (col > indent && col + 1 + static_cast<int>(word.size()) > 80) {
      out << "\n" << pad;
      col = indent;
    } else if (col > indent) {
      out << ' ';
      ++col;
    }
    out << word;
    col += static_cast<int>(word.size());
    i = j + 1;
  }
  out << "\n";
}

}  // namespace

ParseResult ParseFlags(const std::vector<std::string>& args,
                       const std::vector<std::string>& allowed_flags) {
  ParseResult result;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      result.positional.insert(result.positional.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (arg == "--help" || arg == "-h" || arg == "-help" || arg == "--helpfull") {
      result.help = true;
      continue;
    }
    if (!absl::StartsWith(arg, "-") || arg == "-") {
      result.positional.push_back(arg);
      continue;
    }
    absl::string_view body = arg;
    body.remove_prefix(absl::StartsWith(body, "--") ? 2 : 1);
    const size_t eq = body.find('=');
    const bool has_value = eq != absl::string_view::npos;
    std::string name(body.substr(0, eq));
    std::string value = has_value ? std::string(body.substr(eq + 1)) : "";

    absl::CommandLineFlag* flag =
        IsAllowed(allowed_flags, name) ? absl::FindCommandLineFlag(name) : nullptr;
    bool negated = false;
    if (flag == nullptr && !has_value && absl::StartsWith(name, "no") &&
        IsAllowed(allowed_flags, name.substr(2))) {  // --noNAME for booleans
      absl::CommandLineFlag* neg = absl::FindCommandLineFlag(name.substr(2));
      if (neg != nullptr && neg->IsOfType<bool>()) {
        flag = neg;
        name = name.substr(2);
        value = "false";
        negated = true;
      }
    }
    if (flag == nullptr) {
      result.error = absl::StrCat("unknown flag --", name);
      return result;
    }
    if (!has_value && !negated) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        result.error = absl::StrCat("flag --", name, " needs a value");
        return result;
      }
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      result.error = absl::StrCat("bad value '", value, "' for --", name, ": ", error);
      return result;
    }
  }
  result.ok = true;
  return result;
}

void PrintUsage(std::ostream& out) {
  out << kUsageHead;
  for (const Subcommand& sub : Subcommands()) {
    std::string head = absl::StrCat("  ", sub.name);
    head.resize(std::max<size_t>(head.size() + 1, 14), ' ');
    out << head << sub.summary << (sub.run ? "" : " [not yet available]") << "\n";
  }
  out << "\nRun 'cpserve <subcommand> --help' for its flags. Docs: README.md.\n";
}

void PrintSubcommandHelp(const Subcommand& sub, std::ostream& out) {
  out << "usage: cpserve " << sub.name << " [flags]\n\n";
  PrintWrapped(out, sub.description, 0);
  if (!sub.run) out << "\nNot yet available: " << sub.pending << "\n";
  out << "\nflags:\n";
  for (const std::string& name : sub.flags) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) continue;
    out << "  --" << name
        << " (default: " << (flag->DefaultValue().empty() ? "\"\"" : flag->DefaultValue()) << ")\n";
    PrintWrapped(out, flag->Help(), 6);
  }
  out << "  --help\n      Print this help.\n";
}

int Main(const std::vector<std::string>& argv, std::ostream& out, std::ostream& err) {
  if (argv.size() < 2 || argv[1] == "--help" || argv[1] == "-h" || argv[1] == "help") {
    PrintUsage(argv.size() < 2 ? err : out);
    return argv.size() < 2 ? 2 : 0;
  }
  if (argv[1] == "--version" || argv[1] == "version") {
    out << "cpserve 0.1.0\n";
    return 0;
  }
  const auto& subs = Subcommands();
  const auto it = std::find_if(subs.begin(), subs.end(),
                               [&](const Subcommand& s) { return s.name == argv[1]; });
  if (it == subs.end()) {
    err << "cpserve: unknown subcommand '" << argv[1] << "'\n\n";
    PrintUsage(err);
    return 2;
  }
  const std::vector<std::string> args(argv.begin() + 2, argv.end());
  ParseResult parsed = ParseFlags(args, it->flags);
  if (parsed.help) {
    PrintSubcommandHelp(*it, out);
    return 0;
  }
  if (!parsed.ok) {
    err << "cpserve " << it->name << ": " << parsed.error << " (see 'cpserve " << it->name
        << " --help')\n";
    return 2;
  }
  if (!it->run) {
    err << "cpserve " << it->name << ": not yet available: " << it->pending << "\n";
    return 3;
  }
  return it->run(parsed.positional);
}

}  // namespace cpserve::cli
