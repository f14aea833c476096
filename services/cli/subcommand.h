// The `cpserve` command line: subcommands, their flags and their help.
#pragma once

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

namespace cpserve::cli {

struct Subcommand {
  std::string name;
  std::string summary;             // one line, for `cpserve --help`
  std::string description;         // a paragraph, for `cpserve NAME --help`
  std::vector<std::string> flags;  // names of the absl flags it accepts
  // Runs the subcommand with the positional arguments left after flag parsing;
  // returns the process exit code. Null when the issue that builds it has not landed.
  std::function<int(const std::vector<std::string>& args)> run;
  std::string pending;  // with run == null: what is missing, for the error message
};

// All subcommands, in the order `cpserve --help` lists them.
const std::vector<Subcommand>& Subcommands();

// Parses `args` (without the program name and subcommand) into the named flags.
// Accepts --name=value, --name value, --name / --noname for bools, and "--" to end
// flags. Returns the positional arguments, or an error naming the bad flag.
struct ParseResult {
  bool ok = false;
  bool help = false;
  std::string error;
  std::vector<std::string> positional;
};
ParseResult ParseFlags(const std::vector<std::string>& args,
                       const std::vector<std::string>& allowed_flags);

void PrintUsage(std::ostream& out);
void PrintSubcommandHelp(const Subcommand& sub, std::ostream& out);

// Entry point of the binary; returns the exit code. argv[0] is the program name.
int Main(const std::vector<std::string>& argv, std::ostream& out, std::ostream& err);

}  // namespace cpserve::cli
