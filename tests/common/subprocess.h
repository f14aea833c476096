// Starts real child processes for integration and end-to-end tests: argv in,
// combined stdout+stderr captured to a file, exit status out, kill on demand.
// A Subprocess that is destroyed while running is killed (SIGKILL) and reaped.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace cpserve::testing {

class Subprocess {
 public:
  Subprocess() = default;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  ~Subprocess();

  // Starts argv[0] (a path) with the current environment plus `env` ("K=V").
  // Output goes to a temporary file readable with Output().
  bool Start(const std::vector<std::string>& argv, const std::vector<std::string>& env = {});

  // Waits for exit up to `timeout`; returns the exit code (128+signal when
  // killed by a signal) or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  bool Running();
  void Kill(int signal);
  pid_t pid() const { return pid_; }
  // Everything the child wrote so far.
  std::string Output() const;

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::string log_path_;
};

// Runs argv to completion (or kills it after `timeout`); returns {exit code, output}.
struct RunResult {
  int exit_code = -1;  // -1 on timeout
  std::string output;
};
RunResult RunCommand(const std::vector<std::string>& argv,
                     std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Path of a built binary: $CPSERVE_BIN_DIR/name (set by CTest), else ./name.
std::string BinaryPath(const std::string& name);

}  // namespace cpserve::testing
