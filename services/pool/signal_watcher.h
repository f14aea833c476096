// Turns SIGINT and SIGTERM into a flag that a service's main loop polls.
//
// The handler only writes the signal number into a pipe (async-signal-safe); a
// watcher thread reads it and wakes WaitFor. A handler (rather than a blocked mask
// and sigwait) is needed because libraries start threads before main (OpenBLAS's
// pool), and a blocked mask only covers threads created after it.
#pragma once

#include <atomic>
#include <csignal>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace cpserve::services {

class SignalWatcher {
 public:
  SignalWatcher();   // installs the handlers (one SignalWatcher per process at a time)
  ~SignalWatcher();  // restores the previous handlers
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  // Waits until a signal has arrived or `timeout` passed; true once signalled.
  bool WaitFor(absl::Duration timeout);
  bool signalled() const { return signal_.load() != 0; }
  int signal() const { return signal_.load(); }

 private:
  void Loop();

  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
  std::atomic<int> signal_{0};
  absl::Mutex mu_;
  bool seen_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace cpserve::services
