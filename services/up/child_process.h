// A child process of `cpserve up`: started with fork/execve in its own process
// group (so a terminal's Ctrl-C reaches only `up`, which forwards it in order),
// output appended to a log file, killed with SIGTERM if `up` itself dies.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cpserve::up {

class ChildProcess {
 public:
  ChildProcess(std::string name, std::vector<std::string> argv, std::string log_path);
  ~ChildProcess();  // kills (SIGKILL) and reaps a child still running
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // `env` entries ("K=V") replace or extend the current environment.
  absl::Status Start(const std::vector<std::string>& env);
  // Non-blocking: true while running; reaps it once it exited.
  bool Running();
  void Signal(int sig);
  // Waits for exit up to `timeout`; true when it exited.
  bool WaitExit(absl::Duration timeout);

  const std::string& name() const { return name_; }
  const std::string& log_path() const { return log_path_; }
  pid_t pid() const { return pid_; }
  // "exit status N" or "killed by signal N"; empty while running.
  std::string ExitDescription() const;
  std::optional<int> exit_code() const { return exit_code_; }  // 128+sig when signalled
  std::string CommandLine() const;

 private:
  std::string name_;
  std::vector<std::string> argv_;
  std::string log_path_;
  pid_t pid_ = -1;
  int raw_status_ = 0;
  std::optional<int> exit_code_;
};

// The last `lines` lines of a file (empty when unreadable).
std::string TailOfFile(const std::string& path, int lines);

// A TCP port on `host` that was free a moment ago (bind to port 0, read it, close).
absl::StatusOr<int> PickFreePort(const std::string& host);

}  // namespace cpserve::up
