#include <iostream>
#include <string>
#include <vector>

#include "services/cli/subcommand.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv, argv + argc);
  return cpserve::cli::Main(args, std::cout, std::cerr);
}
